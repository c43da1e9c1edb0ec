"""Forget/retain splitting shared by every QA benchmark."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from lunar_exp.interfaces import QA, UnlearnData


def split_by_edges(
    items: Sequence[QA], forget_edges: Sequence[str], source: str
) -> tuple[list[QA], list[QA]]:
    """Split ``items`` into (forget, retain) by edge, with clear errors for bad edge lists.

    Raises:
        ValueError: if no forget edge is given, an edge is absent from the data, or either side is
            empty.
    """
    if not forget_edges:
        raise ValueError(
            f"The forget set is empty: benchmark.forget_edges=[] for {source}. "
            "Fix: name at least one edge, e.g. benchmark.forget_edges=[A_B]."
        )
    known = sorted({qa.edge for qa in items})
    missing = [edge for edge in forget_edges if edge not in known]
    if missing:
        shown = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
        raise ValueError(
            f"Forget edge(s) {missing} not found in {source}. "
            f"Fix: choose benchmark.forget_edges from the edges present: {shown}."
        )
    chosen = set(forget_edges)
    forget = [qa for qa in items if qa.edge in chosen]
    retain = [qa for qa in items if qa.edge not in chosen]
    if not retain:
        raise ValueError(
            f"The retain set is empty: every item of {source} is in benchmark.forget_edges. "
            "Fix: leave some edges out of the forget set."
        )
    return forget, retain


def edge_eval_sets(
    data: UnlearnData, forget_edges: Collection[str], retain_limit: int | None = None
) -> dict[str, tuple[QA, ...]]:
    """Evaluation sets of a QA benchmark, in ``data.forget + data.retain`` order.

    ``forget``: the items on ``forget_edges``; ``retain``: the others (the first
    ``retain_limit`` of them when it is set).
    """
    chosen = set(forget_edges)
    items = data.forget + data.retain
    retain = tuple(qa for qa in items if qa.edge not in chosen)
    return {
        "forget": tuple(qa for qa in items if qa.edge in chosen),
        "retain": retain[:retain_limit] if retain_limit else retain,
    }
