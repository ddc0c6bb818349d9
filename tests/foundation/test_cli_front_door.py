"""The CLI front door: fast --help listing every group, one-line errors."""

from __future__ import annotations

import subprocess
import sys
import time


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t=time.time(); from character import cli; r = cli.Root(); "
            "heavy = [m for m in ('torch', 'vllm', 'transformers', 'trl', 'peft', 'sklearn', 'matplotlib') "
            "if m in sys.modules]; print(heavy, time.time()-t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    heavy, seconds = out.rsplit("]", 1)
    assert heavy == "[", f"heavy modules imported at CLI start: {heavy}]"
    assert float(seconds) < 1.0
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "character", "--help"], capture_output=True, text=True,
                       env={"PAGER": "cat", "PATH": "/usr/bin:/bin"})
    assert time.time() - t < 3.0  # includes interpreter start-up
    for group in ("constitution", "models", "generate", "train", "merge", "eval", "run", "slurm"):
        assert group in r.stdout + r.stderr, f"{group} missing from --help"  # fire prints help to stderr off a tty


def test_models_list(cli):
    r = cli("models", "list")
    assert r.returncode == 0
    for alias in ("smollm2-135m", "minilm", "tiny-random-llama"):
        assert alias in r.stdout


def test_unknown_alias_is_one_line(cli):
    r = cli("models", "prepare", "smollm-135m")
    assert r.returncode == 2 and "did you mean 'smollm2-135m'" in r.stderr and "Traceback" not in r.stderr


def test_help_after_a_command_and_its_arguments_shows_help_and_runs_nothing(cli, tmp_path):
    # fire hands --help to a command that takes any flag, which ran it (or failed on "unknown option --help")
    missing = tmp_path / "nothing.yaml"
    for args, title in ([("eval", "apc", "--help"), "character eval"],
                        [("steer", "project", "--help"), "character steer project"],
                        [("train", "dpo", "-h"), "character train dpo"],
                        [("run", str(missing), "--out", str(tmp_path / "out"), "--help"), "character run"]):
        r = cli(*args)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and f"{title} - " in out and "FLAGS" in out, (args, out)
        assert "unknown option" not in out and "error:" not in out, (args, out)
    assert not (tmp_path / "out").exists()
