#!/usr/bin/env bash
# character: generation job ({{STAGES}}), one constitution per array task; vLLM uses every GPU of the node.
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
# vLLM's tensor_parallel_size 0 (the default) spreads one model copy over every GPU Slurm gave this job
run "${RUN[@]}"
echo "[$(date -Is)] done"
