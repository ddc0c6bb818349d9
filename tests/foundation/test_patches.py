"""The registry of library patches (character/patches.py): a patch whose check fails is skipped with one warning and
is not listed as active; a passing one is applied, listed and recorded in manifests; every shipped patch's check
passes on the installed libraries, so an upgrade that moves a target fails here rather than at run time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from character import patches
from character.artifacts import StageDir

applied: list[tuple] = []


def fits() -> None:
    return None


def moved() -> str:
    return "thing.target takes (a, b), not (a)"


def swap(*args):
    applied.append(args)
    return True


def declines(*args):
    return 0


@pytest.fixture
def registry(monkeypatch):
    """A fresh record of active and warned patches, and a registry with test patches against pytest."""
    monkeypatch.setattr(patches, "_active", {})
    monkeypatch.setattr(patches, "_warned", set())
    applied.clear()

    def add(name, check, apply="swap", once=True, off=None):
        monkeypatch.setitem(patches.PATCHES, name, patches.Patch(
            ("not-a-distribution", "pytest"), ">=8", f"{__name__}:{check}", f"{__name__}:{apply}",
            "the library's own code runs (slower, same results)", once=once, off=off))

    return add


def test_failing_check_skips_with_one_warning(registry, capsys):
    registry("broken", check="moved")
    assert patches.apply("broken") is None and patches.apply("broken") is None
    assert applied == [] and patches.active() == {}
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1  # once per process, however often it is asked for
    version = patches.installed("broken")
    assert version.startswith("pytest==")
    assert lines[0] == (f"patch broken skipped ({version}, tested >=8): thing.target takes (a, b), not (a); "
                        "the library's own code runs (slower, same results)")


def test_passing_patch_is_applied_once_and_listed(registry, capsys):
    registry("fast", check="fits")
    assert patches.apply("fast") is True and patches.apply("fast") is True
    assert applied == [()]  # a process-wide swap is applied once
    assert patches.active() == {"fast": patches.installed("fast")}
    assert capsys.readouterr().err == ""


def test_per_object_patch_applies_to_each_and_may_decline(registry):
    registry("each", check="fits", once=False)
    registry("nothing", check="fits", apply="declines", once=False)
    assert patches.apply("each", "model a") and patches.apply("each", "model b")
    assert applied == [("model a",), ("model b",)]
    assert patches.apply("nothing", "model") == 0  # nothing to change: not active
    assert list(patches.active()) == ["each"]


def test_switched_off_by_its_environment_variable(registry, monkeypatch, capsys):
    registry("optional", check="fits", off=("CHARACTER_TEST_PATCH", "vllm"))
    monkeypatch.setenv("CHARACTER_TEST_PATCH", "VLLM")
    assert patches.apply("optional") is None and applied == [] and patches.active() == {}
    assert capsys.readouterr().err == ""  # a choice, not a problem: no warning
    monkeypatch.setenv("CHARACTER_TEST_PATCH", "")
    assert patches.apply("optional") and "optional" in patches.active()


def test_a_check_that_raises_is_a_skipped_patch(registry, capsys):
    registry("gone", check="no_such_function")
    assert patches.apply("gone") is None
    assert "patch gone skipped" in capsys.readouterr().err and patches.active() == {}


def test_manifest_records_the_active_patches(registry, tmp_path):
    registry("fast", check="fits")
    patches.apply("fast")
    out = StageDir(tmp_path / "stage", "teacher")
    out.begin({}, "h", {})
    assert out.finish()["patches"] == {"fast": patches.installed("fast")}
    assert json.loads((tmp_path / "stage" / "manifest.json").read_text())["patches"] == patches.active()


def test_reference_hash_check_notices_a_changed_target(monkeypatch):
    """A shipped check fails when the thing it replaces changes shape (here TRL's hash_module's parameters)."""
    from trl.trainer import dpo_trainer

    from character.train.dpo import check_reference_hash

    assert check_reference_hash() is None
    monkeypatch.setattr(dpo_trainer, "hash_module", lambda model, algorithm="sha256": "")
    assert "hash_module(module) is gone" in check_reference_hash()


@pytest.fixture(scope="module")
def shipped():
    """Each shipped patch's check result and library, in a fresh interpreter: a patch this test session already
    applied (the CPU LoRA tests install theirs) has swapped its target for ours."""
    code = ("import json; from character import patches; "
            "print(json.dumps({n: [patches.check(n), patches.installed(n)] for n in patches.PATCHES}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(patches.PATCHES))
def test_shipped_patch_fits_the_installed_library(name, shipped):
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    patch = patches.PATCHES[name]
    problem, installed = shipped[name]
    if installed is None:  # vLLM, in an environment without the cpu or gpu extra
        pytest.skip(f"{patch.library[0]} is not installed")
    assert problem is None, f"{name}: {problem}"
    dist, version = installed.split("==")
    assert Version(version) in SpecifierSet(patch.tested), (
        f"{name}: tested with {dist}{patch.tested}, installed {version}; test it and widen `tested`")
