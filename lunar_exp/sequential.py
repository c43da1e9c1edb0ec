"""Sequential unlearning: one method applied request after request to the same model.

``method.requests=[[person_00],[person_01],[person_02]]``: request k forgets its edges; its retain
set is every item whose edge no request up to k named, so earlier forget sets never return as
retain items (LUNAR.md §7.10). LUNAR starts from the previous edit because the model carries it.
After every request the same evaluation runs on fixed sets (forget = every requested edge, retain =
the rest), so the curves are comparable; per-request forget ROUGE-1 comes from the item records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import fmean
from typing import Any

from lunar_exp.interfaces import (
    Benchmark,
    ChatModel,
    EdgeSplit,
    EvalResult,
    Method,
    UnlearnData,
    UnlearnOutcome,
)

log = logging.getLogger(__name__)


def check_requests(requests: object, data: UnlearnData, benchmark: object) -> list[list[str]]:
    """The requests as lists of edge names; one clear error for anything unusable."""
    if not isinstance(benchmark, EdgeSplit):
        raise ValueError(
            f"method.requests needs a benchmark whose forget set is chosen by edges (synthetic, "
            f"qa_json); {type(benchmark).__name__} is not. Fix: drop method.requests."
        )
    if not isinstance(requests, Sequence) or isinstance(requests, str) or not requests:
        raise ValueError(
            "method.requests must be a list of edge lists, e.g. [[person_00],[person_01]]."
        )
    parsed = [[str(edge) for edge in request] for request in requests if _is_list(request)]
    if len(parsed) != len(requests) or any(not request for request in parsed):
        raise ValueError(
            f"method.requests={list(requests)!r}: every request must be a non-empty list of "
            "edges. Fix: e.g. method.requests=[[person_00],[person_01]]."
        )
    known = {item.edge for item in data.forget + data.retain}
    flat = [edge for request in parsed for edge in request]
    unknown = sorted(set(flat) - known)
    if unknown or len(set(flat)) != len(flat):
        problem = f"unknown edges {unknown}" if unknown else "an edge named twice"
        raise ValueError(
            f"method.requests has {problem}. Fix: name each edge once, from {sorted(known)[:8]}..."
        )
    return parsed


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def request_data(data: UnlearnData, requests: list[list[str]], k: int) -> UnlearnData:
    """Request ``k``'s data: its edges are the forget set, unnamed-so-far edges the retain set."""
    items = data.forget + data.retain
    done = {edge for request in requests[: k + 1] for edge in request}
    forget = tuple(item for item in items if item.edge in requests[k])
    retain = tuple(item for item in items if item.edge not in done)
    return replace(data, forget=forget, retain=retain)


def requested_edges(requests: list[list[str]]) -> set[str]:
    """Every edge some request names."""
    return {edge for request in requests for edge in request}


def evaluation_data(data: UnlearnData, requests: list[list[str]]) -> UnlearnData:
    """Fixed evaluation data: every requested edge is forget, every other edge retain."""
    named = requested_edges(requests)
    items = data.forget + data.retain
    return replace(
        data,
        forget=tuple(item for item in items if item.edge in named),
        retain=tuple(item for item in items if item.edge not in named),
    )


def evaluation_sets(
    benchmark: EdgeSplit, data: UnlearnData, requests: list[list[str]]
) -> Mapping[str, Any]:
    """The benchmark's evaluation sets with every requested edge on the forget side."""
    return benchmark.eval_sets_for(data, requested_edges(requests))


@dataclass
class SequentialResult:
    """Per-request metrics, the final evaluation and a combined outcome for the attacks."""

    metrics: dict[str, object] = field(default_factory=dict)
    directions: dict[str, bool | None] = field(default_factory=dict)
    after: EvalResult | None = None
    outcome: UnlearnOutcome = field(default_factory=UnlearnOutcome)
    curve: list[dict[str, float | None]] = field(default_factory=list)


def run_requests(
    method: Method,
    chat: ChatModel,
    data: UnlearnData,
    requests: list[list[str]],
    benchmark: Benchmark,
    before: EvalResult,
    eval_sets: Mapping[str, Any],
    reference: Mapping[str, Any] | None = None,
) -> SequentialResult:
    """Apply ``method`` request after request, scoring ``eval_sets`` after each one.

    ``seq/<k>/`` keys of the method's own metrics have no declared direction (None).
    """
    result = SequentialResult(curve=[_curve_point(0, before, _request_scores(0, before, requests))])
    controls: list[Callable[[ChatModel], AbstractContextManager]] = []
    infos: list[dict[str, object]] = []
    layers: set[int] = set()
    for k, request in enumerate(requests, start=1):
        log.info("Sequential request %d/%d: forget %s", k, len(requests), request)
        with _all(controls, chat):
            outcome = method.unlearn(chat, request_data(data, requests, k - 1))
        if outcome.control is not None:
            controls.append(outcome.control)
        with _all(controls, chat):
            after = benchmark.evaluate(chat, eval_sets, reference)
        result.metrics.update({f"seq/{k}/{key}": v for key, v in after.metrics.items()})
        result.directions.update({f"seq/{k}/{key}": v for key, v in after.directions.items()})
        result.metrics.update({f"seq/{k}/{key}": v for key, v in outcome.metrics.items()})
        result.directions.update({f"seq/{k}/{key}": None for key in outcome.metrics})
        scores = _request_scores(k, after, requests)
        result.metrics.update(scores)
        way = after.directions.get(REQUEST_SCORE)
        result.directions.update({key: way for key in scores})
        result.curve.append(_curve_point(k, after, scores))
        infos.append(dict(outcome.info))
        layers.update(outcome.edited_layers)
        result.after = after
    result.outcome = _combined(infos, controls, layers)
    return result


@contextmanager
def _all(
    controls: Sequence[Callable[[ChatModel], AbstractContextManager]], chat: ChatModel
) -> Iterator[None]:
    with ExitStack() as stack:
        for control in controls:
            stack.enter_context(control(chat))
        yield


def _combined(
    infos: list[dict[str, object]],
    controls: list[Callable[[ChatModel], AbstractContextManager]],
    layers: set[int],
) -> UnlearnOutcome:
    """One outcome for the attacks: every request's edit switched on, every edited layer."""

    def control(chat: ChatModel) -> AbstractContextManager:
        return _all(controls, chat)

    return UnlearnOutcome(
        info={"requests": infos},
        control=control if controls else None,
        edited_layers=tuple(sorted(layers)),
    )


# Each request's share of the forget set is scored by the forget items' ROUGE-1 recall.
REQUEST_SCORE = "forget/rouge1_recall"


def _request_scores(k: int, result: EvalResult, requests: list[list[str]]) -> dict[str, float]:
    rows = result.generations.get("forget", [])
    scores = {}
    for j, request in enumerate(requests, start=1):
        values = [_number(r["rouge1_recall"]) for r in rows if r.get("edge") in request]
        if values:
            scores[f"seq/{k}/request_{j}/{REQUEST_SCORE}"] = fmean(values)
    return scores


def _number(value: object) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number in a generations record, got {value!r}")
    return float(value)


def _curve_point(k: int, result: EvalResult, scores: dict[str, float]) -> dict[str, float | None]:
    point: dict[str, float | None] = {"request": k}
    for key in ("forget/rouge1_recall", "retain/rouge1_recall", "deviation_score"):
        point[key] = result.metrics.get(key)
    for key, value in scores.items():
        point[key.split("/", 2)[2]] = value
    return point


def plot_curve(curve: list[dict[str, float | None]], path: Path) -> None:
    """Forget/retain ROUGE-1 (and each request's forget ROUGE-1) and the DS over requests."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [p["request"] for p in curve]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(
        steps, [p["forget/rouge1_recall"] for p in curve], "o-", label="forget (all requests)"
    )
    left.plot(steps, [p["retain/rouge1_recall"] for p in curve], "s-", label="retain")
    for key in sorted(k for k in curve[-1] if k.startswith("request_")):
        label = key.split("/")[0].replace("_", " ")
        left.plot(steps, [p.get(key) for p in curve], "--", alpha=0.6, label=f"forget, {label}")
    left.set(xlabel="requests applied", ylabel="ROUGE-1 recall", ylim=(-0.05, 1.05))
    left.legend(fontsize=8)
    right.plot(steps, [p["deviation_score"] for p in curve], "o-", color="black")
    right.set(xlabel="requests applied", ylabel="Deviation Score (lower is better)")
    for axis in (left, right):
        axis.set_xticks(steps)
        axis.grid(alpha=0.3)
    fig.suptitle("Sequential unlearning")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
