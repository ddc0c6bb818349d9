"""Combine LoRA adapters with weights into one adapter whose weight change is exactly the weighted sum.

    character merge --adapters runs/x/train-dpo,runs/x/train-sft --weights 1.0,0.25 --out runs/x/merged
    character merge ... --full          # write base + weighted sum as a full checkpoint instead

For each adapted layer, adapter i changes the weight by w_i * s_i * B_i @ A_i (s_i = alpha_i / r_i). Stacking the
factors along the rank dimension, A = [A_1; A_2; ...] and B = [w_1 s_1 B_1, w_2 s_2 B_2, ...], gives one LoRA of
rank r_1 + r_2 + ... whose B @ A is that sum exactly; alpha is set equal to the rank so its own scale is 1.
(PEFT's `add_weighted_adapter(combination_type="linear")` scales A and B by sqrt(w) and requires equal ranks; the
cross terms make it differ from the sum.) The merged rank is recorded in merge.json: vLLM must be started with
max_lora_rank >= it (128 for two r64 adapters).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

from character.config import command, field
from character.errors import CharacterError

LORA_A, LORA_B = ".lora_A.weight", ".lora_B.weight"


@dataclasses.dataclass
class MergeConfig:
    """`character merge` settings."""

    model: str = field("smollm2-135m", help="the base model all adapters were trained on")
    adapters: list[str] = field(help="adapter directories, e.g. the DPO then the SFT output", factory=list)
    weights: list[float] = field(help="one weight per adapter (paper: DPO 1.0, SFT 0.25)",
                                 factory=lambda: [1.0, 0.25])
    out: str = field("", help="output directory", hash=False)
    full: bool = field(False, help="write a full merged model (base + weighted sum) instead of an adapter")

    def __post_init__(self):
        problems = []
        if not self.adapters:
            problems.append("'adapters' is required (comma-separated adapter directories)")
        elif len(self.weights) != len(self.adapters):
            problems.append(f"{len(self.adapters)} adapters but {len(self.weights)} weights; give one weight each")
        if not self.out:
            problems.append("'out' is required (the output directory)")
        if problems:
            raise ValueError("; ".join(problems))


def _scale_for(module: str, cfg: dict, rank: int) -> float:
    alpha = cfg.get("lora_alpha", 8)
    for pattern, value in (cfg.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            alpha = value
            break
    return alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank


def _read_adapter(path: Path, cfg: dict) -> dict[str, tuple]:
    """module name -> (A, B, scale), in float64 for an exact sum."""
    import torch
    from safetensors.torch import load_file

    not_plain = {"use_dora": bool(cfg.get("use_dora")), "modules_to_save": bool(cfg.get("modules_to_save")),
                 "bias": cfg.get("bias") not in (None, "none")}
    for key, bad in not_plain.items():
        if bad:
            raise CharacterError(f"adapter '{path}': {key}={cfg.get(key)!r} is not a plain LoRA; only LoRA weights "
                                 f"(no DoRA, biases or saved modules) can be merged exactly")
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise CharacterError(f"adapter '{path}': no adapter_model.safetensors; is the training finished?")
    tensors = load_file(str(weights))
    out = {}
    for key, a in tensors.items():
        if key.endswith(LORA_A):
            module = key[: -len(LORA_A)]
            b = tensors.get(module + LORA_B)
            if b is None:
                raise CharacterError(f"adapter '{path}': {module} has lora_A but no lora_B; the file is damaged")
            out[module] = (a.to(torch.float64), b.to(torch.float64), _scale_for(module, cfg, a.shape[0]))
    if not out:
        raise CharacterError(f"adapter '{path}': no LoRA weights found")
    return out


def combine(adapters: list[dict[str, tuple]], weights: list[float]) -> tuple[dict, int]:
    """Stacked factors {module: (A, B)} with B @ A = sum_i w_i s_i B_i A_i, and the common rank."""
    import torch

    ranks = [max(a.shape[0] for a, _, _ in ad.values()) for ad in adapters]
    total = sum(ranks)
    modules = sorted(set().union(*adapters))
    merged = {}
    for module in modules:
        shapes = next((a.shape[1], b.shape[0]) for ad in adapters if module in ad for a, b, _ in [ad[module]])
        a_cat = torch.zeros(total, shapes[0], dtype=torch.float64)
        b_cat = torch.zeros(shapes[1], total, dtype=torch.float64)
        offset = 0
        for ad, w, r in zip(adapters, weights, ranks):
            if module in ad:  # an adapter that leaves this layer alone contributes zero blocks
                a, b, s = ad[module]
                a_cat[offset: offset + a.shape[0]] = a
                b_cat[:, offset: offset + a.shape[0]] = (w * s) * b
            offset += r
        merged[module] = (a_cat, b_cat)
    return merged, total


def merge_adapters(cfg: MergeConfig) -> Path:
    import torch
    from safetensors.torch import save_file

    from character.artifacts import StageDir, atomic_dir
    from character.config import config_hash, to_dict
    from character.identity import identity
    from character.models import check_adapter, resolve

    base = resolve(cfg.model)
    paths = [Path(a).expanduser() for a in cfg.adapters]
    configs = [check_adapter(p, base) for p in paths]
    inputs = {"model": identity(base), **{f"adapter{i}": identity(p) for i, p in enumerate(paths)}}
    out = Path(cfg.out).expanduser()
    if StageDir(out, "merge").is_complete(config_hash(cfg), inputs):
        print(f"{out}: already merged from these adapters; skipping")
        return out
    merged, rank = combine([_read_adapter(p, c) for p, c in zip(paths, configs)], cfg.weights)

    adapter_cfg = dict(configs[0])
    adapter_cfg.update({
        "r": rank, "lora_alpha": rank, "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {},
        "target_modules": sorted({m.rsplit(".", 1)[-1] for m in merged}), "base_model_name_or_path": base,
        "lora_dropout": 0.0,
    })
    info = {"rank": rank, "weights": cfg.weights, "adapters": [str(p) for p in paths],
            "source_ranks": [c.get("r") for c in configs], "modules": len(merged), "full": cfg.full}
    with atomic_dir(out) as tmp:
        stage = StageDir(tmp, "merge")
        stage.begin(to_dict(cfg), config_hash(cfg), inputs)
        adapter_dir = tmp / ".adapter" if cfg.full else tmp
        adapter_dir.mkdir(exist_ok=True)
        tensors = {}
        for module, (a, b) in merged.items():
            tensors[module + LORA_A] = a.to(torch.float32).contiguous()
            tensors[module + LORA_B] = b.to(torch.float32).contiguous()
        save_file(tensors, str(adapter_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
        (adapter_dir / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2) + "\n")
        if cfg.full:
            _write_full(base, adapter_dir, tmp)
            shutil.rmtree(adapter_dir)
        else:
            from character.train.model import load_tokenizer

            load_tokenizer(base).save_pretrained(str(tmp))
        (tmp / "merge.json").write_text(json.dumps(info, indent=2) + "\n")
        stage.finish(counts={"modules": len(merged), "rank": rank})
    print(f"merged {len(paths)} adapters (weights {cfg.weights}) into {out}: "
          f"{'full model' if cfg.full else f'LoRA rank {rank}'}")
    return out


def _write_full(base: str, adapter_dir: Path, target: Path) -> None:
    """Base + weighted sum as a plain checkpoint, merged in float32 and saved in the base's dtype."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from character.models import model_config

    declared = model_config(base).get("dtype") or model_config(base).get("torch_dtype") or "float32"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model.to(getattr(torch, str(declared).replace("torch.", ""))).save_pretrained(str(target), safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(str(target))


COMMANDS = {"merge": command(MergeConfig, merge_adapters, "Merge LoRA adapters with weights (exact weighted sum); "
                                                   "--full writes a merged model.")}
