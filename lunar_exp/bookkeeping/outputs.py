"""Run outputs: atomic metrics.json, generations.jsonl, LUNAR artifacts, the before/after table.

In a multi-process run (``lunar_exp.distributed``) every rank computes the same results and rank
0 alone writes them: the writers here do nothing on the other ranks.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import ParamSpec

import torch
from safetensors.torch import save_file

from lunar_exp import distributed
from lunar_exp.interfaces import EvalResult, UnlearnOutcome

P = ParamSpec("P")


def main_rank_only(write: Callable[P, None]) -> Callable[P, None]:
    """``write`` runs on rank 0 (and in a single process) only; other ranks skip it."""

    @functools.wraps(write)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        if distributed.is_main():
            write(*args, **kwargs)

    return wrapper


METRICS_FILE = "metrics.json"

# Rows of the short table printed at the end of a run (metric key, label).
SUMMARY_ROWS = [
    ("forget/rouge1_recall", "forget ROUGE-1 recall"),
    ("retain/rouge1_recall", "retain ROUGE-1 recall"),
    ("forget/refusal_rate", "forget refusal rate"),
    ("forget/coherent_refusal_rate", "forget coherent refusal rate"),
    ("retain/refusal_rate", "retain refusal rate"),
    ("forget/answer_nll", "forget answer NLL"),
    ("deviation_score", "Deviation Score"),
]


@main_rank_only
def write_json_atomic(path: Path, payload: Mapping[str, object], sort_keys: bool = True) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename.

    ``sort_keys=False`` keeps the payload's order (e.g. per-item indices 0, 1, 2, ... 10).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=sort_keys)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@main_rank_only
def retire_previous_metrics(run_dir: Path) -> None:
    """Move an earlier run's metrics.json aside.

    The dir then never shows results that its current config did not produce.
    """
    old = run_dir / METRICS_FILE
    if old.exists():
        os.replace(old, run_dir / "metrics.previous.json")


# ``context``: the prompt an answer's fluency is scored after, when it is not the question (MUSE).
IDENTITY_FIELDS = ("split", "edge", "question", "context", "ground_truth")


@main_rank_only
def write_generations(path: Path, before: EvalResult, after: EvalResult) -> None:
    """One JSON line per evaluated item: its identity, then each score before and after.

    Records are whatever the benchmark stored per item; identity fields are written once, every
    other field twice (``<field>_before``, ``<field>_after``).
    """
    with path.open("w") as handle:
        for split, records in after.generations.items():
            for old, new in zip(before.generations.get(split, []), records, strict=True):
                row = {k: new[k] for k in IDENTITY_FIELDS if k in new}
                for key in new:
                    if key not in IDENTITY_FIELDS:
                        row[f"{key}_before"] = old.get(key)
                        row[f"{key}_after"] = new[key]
                handle.write(json.dumps(row) + "\n")


@main_rank_only
def write_unlearn_artifacts(run_dir: Path, outcome: UnlearnOutcome) -> None:
    """Save a method's tensors (LUNAR's unlearning vectors) and info (chosen layers, sweep)."""
    if outcome.tensors:
        tensors = {
            k: v.detach().cpu().contiguous().to(torch.float32) for k, v in outcome.tensors.items()
        }
        save_file(tensors, str(run_dir / "unlearn_vectors.safetensors"))
    write_json_atomic(run_dir / "unlearn_info.json", dict(outcome.info))


# Marks of which way is better (a metric's declared direction).
ARROWS = {True: "↑", False: "↓", None: "→0"}


def summary_table(
    before: Mapping[str, float],
    after: Mapping[str, float],
    directions: Mapping[str, bool | None],
) -> str:
    """A before/after text table: the headline rows first, then every other numeric metric.

    Each label ends with the metric's direction mark (``directions``, as the evaluation
    declared it): ↑ higher is better, ↓ lower, →0 closer to a target.
    """
    labels = dict(SUMMARY_ROWS)
    keys = [k for k, _ in SUMMARY_ROWS if k in after]
    keys += sorted(
        k for k, v in after.items() if k not in labels and (v is None or isinstance(v, int | float))
    )
    width = max([24, *(len(labels.get(k, k)) + 4 for k in keys)])
    lines = [f"{'metric':<{width}}{'before':>10}{'after':>10}", "-" * (width + 20)]
    for key in keys:
        label = f"{labels.get(key, key)} {ARROWS[directions.get(key)]}"
        old = before.get(key)
        old_text = f"{old:>10.3f}" if isinstance(old, int | float) else f"{'-':>10}"
        new = after[key]
        new_text = f"{new:>10.3f}" if new is not None else f"{'missing':>10}"
        lines.append(f"{label:<{width}}{old_text}{new_text}")
    return "\n".join(lines)


@main_rank_only
def write_attack_outputs(
    run_dir: Path, records: Mapping[str, list[dict[str, object]]], info: Mapping[str, object]
) -> None:
    """Per-item attack records (``attack_generations.jsonl``) and details (``attack_info.json``)."""
    with (run_dir / "attack_generations.jsonl").open("w") as handle:
        for rows in records.values():
            for row in rows:
                handle.write(json.dumps(row) + "\n")
    write_json_atomic(run_dir / "attack_info.json", dict(info))
