"""PNG plots next to a table: forget vs retain, LUNAR's layer sweep, attack bars.

Figures are built with matplotlib's object API (``Figure``, no pyplot), so no GUI backend or
global state is involved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lunar_exp.table.layout import Layout, arrow
from lunar_exp.table.runs import RunRecord, as_frame, as_series, merged_directions, tidy_frame

FORGET, RETAIN = "forget/rouge1_recall", "retain/rouge1_recall"
DS = "deviation_score"
# Deviation Score = 100 * distance from the ideal corner (retain 1, forget 0); circles of equal DS.
DS_LEVELS = (10, 25, 50, 75)


def _blocks(tidy: pd.DataFrame) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """The tidy frame split by benchmark × model (one panel each)."""
    blocks = []
    for key, block in tidy.groupby(["benchmark", "model"], sort=True):
        if not isinstance(key, tuple):
            raise TypeError(f"grouping by benchmark and model gave the key {key!r}")
        benchmark, model = key
        blocks.append(((benchmark, model), block))
    return blocks


def series_colors(count: int) -> list[tuple[float, float, float, float]]:
    """One distinct colour per series, in order.

    Matplotlib's default cycle repeats after 10 colours, which gave two of the 13 methods the same
    bar colour. Up to 10: tab10; up to 20: tab20's ten strong colours, then its ten light ones;
    more: evenly spaced along ``turbo``.
    """
    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in [*range(0, 20, 2), *range(1, 20, 2)][:count]]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, count)]


def _ds_circles(ax) -> None:
    angles = np.linspace(math.pi / 2, math.pi, 50)
    for level in DS_LEVELS:
        radius = level / 100
        ax.plot(1 + radius * np.cos(angles), radius * np.sin(angles), ":", color="0.75", lw=0.8)
        ax.annotate(f"DS {level}", (1 - radius, 0.01), fontsize=7, color="0.5", ha="center")
    ax.plot([1], [0], marker="*", markersize=14, color="gold", mec="k", ls="", label="ideal")


def _scatter_block(ax, block: pd.DataFrame, layout: Layout) -> None:
    wide = block.pivot_table(
        index=["method", "variant", "source"], columns="metric", values="value"
    )
    _ds_circles(ax)
    if {f"before/{FORGET}", f"before/{RETAIN}"} <= set(wide.columns):
        before = wide[[f"before/{RETAIN}", f"before/{FORGET}"]].mean()
        ax.plot(*before, marker="X", color="0.4", ms=9, ls="", label="target model")
    series = sorted(wide.index.droplevel("source").unique(), key=layout.series_rank)
    for (method, variant), color in zip(series, series_colors(len(series)), strict=True):
        runs = wide.loc[(method, variant)].dropna(subset=[RETAIN, FORGET])
        if runs.empty:
            continue
        (line,) = ax.plot(runs[RETAIN], runs[FORGET], "o", alpha=0.35, ms=5, color=color)
        ax.errorbar(
            runs[RETAIN].mean(),
            runs[FORGET].mean(),
            xerr=runs[RETAIN].std() if len(runs) > 1 else None,
            yerr=runs[FORGET].std() if len(runs) > 1 else None,
            fmt="o",
            ms=9,
            color=line.get_color(),
            mec="k",
            label=layout.series_label(method, variant),
        )


def plot_forget_retain(records: Sequence[RunRecord], path: Path, layout: Layout) -> Path | None:
    """Forget vs retain ROUGE-1 recall per method (seeds faint, mean with std bars).

    The ideal corner (retain 1, forget 0) is starred; dotted circles are equal Deviation Score.
    Returns None (and writes nothing) when no run has both metrics.
    """
    tidy = tidy_frame(records)
    blocks = [
        (key, block) for key, block in _blocks(tidy) if {FORGET, RETAIN} <= set(block["metric"])
    ]
    if not blocks:
        return None
    directions = merged_directions(records)
    xlabel = f"retain ROUGE-1 recall {arrow(directions, RETAIN)}".rstrip()
    ylabel = f"forget ROUGE-1 recall {arrow(directions, FORGET)}".rstrip()
    fig = Figure(figsize=(5 * len(blocks), 4.6), layout="constrained")
    for ax, ((benchmark, model), block) in zip(
        np.atleast_1d(fig.subplots(1, len(blocks))), blocks, strict=True
    ):
        _scatter_block(ax, block, layout)
        ax.set(xlim=(-0.02, 1.05), ylim=(-0.02, 1.05), aspect="equal")
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.set_title(f"{benchmark} / {model}")
        ax.legend(fontsize=7, loc="upper left")
    fig.savefig(path, dpi=120)
    return path


def _sweep_lines(left, right, label: str, info: Mapping) -> None:
    """One run's sweep: score (chosen layers circled) left, refusal and retain ROUGE-1 right."""
    sweep = {int(layer): scores for layer, scores in info["layer_sweep"].items()}
    layers = sorted(sweep)
    (line,) = left.plot(layers, [sweep[x]["score"] for x in layers], "-o", ms=3, label=label)
    color = line.get_color()
    chosen = [x for x in info.get("layers") or [] if x in sweep]
    left.plot(chosen, [sweep[x]["score"] for x in chosen], "o", ms=10, mfc="none", color=color)
    refusal = [sweep[x]["forget_refusal"] for x in layers]
    right.plot(layers, refusal, "-", color=color, label=f"{label} forget refusal")
    rouge = [sweep[x]["retain_rouge1"] for x in layers]
    right.plot(layers, rouge, "--", color=color, label=f"{label} retain R1")


def plot_layer_sweeps(infos: Mapping[str, Mapping], path: Path) -> Path | None:
    """LUNAR's layer sweep (``unlearn_info.json`` ``layer_sweep``), one line per run.

    Left: the sweep's score with the chosen layers circled; right: forget refusal rate (solid)
    and retain ROUGE-1 (dashed) under steering. Returns None when no run swept layers.
    """
    sweeps = {label: info for label, info in infos.items() if info.get("layer_sweep")}
    if not sweeps:
        return None
    fig = Figure(figsize=(10, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    for label, info in sweeps.items():
        _sweep_lines(left, right, label, info)
    left.set(xlabel="layer", ylabel="sweep score ↑", title="LUNAR layer sweep (○ chosen)")
    right.set(xlabel="layer", ylabel="rate", ylim=(-0.02, 1.05), title="under steering")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.legend(fontsize=7)
    right.legend(fontsize=6)
    fig.savefig(path, dpi=120)
    return path


def _attack_means(block: pd.DataFrame, attacks: Sequence[str], key: str) -> pd.DataFrame:
    """Rows: (method, variant); columns: ``none``, then each attack; cells: mean, std of ``key``."""
    keys = {"none": key} | {name: f"attack/{name}/{key}" for name in attacks}
    picked = block[as_series(block["metric"]).isin(list(keys.values()))]
    names = {v: k for k, v in keys.items()}
    by = ["method", "variant", as_series(picked["metric"]).map(names)]
    stats = as_frame(picked.groupby(by)["value"].agg(["mean", "std"]))
    return as_frame(stats.unstack()).reindex(columns=list(keys), level=1)


def plot_attack_bars(records: Sequence[RunRecord], path: Path, layout: Layout) -> Path | None:
    """Forget ROUGE-1 and Deviation Score per method, without and under each attack.

    Attacks are the ``attack/<name>/...`` keys present, in the layout's order. Returns None
    when no run has attack results.
    """
    tidy = tidy_frame(records)
    present = {m.split("/")[1] for m in tidy["metric"] if m.startswith("attack/")}
    attacks = [a for a in layout.attacks if a in present] + sorted(present - set(layout.attacks))
    if not attacks:
        return None
    blocks = _blocks(tidy)
    directions = merged_directions(records)
    panels = [
        (key, f"{label} {arrow(directions, key)}".rstrip())
        for key, label in ((FORGET, "forget ROUGE-1"), (DS, "DS"))
    ]
    fig = Figure(figsize=(max(8, 1.6 * len(attacks) + 4), 3.6 * len(blocks)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(blocks), 2))
    for row, ((benchmark, model), block) in zip(axes, blocks, strict=True):
        for ax, (key, label) in zip(row, panels, strict=True):
            _bars(ax, _attack_means(block, attacks, key), layout)
            ax.set(ylabel=label, title=f"{benchmark} / {model}")
    axes[0][0].legend(fontsize=7)
    fig.savefig(path, dpi=120)
    return path


def _bars(ax, stats: pd.DataFrame, layout: Layout) -> None:
    groups = [
        layout.attacks.get(a, a) if a != "none" else "no attack" for a in stats["mean"].columns
    ]
    series = sorted(stats.index, key=layout.series_rank)
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    colors = series_colors(len(series))
    for i, (method, variant) in enumerate(series):
        means = stats.loc[(method, variant), "mean"].to_numpy(dtype=float)
        stds = np.nan_to_num(stats.loc[(method, variant), "std"].to_numpy(dtype=float))
        label = layout.series_label(method, variant)
        ax.bar(x + i * width, means, width, yerr=stds, label=label, color=colors[i])
    ax.set_xticks(x + width * (len(series) - 1) / 2, groups, rotation=20, fontsize=8)
