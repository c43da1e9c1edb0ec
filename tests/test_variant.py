"""A run's variant: the overrides that name its sweep subdir and split its table row."""

import pytest

from lunar_exp.bookkeeping.variant import variant_name


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["method=lunar", "seed=1", "+exp=smoke", "threads=1", "resume=true"], ""),
        (["logger=wandb", "logger.mode=offline", "paths.output_root=/x", "attack=all"], ""),
        (["hydra/launcher=slurm", "hydra.launcher.timeout_min=5", "~utility"], ""),
        (["method.coeffs=[4.0]", "model.num_layers=4"], "method.coeffs=[4.0],model.num_layers=4"),
        (
            ["attack.relearn.steps=20", "+finetune.extra=1"],
            "attack.relearn.steps=20,finetune.extra=1",
        ),
        (["benchmark.n_people=8", "seed=0"], "benchmark.n_people=8"),
    ],
)
def test_variant_keeps_only_overrides_that_change_results(overrides, expected):
    assert variant_name(overrides) == expected
