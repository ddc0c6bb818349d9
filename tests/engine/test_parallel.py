"""Tensor-parallel size from the model's config (character/engine/parallel.py) and its use by the vLLM engine.

The configs below are the fields of the released config.json files that decide how vLLM shards a model.

    .venv/bin/pytest -q tests/engine/test_parallel.py
"""

from __future__ import annotations

import json
import sys
import types

import pytest

from character.engine.parallel import choose_tensor_parallel, load_config, sharded_dims
from character.errors import CharacterError

LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 128256, "max_position_embeddings": 131072, "rope_theta": 500000.0, "torch_dtype": "bfloat16",
}
QWEN25_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
    "max_position_embeddings": 32768, "rope_theta": 1000000.0, "torch_dtype": "bfloat16",
}
# Gemma-3-4B-it as shipped: a multimodal config whose text_config leaves the head counts to transformers' defaults
GEMMA3_4B_SHIPPED = {
    "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "mm_tokens_per_image": 256,
    "text_config": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                    "num_hidden_layers": 34, "sliding_window": 1024,
                    "rope_scaling": {"factor": 8.0, "rope_type": "linear"}},
    "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                      "num_attention_heads": 16, "num_hidden_layers": 27, "image_size": 896, "patch_size": 14},
    "torch_dtype": "bfloat16",
}
# ... and with the defaults filled in (what load_config returns): 8 attention heads, 4 KV heads of width 256
GEMMA3_4B = {**GEMMA3_4B_SHIPPED, "text_config": {**GEMMA3_4B_SHIPPED["text_config"], "num_attention_heads": 8,
                                                  "num_key_value_heads": 4, "head_dim": 256, "vocab_size": 262208}}
GLM45_AIR = {
    "architectures": ["Glm4MoeForCausalLM"], "model_type": "glm4_moe", "hidden_size": 4096,
    "intermediate_size": 10944, "moe_intermediate_size": 1408, "num_hidden_layers": 46, "first_k_dense_replace": 1,
    "num_attention_heads": 96, "num_key_value_heads": 8, "head_dim": 128, "partial_rotary_factor": 0.5,
    "n_routed_experts": 128, "n_shared_experts": 1, "num_experts_per_tok": 8, "num_nextn_predict_layers": 1,
    "vocab_size": 151552, "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
}

# GPUs visible -> the size chosen. Qwen2.5-7B: 28 heads and 4 KV heads stop at 4 (8 is what vLLM refused);
# Gemma-3-4B stops at its 4 KV heads (vLLM would start at 8 by copying each KV head, which only wastes memory).
EXPECTED = {
    "meta-llama/Llama-3.1-8B-Instruct": (LLAMA_31_8B, {1: 1, 2: 2, 4: 4, 8: 8}),
    "Qwen/Qwen2.5-7B-Instruct": (QWEN25_7B, {1: 1, 2: 2, 4: 4, 8: 4}),
    "google/gemma-3-4b-it": (GEMMA3_4B, {1: 1, 2: 2, 4: 4, 8: 4}),
    "zai-org/GLM-4.5-Air": (GLM45_AIR, {1: 1, 2: 2, 4: 4, 8: 8}),
}


@pytest.mark.parametrize("model", EXPECTED)
@pytest.mark.parametrize("gpus", [1, 2, 4, 8])
def test_chosen_size(model, gpus):
    config, sizes = EXPECTED[model]
    assert choose_tensor_parallel(config, gpus, None, model) == sizes[gpus]


@pytest.mark.parametrize("model", EXPECTED)
def test_cpu_is_one_worker(model):
    assert choose_tensor_parallel(EXPECTED[model][0], 0) == 1


def test_fields_read_from_nested_and_moe_configs():
    gemma, glm = sharded_dims(GEMMA3_4B), sharded_dims(GLM45_AIR)
    assert (gemma.heads, gemma.kv_heads, gemma.widths) == (8, 4, (10240,))  # the text model's, not SigLIP's 16
    assert (glm.heads, glm.kv_heads, glm.widths) == (96, 8, (10944, 1408))
    assert sharded_dims(GEMMA3_4B_SHIPPED) is None  # heads left to defaults: load_config must fill them
    mha = sharded_dims({"num_attention_heads": 12, "intermediate_size": 3072})
    assert mha.kv_heads == 12  # no KV count: one KV head per attention head


def test_load_config_fills_gemma3_defaults(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(GEMMA3_4B_SHIPPED))
    dims = sharded_dims(load_config(str(tmp_path)))
    assert (dims.heads, dims.kv_heads) == (8, 4)
    assert choose_tensor_parallel(load_config(str(tmp_path)), 8) == 4


@pytest.mark.parametrize(("model", "gpus", "requested", "words"), [
    ("Qwen/Qwen2.5-7B-Instruct", 8, 8, ["28 attention heads", "4 KV heads", "valid sizes up to 8: 1, 2, 4"]),
    # 7 divides the 28 heads but neither splits nor copies the 4 KV heads
    ("Qwen/Qwen2.5-7B-Instruct", 8, 7, ["does not split", "valid sizes up to 8: 1, 2, 4"]),
    ("zai-org/GLM-4.5-Air", 4, 8, ["only 4 GPU(s) are visible", "96 attention heads", "valid sizes up to 4: 1, 2, 4"]),
    ("meta-llama/Llama-3.1-8B-Instruct", 8, 3, ["32 attention heads", "8 KV heads", "1, 2, 4, 8"]),
])
def test_wrong_explicit_size_is_one_line(model, gpus, requested, words):
    with pytest.raises(CharacterError) as err:
        choose_tensor_parallel(EXPECTED[model][0], gpus, requested, model)
    msg = str(err.value)
    assert "\n" not in msg and f"--tensor_parallel_size {requested}" in msg and model in msg
    assert all(w in msg for w in words), msg


def test_explicit_sizes_vllm_accepts_pass():
    assert choose_tensor_parallel(QWEN25_7B, 8, 2) == 2
    assert choose_tensor_parallel(GEMMA3_4B, 8, 8) == 8  # vLLM copies each of the 4 KV heads to 2 GPUs
    with pytest.raises(CharacterError, match="positive"):
        choose_tensor_parallel(QWEN25_7B, 8, -1)


# -- the engine uses it: a node of 8 GPUs, vLLM replaced by a recorder (nothing here has CUDA) ------------------

@pytest.fixture
def engine_on_gpus(tmp_path, monkeypatch):
    """VLLMEngine for a local checkpoint with `config`, as if `gpus` GPUs were visible; returns (engine, LLM kwargs)."""
    from character.engine import vllm as vllm_engine

    started: list[dict] = []

    class RecordingLLM:
        def __init__(self, **kwargs):
            started.append(kwargs)

        def get_tokenizer(self):
            return None

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=RecordingLLM))
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # _build sets it; keep it out of later tests

    def make(config: dict, gpus: int, **settings):
        from character.engine.base import EngineConfig

        (tmp_path / "config.json").write_text(json.dumps(config))
        monkeypatch.setattr(vllm_engine, "_on_gpu", lambda: gpus > 0)
        monkeypatch.setattr(vllm_engine, "_gpu_count", lambda: gpus)
        engine = vllm_engine.VLLMEngine(EngineConfig(model=str(tmp_path), backend="vllm", **settings))
        engine._build(want_lora=False)
        return started[-1]

    make.started = started
    return make


def test_engine_starts_qwen_on_4_of_8_gpus(engine_on_gpus):
    assert engine_on_gpus(QWEN25_7B, 8)["tensor_parallel_size"] == 4  # was 8: vLLM refused to start
    assert engine_on_gpus(LLAMA_31_8B, 8)["tensor_parallel_size"] == 8
    assert engine_on_gpus(QWEN25_7B, 0)["tensor_parallel_size"] == 1  # CPU: unchanged


def test_engine_refuses_wrong_size_before_starting(engine_on_gpus):
    with pytest.raises(CharacterError, match="28 attention heads"):
        engine_on_gpus(QWEN25_7B, 8, tensor_parallel_size=8)
    with pytest.raises(CharacterError, match="only 2 GPU"):
        engine_on_gpus(LLAMA_31_8B, 2, tensor_parallel_size=4)
    assert engine_on_gpus.started == []  # no engine was started for either
