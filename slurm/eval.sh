#!/usr/bin/env bash
# character: evaluation job ({{STAGES}}), one constitution per array task: the base and the trained adapter in one
# vLLM engine (multi-LoRA), then results.json, report.md and plots under OUT/<constitution>/eval/.
# Rendered by `character slurm submit PIPELINE.yaml`; run `character slurm submit --dry_run` to see it filled in.
#SBATCH --job-name={{JOB_NAME}}
#SBATCH --array={{ARRAY}}
#SBATCH --output={{LOGS}}/%x-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@{{SIGNAL_SECONDS}}
#SBATCH --nodes=1
#SBATCH --ntasks=1
{{SBATCH}}
set -euo pipefail
{{COMMON}}
run "${RUN[@]}"
echo "[$(date -Is)] done"
