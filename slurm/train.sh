#!/usr/bin/env bash
# character: training job ({{STAGES}}), one constitution per array task: `accelerate launch` (+ DeepSpeed, as
# the pipeline's `launcher` says) over every GPU of {{NODES}} node(s); several nodes meet through a rendezvous.
# Rendered by `character slurm submit PIPELINE.yaml`; run `character slurm submit --dry_run` to see it filled in.
#SBATCH --job-name={{JOB_NAME}}
#SBATCH --array={{ARRAY}}
#SBATCH --output={{LOGS}}/%x-%A_%a.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@{{SIGNAL_SECONDS}}
#SBATCH --nodes={{NODES}}
#SBATCH --ntasks-per-node=1
{{SBATCH}}
set -euo pipefail
{{COMMON}}
GPUS={{GPUS}}
NNODES="${SLURM_NNODES:-1}"
if (( GPUS > 0 )); then
  RUN+=(--set "num_processes=$(( NNODES * GPUS ))")  # accelerate counts processes over all machines
fi
if (( NNODES > 1 )); then
  MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
  MASTER_PORT=$(( 20000 + SLURM_JOB_ID % 20000 ))
  export MASTER_ADDR MASTER_PORT
  # one pipeline process per node; each starts `accelerate launch` with its own machine rank and they meet at
  # MASTER_ADDR:MASTER_PORT (the first node); --kill-on-bad-exit stops all nodes when one fails
  # (a later --until/--from overrides the one in RUN)
  run srun --nodes="$NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c \
    'exec "$@" --set "launcher_args=--num_machines $SLURM_NNODES --machine_rank $SLURM_NODEID --main_process_ip $MASTER_ADDR --main_process_port $MASTER_PORT"' \
    _ "${RUN[@]}" --until {{LAST_TRAINING}}
  # what follows training in this job (merge) is one process's work, done here on the first node
  REST=({{AFTER_TRAINING}})
  if (( ${#REST[@]} > 0 )); then
    run "${RUN[@]}" --from "${REST[0]}"
  fi
else
  run "${RUN[@]}"
fi
echo "[$(date -Is)] done"
