"""Sequential unlearning requests: data per request, the seq/<k> metrics and the plot."""

import pytest

from lunar_exp.sequential import check_requests, evaluation_data, evaluation_sets, request_data
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


def test_evaluation_sets_are_the_same_for_every_request(toy_data):
    data = evaluation_data(toy_data, REQUESTS)
    assert {item.edge for item in data.forget} == {"person_00", "person_01", "person_02"}
    assert {item.edge for item in data.retain} == {"person_03"}
    # the benchmark's EdgeSplit ability builds the same sets, in the same order
    sets = evaluation_sets(toy_benchmark(), toy_data, REQUESTS)
    assert sets == {"forget": data.forget, "retain": data.retain}


@pytest.mark.parametrize(
    ("requests", "message"),
    [
        ([["person_09"]], "unknown edges"),
        ([["person_00"], ["person_00"]], "named twice"),
        ([[]], "non-empty list"),
        ("person_00", "list of edge lists"),
    ],
)
def test_bad_requests_are_clear_errors(toy_data, requests, message):
    with pytest.raises(ValueError, match=message):
        check_requests(requests, toy_data, toy_benchmark())


def test_benchmarks_with_fixed_evaluation_sets_refuse_requests(toy_data):
    class FixedSets:  # a benchmark without the EdgeSplit ability
        name = "fixed"

        def load(self): ...

        def evaluate(self, chat, eval_sets, reference=None): ...

    with pytest.raises(ValueError, match="chosen by edges"):
        check_requests(REQUESTS, toy_data, FixedSets())
