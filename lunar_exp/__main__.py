"""Entry point: ``python -m lunar_exp [overrides]`` (Hydra)."""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lunar_exp.bookkeeping import local_gpus, variant
from lunar_exp.bookkeeping.errors import release_failed_run, report_failure, summarize_failed_jobs


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run one experiment; bad input ends with one clear line and exit 2.

    In a multirun a failed job is logged and marked failed, the other jobs still run, and the
    sweep exits 1 at the end (``errors.report_failure``), listing every failed job (``cli``).
    A failed run's model and optimizer are released first (``errors.release_failed_run``), so
    the next job of a sequential sweep does not inherit its memory.
    """
    from lunar_exp.pipeline import run

    # Naming the module here makes launchers that pickle this function (submitit: SLURM, local)
    # import it, and so register ``${lunar_variant:}``, before the job's run dir is resolved.
    variant.register_resolver()
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        local_gpus.pin_job_gpu(HydraConfig.get().job.num)  # hydra/launcher=local_gpu only
    try:
        run(cfg)
    except Exception as err:
        release_failed_run(err)
        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        report_failure(err, multirun=multirun, run_dir=hydra_cfg.runtime.output_dir)
        raise


def cli() -> None:
    """``python -m lunar_exp``: Hydra's app, then the list of failed sweep jobs, if any."""
    try:
        main()
    finally:
        summarize_failed_jobs()


if __name__ == "__main__":
    cli()
