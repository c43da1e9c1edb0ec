"""The column layout of paper tables, read from one YAML file (``conf/table/paper.yaml``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lunar_exp.table.runs import DEFAULT_VARIANT

DEFAULT_LAYOUT = Path(__file__).resolve().parents[2] / "conf" / "table" / "paper.yaml"
# Marks of the directions the runs declare (metric_directions.json).
ARROWS = {True: "↑", False: "↓", None: "→0"}


@dataclass(frozen=True)
class Column:
    """One metric column: the ``metrics.json`` key and its header label."""

    key: str
    label: str


@dataclass(frozen=True)
class Layout:
    """Row order and labels of methods, metric columns, attack columns.

    Attributes:
        methods: method name -> row label, in row order.
        columns: metric key -> column label, in column order.
        attacks: attack name -> label, in column order.
        attack_metrics: metric key under ``attack/<name>/`` -> short label.
        relative: metric key -> label of a column that divides each row's mean by the
            ``relative_to`` method's (default variant, same benchmark × model × attack).
        relative_to: the method those columns divide by (LUNAR in the paper layout).
    """

    methods: Mapping[str, str]
    columns: Mapping[str, str]
    attacks: Mapping[str, str]
    attack_metrics: Mapping[str, str]
    relative: Mapping[str, str] = field(default_factory=dict)
    relative_to: str = "lunar"

    def method_label(self, method: str) -> str:
        """The row label of a method (its name when the layout has none)."""
        return self.methods.get(method, method)

    def method_rank(self, method: str) -> tuple[int, str]:
        """Sort key: layout order first, other methods after, by name."""
        order = list(self.methods)
        return (order.index(method) if method in order else len(order), method)

    def series_label(self, method: str, variant: str) -> str:
        """A plot legend entry: the method's label, plus the variant unless it is the default."""
        label = self.method_label(method)
        return label if variant == DEFAULT_VARIANT else f"{label} ({variant})"

    def series_rank(self, series: tuple[str, str]) -> tuple:
        """Sort key of a (method, variant) series: the method's rank, then the variant."""
        method, variant = series
        return (*self.method_rank(method), variant != DEFAULT_VARIANT, variant)

    def all_columns(self) -> list[Column]:
        """Every column the layout names, plain metrics first, then each attack's metrics."""
        columns = [Column(key, label) for key, label in self.columns.items()]
        for name, attack_label in self.attacks.items():
            for key, label in self.attack_metrics.items():
                columns.append(Column(f"attack/{name}/{key}", f"{attack_label} {label}"))
        return columns

    def select(self, available: Collection[str], keys: Sequence[str] | None = None) -> list[Column]:
        """Columns for a table: ``keys`` in the given order, else the layout's that some run has."""
        if keys:
            labels = {c.key: c.label for c in self.all_columns()}
            return [Column(key, labels.get(key, key)) for key in keys]
        return [column for column in self.all_columns() if column.key in available]


def load_layout(path: Path = DEFAULT_LAYOUT) -> Layout:
    """Read a layout file; missing sections are empty."""
    values = yaml.safe_load(Path(path).read_text()) or {}
    sections = ("methods", "columns", "attacks", "attack_metrics", "relative")
    mappings = ({str(k): str(v) for k, v in (values.get(s) or {}).items()} for s in sections)
    return Layout(*mappings, relative_to=str(values.get("relative_to") or Layout.relative_to))


def relative_key(key: str, method: str) -> str:
    """``key`` divided by ``method``'s mean, as a column key: ``deviation_score/over_lunar``."""
    return f"{key}/over_{method}"


def arrow(directions: Mapping[str, bool | None], key: str) -> str:
    """↑ higher is better, ↓ lower, →0 closer to a target; empty when no run declared one."""
    return ARROWS[directions[key]] if key in directions else ""
