"""Sequential unlearning: one method applied request after request to the same model.

Two kinds of benchmark take ``method.requests``:

* :class:`~lunar_exp.interfaces.SplitsRequests` (TOFU, MUSE): the requests split the run's forget
  set into batches of units (TOFU's forget authors, MUSE's forget documents), named as lists
  (``[[forget_author_000],[forget_author_001]]``) or as a count (``method.requests=2``: the units
  in 2 consecutive batches); together they name every unit once. Request k unlearns its units'
  items against the run's unchanged retain set. Every evaluation scores the run's own sets, so the
  result after the last request is comparable with a one-shot run, and the benchmark scores each
  request's share of the forget items (``request_scores``).
* :class:`~lunar_exp.interfaces.EdgeSplit` (synthetic, qa_json): requests choose the forget set
  among all edges (``[[person_00],[person_01]]``; a count splits ``benchmark.forget_edges``).
  Request k's retain set is every item whose edge no request up to k named, so earlier forget sets
  never return as retain items (LUNAR.md §7.10); the evaluation sets are rebuilt once with every
  requested edge on the forget side, and each request's share is scored by its items' ROUGE-1.

LUNAR starts from the previous edit because the model carries it. After every request the same
evaluation runs on the same sets, so the ``seq/<k>/`` curves are comparable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import fmean
from typing import Any

from omegaconf import OmegaConf

from lunar_exp.interfaces import (
    Benchmark,
    ChatModel,
    EdgeSplit,
    EvalResult,
    Method,
    RequestUnits,
    SplitsRequests,
    UnlearnData,
    UnlearnOutcome,
)

log = logging.getLogger(__name__)

# Names shown in a message before "... (N in all)".
SHOWN_NAMES = 12


def request_units(data: UnlearnData, benchmark: object) -> RequestUnits:
    """What the requests of a run on ``benchmark`` split: its forget units, in data order."""
    if isinstance(benchmark, SplitsRequests):
        return benchmark.request_units(data)
    if isinstance(benchmark, EdgeSplit):
        names = tuple(dict.fromkeys(item.edge for item in data.forget))
        return RequestUnits(names, "edge", "benchmark.forget_edges")
    raise ValueError(
        f"method.requests needs a benchmark whose forget set can be split into requests "
        f"(synthetic and qa_json: edges; tofu: forget authors; muse: forget documents); "
        f"{type(benchmark).__name__} cannot. Fix: drop method.requests."
    )


def check_requests(requests: object, data: UnlearnData, benchmark: object) -> list[list[str]]:
    """The requests as lists of unit names; one clear error for anything unusable.

    ``requests`` is a list of name lists or a count (the forget units in that many consecutive
    batches); OmegaConf nodes are accepted as they come from the config.
    """
    units = request_units(data, benchmark)
    if OmegaConf.is_config(requests):
        requests = OmegaConf.to_container(requests, resolve=True)
    if isinstance(requests, int) and not isinstance(requests, bool):
        return batches(units, requests)
    parsed = _name_lists(requests, units)
    splits = isinstance(benchmark, SplitsRequests)
    known = set(units.names) if splits else {item.edge for item in data.forget + data.retain}
    _check_names(parsed, units, known, cover=splits)
    return parsed


def batches(units: RequestUnits, count: int) -> list[list[str]]:
    """``units.names`` in ``count`` consecutive batches whose sizes differ by at most one."""
    total = len(units.names)
    if not 1 <= count <= total:
        raise ValueError(
            f"method.requests={count}: the run's forget set has {total} {units.kind}(s), so it "
            f"splits into 1 to {total} requests. Fix: use a count in that range, or name the "
            f"{units.kind}s, e.g. method.requests={_example(units)}."
        )
    size, extra = divmod(total, count)
    out, start = [], 0
    for k in range(count):
        end = start + size + (k < extra)
        out.append(list(units.names[start:end]))
        start = end
    return out


def _example(units: RequestUnits) -> str:
    """A typeable value naming the first two units, one per request."""
    return "[" + ",".join(f"[{name}]" for name in units.names[:2]) + "]"


def _name_lists(requests: object, units: RequestUnits) -> list[list[str]]:
    if not isinstance(requests, Sequence) or isinstance(requests, str) or not requests:
        raise ValueError(
            f"method.requests={requests!r} is neither a list of {units.kind} lists nor a count. "
            f"Fix: e.g. method.requests={_example(units)} or method.requests=2."
        )
    parsed = [[str(name) for name in request] for request in requests if _is_list(request)]
    if len(parsed) != len(requests) or any(not request for request in parsed):
        raise ValueError(
            f"method.requests={list(requests)!r}: every request must be a non-empty list of "
            f"{units.kind}s. Fix: e.g. method.requests={_example(units)}."
        )
    return parsed


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _check_names(
    parsed: list[list[str]], units: RequestUnits, known: set[str], cover: bool
) -> None:
    """Each name known and named once; with ``cover``, every unit of ``units`` named."""
    flat = [name for request in parsed for name in request]
    valid = _shown(units.names if cover else sorted(known))
    unknown = [name for name in dict.fromkeys(flat) if name not in known]
    if unknown:
        raise ValueError(
            f"method.requests has unknown {units.kind}s {unknown}. Fix: name {units.kind}s of "
            f"this run: {valid}."
        )
    twice = sorted({name for name in flat if flat.count(name) > 1})
    if twice:
        raise ValueError(
            f"method.requests has a {units.kind} named twice: {twice}. Fix: name each "
            f"{units.kind} in one request only."
        )
    missing = [name for name in units.names if name not in set(flat)]
    if cover and missing:
        raise ValueError(
            f"method.requests leaves the {units.kind}s {_shown(missing)} out; requests "
            f"split the run's forget set, so each of its {units.kind}s is in one request. Fix: "
            f"add them to a request, give a count (method.requests=2 splits the forget set in "
            f"two), or shrink the forget set with {units.limit}."
        )


def _shown(names: Sequence[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > SHOWN_NAMES else ""
    return ", ".join(names[:SHOWN_NAMES]) + more


def request_data(
    data: UnlearnData, requests: list[list[str]], k: int, keep_retain: bool = False
) -> UnlearnData:
    """Request ``k``'s data: the items of its units are the forget set.

    The retain set is ``data.retain`` as it is with ``keep_retain`` (a :class:`SplitsRequests`
    benchmark); otherwise every item whose edge no request up to ``k`` named.
    """
    items = data.forget + data.retain
    forget = tuple(item for item in items if item.edge in requests[k])
    if keep_retain:
        return replace(data, forget=forget)
    done = {edge for request in requests[: k + 1] for edge in request}
    return replace(data, forget=forget, retain=tuple(i for i in items if i.edge not in done))


def requested_edges(requests: list[list[str]]) -> set[str]:
    """Every edge (unit) some request names."""
    return {edge for request in requests for edge in request}


def evaluation_data(data: UnlearnData, requests: list[list[str]]) -> UnlearnData:
    """Fixed evaluation data: every requested edge is forget, every other edge retain.

    On a :class:`SplitsRequests` benchmark the requests name the whole forget set, so this is
    ``data`` itself.
    """
    named = requested_edges(requests)
    items = data.forget + data.retain
    return replace(
        data,
        forget=tuple(item for item in items if item.edge in named),
        retain=tuple(item for item in items if item.edge not in named),
    )


def evaluation_sets(
    benchmark: object,
    data: UnlearnData,
    requests: list[list[str]],
    eval_sets: Mapping[str, Any],
) -> Mapping[str, Any]:
    """The sets every evaluation of a sequential run scores.

    ``eval_sets`` (the run's own) on a :class:`SplitsRequests` benchmark; an :class:`EdgeSplit`
    benchmark's sets rebuilt with every requested edge on the forget side.
    """
    if isinstance(benchmark, SplitsRequests):
        return eval_sets
    if not isinstance(benchmark, EdgeSplit):
        raise TypeError(f"{type(benchmark).__name__} takes no method.requests (check_requests)")
    return benchmark.eval_sets_for(data, requested_edges(requests))


@dataclass
class SequentialResult:
    """Per-request metrics, the final evaluation and a combined outcome for the attacks."""

    metrics: dict[str, object] = field(default_factory=dict)
    directions: dict[str, bool | None] = field(default_factory=dict)
    after: EvalResult | None = None
    outcome: UnlearnOutcome = field(default_factory=UnlearnOutcome)
    curve: list[dict[str, float | None]] = field(default_factory=list)


@dataclass(frozen=True)
class _RequestScorer:
    """Scores each request's share of the forget items in an evaluation result."""

    benchmark: Benchmark
    requests: list[list[str]]
    eval_sets: Mapping[str, Any]
    reference: Mapping[str, Any] | None

    def __call__(self, k: int, result: EvalResult) -> tuple[dict[str, float], dict]:
        """``seq/<k>/request_<j>/<metric>`` values and their directions (the metric's own)."""
        scores, directions = {}, {}
        for j, request in enumerate(self.requests, start=1):
            for key, value in self._share(result, request).items():
                scores[f"seq/{k}/request_{j}/{key}"] = value
                directions[f"seq/{k}/request_{j}/{key}"] = result.directions.get(key)
        return scores, directions

    def _share(self, result: EvalResult, units: list[str]) -> dict[str, float]:
        if isinstance(self.benchmark, SplitsRequests):
            return self.benchmark.request_scores(result, self.eval_sets, units, self.reference)
        rows = result.generations.get("forget", [])
        values = [_number(r["rouge1_recall"]) for r in rows if r.get("edge") in units]
        return {REQUEST_SCORE: fmean(values)} if values else {}


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

    ``seq/0/request_<j>/`` are the requests' shares before the first request (the whole set's
    values are ``before/``); ``seq/<k>/`` keys of the method's own metrics have no declared
    direction (None).
    """
    score = _RequestScorer(benchmark, requests, eval_sets, reference)
    keep_retain = isinstance(benchmark, SplitsRequests)
    shares, ways = score(0, before)
    result = SequentialResult(dict(shares), ways, curve=[_curve_point(0, before, shares)])
    controls: list[Callable[[ChatModel], AbstractContextManager]] = []
    infos: list[dict[str, object]] = []
    layers: set[int] = set()
    for k, request in enumerate(requests, start=1):
        part = request_data(data, requests, k - 1, keep_retain)
        log.info(
            "Sequential request %d/%d: forget %s (%d forget, %d retain items)",
            *(k, len(requests), request, len(part.forget), len(part.retain)),
        )
        with _all(controls, chat):
            outcome = method.unlearn(chat, part)
        if outcome.control is not None:
            controls.append(outcome.control)
        with _all(controls, chat):
            after = benchmark.evaluate(chat, eval_sets, reference)
        result.metrics.update({f"seq/{k}/{key}": v for key, v in after.metrics.items()})
        result.directions.update({f"seq/{k}/{key}": v for key, v in after.directions.items()})
        result.metrics.update({f"seq/{k}/{key}": v for key, v in outcome.metrics.items()})
        result.directions.update({f"seq/{k}/{key}": None for key in outcome.metrics})
        scores, directions = score(k, after)
        result.metrics.update(scores)
        result.directions.update(directions)
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


# Each request's share of the forget set is plotted by the forget items' ROUGE-1 recall.
REQUEST_SCORE = "forget/rouge1_recall"
# The curve's main lines (every benchmark has them).
CURVE_KEYS = ("forget/rouge1_recall", "retain/rouge1_recall", "deviation_score")
# Further lines in [0, 1] drawn in a third panel when the benchmark has them.
EXTRA_CURVE_KEYS = (
    "forget_quality",
    "model_utility",
    "forget/verbmem_rougeL_f1",
    "mia/min_k_auc",
)


def _number(value: object) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number in a generations record, got {value!r}")
    return float(value)


def _curve_point(k: int, result: EvalResult, scores: dict[str, float]) -> dict[str, float | None]:
    point: dict[str, float | None] = {"request": k}
    for key in (*CURVE_KEYS, *EXTRA_CURVE_KEYS):
        value = result.metrics.get(key)
        point[key] = value if isinstance(value, int | float) or key in CURVE_KEYS else None
    for key, value in scores.items():
        name = key.split("/", 2)[2]  # request_<j>/<metric>
        if name.endswith(f"/{REQUEST_SCORE}"):
            point[name] = value
    return point


def plot_curve(curve: list[dict[str, float | None]], path: Path) -> None:
    """Forget/retain ROUGE-1 (each request's forget ROUGE-1 too) and the DS over requests.

    A third panel shows forget quality, model utility, verbmem and min-k AUC where the benchmark
    has them.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extra = [key for key in EXTRA_CURVE_KEYS if any(p.get(key) is not None for p in curve)]
    fig, axes = plt.subplots(1, 3 if extra else 2, figsize=(15 if extra else 10, 4))
    steps = [p["request"] for p in curve]
    _plot_rouge(axes[0], steps, curve)
    axes[1].plot(steps, [p["deviation_score"] for p in curve], "o-", color="black")
    axes[1].set(xlabel="requests applied", ylabel="Deviation Score (lower is better)")
    if extra:
        for key in extra:
            axes[2].plot(steps, [p.get(key) for p in curve], "o-", label=key)
        axes[2].set(xlabel="requests applied", ylabel="value", ylim=(-0.05, 1.05))
        axes[2].legend(fontsize=8)
    for axis in axes:
        axis.set_xticks(steps)
        axis.grid(alpha=0.3)
    fig.suptitle("Sequential unlearning")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_rouge(axis: Any, steps: list, curve: list[dict[str, float | None]]) -> None:
    axis.plot(steps, [p["forget/rouge1_recall"] for p in curve], "o-", label="forget (all)")
    axis.plot(steps, [p["retain/rouge1_recall"] for p in curve], "s-", label="retain")
    for key in sorted(k for k in curve[-1] if k.startswith("request_")):
        label = key.split("/")[0].replace("_", " ")
        axis.plot(steps, [p.get(key) for p in curve], "--", alpha=0.6, label=f"forget, {label}")
    axis.set(xlabel="requests applied", ylabel="ROUGE-1 recall", ylim=(-0.05, 1.05))
    axis.legend(fontsize=8)
