"""A run's *variant*: the command-line overrides that change results beyond its path labels.

Benchmark, model, method and seed already name a run's directory; attack choices, utility,
fine-tuning, logging, threads, resume and paths do not change the unlearning result (or are
recorded elsewhere). Whatever else was overridden (``method.coeffs=[4.0]``, ``model.num_layers=4``,
``attack.relearn.steps=20``) is the variant: the last component of a sweep job's directory and the
table column that keeps such runs apart instead of averaging them as seeds.
"""

from __future__ import annotations

from collections.abc import Iterable

from omegaconf import OmegaConf

# Overridden keys that are not part of the variant (exactly these, or anything below them).
NOT_VARIANT = (
    "benchmark",
    "model",
    "method",
    "seed",
    "exp",
    "attack",
    "utility",
    "finetune",
    "logger",
    "threads",
    "resume",
    "paths",
    "hydra",
)
# Group choices named above whose sub-keys do change results, so they stay in the variant.
KEEP_BELOW = ("benchmark", "model", "method", "attack", "utility", "finetune")


def override_key(override: str) -> str:
    """The key an override sets: ``+a.b=1`` -> ``a.b``."""
    return override.split("=", 1)[0].lstrip("+~")


def _excluded(key: str) -> bool:
    top = key.split(".", 1)[0].split("/", 1)[0]
    if top not in NOT_VARIANT:
        return False
    return key == top or top not in KEEP_BELOW


def variant_name(overrides: Iterable[str]) -> str:
    """Sorted ``key=value`` overrides joined by ``,``; empty when none change results."""
    kept = [o.lstrip("+~") for o in overrides if not _excluded(override_key(o))]
    return ",".join(sorted(kept))


def register_resolver() -> None:
    """``${lunar_variant:${hydra:overrides.task}}`` for the sweep subdir (conf/hydra)."""
    if not OmegaConf.has_resolver("lunar_variant"):
        OmegaConf.register_new_resolver("lunar_variant", lambda task: variant_name(task or []))


register_resolver()
