"""Launcher and frozen-sweep configs compose as documented (no jobs are started here)."""

import os

import pytest
from omegaconf import OmegaConf

from lunar_exp.bookkeeping import local_gpus
from tests.conftest import compose_config


def launcher(overrides):
    cfg = compose_config(overrides, hydra_cfg=True)
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_slurm_launcher_defaults_local_values_and_command_line():
    default = launcher(["hydra/launcher=slurm", "hydra.sweep.dir=/tmp/sweep"])
    assert default["_target_"].endswith("SlurmLauncher")
    assert default["timeout_min"] >= 5
    assert (
        default["signal_delay_s"] <= 30 and default["submitit_folder"] == "/tmp/sweep/.submitit/%j"
    )
    # conf/local/default.yaml puts its values under `slurm:`; the command line wins over them
    local = ["++local.slurm.partition=gpu", "++local.slurm.mem_gb=64", "++local.slurm.setup=[a]"]
    cfg = launcher(["hydra/launcher=slurm", *local, "hydra.launcher.mem_gb=3"])
    assert (cfg["partition"], cfg["mem_gb"], cfg["setup"]) == ("gpu", 3, ["a"])


def test_local_launcher_is_submitits_local_executor():
    assert launcher(["hydra/launcher=local"])["_target_"].endswith("LocalLauncher")


def test_frozen_sweeps_have_a_fixed_sweep_dir():
    # sweep_methods sweeps glob(*,exclude=none): every method of conf/method/ but none
    for name, methods in (("methods", "glob(*,exclude=none)"), ("smoke", "lunar,ga")):
        cfg = compose_config([f"+exp=sweep_{name}", "paths.output_root=/o"], hydra_cfg=True)
        assert cfg.hydra.sweep.dir == f"/o/sweeps/{name}"
        assert cfg.hydra.sweeper.params.method == methods


def sbatch_lines(params: dict) -> set[str]:
    """The #SBATCH lines submitit writes for the launcher's settings (as the plugin maps them)."""
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    renames = SlurmExecutor._equivalence_dict() or {}
    keys = ("gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb", "mem_per_gpu")
    sbatch = {renames.get(k, k): params[k] for k in keys if params[k] is not None}
    if "mem" in sbatch:
        sbatch["mem"] = f"{sbatch['mem']}GB"
    text = _make_sbatch_string(command="true", folder="/tmp/f", **sbatch)
    return {line for line in text.splitlines() if line.startswith("#SBATCH")}


def test_slurm_gpu_launcher_gives_each_gpu_a_task_and_7b_sized_host_memory():
    one = launcher(["hydra/launcher=slurm_gpu", "hydra.sweep.dir=/tmp/sweep"])
    assert one["_target_"].endswith("SlurmLauncher")
    assert (one["gpus_per_node"], one["tasks_per_node"]) == (1, 1)
    # A 7B bf16 checkpoint alone is 13.5 GB in host RAM; slurm.yaml's 8 GB per node is switched
    # off for memory per GPU (SLURM refuses --mem together with --mem-per-gpu).
    assert one["mem_gb"] is None and int(one["mem_per_gpu"].rstrip("G")) >= 32
    assert one["cpus_per_task"] >= 8 and one["signal_delay_s"] <= 30
    four = launcher(["hydra/launcher=slurm_gpu", "hydra.launcher.gpus_per_node=4"])
    assert {"#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4"} <= sbatch_lines(four)
    assert "#SBATCH --mem-per-gpu=40G" in sbatch_lines(four)
    assert not any(line.startswith("#SBATCH --mem=") for line in sbatch_lines(four))


def test_slurm_gpu_launcher_keeps_the_local_settings():
    local = ["++local.slurm.partition=a100", "++local.slurm.gpus_per_node=2"]
    cfg = launcher(["hydra/launcher=slurm_gpu", *local, "++local.slurm.mem_per_gpu=60G"])
    assert (cfg["partition"], cfg["gpus_per_node"], cfg["tasks_per_node"]) == ("a100", 2, 2)
    assert cfg["mem_per_gpu"] == "60G"
    # the command line wins over conf/local/default.yaml
    cfg = launcher(["hydra/launcher=slurm_gpu", *local, "hydra.launcher.gpus_per_node=8"])
    assert (cfg["gpus_per_node"], cfg["tasks_per_node"]) == (8, 8)


def test_local_gpu_launcher_runs_one_job_per_gpu_at_a_time(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    monkeypatch.delenv(local_gpus.GPU_IDS_ENV, raising=False)
    cfg = compose_config(["hydra/launcher=local_gpu", "hydra.sweep.dir=/tmp/sweep"], True)
    launch = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launch["_target_"].endswith("LocalLauncher") and launch["gpus_per_node"] == 2
    assert cfg.hydra.sweeper.max_batch_size == 2  # two jobs at a time
    assert os.environ[local_gpus.GPU_IDS_ENV] == "2,5"  # physical ids, for the jobs
    for other in ("basic", "local", "slurm", "slurm_gpu"):  # no batching elsewhere
        cfg = compose_config([f"hydra/launcher={other}"], hydra_cfg=True)
        assert cfg.hydra.sweeper.max_batch_size is None


def test_a_local_gpu_job_keeps_only_its_own_gpu(monkeypatch):
    monkeypatch.setenv(local_gpus.GPU_IDS_ENV, "2,5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what submitit gives every job
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    assert [local_gpus.pin_job_gpu(n) for n in (4, 5)] == ["2", "5"]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")  # SLURM gives each job its own GPUs
    assert local_gpus.pin_job_gpu(0) is None and os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def test_local_gpu_launcher_without_gpus_fails_at_once(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    with pytest.raises(ValueError, match="found no GPU .* Fix: .*hydra/launcher=local"):
        local_gpus.local_gpu_ids()
