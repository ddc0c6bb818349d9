"""`character merge`: the merged adapter's weight change is exactly the weighted sum of the adapters' changes."""

from __future__ import annotations

import json

import pytest

from character.errors import CharacterError
from character.train.merge import MergeConfig, merge_adapters

WEIGHTS = [1.0, 0.25]


def _random_adapter(base: str, out, seed: int, **lora):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    # init_lora_weights=False: B is random too, so every adapter really changes the weights
    peft = get_peft_model(model, LoraConfig(init_lora_weights=False, task_type="CAUSAL_LM", **lora))
    peft.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def adapters(tiny_llama_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    a = _random_adapter(tiny_llama_path, root / "a", 1, r=8, lora_alpha=16,
                        target_modules=["q_proj", "v_proj", "gate_proj"])
    # another rank, rsLoRA scaling and a partly different set of layers
    b = _random_adapter(tiny_llama_path, root / "b", 2, r=4, lora_alpha=4, use_rslora=True,
                        target_modules=["q_proj", "o_proj"])
    return a, b


def _weights_with(base: str, adapter=None) -> dict:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_merged_delta_is_exact_weighted_sum(tiny_llama_path, adapters, tmp_path):
    import torch

    out = merge_adapters(MergeConfig(model=tiny_llama_path, adapters=[str(a) for a in adapters],
                                     weights=WEIGHTS, out=str(tmp_path / "merged")))
    info = json.loads((out / "merge.json").read_text())
    assert info["rank"] == 12
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 12 and set(cfg["target_modules"]) == {"q_proj", "v_proj", "gate_proj", "o_proj"}

    base = _weights_with(tiny_llama_path)
    deltas = [{k: v - base[k] for k, v in _weights_with(tiny_llama_path, a).items()} for a in adapters]
    merged = _weights_with(tiny_llama_path, out)
    changed = 0
    for key, w0 in base.items():
        expected = WEIGHTS[0] * deltas[0][key] + WEIGHTS[1] * deltas[1][key]
        got = merged[key] - w0
        assert torch.allclose(got, expected, atol=1e-6, rtol=0), (key, (got - expected).abs().max())
        changed += bool(expected.abs().max() > 1e-3)
    assert changed == 2 * (3 + 1)  # q,v,gate from a and o from b (q shared), in 2 layers

    # A rerun with the same inputs is skipped (the manifest says complete)
    stamp = (out / "adapter_model.safetensors").stat().st_mtime_ns
    merge_adapters(MergeConfig(model=tiny_llama_path, adapters=[str(a) for a in adapters], weights=WEIGHTS,
                               out=str(out)))
    assert (out / "adapter_model.safetensors").stat().st_mtime_ns == stamp


def test_peft_linear_combination_is_not_the_sum(tiny_llama_path, tmp_path):
    """Why we stack factors: PEFT's `linear` combination has cross terms (shown on equal-rank adapters)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    a = _random_adapter(tiny_llama_path, tmp_path / "a", 3, r=4, lora_alpha=8, target_modules=["q_proj"])
    b = _random_adapter(tiny_llama_path, tmp_path / "b", 4, r=4, lora_alpha=8, target_modules=["q_proj"])
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32)
    peft = PeftModel.from_pretrained(model, str(a), adapter_name="a")
    peft.load_adapter(str(b), adapter_name="b")
    peft.add_weighted_adapter(["a", "b"], WEIGHTS, "lin", combination_type="linear")
    layer = peft.base_model.model.model.layers[0].self_attn.q_proj
    lin = layer.get_delta_weight("lin")
    exact = WEIGHTS[0] * layer.get_delta_weight("a") + WEIGHTS[1] * layer.get_delta_weight("b")
    assert (lin - exact).abs().max() > 1e-3

    out = merge_adapters(MergeConfig(model=tiny_llama_path, adapters=[str(a), str(b)], weights=WEIGHTS,
                                     out=str(tmp_path / "m")))
    peft.load_adapter(str(out), adapter_name="ours")
    assert torch.allclose(layer.get_delta_weight("ours"), exact, atol=1e-6, rtol=0)


def test_full_merge_writes_a_model(tiny_llama_path, adapters, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = merge_adapters(MergeConfig(model=tiny_llama_path, adapters=[str(a) for a in adapters], weights=WEIGHTS,
                                     out=str(tmp_path / "full"), full=True))
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    full = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
    base = _weights_with(tiny_llama_path)
    deltas = [{k: v - base[k] for k, v in _weights_with(tiny_llama_path, a).items()} for a in adapters]
    key = "model.layers.0.self_attn.q_proj.weight"
    expected = (base[key] + WEIGHTS[0] * deltas[0][key] + WEIGHTS[1] * deltas[1][key]).to(torch.bfloat16).float()
    assert torch.allclose(full[key], expected, atol=1e-2)


def test_adapter_from_another_base_is_refused(smollm2_path, adapters, tmp_path, cli):
    with pytest.raises(CharacterError, match="trained on"):
        merge_adapters(MergeConfig(model=smollm2_path, adapters=[str(a) for a in adapters], weights=WEIGHTS,
                                   out=str(tmp_path / "x")))
    r = cli("merge", "--model", smollm2_path, "--adapters", f"{adapters[0]},{adapters[1]}", "--out", tmp_path / "y")
    assert r.returncode == 2 and "trained on" in r.stderr and "Traceback" not in r.stderr
    r = cli("merge", "--model", smollm2_path, "--adapters", str(adapters[0]), "--out", tmp_path / "z")
    assert r.returncode == 2 and "1 adapters but 2 weights" in r.stderr
