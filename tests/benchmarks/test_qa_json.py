import json

import pytest

from lunar_exp.benchmarks.qa.qa_json import QAJsonBenchmark
from lunar_exp.interfaces import EdgeSplit
from tests.conftest import SHARED, needs_shared


@needs_shared()
def test_reads_pistol_sample_as_is():
    bench = QAJsonBenchmark(
        path=str(SHARED / "pistol" / "sample_data_1.json"), forget_edges=["A_B"]
    ).load()
    data = bench.unlearn
    assert len(data.forget) == 20 and len(data.retain) == 380
    # the first retain_eval_limit (200) retain items are scored
    assert bench.eval_sets == {"forget": data.forget, "retain": data.retain[:200]}
    assert data.forget[0].question.startswith("What was the effective date")
    assert len(data.abstain) == 16 and len(data.reference) == 32


@needs_shared()
def test_reads_pistol_sample_2():
    data = QAJsonBenchmark(
        path=str(SHARED / "pistol" / "sample_data_2.json"), forget_edges=["0_1", "1_2"]
    ).load()
    data = data.unlearn
    assert len(data.forget) == 40 and len(data.forget) + len(data.retain) == 1500


def write(tmp_path, payload):
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(payload))
    return str(path)


@pytest.mark.parametrize(
    "payload,message",
    [
        ([{"question": "q", "answer": "a"}], r"record 0 lacks string field\(s\) \['edge'\]"),
        ({"question": "q"}, "must hold a non-empty JSON list"),
        ([], "must hold a non-empty JSON list"),
    ],
)
def test_wrong_schema_is_a_clear_error(tmp_path, payload, message):
    with pytest.raises(ValueError, match=message):
        QAJsonBenchmark(path=write(tmp_path, payload), forget_edges=["A"]).load()


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found. Fix: set benchmark.path"):
        QAJsonBenchmark(path=str(tmp_path / "nope.json"), forget_edges=["A"]).load()
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        QAJsonBenchmark(path=str(bad), forget_edges=["A"]).load()


def test_custom_abstain_and_reference_files(tmp_path):
    items = [
        {"question": f"q{i}", "answer": f"a{i}", "edge": "A" if i < 2 else "B"} for i in range(5)
    ]
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps([{"question": "who is Zed?", "answer": "I don't know."}]))
    bench = QAJsonBenchmark(
        path=write(tmp_path, items), forget_edges=["A"], reference_path=str(ref)
    )
    data = bench.load().unlearn
    assert [qa.question for qa in data.reference] == ["who is Zed?"]
    assert [qa.question for qa in data.forget] == ["q0", "q1"]


def test_edge_split_keeps_the_retain_limit(tmp_path):
    items = [{"question": f"q{i}", "answer": f"a{i}", "edge": "ABC"[i % 3]} for i in range(9)]
    bench = QAJsonBenchmark(path=write(tmp_path, items), forget_edges=["A"], retain_eval_limit=2)
    assert isinstance(bench, EdgeSplit)
    loaded = bench.load()
    assert [qa.question for qa in loaded.eval_sets["retain"]] == ["q1", "q2"]
    sets = bench.eval_sets_for(loaded.unlearn, ["A", "C"])
    assert [qa.question for qa in sets["forget"]] == ["q0", "q3", "q6", "q2", "q5", "q8"]
    assert [qa.question for qa in sets["retain"]] == ["q1", "q4"]
