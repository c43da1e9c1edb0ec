"""Launcher and frozen-sweep configs compose as documented (no jobs are started here)."""

from omegaconf import OmegaConf

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
    # sweep_methods sweeps glob(*): every option of conf/method/, the registry
    for name, methods in (("methods", "glob(*)"), ("smoke", "lunar,ga")):
        cfg = compose_config([f"+exp=sweep_{name}", "paths.output_root=/o"], hydra_cfg=True)
        assert cfg.hydra.sweep.dir == f"/o/sweeps/{name}"
        assert cfg.hydra.sweeper.params.method == methods
