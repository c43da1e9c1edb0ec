"""The retain-model reference some benchmarks (TOFU) need for forget quality and privleak.

When a benchmark asks for it (``wants_retain_model()``), the run's own fine-tuning stage trains
a fresh copy of the base model on everything but the forget set; the benchmark then scores that
model (``reference_record``). Both the model and its record are cached, so a sweep pays once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lunar_exp.bookkeeping import cache, outputs
from lunar_exp.interfaces import UnlearnData

log = logging.getLogger(__name__)

# Bump when the record's contents change.
RECORD_VERSION = 1


def prepare(cfg: DictConfig, benchmark, data: UnlearnData, model_key: dict, run_dir: Path) -> None:
    """Give ``benchmark`` its retain-model record, training and scoring the model if needed."""
    if not getattr(benchmark, "wants_retain_model", lambda: False)():
        return
    finetune = instantiate(cfg.finetune)
    if not finetune.enabled:
        raise ValueError(
            "benchmark.retain_reference=finetune trains the retain model with the fine-tuning "
            "stage, but finetune=none. Fix: pick a finetune config, or give "
            "benchmark.retain_reference a file (e.g. an official TOFU eval_log_aggregated.json)."
        )
    retain_only = dataclasses.replace(data, forget=())
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
        record = benchmark.reference_record(chat)
        del chat
        stored.parent.mkdir(parents=True, exist_ok=True)
        outputs.write_json_atomic(stored, record)
    outputs.write_json_atomic(run_dir / "retain_reference.json", record)
    benchmark.use_reference(record)
