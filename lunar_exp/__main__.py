"""Entry point: ``python -m lunar_exp [overrides]`` (Hydra)."""

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lunar_exp import variant
from lunar_exp.errors import report_failure


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run one experiment; bad input ends with one clear line and exit 2.

    In a multirun a failed job is logged and marked failed, the other jobs still run, and the
    sweep exits 1 at the end (``errors.report_failure``).
    """
    from lunar_exp.pipeline import run

    # Naming the module here makes launchers that pickle this function (submitit: SLURM, local)
    # import it, and so register ``${lunar_variant:}``, before the job's run dir is resolved.
    variant.register_resolver()
    try:
        run(cfg)
    except Exception as err:
        report_failure(err, multirun=HydraConfig.get().mode == RunMode.MULTIRUN)
        raise


if __name__ == "__main__":
    main()
