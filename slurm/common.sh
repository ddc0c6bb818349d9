# ---- common part of every job in the chain (inlined into each script by `character slurm submit`) ----------
die() { echo "error: $*" >&2; exit 2; }
: "${SLURM_JOB_ID:?run this script through sbatch (character slurm submit does)}"
: "${SLURM_ARRAY_TASK_ID:?this script is a job array over constitutions; submit it with --array}"
CONSTITUTIONS=({{CONSTITUTIONS}})
CONSTITUTION="${CONSTITUTIONS[$SLURM_ARRAY_TASK_ID]:-}"
[[ -n "$CONSTITUTION" ]] || die "array task $SLURM_ARRAY_TASK_ID has no constitution (there are ${#CONSTITUTIONS[@]})"
PIPELINE={{PIPELINE}}
OUT={{OUT}}
cd {{WORKDIR}} || die "working directory {{WORKDIR}} is missing on $(hostname); use a shared file system"
{{SETUP}}
CHARACTER=({{CHARACTER}})
command -v "${CHARACTER[0]}" >/dev/null \
  || die "'${CHARACTER[0]}' not found on $(hostname); pass --character or --setup to character slurm submit"
[[ -f "$PIPELINE" ]] || die "pipeline file $PIPELINE not found on $(hostname); use a shared file system"
RESTARTS="${SLURM_RESTART_COUNT:-0}"
echo "[$(date -Is)] $SLURM_JOB_NAME task $SLURM_ARRAY_TASK_ID ($CONSTITUTION) on $(hostname), restart $RESTARTS"

# The stages of this job, for this constitution; a finished stage is skipped by its manifest.
RUN=("${CHARACTER[@]}" run "$PIPELINE" --constitution "$CONSTITUTION" --out "$OUT" --from {{FROM}} --until {{UNTIL}})
{{RUN_ARGS}}
if (( RESTARTS > 0 )); then
  # a requeued run: training continues from its last checkpoint (generation resumes from its shards anyway)
  RUN+=(--set resume=true)
fi

# Preemption and time limits: Slurm sends USR1 {{SIGNAL_SECONDS}} s ahead (#SBATCH --signal=B:USR1@...). The job
# requeues itself; Slurm then stops it and starts it again later from the top of this script.
requeue() {
  echo "[$(date -Is)] warning signal: requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
}
trap requeue USR1

# Run a command in the background and wait for it, so that the trap fires while it works (bash runs traps
# only between commands, never during a foreground one).
run() {
  "$@" &
  local pid=$! rc=0
  while true; do
    wait "$pid" && return 0 || rc=$?
    kill -0 "$pid" 2>/dev/null || return "$rc"  # still alive: the wait was cut short by a signal
  done
}
# ---- end of the common part ----------------------------------------------------------------------------------
