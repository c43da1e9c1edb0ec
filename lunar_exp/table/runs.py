"""Run dirs (or W&B runs) -> :class:`RunRecord` objects -> one tidy frame.

A run dir is a directory holding ``.hydra/config.yaml``. Its result is ``metrics.json``; a run
dir without one is a failed (or unfinished) run and is kept, so tables can flag it. Which way is
better for each metric is the run's own declaration, ``metric_directions.json``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from lunar_exp.bookkeeping.variant import variant_name

# What a table row is grouped by; seeds are averaged within a group. ``variant`` holds the
# overrides that change results beyond the other labels (lunar_exp/bookkeeping/variant.py), e.g.
# ``method.coeffs=[4.0]``, so runs that differ in a swept setting are never averaged together.
GROUP_KEYS = ("benchmark", "model", "method", "variant", "attack")
NO_ATTACK = "none"
DEFAULT_VARIANT = "default"
# The row of the fine-tuned model before unlearning, read from the runs' ``before/`` metrics.
TARGET_METHOD = "target"
_BEFORE = "before/"
# The run's metric directions, written by the pipeline next to metrics.json.
DIRECTIONS_FILE = "metric_directions.json"


@dataclass(frozen=True)
class RunRecord:
    """One run, read from a run dir or from W&B.

    Attributes:
        source: the run dir, or the W&B run path ``entity/project/id``.
        labels: benchmark, model, method, variant (``default`` without other overrides) and
            attack (``none`` without an attack choice).
        seed: the run's seed; None when unknown.
        metrics: the run's results; None for a failed or unfinished run.
        info: ``unlearn_info.json`` (LUNAR's layers and layer sweep); empty when absent.
        directions: metric key -> True (higher is better), False (lower) or None (closer to a
            target), as the run declared them; empty for runs that declared none.
    """

    source: str
    labels: Mapping[str, str]
    seed: int | None
    metrics: Mapping[str, object] | None
    info: Mapping[str, object] = field(default_factory=dict)
    directions: Mapping[str, bool | None] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """True when the run left no results."""
        return self.metrics is None


def find_run_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (``root`` included) that holds ``.hydra/config.yaml``."""
    return sorted({p.parent.parent for p in root.rglob(".hydra/config.yaml")})


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_yaml(path: Path) -> dict:
    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


def target_label(node: object) -> str | None:
    """A group label guessed from a config node's ``_target_`` (``...methods.ga.GA`` -> ``ga``)."""
    if not isinstance(node, Mapping) or not isinstance(node.get("_target_"), str):
        return None
    parts = node["_target_"].split(".")
    return parts[-2] if len(parts) > 1 else parts[-1].lower()


def _label(value: object, missing: str) -> str:
    if isinstance(value, list | tuple):
        value = "+".join(str(v) for v in value)
    return missing if value in (None, "null", "[]", "") else str(value)


def labels_from(
    choices: Mapping[str, object], config: Mapping[str, object], variant: object = None
) -> dict[str, str]:
    """Benchmark, model, method and attack from Hydra's group choices, else from ``_target_``.

    ``variant`` is the run's :func:`lunar_exp.bookkeeping.variant.variant_name` (``default``
    when empty).
    """
    labels = {}
    for key in GROUP_KEYS:
        if key == "variant":
            labels[key] = _label(variant, DEFAULT_VARIANT)
            continue
        value = choices.get(key)
        if value is None and key != "attack":
            value = target_label(config.get(key))
        labels[key] = _label(value, NO_ATTACK if key == "attack" else "unknown")
    return labels


def config_seed(config: Mapping[str, object]) -> int | None:
    """The run's ``seed`` setting; None when absent or not an integer."""
    seed = config.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def as_series(value: object) -> pd.Series:
    """``value``, a Series, typed as one (pandas annotates many Series results as unions)."""
    if not isinstance(value, pd.Series):
        raise TypeError(f"expected a pandas Series, got {type(value).__name__}")
    return value


def as_frame(value: object) -> pd.DataFrame:
    """``value``, a DataFrame, typed as one (pandas annotates many frame results as unions)."""
    if not isinstance(value, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(value).__name__}")
    return value


def read_run_dir(run_dir: Path) -> RunRecord:
    """A run dir's record: choices from ``.hydra/hydra.yaml``, seed from the saved config."""
    config = _read_json(run_dir / "run_config.json") or _read_yaml(run_dir / ".hydra/config.yaml")
    hydra = _read_yaml(run_dir / ".hydra/hydra.yaml").get("hydra") or {}
    choices = (hydra.get("runtime") or {}).get("choices") or {}
    variant = variant_name((hydra.get("overrides") or {}).get("task") or [])
    return RunRecord(
        source=str(run_dir),
        labels=labels_from(choices, config, variant),
        seed=config_seed(config),
        metrics=_read_json(run_dir / "metrics.json"),
        info=_read_json(run_dir / "unlearn_info.json") or {},
        directions=read_directions(_read_json(run_dir / DIRECTIONS_FILE)),
    )


def read_directions(value: object) -> dict[str, bool | None]:
    """The valid entries of a declared directions mapping (True, False or None per key)."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if v is None or isinstance(v, bool)}


def merged_directions(records: Sequence[RunRecord]) -> dict[str, bool | None]:
    """Which way is better per metric, over every run; a key the runs disagree on is left out."""
    found: dict[str, set] = {}
    for run in records:
        for key, way in run.directions.items():
            found.setdefault(key, set()).add(way)
    return {key: ways.pop() for key, ways in found.items() if len(ways) == 1}


def is_number(value: object) -> bool:
    """True for finite ints and floats (bools, None, text and NaN are not table values)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def tidy_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per finished run and numeric metric: labels, seed, source, metric, value."""
    rows = [
        {**run.labels, "seed": run.seed, "source": run.source, "metric": key, "value": value}
        for run in records
        if run.metrics is not None  # a finished run
        for key, value in run.metrics.items()
        if is_number(value)
    ]
    columns = [*GROUP_KEYS, "seed", "source", "metric", "value"]
    return pd.DataFrame(rows, columns=columns).astype({"value": float})


def run_counts(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Finished (``n``) and failed (``n_failed``) runs per group."""
    frame = pd.DataFrame(
        [{**run.labels, "failed": run.failed} for run in records],
        columns=[*GROUP_KEYS, "failed"],
    )
    grouped = frame.groupby(list(GROUP_KEYS))["failed"]
    return pd.DataFrame({"n": grouped.size() - grouped.sum(), "n_failed": grouped.sum()}).astype(
        int
    )


def target_records(records: Sequence[RunRecord]) -> list[RunRecord]:
    """One record per distinct target model: the ``before/`` metrics of the finished runs.

    Runs of one benchmark and model usually share their target (one fine-tuning, cached), so
    its scores appear once, not once per run; a sweep that changes the target (e.g. the
    fine-tuning epochs) gives one record per distinct set of scores.
    """
    found: dict[tuple, RunRecord] = {}
    for run in records:
        if run.metrics is None:  # a failed run
            continue
        before = {
            key[len(_BEFORE) :]: value
            for key, value in run.metrics.items()
            if key.startswith(_BEFORE) and is_number(value)
        }
        if not before:
            continue
        labels = {**run.labels, "method": TARGET_METHOD, "variant": DEFAULT_VARIANT}
        key = (*labels.values(), tuple(sorted(before.items())))
        directions = {
            k[len(_BEFORE) :]: way for k, way in run.directions.items() if k.startswith(_BEFORE)
        }
        found.setdefault(
            key, RunRecord(f"{run.source} (before)", labels, run.seed, before, {}, directions)
        )
    return list(found.values())


def repeated_runs(records: Sequence[RunRecord]) -> list[str]:
    """Groups with more than one finished run of the same seed (e.g. two sweeps in one dir)."""
    counts = Counter(
        ("/".join(run.labels.values()), run.seed)
        for run in records
        if not run.failed and run.seed is not None
    )
    return [f"{group} seed {seed} ({n} runs)" for (group, seed), n in counts.items() if n > 1]
