"""Unlearning methods, one per file; configs in conf/method/ select them by ``_target_``."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lunar_exp.interfaces import Method

# The method config group: one file per method is the registry (the entry point's ``../conf``).
METHOD_CONFIGS = Path(__file__).resolve().parents[2] / "conf" / "method"

# Keys of a method config read by the pipeline, not passed to the method's constructor.
PIPELINE_KEYS = ("requests",)
# Options of the method group that unlearn nothing (``none``: evaluation only, methods/none.py).
NOT_UNLEARNING = ("none",)


def build_method(node: DictConfig) -> Method:
    """Instantiate a ``conf/method/`` node without the pipeline's own keys (``requests``)."""
    from hydra.utils import instantiate

    resolved = OmegaConf.to_container(node, resolve=True)
    if not isinstance(resolved, dict):
        raise ValueError(f"The method config must be a mapping, not {type(resolved).__name__}.")
    method = instantiate({k: v for k, v in resolved.items() if k not in PIPELINE_KEYS})
    if not isinstance(method, Method):
        raise ValueError(
            f"method._target_ built a {type(method).__name__}, which has no unlearn(chat, data). "
            "Fix: point method._target_ at a class of lunar_exp.methods (see conf/method/)."
        )
    return method


def method_options() -> list[str]:
    """Every unlearning method of the registry (``conf/method/*.yaml``), LUNAR first.

    ``none`` (evaluation only) is left out: sweeps, tuning and benchmark scripts compare methods.
    """
    names = sorted(p.stem for p in METHOD_CONFIGS.glob("*.yaml") if p.stem not in NOT_UNLEARNING)
    return sorted(names, key=lambda name: name != "lunar")
