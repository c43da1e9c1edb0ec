"""The retain-model reference some benchmarks (TOFU, MUSE) compare to: forget quality, privleak.

A benchmark reads a reference file at load time (``BenchmarkData.retain_reference``), or, when it
is a :class:`~lunar_exp.interfaces.TrainsRetainModel` that wants one (``retain_reference=
finetune``), the run's own fine-tuning stage trains a fresh copy of the base model on everything
but the forget set and the benchmark scores that model (``reference_record``). Both the model
and its record are cached, so a sweep pays once. The pipeline passes the reference to every
evaluation of the run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lunar_exp.bookkeeping import cache, outputs
from lunar_exp.interfaces import BenchmarkData, TrainsRetainModel

log = logging.getLogger(__name__)

# Bump when the record's contents change.
RECORD_VERSION = 2  # 2: every membership attack's AUC and per-item losses


def prepare(
    cfg: DictConfig, benchmark: object, data: BenchmarkData, model_key: dict, run_dir: Path
) -> Mapping[str, Any] | None:
    """The run's retain-model reference, training and scoring the retain model if needed.

    Returns ``data.retain_reference`` unless the benchmark wants a trained retain model; then
    the record of that model (also written to the run dir as ``retain_reference.json``).
    """
    if not (isinstance(benchmark, TrainsRetainModel) and benchmark.wants_retain_model()):
        return data.retain_reference
    finetune = instantiate(cfg.finetune)
    if not finetune.enabled:
        raise ValueError(
            "benchmark.retain_reference=finetune trains the retain model with the fine-tuning "
            "stage, but finetune=none. Fix: pick a finetune config, or give "
            "benchmark.retain_reference a file (e.g. an official TOFU eval_log_aggregated.json)."
        )
    retain_only = dataclasses.replace(data.unlearn, forget=())
    entry = finetune.entry(model_key, retain_only)
    bench_cfg = OmegaConf.to_container(cfg.benchmark, resolve=True)
    key = cache.config_key(RECORD_VERSION, str(entry), bench_cfg)
    stored = Path(cfg.paths.cache_dir) / "evals" / f"retain-{key}.json"
    if stored.is_file():
        log.info("Retain-model reference loaded from %s", stored)
        record = json.loads(stored.read_text())
    else:
        log.info("Training and scoring the retain model (no forget set) for the reference")
        chat = instantiate(cfg.model)
        finetune.run(chat, retain_only, model_key, role="retain model")
        record = benchmark.reference_record(chat, data.eval_sets)
        del chat
        stored.parent.mkdir(parents=True, exist_ok=True)
        outputs.write_json_atomic(stored, record)
    outputs.write_json_atomic(run_dir / "retain_reference.json", record)
    return record
