"""Sequential unlearning requests: data per request, the seq/<k> metrics and the plot."""

import pytest
from omegaconf import OmegaConf

from lunar_exp.interfaces import EvalResult, RequestUnits, UnlearnData, UnlearnOutcome
from lunar_exp.sequential import (
    batches,
    check_requests,
    evaluation_data,
    evaluation_sets,
    request_data,
    run_requests,
)
from tests.conftest import toy_benchmark

REQUESTS = [["person_00"], ["person_01"], ["person_02"]]


def test_each_request_keeps_earlier_forget_sets_out_of_its_retain_set(toy_data):
    for k, request in enumerate(REQUESTS):
        data = request_data(toy_data, REQUESTS, k)
        assert {item.edge for item in data.forget} == set(request)
        done = {edge for r in REQUESTS[: k + 1] for edge in r}
        assert not {item.edge for item in data.retain} & done
        assert {item.edge for item in data.retain} == {f"person_0{i}" for i in range(4)} - done
        assert data.reference == toy_data.reference


def test_keep_retain_leaves_the_retain_set_as_it_is(toy_data):
    # a SplitsRequests benchmark (TOFU, MUSE): later requests' items are not retain items
    data = request_data(toy_data, REQUESTS, 0, keep_retain=True)
    assert {item.edge for item in data.forget} == {"person_00"}
    assert data.retain == toy_data.retain


def test_evaluation_sets_are_the_same_for_every_request(toy_data, toy_bench_data):
    data = evaluation_data(toy_data, REQUESTS)
    assert {item.edge for item in data.forget} == {"person_00", "person_01", "person_02"}
    assert {item.edge for item in data.retain} == {"person_03"}
    # the benchmark's EdgeSplit ability builds the same sets, in the same order
    sets = evaluation_sets(toy_benchmark(), toy_data, REQUESTS, toy_bench_data.eval_sets)
    assert sets == {"forget": data.forget, "retain": data.retain}


def units(count: int) -> RequestUnits:
    return RequestUnits(tuple(f"u{i}" for i in range(count)), "unit", "benchmark.units")


@pytest.mark.parametrize(
    ("count", "requests", "sizes"),
    [(5, 2, [3, 2]), (4, 4, [1, 1, 1, 1]), (7, 3, [3, 2, 2]), (3, 1, [3])],
)
def test_a_count_splits_the_units_in_order_into_near_equal_batches(count, requests, sizes):
    split = batches(units(count), requests)
    assert [len(b) for b in split] == sizes
    assert [name for b in split for name in b] == list(units(count).names)


def test_a_count_on_an_edge_benchmark_splits_its_forget_edges(toy_data):
    data = UnlearnData(toy_data.forget + toy_data.retain[:2], toy_data.retain[2:])
    assert check_requests(1, data, toy_benchmark()) == [["person_00", "person_01"]]
    assert check_requests(OmegaConf.create({"r": 2}).r, data, toy_benchmark()) == [
        ["person_00"],
        ["person_01"],
    ]
    # the config's ListConfig is read as plain lists
    listed = OmegaConf.create({"r": [["person_01"], ["person_03"]]}).r
    assert check_requests(listed, toy_data, toy_benchmark()) == [["person_01"], ["person_03"]]


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([["person_09"]], "unknown edges"),
        ([["person_00"], ["person_00"]], "named twice"),
        ([[]], "non-empty list"),
        ("person_00", r"neither a list of edge lists nor a count. Fix: .*=\[\[person_00\]\]"),
        (0, r"splits into 1 to 1 requests"),
        (2, r"splits into 1 to 1 requests"),
        (True, "neither a list of edge lists nor a count"),
    ],
)
def test_bad_requests_are_clear_errors(toy_data, requests, message):
    with pytest.raises(ValueError, match=message):
        check_requests(requests, toy_data, toy_benchmark())


def test_benchmarks_with_fixed_evaluation_sets_refuse_requests(toy_data):
    class FixedSets:  # a benchmark with neither the EdgeSplit nor the SplitsRequests ability
        name = "fixed"

        def load(self): ...

        def evaluate(self, chat, eval_sets, reference=None): ...

    with pytest.raises(ValueError, match="can be split into requests"):
        check_requests(REQUESTS, toy_data, FixedSets())


class SplitsByEdge:
    """A SplitsRequests benchmark on the toy data whose evaluation counts each call."""

    name = "splits"

    def __init__(self):
        self.evaluated = 0

    def load(self): ...

    def evaluate(self, chat, eval_sets, reference=None):
        self.evaluated += 1
        metrics = {"forget/rouge1_recall": 1.0 / self.evaluated, "retain/rouge1_recall": 0.9}
        metrics["deviation_score"] = 0.0
        return EvalResult(metrics, {}, {"forget/rouge1_recall": False})

    def request_units(self, data):
        return RequestUnits(tuple(dict.fromkeys(q.edge for q in data.forget)), "edge", "x")

    def request_scores(self, result, eval_sets, units, reference=None):
        first = sorted(units)[0]
        return {"forget/rouge1_recall": result.metrics["forget/rouge1_recall"] + int(first[-1])}


class RecordingMethod:
    def __init__(self):
        self.seen = []

    def unlearn(self, chat, data):
        self.seen.append(data)
        return UnlearnOutcome(metrics={"loss": 1.0})


def test_splits_requests_benchmark_gets_its_own_sets_and_scores_each_request(toy_data):
    data = UnlearnData(toy_data.forget + toy_data.retain[:2], toy_data.retain[2:])
    bench, method = SplitsByEdge(), RecordingMethod()
    requests = check_requests(2, data, bench)
    own_sets = {"forget": "the run's own"}
    assert evaluation_sets(bench, data, requests, own_sets) is own_sets
    with pytest.raises(ValueError, match="leaves the edges person_01 out"):
        check_requests([["person_00"]], data, bench)
    with pytest.raises(ValueError, match="unknown edges.*person_00, person_01"):
        check_requests([["person_00"], ["person_02"]], data, bench)
    before = bench.evaluate(None, own_sets)
    result = run_requests(method, None, data, requests, bench, before, own_sets)
    assert [{q.edge for q in d.forget} for d in method.seen] == [{"person_00"}, {"person_01"}]
    assert all(d.retain == data.retain for d in method.seen)  # the retain set stays
    # evaluation k+1 of the bench object gives forget ROUGE 1/(k+1); request j adds j-1
    assert result.metrics["seq/1/forget/rouge1_recall"] == 0.5
    assert result.metrics["seq/2/request_2/forget/rouge1_recall"] == pytest.approx(1 / 3 + 1)
    assert result.directions["seq/2/request_2/forget/rouge1_recall"] is False
    assert result.metrics["seq/1/loss"] == 1.0 and result.directions["seq/1/loss"] is None
    assert [p["request_1/forget/rouge1_recall"] for p in result.curve] == [1.0, 0.5, 1 / 3]
    # the shares before the first request (the whole set's values are before/)
    assert result.metrics["seq/0/request_2/forget/rouge1_recall"] == 2.0
    assert "seq/0/forget/rouge1_recall" not in result.metrics


def test_the_last_requests_evaluation_is_the_runs_final_one():
    """The pipeline does not evaluate the final model again after the last request."""
    from types import SimpleNamespace

    from lunar_exp.interfaces import EvalResult
    from lunar_exp.pipeline import _final_evaluation
    from lunar_exp.sequential import SequentialResult

    def evaluate_again():
        raise AssertionError("the final model was evaluated a second time")

    last = EvalResult({"forget/rouge1_recall": 0.25}, {}, {"forget/rouge1_recall": False})
    run = SimpleNamespace(method=object(), utility=None, evaluate=evaluate_again)
    before = EvalResult({}, {}, {})
    assert _final_evaluation(run, before, SequentialResult(after=last)) is last  # pyright: ignore[reportArgumentType]
    with pytest.raises(AssertionError, match="second time"):
        _final_evaluation(run, before, SequentialResult())  # pyright: ignore[reportArgumentType]
