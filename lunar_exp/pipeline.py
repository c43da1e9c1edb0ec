"""run(cfg): load, fine-tune (cached), evaluate, unlearn, evaluate, write outputs."""

from __future__ import annotations

import logging
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lunar_exp import outputs
from lunar_exp.data_checks import check_unlearn_data

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_cache_key(cfg: DictConfig) -> dict:
    """The part of the model config that determines the weights (not device or cache paths)."""
    node = OmegaConf.to_container(cfg.model, resolve=True)
    return {k: v for k, v in node.items() if k not in ("device", "cache_dir", "name")}


def run(cfg: DictConfig) -> dict[str, object]:
    """Run one experiment and return its metrics (also written to ``metrics.json``)."""
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    outputs.retire_previous_metrics(run_dir)
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    try:
        if logger:
            logger.log_config(OmegaConf.to_container(cfg, resolve=True))
        metrics = _execute(cfg, run_dir)
        if logger:
            logger.log_metrics(metrics)
    finally:
        if logger:
            logger.close()
    return metrics


def _execute(cfg: DictConfig, run_dir: Path) -> dict[str, object]:
    benchmark = instantiate(cfg.benchmark)
    method = instantiate(cfg.method)
    finetune = instantiate(cfg.finetune)
    data = benchmark.load()
    chat = instantiate(cfg.model)
    check_unlearn_data(data, chat)
    if hasattr(method, "check"):
        method.check(chat)
    ft = finetune.run(chat, data, model_cache_key(cfg))
    start = time.perf_counter()
    before = benchmark.evaluate(chat, data)
    eval_s = time.perf_counter() - start
    start = time.perf_counter()
    outcome = method.unlearn(chat, data)
    unlearn_s = time.perf_counter() - start
    start = time.perf_counter()
    after = benchmark.evaluate(chat, data)
    eval_s += time.perf_counter() - start
    if cfg.save_model:
        chat.model.save_pretrained(run_dir / "unlearned_model", safe_serialization=True)
        chat.tokenizer.save_pretrained(run_dir / "unlearned_model")
    outputs.write_generations(run_dir / "generations.jsonl", before, after)
    outputs.write_unlearn_artifacts(run_dir, outcome)
    metrics: dict[str, object] = {f"before/{k}": v for k, v in before.metrics.items()}
    metrics.update(after.metrics)
    metrics.update(outcome.metrics)
    metrics.update(
        {
            "time/finetune_s": ft.seconds,
            "time/unlearn_s": unlearn_s,
            "time/eval_s": eval_s,
            "finetune/cached": ft.cached,
            "resources/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "data/n_forget": len(data.forget),
            "data/n_retain": len(data.retain),
        }
    )
    outputs.write_json_atomic(run_dir / outputs.METRICS_FILE, metrics)
    print(f"\n{outputs.summary_table(before.metrics, after.metrics)}\nrun dir: {run_dir}")
    return metrics
