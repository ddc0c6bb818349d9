"""character: character training for LLM assistants.

Constitutions -> DPO distillation -> introspective SFT -> evaluation, on vLLM, TRL and PEFT.
Nothing heavy is imported here: `import character` and `character --help` stay fast.
"""

__version__ = "0.1.0"
