"""`character slurm submit PIPELINE.yaml`: the pipeline as a chain of Slurm job arrays.

    character slurm submit pipelines/llama-3.1-8b.yaml --partition gpu --gpus 8 --constitution all
    character slurm submit pipelines/demo.yaml --gpus 0 --dry_run      # print the scripts, submit nothing

Five jobs, each an array with one task per constitution; a constitution's task starts when its own task in the
job before finished well (`--dependency=aftercorr`), so one persona that fails stops only its own chain, and its
later tasks, which can then never run, are cancelled (`--kill-on-invalid-dep=yes`) instead of pending forever:

    generate-dpo (prompts, teacher, student, dpo-data) -> train-dpo -> generate-sft (reflection, interaction,
    sft-data) -> train-sft (train-sft, merge) -> eval

A task runs `character run PIPELINE --constitution C --from FIRST --until LAST`, so it does exactly what a local
run does and skips what is finished. The scripts come from the templates in slurm/ (generate.sh, train.sh,
eval.sh, with common.sh inlined); the rendered ones are kept under OUT/slurm/. Settings come from, in order:
the defaults below, the pipeline file's `slurm:` section (whose `generate:`, `train:` and `eval:` sub-sections
apply to one kind of job), then the flags.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from character.config import build, command, field, suggest
from character.errors import CharacterError

KINDS = ("generate", "train", "eval")


@dataclass(frozen=True)
class Job:
    name: str
    kind: str
    stages: tuple[str, ...]


JOBS = (
    Job("generate-dpo", "generate", ("prompts", "teacher", "student", "dpo-data")),
    Job("train-dpo", "train", ("train-dpo",)),
    Job("generate-sft", "generate", ("reflection", "interaction", "sft-data")),
    Job("train-sft", "train", ("train-sft", "merge")),
    Job("eval", "eval", ("eval",)),
)


@dataclass
class SlurmSettings:
    """Resources and placement of the jobs; any of them may also sit in the pipeline file's `slurm:` section."""

    partition: str = field("", help="partition (empty: the cluster's default)", hash=False)
    account: str = field("", help="account to charge (empty: your default)", hash=False)
    qos: str = field("", help="quality of service (empty: the default)", hash=False)
    gpus: int = field(8, help="GPUs per node (0: CPU only)", hash=False)
    nodes: int = field(1, help="nodes per training job (several: accelerate over srun with a rendezvous)",
                       hash=False)
    cpus: int = field(0, help="CPUs per task (0: cpus_per_gpu for a GPU job, else the cluster's default)",
                      hash=False)
    mem: str = field("", help="memory per node, e.g. 200G (empty: mem_per_gpu for a GPU job, else the cluster's "
                              "default)", hash=False)
    cpus_per_gpu: int = field(8, help="CPUs per GPU asked when `cpus` is 0 (0: the cluster's default, often one "
                                      "CPU, which starves vLLM and the training processes)", hash=False)
    mem_per_gpu: str = field("32G", help="memory per GPU asked when `mem` is empty, e.g. 64G (empty: the cluster's "
                                         "default)", hash=False)
    time: str = field("24:00:00", help="time limit per job", hash=False)
    max_parallel: int = field(0, help="array tasks running at once (0: no limit)", hash=False)
    signal_seconds: int = field(120, help="seconds before the time limit that the job is warned and requeues "
                                          "itself", hash=False)
    sbatch: list[str] = field(factory=list, help="more sbatch options, e.g. ['--constraint=h100']", hash=False)
    setup: str = field("", help="shell lines run first in every job, e.g. 'source .venv/bin/activate'",
                       hash=False)
    character: str = field("", help="how to run character on the nodes (default: this Python -m character)",
                           hash=False)
    logs: str = field("logs", help="directory for the job logs (%x-%A_%a.out)", hash=False)


@dataclass
class SubmitConfig:
    """`character slurm submit` flags: the pipeline, what to run; `settings` holds SlurmSettings flags given."""

    pipeline: str = field("", help="the pipeline YAML (a positional argument)", hash=False)
    constitution: list[str] | None = field(None, help="override the pipeline's constitutions (list or 'all')",
                                           hash=False)
    out: str | None = field(None, help="override the pipeline's output root", hash=False)
    from_stage: str | None = field(None, help="first stage (`--from`); earlier jobs are left out", hash=False)
    until: str | None = field(None, help="last stage; later jobs are left out", hash=False)
    set: list[str] = field(factory=list, help="'STAGE.FIELD=VALUE' overrides passed to every `character run`",
                           hash=False, split=False)
    dry_run: bool = field(False, help="print the scripts and the sbatch commands; submit nothing", hash=False)
    settings: dict = field(factory=dict, help="SlurmSettings given as flags (they win over the pipeline file)",
                           hash=False)


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(SlurmSettings))


def settings_for(kind: str, section: dict, flags: dict) -> SlurmSettings:
    """Defaults < the pipeline's `slurm:` section < its `<kind>:` sub-section < flags."""
    values: dict = {}
    for key, value in section.items():
        if key in KINDS:
            if not isinstance(value, dict):
                raise CharacterError(f"slurm.{key}: must be a mapping of settings, not {value!r}")
            continue
        if key not in SETTING_NAMES:
            raise CharacterError(f"slurm.{key}: unknown setting{suggest(key, SETTING_NAMES + KINDS)}; settings: "
                                 f"{', '.join(SETTING_NAMES)} (or a {'/'.join(KINDS)} sub-section)")
        values[key] = value
    values.update(section.get(kind) or {})
    values.update({k: v for k, v in flags.items() if k in SETTING_NAMES and v is not None})
    return build(SlurmSettings, values, where=f"slurm ({kind} jobs)")


_SIZE = re.compile(r"\d+([KMGT]B?)?", re.IGNORECASE)
_CPU_OPTIONS = {"--cpus-per-task", "-c", "--cpus-per-gpu"}
_MEM_OPTIONS = {"--mem", "--mem-per-cpu", "--mem-per-gpu"}


def resources(s: SlurmSettings, extra: list[str]) -> list[str]:
    """CPU and memory options. A GPU job that asks for neither gets the cluster's default, often one CPU: sized
    from the GPUs instead, unless `cpus`/`mem` or an option in `sbatch` (`extra`) says otherwise."""
    for name in ("mem", "mem_per_gpu"):
        value = getattr(s, name)
        if value and not _SIZE.fullmatch(value):
            raise CharacterError(f"slurm.{name} '{value}': not a Slurm memory size; write a number with K, M, G "
                                 f"or T, e.g. 64G")
    for name in ("cpus", "cpus_per_gpu", "gpus"):
        if getattr(s, name) < 0:
            raise CharacterError(f"slurm.{name} {getattr(s, name)}: must be 0 or more")
    given = {re.match(r"--[\w-]+|-\w|", o).group(0) for o in extra}
    out = []
    if s.cpus > 0:
        out.append(f"--cpus-per-task={s.cpus}")
    elif s.gpus > 0 and s.cpus_per_gpu > 0 and not given & _CPU_OPTIONS:
        out.append(f"--cpus-per-gpu={s.cpus_per_gpu}")
    if s.mem:
        out.append(f"--mem={s.mem}")
    elif s.gpus > 0 and s.mem_per_gpu and not given & _MEM_OPTIONS:
        out.append(f"--mem-per-gpu={s.mem_per_gpu}")
    return out


def sbatch_command(script: Path | str, after: str | None) -> list[str]:
    """Task i waits for task i of the job before (aftercorr), not for all of it (afterok): a constitution whose
    task fails stops only its own chain; its later tasks, whose dependency can then never be met, are cancelled
    rather than left pending (DependencyNeverSatisfied) forever."""
    dep = [f"--dependency=aftercorr:{after}", "--kill-on-invalid-dep=yes"] if after else []
    return ["sbatch", "--parsable", *dep, str(script)]


def _template(name: str) -> str:
    from character.resources import data_path

    path = data_path("slurm", name)
    if not path.is_file():
        raise CharacterError(f"{path}: Slurm template missing; reinstall character or set CHARACTER_DATA")
    return path.read_text(encoding="utf-8")


def render(job: Job, stages: list[str], s: SlurmSettings, *, pipeline: Path, out: Path,
           constitutions: list[str], run_args: list[str]) -> str:
    """One job's batch script, every placeholder filled."""
    sbatch = [f"--time={s.time}"]
    for flag, value in (("partition", s.partition), ("account", s.account), ("qos", s.qos)):
        if value:
            sbatch.append(f"--{flag}={value}")
    if s.gpus > 0:
        sbatch.append(f"--gpus-per-node={s.gpus}")
    extra = [o if o.startswith("-") else f"--{o}" for o in s.sbatch]
    sbatch += resources(s, extra) + extra
    array = f"0-{len(constitutions) - 1}" + (f"%{s.max_parallel}" if s.max_parallel > 0 else "")
    character = s.character or f"{shlex.quote(sys.executable)} -m character"
    logs = Path(s.logs).expanduser()
    logs = logs if logs.is_absolute() else Path.cwd() / logs
    training = [i for i, x in enumerate(stages) if x.startswith("train-")]
    last_training = training[-1] if training else len(stages) - 1
    nodes = s.nodes if job.kind == "train" and training else 1  # merge alone needs no second node
    values = {
        "COMMON": _template("common.sh").rstrip("\n"),
        "JOB_NAME": f"character-{job.name}",
        "STAGES": ", ".join(stages),
        "ARRAY": array,
        "LOGS": str(logs),
        "SIGNAL_SECONDS": str(s.signal_seconds),
        "NODES": str(nodes),
        "GPUS": str(s.gpus),
        "SBATCH": "\n".join(f"#SBATCH {o}" for o in sbatch),
        "CONSTITUTIONS": " ".join(shlex.quote(c) for c in constitutions),
        "PIPELINE": shlex.quote(str(pipeline)),
        "OUT": shlex.quote(str(out)),
        "WORKDIR": shlex.quote(str(Path.cwd())),
        "SETUP": s.setup.strip() or "# (no --setup lines)",
        "CHARACTER": character,
        "LAST_TRAINING": stages[last_training],
        "AFTER_TRAINING": " ".join(stages[last_training + 1:]),
        "FROM": stages[0],
        "UNTIL": stages[-1],
        "RUN_ARGS": "RUN+=(" + " ".join(f"--set {shlex.quote(a)}" for a in run_args) + ")" if run_args else "",
    }
    text = _template(f"{job.kind}.sh")
    # COMMON first: it holds placeholders of its own
    text = text.replace("{{COMMON}}", values.pop("COMMON"))
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = sorted(set(re.findall(r"\{\{([A-Z_]+)\}\}", text)))
    assert not left, f"unfilled placeholders in slurm/{job.kind}.sh: {left}"
    return text


def plan(cfg: SubmitConfig) -> list[tuple[Job, list[str], str]]:
    """(job, its stages, its script) for every job the range covers, validated like a local run."""
    from character import pipeline as P

    flags = {k: getattr(cfg, k) for k in ("constitution", "out", "until", "set") if getattr(cfg, k)}
    if cfg.from_stage:
        flags["from"] = cfg.from_stage
    pipe = P.load_pipeline(cfg.pipeline, **flags)
    P.resolve(pipe)  # every stage config builds: mistakes show here, not in a job hours later
    consts = [ref for _, ref in P.constitutions(pipe)]
    wanted = [s.name for s in P.selected(pipe)]
    section = pipe.slurm or {}
    if not isinstance(section, dict):
        raise CharacterError(f"{cfg.pipeline}: 'slurm' must be a mapping of settings")
    out = Path(pipe.out).expanduser().resolve()
    jobs = []
    for job in JOBS:
        stages = [s for s in job.stages if s in wanted]
        if not stages:
            continue
        s = settings_for(job.kind, section, cfg.settings)
        script = render(job, stages, s, pipeline=Path(cfg.pipeline).resolve(), out=out, constitutions=consts,
                        run_args=list(cfg.set))
        jobs.append((job, stages, script))
    return jobs


def submit(cfg: SubmitConfig) -> list[str]:
    """Write the scripts under OUT/slurm/, submit them chained task to task; returns the job ids."""
    from character import pipeline as P
    from character.artifacts import atomic_write_json, atomic_write_text

    if not cfg.pipeline:
        raise CharacterError("give the pipeline file: character slurm submit PIPELINE.yaml")
    jobs = plan(cfg)
    out = Path(P.load_pipeline(cfg.pipeline, **({"out": cfg.out} if cfg.out else {})).out).expanduser().resolve()
    if cfg.dry_run:
        prev = None
        for job, _, script in jobs:
            cmd = sbatch_command(out / "slurm" / f"{job.name}.sh", f"<{prev}>" if prev else None)
            print(f"# ---- {' '.join(cmd)}\n{script}")
            prev = job.name
        return []
    if shutil.which("sbatch") is None:
        raise CharacterError("sbatch not found: run this on a Slurm login node, or add --dry_run to see the scripts")
    ids: list[str] = []
    for job, stages, script in jobs:
        path = out / "slurm" / f"{job.name}.sh"
        atomic_write_text(path, script)
        path.chmod(0o755)
        logs = re.search(r"^#SBATCH --output=(.*)/", script, re.M)
        if logs:
            Path(logs.group(1)).mkdir(parents=True, exist_ok=True)  # sbatch does not create the log directory
        r = subprocess.run(sbatch_command(path, ids[-1] if ids else None), capture_output=True, text=True)
        if r.returncode != 0:
            done = f" (already submitted: {', '.join(ids)}; `scancel` them if you do not want them)" if ids else ""
            raise CharacterError(f"sbatch {path.name} failed: {r.stderr.strip() or r.stdout.strip()}{done}")
        ids.append(r.stdout.strip().split(";")[0])
        print(f"{ids[-1]}  {job.name}: {', '.join(stages)}", flush=True)
    atomic_write_json(out / "slurm" / "jobs.json", {j.name: i for (j, _, _), i in zip(jobs, ids)})
    print(f"submitted {len(ids)} jobs; watch them with `squeue -u $USER`; outputs in {out}; a constitution whose "
          f"task fails stops there (Slurm cancels its later tasks), the others run on")
    return ids


COMMANDS = {"submit": command(
    SubmitConfig, submit, "Render the Slurm scripts of a pipeline and submit them as a chain of job arrays.",
    positional="pipeline", config=None, nested={"settings": SlurmSettings}, aliases={"from": "from_stage"},
    loader=lambda _, **values: build(SubmitConfig, values, where="options"))}
