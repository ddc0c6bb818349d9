"""The merged DPO+SFT adapter loads in vLLM (LoRARequest) and in transformers (PeftModel) and changes greedy output.

vLLM runs in a child process (it spawns workers, which needs a `__main__` guard that pytest does not have).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROMPTS = ["Tell me about the sea.", "What do you think of owls?", "Describe a quiet library."]

VLLM_SCRIPT = r'''
import json, sys

def main():
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    base, adapter, rank, prompts = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    llm = LLM(model=base, enable_lora=True, max_lora_rank=rank, max_loras=1, enforce_eager=True,
              max_model_len=512, dtype="bfloat16")
    params = SamplingParams(temperature=0.0, max_tokens=12)
    chats = [[{"role": "user", "content": p}] for p in prompts]
    plain = [o.outputs[0].text for o in llm.chat(chats, params)]
    tuned = [o.outputs[0].text for o in llm.chat(chats, params, lora_request=LoRARequest("merged", 1, adapter))]
    print("RESULT " + json.dumps({"base": plain, "lora": tuned}), flush=True)

if __name__ == "__main__":
    main()
'''


def _greedy_hf(base: str, adapter: str | None) -> list[str]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter)
    texts = []
    for p in PROMPTS:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        texts.append(tok.decode(out[0, ids["input_ids"].shape[1]:]))
    return texts


@pytest.mark.slow
def test_merged_adapter_changes_transformers_output(trained, tiny_llama_path):
    assert _greedy_hf(tiny_llama_path, str(trained["merged"])) != _greedy_hf(tiny_llama_path, None)


@pytest.mark.slow
@pytest.mark.vllm
def test_merged_adapter_loads_in_vllm(trained, tiny_llama_path, tmp_path):
    rank = json.loads((trained["merged"] / "merge.json").read_text())["rank"]
    script = tmp_path / "serve_lora.py"
    script.write_text(VLLM_SCRIPT)
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, str(script), tiny_llama_path, str(trained["merged"]), str(rank),
                        json.dumps(PROMPTS)], capture_output=True, text=True, env=env, timeout=600)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-2000:] + r.stderr[-4000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["lora"] != result["base"]
