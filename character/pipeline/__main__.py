"""Entry of an isolated stage (`character run --isolate`): `python -m character.pipeline STAGE CONFIG.json`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from character.config import build
from character.pipeline.stages import BY_NAME


def _child(stage_name: str, config_json: str) -> None:
    """Entry of an isolated stage: `python -m character.pipeline STAGE CONFIG.json`."""
    from character.errors import run_cli

    def go():
        stage = BY_NAME[stage_name]
        cls, fn = stage.load()
        fn(build(cls, json.loads(Path(config_json).read_text()), where=f"stages.{stage_name}"))

    run_cli(go)


if __name__ == "__main__":
    _child(*sys.argv[1:3])
