"""Resumable sweeps: a multirun job whose run dir already holds its finished results is skipped.

A finished run writes ``run_config.json`` (its resolved config) and then ``metrics.json``, both
atomically. Hydra rewrites ``.hydra/config.yaml`` before every job starts, so that file cannot say
what the *finished* run used; ``run_config.json`` can. A job is complete when both files parse and
the saved config equals the current one, apart from the keys below that do not change results.
"""

from __future__ import annotations

import json
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lunar_exp.bookkeeping import outputs

RUN_CONFIG_FILE = "run_config.json"
# Top-level keys that do not change a run's results (paths: where outputs and caches live).
IGNORED_KEYS = ("resume", "threads", "logger", "local", "tags", "paths")
# Keys ignored at any depth (copies of paths.cache_dir inside model, finetune, ...).
IGNORED_NESTED_KEYS = ("cache_dir",)


def resolved_config(cfg: DictConfig) -> dict:
    """The resolved config as plain JSON values."""
    return json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True), default=str))


def write_run_config(run_dir: Path, cfg: DictConfig) -> None:
    """Record the config a run finished with (call right before metrics.json is written)."""
    outputs.write_json_atomic(run_dir / RUN_CONFIG_FILE, resolved_config(cfg))


def _comparable(values: object, top: bool = True) -> object:
    if isinstance(values, dict):
        drop = (IGNORED_KEYS if top else ()) + IGNORED_NESTED_KEYS
        return {k: _comparable(v, top=False) for k, v in values.items() if k not in drop}
    if isinstance(values, list):
        return [_comparable(v, top=False) for v in values]
    return values


def configs_match(saved: dict, current: dict) -> bool:
    """True when two resolved configs give the same results (ignored keys left out)."""
    return _comparable(saved) == _comparable(current)


def finished_metrics(run_dir: Path, cfg: DictConfig) -> dict | None:
    """The metrics of a finished run in ``run_dir`` made with ``cfg``; None when it must run."""
    try:
        metrics = json.loads((run_dir / outputs.METRICS_FILE).read_text())
        saved = json.loads((run_dir / RUN_CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or not isinstance(saved, dict):
        return None
    return metrics if configs_match(saved, resolved_config(cfg)) else None


def completed_run(cfg: DictConfig, run_dir: Path) -> dict | None:
    """Metrics to reuse instead of running: only for multirun jobs with ``resume=true``.

    Single runs (no ``-m``) always run; their earlier metrics.json is moved aside as before.
    """
    if not cfg.get("resume", False) or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return finished_metrics(run_dir, cfg)
