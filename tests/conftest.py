"""Shared fixtures: the embedded models (prepared once per machine) and a CLI runner.

Each area keeps its own fixtures in its folder (tests/<area>/conftest.py): engine, train, eval, pipeline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the tests never need the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """The one way a test says what it needs: `pytest.mark.gpu` (skipped without CUDA) and `pytest.mark.vllm`
    (skipped without vLLM). A module that imports vLLM's internals at import time also starts with
    `pytest.importorskip`, since that import runs before this hook."""
    from character.engine.base import vllm_available

    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    has_vllm = vllm_available()
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    skip_vllm = pytest.mark.skip(reason="vllm is not installed")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(skip_vllm)


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    from character import models

    return str(models.prepare("smollm2-135m"))


@pytest.fixture(scope="session")
def tiny_llama_path() -> str:
    from character import models

    return str(models.prepare("tiny-random-llama"))


def run_character(*args: str, cwd: Path | str = REPO, env: dict | None = None, timeout: float = 900):
    """Run the `character` CLI in a subprocess; returns CompletedProcess with text output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "character", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli():
    return run_character
