"""Evaluate every configured attack on the unlearned model and collect ``attack/<name>/`` keys."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from lunar_exp.attacks._common import AttackTarget
from lunar_exp.interfaces import Attack, ChatModel, EvalResult, UnlearnData

log = logging.getLogger(__name__)


def check_attacks(attacks: Mapping[str, Attack], chat: ChatModel, data: UnlearnData) -> None:
    """Let every attack reject the run's model or data before any expensive stage."""
    for attack in attacks.values():
        attack.check(chat, data)


@dataclass
class AttackResults:
    """What the attacks of a run produced.

    Attributes:
        metrics: ``attack/<name>/<key>`` (the attack's evaluation and numeric details) and
            ``time/attack/<name>_s``.
        directions: which way is better for every key of ``metrics``: the evaluation's declared
            directions; None for the details and times (no preferred direction declared).
        records: per-item records by ``attack/<name>/<split>``.
        info: the attacks' non-numeric details (layers, backend), by attack name.
    """

    metrics: dict[str, object] = field(default_factory=dict)
    directions: dict[str, bool | None] = field(default_factory=dict)
    records: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    info: dict[str, dict[str, object]] = field(default_factory=dict)


def run_attacks(attacks: Mapping[str, Attack], target: AttackTarget) -> AttackResults:
    """Metrics ``attack/<name>/<key>`` (with the attack's own DS), per-item records and info.

    Numeric details an attack reports (how far quantization moved the weights, held-out NLL
    before and after relearning) become metrics too; other details (layers, backend) go to info.
    """
    out = AttackResults()
    for name, attack in attacks.items():
        log.info("Attack %s", name)
        start = time.perf_counter()
        result, info = attack.evaluate(target)
        out.metrics.update(_prefixed(name, result, info, time.perf_counter() - start))
        out.directions.update({f"attack/{name}/{k}": v for k, v in result.directions.items()})
        details = [f"attack/{name}/{k}" for k, v in info.items() if _is_number(v)]
        out.directions.update(dict.fromkeys([*details, f"time/attack/{name}_s"]))
        out.info[name] = {k: v for k, v in info.items() if not _is_number(v)}
        for split, rows in result.generations.items():
            out.records[f"attack/{name}/{split}"] = [
                {**row, "split": f"attack/{name}/{split}"} for row in rows
            ]
    _add_worst_case(out, list(attacks))
    return out


# The worst case over attacks: key under attack/<name>/ -> the info entry naming the attack.
WORST_KEYS = {
    "forget/rouge1_recall": "forget_attack",
    "forget/fact_recall": "fact_attack",
    "deviation_score": "deviation_attack",
}


def _add_worst_case(out: AttackResults, names: list[str]) -> None:
    """``attack/worst/<key>``: the highest value of ``key`` over the attacks that report it.

    For the forget ROUGE-1 and fact-word recall and the Deviation Score higher is worse for the
    method, so the maximum is the strongest attack; ``info["worst"]`` names which attack gave each.
    """
    for key, label in WORST_KEYS.items():
        values = {
            n: out.metrics[f"attack/{n}/{key}"] for n in names if f"attack/{n}/{key}" in out.metrics
        }
        if not values:
            continue
        strongest = max(values, key=lambda n: _as_float(values[n]))
        out.metrics[f"attack/worst/{key}"] = values[strongest]
        out.directions[f"attack/worst/{key}"] = out.directions[f"attack/{strongest}/{key}"]
        out.info.setdefault("worst", {})[label] = strongest


def _as_float(value: object) -> float:
    assert isinstance(value, int | float), f"attack metric {value!r} is not a number"
    return float(value)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _prefixed(name: str, result: EvalResult, info: Mapping[str, object], seconds: float) -> dict:
    out: dict[str, object] = {f"attack/{name}/{k}": v for k, v in result.metrics.items()}
    for key, value in info.items():
        if _is_number(value):
            out[f"attack/{name}/{key}"] = value
    out[f"time/attack/{name}_s"] = seconds
    return out
