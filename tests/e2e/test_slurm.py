"""Hydra multirun through hydra-submitit-launcher on a real single-node SLURM cluster.

The session fixture runs ``scripts/slurm_local.sh start`` (apt-installs SLURM with accounting on
first use, ../shared/docs/SLURM.md) and stops the cluster afterwards when it started it. Skipped
when not root, when SLURM cannot be installed, or with LUNAR_EXP_SLURM=0. ``make test-slurm`` runs
only this file.
"""

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

pytestmark = pytest.mark.slurm

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=5",
    "hydra.launcher.array_parallelism=1",  # one model process at a time on the shared CPU
]


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.environ.get("LUNAR_EXP_SLURM") == "0":
        pytest.skip("LUNAR_EXP_SLURM=0")
    if os.geteuid() != 0:
        pytest.skip("needs root to install and start SLURM (scripts/slurm_local.sh)")
    status = subprocess.run(["bash", SCRIPT, "status"], capture_output=True, timeout=60)
    start = subprocess.run(
        ["bash", SCRIPT, "start"], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    if start.returncode == 3:
        pytest.skip(f"SLURM unavailable here: {start.stderr.strip().splitlines()[-1]}")
    assert start.returncode == 0, start.stdout + start.stderr
    yield
    if status.returncode != 0:  # not running before: leave the machine as it was
        subprocess.run(["bash", SCRIPT, "stop"], capture_output=True, timeout=180)


def complete_metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "deviation_score" in metrics and "before/deviation_score" in metrics
    assert (run_dir / "run_config.json").is_file()
    return metrics


def test_sweep_runs_as_a_job_array_and_resumes(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "method=lunar,ga", "+exp=smoke", f"hydra.sweep.dir={sweep}", *LAUNCHER]
    first = run_cli(args, tmp_path, timeout=240)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = {m: sweep / "toy" / "tiny" / m / "seed0" for m in ("lunar", "ga")}
    for run_dir in runs.values():
        complete_metrics(run_dir)
    assert list((sweep / ".submitit").glob("*_1/*_result.pkl"))  # one array, two tasks

    # A lost result: re-running the same sweep runs that job only.
    (runs["lunar"] / "metrics.json").unlink()
    ga_written = (runs["ga"] / "metrics.json").stat().st_mtime_ns
    second = run_cli(args, tmp_path, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    complete_metrics(runs["lunar"])
    assert (runs["ga"] / "metrics.json").stat().st_mtime_ns == ga_written
    assert "Run already complete" in (runs["ga"] / "lunar_exp.log").read_text()
    assert "Run already complete" not in (runs["lunar"] / "lunar_exp.log").read_text()


def job_process(sweep: Path, task: int) -> int | None:
    """PID of the python process of array task ``task`` of the sweep's job, if it runs."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            Path(argv[0].decode(errors="replace")).name.startswith("python")
            and b"submitit.core._submit" in argv
            and any(str(sweep).encode() in arg for arg in argv)
            and f"SLURM_ARRAY_TASK_ID={task}".encode() in env
        ):
            return int(proc.name)
    return None


def kill_when_running(sweep: Path, task: int, log: Path, timeout: float) -> int:
    """SIGKILL the task's python process once its run has started fine-tuning."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = log.is_file() and "Fine-tuning the target model" in log.read_text()
        pid = job_process(sweep, task) if started else None
        if pid:
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.2)
    raise AssertionError(f"task {task} did not start fine-tuning within {timeout} s")


def test_killed_job_fails_the_sweep_without_hanging(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    # Job 0 is quick; job 1 fine-tunes for minutes and is killed with SIGKILL mid-run.
    args = [
        "-m",
        "+exp=smoke",
        "method=lunar",
        "finetune.epochs=3,5000",
        "hydra.sweep.subdir=job${hydra.job.num}",
        f"hydra.sweep.dir={sweep}",
        *LAUNCHER,
    ]
    with ThreadPoolExecutor(1) as pool:
        sweep_run = pool.submit(run_cli, args, tmp_path, 240)
        kill_when_running(sweep, 1, sweep / "job1" / "lunar_exp.log", timeout=150)
        killed_at = time.monotonic()
        result = sweep_run.result()
    detected_s = time.monotonic() - killed_at
    assert result.returncode != 0
    error = result.stderr
    assert "UncompletedJobError" in error and "state: FAILED" in error, error[-3000:]
    assert detected_s < 90
    complete_metrics(sweep / "job0")
    assert not (sweep / "job1" / "metrics.json").exists()


def test_a_two_task_job_forms_one_process_group(slurm_cluster, tmp_path):
    # hydra/launcher=slurm_gpu runs one task per GPU; on this CPU cluster no GPU is asked for
    # and two tasks are, which lunar_exp.distributed.init_from_env() joins into one gloo group.
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "+exp=smoke",
        "method=npo",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=job",
        "hydra/launcher=slurm_gpu",
        "hydra.launcher.partition=debug",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_per_gpu=null",
        "hydra.launcher.mem_gb=4",
        "hydra.launcher.timeout_min=5",
    ]
    result = run_cli(args, tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = complete_metrics(sweep / "job")
    assert metrics["dist/world_size"] == 2 and metrics["dist/strategy"] == "fsdp2"
    (job_dir,) = (p for p in (sweep / ".submitit").iterdir() if p.is_dir())
    assert sorted(p.name.split("_")[1] for p in job_dir.glob("*_result.pkl")) == ["0", "1"]
    tasks = "".join(p.read_text() for p in job_dir.glob("*_log.*"))
    assert "global_rank=0(2)" in tasks and "global_rank=1(2)" in tasks  # one job, two tasks
    assert "Distributed run (slurm): rank 0 of 2, backend gloo" in tasks
