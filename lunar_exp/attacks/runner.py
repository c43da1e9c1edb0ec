"""Evaluate every configured attack on the unlearned model and collect ``attack/<name>/`` keys."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from lunar_exp.attacks._common import AttackTarget
from lunar_exp.interfaces import EvalResult

log = logging.getLogger(__name__)


def check_attacks(attacks: Mapping[str, object], chat, data) -> None:
    """Let every attack reject the run's model or data before any expensive stage."""
    for attack in attacks.values():
        attack.check(chat, data)


def run_attacks(attacks: Mapping[str, object], target: AttackTarget) -> tuple[dict, dict, dict]:
    """Metrics ``attack/<name>/<key>`` (with the attack's own DS), per-item records and info.

    Numeric details an attack reports (how far quantization moved the weights, held-out NLL
    before and after relearning) become metrics too; other details (layers, backend) go to info.
    """
    metrics: dict[str, object] = {}
    records: dict[str, list[dict[str, object]]] = {}
    details: dict[str, dict[str, object]] = {}
    for name, attack in attacks.items():
        log.info("Attack %s", name)
        start = time.perf_counter()
        result, info = attack.evaluate(target)
        metrics.update(_prefixed(name, result, info, time.perf_counter() - start))
        details[name] = {k: v for k, v in info.items() if not _is_number(v)}
        for split, rows in result.generations.items():
            records[f"attack/{name}/{split}"] = [
                {**row, "split": f"attack/{name}/{split}"} for row in rows
            ]
    return metrics, records, details


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _prefixed(name: str, result: EvalResult, info: Mapping[str, object], seconds: float) -> dict:
    out: dict[str, object] = {f"attack/{name}/{k}": v for k, v in result.metrics.items()}
    for key, value in info.items():
        if _is_number(value):
            out[f"attack/{name}/{key}"] = value
    out[f"time/attack/{name}_s"] = seconds
    return out
