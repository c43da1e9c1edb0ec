"""Aggregate runs over seeds (mean ± std) and write the table as Markdown, LaTeX or CSV."""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from lunar_exp.table.layout import Column, Layout, arrow, relative_key
from lunar_exp.table.runs import (
    DEFAULT_VARIANT,
    GROUP_KEYS,
    NO_ATTACK,
    TARGET_METHOD,
    RunRecord,
    as_frame,
    as_series,
    merged_directions,
    run_counts,
    target_records,
    tidy_frame,
)

# Group values not worth a caption when every row has them.
UNREMARKABLE = {"attack": NO_ATTACK, "variant": DEFAULT_VARIANT}

NOTE = "mean ± std over seeds (std when n ≥ 2); n = finished runs, n_failed = runs without results"
TARGET_NOTE = (
    "Target model = the fine-tuned model before unlearning (the runs' before/ scores; "
    "n = distinct target models; never marked best)"
)


@dataclass(frozen=True)
class Table:
    """An aggregated table, ready to render.

    Attributes:
        frame: one row per group (index ``GROUP_KEYS``) with ``n``, ``n_failed`` and
            ``<key> mean`` / ``<key> std`` for every column.
        columns: the metric columns, in order.
        labels: group key -> header for the group columns that vary between rows.
        constant: group key -> value for those that do not (shown above the table).
        failed: sources (run dirs, W&B paths) of the failed runs.
        has_target: whether a row is the target model's (see :data:`TARGET_NOTE`).
        directions: column key -> which way is better, as the runs declared it (columns no run
            declared a direction for are absent: no mark, no best cell).
    """

    frame: pd.DataFrame
    columns: list[Column]
    labels: dict[str, str]
    constant: dict[str, str]
    failed: list[str]
    has_target: bool = False
    directions: dict[str, bool | None] = field(default_factory=dict)


def build_table(
    records: Sequence[RunRecord],
    layout: Layout,
    metrics: Sequence[str] | None = None,
    target_row: bool = True,
) -> Table:
    """Group runs by benchmark × model × method × variant × attack; average over seeds.

    With ``target_row``, each benchmark × model block starts with the target model's scores
    before unlearning (when the runs recorded them).
    """
    targets = target_records(records) if target_row else []
    records = [*targets, *records]
    tidy = tidy_frame(records)
    columns = layout.select(set(tidy["metric"]), metrics)
    stats = as_frame(tidy.groupby([*GROUP_KEYS, "metric"])["value"].agg(["mean", "std"]))
    frame = run_counts(records)
    filled: dict[str, object] = {}
    for column in columns:
        picked = stats[stats.index.get_level_values("metric") == column.key]
        chosen = as_frame(picked.droplevel("metric"))
        for stat in ("mean", "std"):
            filled[f"{column.key} {stat}"] = chosen[stat].reindex(frame.index)
    frame = pd.concat([frame, pd.DataFrame(filled, index=frame.index)], axis=1)  # one insert
    declared = merged_directions(records)
    if not metrics:  # the layout's columns; --metrics gives exactly the keys asked for
        columns = _add_relative_columns(frame, columns, layout, declared)
    order = sorted(range(len(frame)), key=lambda i: _row_order(frame.index[i], layout))
    frame = frame.iloc[order]
    varying = [k for k in GROUP_KEYS if frame.index.get_level_values(k).nunique() > 1]
    labels = {k: k.capitalize() for k in GROUP_KEYS if k in varying or k == "method"}
    first = {k: str(frame.index.get_level_values(k)[0]) for k in GROUP_KEYS}
    constant = {
        k: value for k, value in first.items() if k not in labels and value != UNREMARKABLE.get(k)
    }
    failed = sorted(run.source for run in records if run.failed)
    directions = {c.key: declared[c.key] for c in columns if c.key in declared}
    return Table(frame, columns, labels, constant, failed, bool(targets), directions)


def _add_relative_columns(
    frame: pd.DataFrame, columns: list[Column], layout: Layout, declared: dict
) -> list[Column]:
    """Fill the layout's relative columns (a row's mean over the reference method's mean).

    The reference is ``layout.relative_to`` in the default variant, in the same benchmark ×
    model × attack; rows without one get NaN. Each new column follows the column it divides
    and inherits its direction (``declared`` gains it). Returns the columns in table order.
    """
    out = []
    for column in columns:
        out.append(column)
        if column.key not in layout.relative:
            continue
        key = relative_key(column.key, layout.relative_to)
        means = as_series(frame[f"{column.key} mean"])
        frame[f"{key} mean"] = [_reference_ratio(means, index, layout) for index in frame.index]
        frame[f"{key} std"] = math.nan
        if column.key in declared:
            declared[key] = declared[column.key]
        out.append(Column(key, layout.relative[column.key]))
    return out


def _reference_ratio(means: pd.Series, index: Hashable, layout: Layout) -> float:
    group = _group(index)
    reference = {**group, "method": layout.relative_to, "variant": DEFAULT_VARIANT}
    key = tuple(reference[k] for k in GROUP_KEYS)
    denominator = _number(means.get(key)) if key in means.index else math.nan
    value = _number(means.get(index))
    return value / denominator if denominator else math.nan


def _row_order(index: tuple, layout: Layout) -> tuple:
    group = dict(zip(GROUP_KEYS, index, strict=True))
    is_method = group["method"] != TARGET_METHOD
    method = (is_method, *layout.method_rank(group["method"]))
    variant = (group["variant"] != DEFAULT_VARIANT, group["variant"])
    attack = (group["attack"] != NO_ATTACK, group["attack"])
    return (group["benchmark"], group["model"], method, variant, attack)


def best_rows(table: Table, column: Column) -> pd.Series:
    """True for the best mean of a column within each benchmark × model block, if any differ.

    A column without a declared direction has no best cell.
    """
    methods = table.frame.index.get_level_values("method")
    means = as_series(table.frame[f"{column.key} mean"]).where(methods != TARGET_METHOD)
    best = pd.Series(False, index=means.index)
    if column.key not in table.directions:
        return best
    way = table.directions[column.key]
    score = means if way is False else (-means if way else means.abs())
    for _, block in score.groupby(level=["benchmark", "model"]):
        block = block.dropna()
        if len(block) >= 2 and block.min() < block.max():  # a tie everywhere marks nothing
            best[block.index[block == block.min()]] = True
    return best


def cell(mean: float, std: float) -> str:
    """``0.123 ± 0.010`` (three decimals, one from 10 up); the mean alone without a std."""
    if mean is None or math.isnan(mean):
        return "–"
    digits = 1 if abs(mean) >= 10 else 3
    text = f"{mean:.{digits}f}"
    return text if std is None or math.isnan(std) else f"{text} ± {std:.{digits}f}"


def _body(table: Table, layout: Layout, bold) -> tuple[list[str], list[list[str]]]:
    """Header and body cells; ``bold`` wraps the best cell of every column."""
    header = [*table.labels.values(), "n", "n_failed"]
    header += [f"{c.label} {arrow(table.directions, c.key)}".rstrip() for c in table.columns]
    best = {c.key: best_rows(table, c).to_dict() for c in table.columns}
    rows = []
    for index, row in table.frame.iterrows():
        group = _group(index)
        cells = [layout.method_label(group[k]) if k == "method" else group[k] for k in table.labels]
        cells += [str(int(_number(row["n"]))), str(int(_number(row["n_failed"])))]
        for c in table.columns:
            text = cell(_number(row[f"{c.key} mean"]), _number(row[f"{c.key} std"]))
            cells.append(bold(text) if best[c.key][index] else text)
        rows.append(cells)
    return header, rows


def _group(index: Hashable) -> dict[str, str]:
    """A table row's group labels, from its index entry (one value per ``GROUP_KEYS``)."""
    if not isinstance(index, tuple):
        raise TypeError(f"a table row's index is a tuple of {GROUP_KEYS}, not {index!r}")
    return dict(zip(GROUP_KEYS, index, strict=True))


def _number(value: object) -> float:
    """A frame cell as a float; NaN when it holds no number (shown as a dash)."""
    return float(value) if isinstance(value, numbers.Real) else math.nan


def _caption(table: Table) -> str:
    context = ", ".join(f"{k} {v}" for k, v in table.constant.items())
    note = f"{NOTE}. {TARGET_NOTE}" if table.has_target else NOTE
    return f"{context}; {note}" if context else note


def to_markdown(table: Table, layout: Layout) -> str:
    """A GitHub Markdown table with the best cells in bold, then the failed runs."""
    header, rows = _body(table, layout, lambda text: f"**{text}**")
    width = len(table.labels)
    lines = [_caption(table), "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" if i < width else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    if table.failed:
        lines += ["", f"Failed or unfinished runs ({len(table.failed)}, no metrics.json):"]
        lines += [f"- {source}" for source in table.failed]
    return "\n".join(lines) + "\n"


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and write ±, arrows and →0 in math mode."""
    for old, new in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#")):
        text = text.replace(old, new)
    text = text.replace("_", r"\_").replace("±", r"$\pm$").replace("→0", r"$\to 0$")
    text = text.replace("≥", r"$\geq$")
    return text.replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$").replace("–", "--")


def to_latex(table: Table, layout: Layout) -> str:
    """A booktabs ``tabular`` with the best cells in bold; failed runs as comments."""
    header, rows = _body(table, layout, lambda text: f"\\textbf{{{latex_escape(text)}}}")
    spec = "l" * len(table.labels) + "r" * (len(header) - len(table.labels))
    lines = [f"% {latex_escape(_caption(table))}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule"]
    lines.append(" & ".join(latex_escape(h) for h in header) + r" \\")
    lines.append(r"\midrule")
    for cells in rows:
        escaped = [c if c.startswith("\\textbf") else latex_escape(c) for c in cells]
        lines.append(" & ".join(escaped) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% failed (no metrics.json): {source}" for source in table.failed]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """The numbers behind the table (means, stds, counts), one row per group."""
    keep = ["n", "n_failed"] + [f"{c.key} {s}" for c in table.columns for s in ("mean", "std")]
    return table.frame[keep].reset_index().to_csv(index=False)


def render(table: Table, layout: Layout, fmt: str) -> str:
    """The table in ``fmt``: ``md``, ``latex`` or ``csv``."""
    if fmt == "md":
        return to_markdown(table, layout)
    if fmt == "latex":
        return to_latex(table, layout)
    if fmt == "csv":
        return to_csv(table)
    raise ValueError(f"format {fmt!r}: use md, latex or csv.")
