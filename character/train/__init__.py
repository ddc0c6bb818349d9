"""Training: DPO distillation and introspective SFT as LoRA adapters (TRL + PEFT), and merging them.

    character train dpo --data DPO_DATA --out OUT          # dpo.py
    character train sft --data SFT_DATA --adapter OUT --out OUT2   # sft.py
    character merge --adapters OUT,OUT2 --weights 1.0,0.25 --out MERGED [--full]   # merge.py

Only light modules are imported here: torch, TRL and PEFT load inside the commands.
"""

from character.train.dpo import DPO_COMMAND, DPOTrainConfig, train_dpo
from character.train.sft import SFT_COMMAND, SFTTrainConfig, train_sft

COMMANDS = {"dpo": DPO_COMMAND, "sft": SFT_COMMAND}

__all__ = ["COMMANDS", "DPOTrainConfig", "SFTTrainConfig", "train_dpo", "train_sft"]
