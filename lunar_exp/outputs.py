"""Run outputs: atomic metrics.json, generations.jsonl, LUNAR artifacts, the before/after table."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from lunar_exp.interfaces import EvalResult, UnlearnOutcome

METRICS_FILE = "metrics.json"

# Rows of the short table printed at the end of a run (metric key, label).
SUMMARY_ROWS = [
    ("forget/rouge1_recall", "forget ROUGE-1 recall"),
    ("retain/rouge1_recall", "retain ROUGE-1 recall"),
    ("forget/refusal_rate", "forget refusal rate"),
    ("retain/refusal_rate", "retain refusal rate"),
    ("forget/answer_nll", "forget answer NLL"),
    ("deviation_score", "Deviation Score"),
]


def write_json_atomic(path: Path, payload: Mapping[str, object]) -> None:
    """Write JSON to ``path`` through a temporary file and an atomic rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def retire_previous_metrics(run_dir: Path) -> None:
    """Move an earlier run's metrics.json aside.

    The dir then never shows results that its current config did not produce.
    """
    old = run_dir / METRICS_FILE
    if old.exists():
        os.replace(old, run_dir / "metrics.previous.json")


def write_generations(path: Path, before: EvalResult, after: EvalResult) -> None:
    """One JSON line per evaluated item with the responses before and after unlearning."""
    with path.open("w") as handle:
        for split, records in after.generations.items():
            for old, new in zip(before.generations[split], records, strict=True):
                row = {
                    "split": split,
                    "edge": new["edge"],
                    "question": new["question"],
                    "ground_truth": new["ground_truth"],
                    "response_before": old["response"],
                    "response_after": new["response"],
                    "refusal_after": new["refusal"],
                    "rouge1_recall_before": old["rouge1_recall"],
                    "rouge1_recall_after": new["rouge1_recall"],
                }
                handle.write(json.dumps(row) + "\n")


def write_unlearn_artifacts(run_dir: Path, outcome: UnlearnOutcome) -> None:
    """Save a method's tensors (LUNAR's unlearning vectors) and info (chosen layers, sweep)."""
    if outcome.tensors:
        tensors = {
            k: v.detach().cpu().contiguous().to(torch.float32) for k, v in outcome.tensors.items()
        }
        save_file(tensors, str(run_dir / "unlearn_vectors.safetensors"))
    write_json_atomic(run_dir / "unlearn_info.json", dict(outcome.info))


def summary_table(before: Mapping[str, float], after: Mapping[str, float]) -> str:
    """A small before/after text table."""
    lines = [f"{'metric':<24}{'before':>10}{'after':>10}", "-" * 44]
    for key, label in SUMMARY_ROWS:
        if key in after:
            lines.append(f"{label:<24}{before.get(key, float('nan')):>10.3f}{after[key]:>10.3f}")
    return "\n".join(lines)
