"""Pipeline files and Slurm scripts without running anything: loading, wiring, errors, rendering.

    pytest tests/pipeline/test_pipeline_config.py
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from character import pipeline as P
from character import slurm as S
from character.errors import CharacterError
from character.resources import data_path

SHIPPED = sorted(data_path("pipelines").glob("*.yaml"))


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def test_every_shipped_pipeline_opens_with_its_command_and_resolves():
    assert SHIPPED, "no pipelines/*.yaml shipped"
    for path in SHIPPED:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# character ") and path.name in first, f"{path.name}: first line is {first!r}"
        cfg = P.load_pipeline(path)
        plan = P.resolve(cfg)  # every stage config builds (unknown keys would raise)
        assert [s.name for _, s, _ in plan][: len(P.STAGES)] == list(P.STAGE_NAMES)


def test_wiring_connects_each_stage_to_the_ones_before(tmp_path):
    cfg = P.load_pipeline(data_path("pipelines", "demo.yaml"), out=str(tmp_path), constitution=["sarcasm"])
    by = {s.name: sc for _, s, sc in P.resolve(cfg)}
    d = tmp_path / "sarcasm"
    assert by["teacher"].prompts == str(d / "prompts") and by["student"].prompts == str(d / "prompts")
    assert (by["dpo-data"].chosen, by["dpo-data"].rejected) == (str(d / "teacher"), str(d / "student"))
    assert by["train-dpo"].data == str(d / "dpo-data")
    assert by["train-sft"].adapter == str(d / "train-dpo") and by["train-sft"].data == str(d / "sft-data")
    assert by["merge"].adapters == [str(d / "train-dpo"), str(d / "train-sft")]
    assert by["eval"].adapter == [str(d / "merge")]
    assert by["teacher"].model == cfg.teacher and by["train-dpo"].model == cfg.student
    assert all(sc.out == str(d / name) for name, sc in by.items())


def test_set_overrides_one_stage_or_the_defaults(tmp_path):
    cfg = P.load_pipeline(data_path("pipelines", "demo.yaml"), out=str(tmp_path),
                          set=["train-dpo.learning_rate=0.001", "dtype=float32"])
    by = {s.name: sc for _, s, sc in P.resolve(cfg)}
    assert by["train-dpo"].learning_rate == 0.001
    assert by["train-sft"].learning_rate != 0.001
    assert by["teacher"].dtype == "float32" and by["train-sft"].dtype == "float32"


@pytest.mark.parametrize("text, flags, message", [
    ("stages: {trian-dpo: {}}\n", {}, "did you mean 'train-dpo'"),
    ("stages: {train-dpo: {learning_rte: 1}}\n", {}, "did you mean 'learning_rate'"),
    ("stages: {train-dpo: {out: x}}\n", {}, "set by the pipeline"),
    ("defaults: {backnd: hf}\n", {}, "did you mean 'backend'"),
    ("constitution: [sarcsm]\n", {}, "did you mean 'sarcasm'"),
    ("", {"from": "train-dop"}, "did you mean 'train-dpo'"),
    ("", {"from": "merge", "until": "prompts"}, "swap them"),
    ("", {"set": ["novalue"]}, "STAGE.FIELD=VALUE"),
    ("teachr: x\n", {}, "did you mean 'teacher'"),
])
def test_bad_pipeline_files_give_one_line(tmp_path, text, flags, message):
    with pytest.raises(CharacterError, match=message) as e:
        P.resolve(P.load_pipeline(_write(tmp_path, text), **flags))
    assert "\n" not in str(e.value)


def test_from_needs_finished_earlier_stages(tmp_path, cli):
    r = cli("run", data_path("pipelines", "demo.yaml"), "--out", tmp_path, "--from", "train-dpo")
    assert r.returncode == 2, r.stderr
    assert "'dpo-data'" in r.stderr and "no finished output" in r.stderr and "Traceback" not in r.stderr


def test_constitution_file_outside_the_repo_gets_its_own_directory(tmp_path):
    src = data_path("constitutions", "sarcasm.yaml").read_text()
    mine = tmp_path / "elsewhere" / "wry.yaml"
    mine.parent.mkdir()
    mine.write_text(src.replace("name: sarcasm", "name: wry", 1))
    cfg = P.load_pipeline(data_path("pipelines", "demo.yaml"), constitution=[str(mine)], out=str(tmp_path / "o"))
    [(name, ref)] = P.constitutions(cfg)
    assert name == "wry" and ref == str(mine.resolve())
    by = {s.name: sc for _, s, sc in P.resolve(cfg)}
    assert by["prompts"].constitution == str(mine.resolve())
    assert by["eval"].out == str(tmp_path / "o" / "wry" / "eval")


def test_all_means_every_shipped_constitution():
    from character import constitution as C

    cfg = P.load_pipeline(data_path("pipelines", "demo.yaml"), constitution=["all"])
    assert [n for n, _ in P.constitutions(cfg)] == C.available()


# ---- Slurm scripts -------------------------------------------------------------------------------------
def test_dry_run_prints_a_chain_of_valid_scripts(tmp_path, cli):
    r = cli("slurm", "submit", data_path("pipelines", "demo.yaml"), "--dry_run", "--gpus", "4", "--nodes", "2",
            "--partition", "gpu", "--constitution", "sarcasm,humor", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    scripts = r.stdout.split("# ---- sbatch")[1:]
    assert [s.split("\n", 1)[0].rsplit("/", 1)[1] for s in scripts] == [
        "generate-dpo.sh", "train-dpo.sh", "generate-sft.sh", "train-sft.sh", "eval.sh"]
    assert "--dependency" not in scripts[0].split("\n", 1)[0]
    # task to task: a constitution that fails stops only its own chain, and what can no longer run is cancelled
    for s, before in zip(scripts[1:], ("generate-dpo", "train-dpo", "generate-sft", "train-sft")):
        assert f"--dependency=aftercorr:<{before}> --kill-on-invalid-dep=yes " in s.split("\n", 1)[0]
    for i, s in enumerate(scripts):
        body = s.split("\n", 1)[1]
        for needed in ("set -euo pipefail", "#SBATCH --array=0-1", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@",
                       "%x-%A_%a.out", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4",
                       "#SBATCH --cpus-per-gpu=8", "#SBATCH --mem-per-gpu=32G",
                       "trap requeue USR1", "CONSTITUTIONS=(sarcasm humor)"):
            assert needed in body, f"script {i} lacks {needed!r}"
        assert "{{" not in body
        path = tmp_path / f"s{i}.sh"
        path.write_text(body)
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert "#SBATCH --nodes=2" in scripts[1] and "srun" in scripts[1] and "--main_process_ip" in scripts[1]
    assert "#SBATCH --nodes=1" in scripts[0]
    assert not list(tmp_path.glob("slurm/*")), "a dry run wrote files"


def test_slurm_settings_layer_file_kind_and_flags(tmp_path):
    section = {"partition": "a", "time": "1:00:00", "train": {"time": "9:00:00", "nodes": 4}}
    assert S.settings_for("generate", section, {}).time == "1:00:00"
    train = S.settings_for("train", section, {"partition": "b"})
    assert (train.time, train.nodes, train.partition) == ("9:00:00", 4, "b")
    with pytest.raises(CharacterError, match="did you mean 'partition'"):
        S.settings_for("train", {"partion": "x"}, {})


def test_sbatch_chains_task_to_task_and_cancels_what_can_never_run():
    assert S.sbatch_command("a.sh", None) == ["sbatch", "--parsable", "a.sh"]
    assert S.sbatch_command("b.sh", "41") == ["sbatch", "--parsable", "--dependency=aftercorr:41",
                                              "--kill-on-invalid-dep=yes", "b.sh"]


def _resource_lines(**settings) -> list[str]:
    text = S.render(S.JOBS[1], ["train-dpo"], S.SlurmSettings(**settings), pipeline=Path("p.yaml"), out=Path("o"),
                    constitutions=["sarcasm"], run_args=[])
    return [line for line in text.splitlines() if line.startswith(("#SBATCH --cpus", "#SBATCH --mem", "#SBATCH -c"))]


def test_gpu_jobs_ask_for_cpus_and_memory_per_gpu_unless_told():
    # the cluster's default is often one CPU, which starves a GPU job
    assert _resource_lines(gpus=8) == ["#SBATCH --cpus-per-gpu=8", "#SBATCH --mem-per-gpu=32G"]
    assert _resource_lines(gpus=4, cpus_per_gpu=12, mem_per_gpu="80G") == [
        "#SBATCH --cpus-per-gpu=12", "#SBATCH --mem-per-gpu=80G"]
    # an explicit total wins (Slurm refuses --cpus-per-task with --cpus-per-gpu, --mem with --mem-per-gpu)
    assert _resource_lines(gpus=8, cpus=96, mem="900G") == ["#SBATCH --cpus-per-task=96", "#SBATCH --mem=900G"]
    assert _resource_lines(gpus=8, sbatch=["--mem-per-cpu=4G", "-c 16"]) == ["#SBATCH --mem-per-cpu=4G",
                                                                                "#SBATCH -c 16"]
    assert _resource_lines(gpus=8, cpus_per_gpu=0, mem_per_gpu="") == []
    assert _resource_lines(gpus=0) == []  # CPU jobs: the cluster's default, as before
    assert _resource_lines(gpus=0, cpus=2, mem="4G") == ["#SBATCH --cpus-per-task=2", "#SBATCH --mem=4G"]


def test_per_gpu_defaults_are_settings_of_the_pipeline_file():
    section = {"cpus_per_gpu": 6, "train": {"mem_per_gpu": "120G"}}
    assert (S.settings_for("generate", section, {}).cpus_per_gpu, S.settings_for("generate", section, {}).mem_per_gpu
            ) == (6, "32G")
    train = S.settings_for("train", section, {"cpus_per_gpu": 10})
    assert (train.cpus_per_gpu, train.mem_per_gpu) == (10, "120G")


def test_bad_cpu_or_memory_setting_is_one_line_before_any_submission(tmp_path, cli):
    with pytest.raises(CharacterError, match=r"slurm.mem_per_gpu '32 gigs': not a Slurm memory size.*e.g. 64G"):
        _resource_lines(gpus=8, mem_per_gpu="32 gigs")
    with pytest.raises(CharacterError, match="slurm.cpus_per_gpu -1: must be 0 or more"):
        _resource_lines(gpus=8, cpus_per_gpu=-1)
    r = cli("slurm", "submit", data_path("pipelines", "tiny.yaml"), "--dry_run", "--gpus", "2", "--mem", "lots",
            "--out", tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "slurm.mem 'lots'" in r.stderr, r.stderr


def test_script_run_outside_slurm_says_what_is_missing(tmp_path):
    text = S.render(S.JOBS[0], list(S.JOBS[0].stages), S.SlurmSettings(gpus=0), pipeline=tmp_path / "p.yaml",
                    out=tmp_path, constitutions=["sarcasm"], run_args=[])
    path = tmp_path / "job.sh"
    path.write_text(text)
    env = {"PATH": "/usr/bin:/bin"}
    r = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "run this script through sbatch" in r.stderr
    r = subprocess.run(["bash", str(path)], capture_output=True, text=True,
                       env={**env, "SLURM_JOB_ID": "1", "SLURM_ARRAY_TASK_ID": "3"})
    assert r.returncode == 2 and "array task 3 has no constitution" in r.stderr
    r = subprocess.run(["bash", str(path)], capture_output=True, text=True,
                       env={**env, "SLURM_JOB_ID": "1", "SLURM_ARRAY_TASK_ID": "0"})
    assert r.returncode == 2 and "pipeline file" in r.stderr and "not found" in r.stderr


def test_apc_dpo_is_one_setting(tmp_path):
    cfg = P.load_pipeline("pipelines/demo.yaml", set=["dpo-data.apc_select=true"], out=str(tmp_path))
    plan = {s.name: sc for _, s, sc in P.resolve(cfg)}
    assert plan["dpo-data"].apc_select and plan["teacher"].n == 4  # the teacher samples what APC-DPO picks from
    cfg = P.load_pipeline("pipelines/demo.yaml", set=["dpo-data.apc_select=true", "teacher.n=6"], out=str(tmp_path))
    assert {s.name: sc for _, s, sc in P.resolve(cfg)}["teacher"].n == 6
    cfg = P.load_pipeline("pipelines/demo.yaml", out=str(tmp_path))
    assert {s.name: sc for _, s, sc in P.resolve(cfg)}["teacher"].n == 1
