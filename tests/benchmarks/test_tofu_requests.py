"""Sequential requests on TOFU: the run's forget authors are the request units (local data)."""

import pytest

from lunar_exp.benchmarks.tofu.benchmark import TofuBenchmark
from lunar_exp.benchmarks.tofu.data import TofuSource
from lunar_exp.interfaces import EvalResult, SplitsRequests
from lunar_exp.sequential import check_requests, evaluation_data, evaluation_sets, request_data
from tests.conftest import SHARED, needs_shared

TOFU = SHARED / "tofu"
AUTHORS = [f"forget_author_{i:03d}" for i in range(10)]


@needs_shared()
def test_requests_split_the_forget_authors_and_keep_the_retain_split():
    bench = TofuBenchmark(path=str(TOFU), split="forget05")
    loaded = bench.load()
    data = loaded.unlearn
    assert isinstance(bench, SplitsRequests)
    assert bench.request_units(data).names == tuple(AUTHORS)
    assert check_requests(2, data, bench) == [AUTHORS[:5], AUTHORS[5:]]
    # each forget evaluation item knows its author, in the order of the unlearning items
    assert [it.edge for it in loaded.eval_sets["forget"]] == [qa.edge for qa in data.forget]
    requests = check_requests([[name] for name in AUTHORS], data, bench)
    second = request_data(data, requests, 1, keep_retain=True)
    forget05 = TofuSource(str(TOFU)).records("forget05")
    assert [qa.question for qa in second.forget] == [r["question"] for r in forget05[20:40]]
    assert second.retain == data.retain and len(second.retain) == 3800
    # every evaluation scores the run's own sets: the requests cover the whole forget set
    assert evaluation_data(data, requests) == data
    assert evaluation_sets(bench, data, requests, loaded.eval_sets) is loaded.eval_sets


@needs_shared()
@pytest.mark.parametrize(
    ("requests", "message"),
    [
        (
            [["forget_author_000"]],
            r"leaves the forget authors forget_author_001 out.*forget_authors",
        ),
        (
            [["author_000"], ["forget_author_000", "forget_author_001"]],
            r"unknown forget authors \['author_000'\]. Fix: .*forget_author_000, forget_author_001",
        ),
        ([["forget_author_001"], ["forget_author_001"]], "named twice"),
        (3, "has 2 forget author"),
    ],
)
def test_bad_requests_name_the_runs_forget_authors(requests, message):
    bench = TofuBenchmark(path=str(TOFU), split="forget01")
    with pytest.raises(ValueError, match=message):
        check_requests(requests, bench.load().unlearn, bench)


def scored(rouge: list[float], ratios: list[float], min_k: list[float]) -> EvalResult:
    """An evaluation of forget01's 40 items (author 0's 20, then author 1's) and 3 holdout."""
    rows = [
        {"rouge1_recall": r, "truth_ratio": t, "min_k": m}
        for r, t, m in zip(rouge, ratios, min_k, strict=True)
    ]
    holdout = [{"min_k": 0.5}] * 3
    return EvalResult({}, {"forget": rows, "holdout": holdout}, {})


@needs_shared()
def test_request_scores_restrict_the_forget_metrics_to_the_requests_authors():
    bench = TofuBenchmark(path=str(TOFU), split="forget01", holdout_limit=3)
    sets = bench.load().eval_sets
    result = scored([1.0] * 20 + [0.25] * 20, [0.5] * 20 + [4.0] * 20, [0.1] * 20 + [0.9] * 20)
    reference = {"forget_truth_ratio": [0.5] * 20 + [0.3] * 20}
    first = bench.request_scores(result, sets, ["forget_author_000"], reference)
    second = bench.request_scores(result, sets, ["forget_author_001"], reference)
    assert first["forget/rouge1_recall"] == 1.0 and second["forget/rouge1_recall"] == 0.25
    # forget aggregation mean(min(TR, 1/TR)): 0.5 for TR 0.5, 0.25 for TR 4
    assert first["forget/truth_ratio"] == 0.5 and second["forget/truth_ratio"] == 0.25
    # min-k scores are loss-like, holdout labelled 1: author 0 (0.1 < 0.5) separates perfectly
    assert first["mia/min_k_auc"] == 1.0 and second["mia/min_k_auc"] == 0.0
    # KS test against the retain model's ratios of the same 20 items: identical -> p = 1;
    # disjoint 20 vs 20 -> p = 2 / C(40, 20) ~ 1.5e-11
    assert first["forget_quality"] == pytest.approx(1.0)
    assert second["forget_quality"] < 1e-9
    # a reference of another size has no per-item alignment: no forget quality per request
    other = bench.request_scores(result, sets, ["forget_author_000"], {"forget_truth_ratio": [1]})
    assert "forget_quality" not in other and "forget_quality" not in bench.request_scores(
        result, sets, ["forget_author_000"]
    )
    assert bench.request_scores(result, sets, ["forget_author_007"]) == {}
