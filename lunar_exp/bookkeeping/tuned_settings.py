"""Whether a gradient method runs with a tuned setting for its benchmark or model.

``conf/config.yaml`` composes ``conf/tuned/<method>_<benchmark>.yaml`` and
``conf/tuned_model/<method>_<model>.yaml`` when they exist, silently. A gradient method without
either runs at the training loop's defaults (``conf/train_loop/default.yaml``: lr 1e-5, 5 epochs),
which on TOFU left WGA, SatImp, UNDIAL, CE-U, PDU and AltPO with forget fact recall 0.75-0.92
(``docs/robustness.md``). A run in that state says so once, before any expensive stage.
"""

from __future__ import annotations

import logging

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lunar_exp.bookkeeping.variant import override_key

log = logging.getLogger(__name__)

GROUPS = ("tuned", "tuned_model")  # the optional defaults of conf/config.yaml


def missing_tuned_setting(cfg: DictConfig) -> str | None:
    """The ``conf/tuned`` name a gradient method runs without, else None.

    None as well when the method has no training loop (LUNAR, none), when the command line sets
    ``method.loop.*`` itself, or outside a Hydra app (nothing to look the groups up in).
    """
    if "loop" not in cfg.method or not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if any(override_key(o).startswith("method.loop.") for o in hydra_cfg.overrides.task):
        return None
    global_hydra = GlobalHydra.instance()
    if not global_hydra.is_initialized():
        return None
    loader = global_hydra.config_loader()
    choices = hydra_cfg.runtime.choices
    for group in GROUPS:
        if choices.get(group) in loader.get_group_options(group):
            return None
    return choices.get("tuned")


def warn_if_untuned(cfg: DictConfig) -> None:
    """Log one warning when the run's gradient method has no tuned setting here."""
    name = missing_tuned_setting(cfg)
    if name is None:
        return
    loop = cfg.method.loop
    log.warning(
        "No tuned setting conf/tuned/%s.yaml: %s runs at the training loop's defaults "
        "(lr %s, %s epochs), which may unlearn little on this benchmark (on TOFU such runs kept "
        "most forget facts, docs/robustness.md). Fix: tune it (docs/methods.md, "
        "scripts/tune_baselines.py --write-tuned) or set method.loop.lr / method.loop.epochs.",
        name,
        cfg.method._target_.rsplit(".", 1)[-1],
        loop.lr,
        loop.epochs,
    )
