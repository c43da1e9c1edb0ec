import json
import math
from pathlib import Path

import lm_eval
import pytest
import yaml

from lunar_exp.benchmarks.common.corpora import chunk_items, read_documents
from lunar_exp.benchmarks.lm_eval import mcq as lm_eval_mcq
from lunar_exp.benchmarks.lm_eval.mcq import LMEvalMCQ, summarise
from lunar_exp.benchmarks.lm_eval.questions import read_questions
from lunar_exp.benchmarks.wmdp.benchmark import WMDPBenchmark
from tests.conftest import SHARED, needs_shared
from tests.legacy_directions import assert_declared_as_before

NEWS = SHARED / "muse" / "news"
LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"


def stand_in(tmp_path, **overrides):
    """The CPU twin's stand-in corpora (MUSE-News) with small counts."""
    args = {
        "forget_corpus": str(NEWS / "raw" / "forget.json"),
        "retain_corpus": str(NEWS / "privleak" / "retain2.json"),
        "wmdp_dir": str(SHARED / "wmdp"),
        "mmlu_dir": str(SHARED / "mmlu"),
        "mmlu_subjects": ["anatomy"],
        "n_forget": 8,
        "n_retain": 6,
        "cache_dir": str(tmp_path / "cache"),
        **overrides,
    }
    return WMDPBenchmark(**args)


@needs_shared()
def test_load_cuts_shared_corpora_into_distinct_plain_items(tmp_path):
    bench = stand_in(tmp_path)
    settings, suite = dict(vars(bench)), dict(vars(bench.suite))
    loaded = bench.load()
    assert vars(bench) == settings and vars(bench.suite) == suite  # load() keeps nothing
    data = loaded.unlearn
    assert set(loaded.eval_sets) == {"mcq"}
    assert loaded.eval_sets["mcq"].names == ("wmdp_bio", "wmdp_cyber", "mmlu_anatomy")
    assert (len(data.forget), len(data.retain), len(data.reference)) == (8, 6, 32)
    assert all(qa.plain for qa in data.forget + data.retain)
    assert not any(qa.plain for qa in data.reference)
    assert len({qa.question for qa in data.forget}) == 8  # LUNAR needs distinct forget prompts
    assert {qa.edge.split(":")[0] for qa in data.forget} == {"forget"}
    assert all(len(qa.question.split()) == 12 for qa in data.forget)
    articles = json.loads((NEWS / "raw" / "forget.json").read_text())
    first = data.forget[0]
    doc = articles[int(first.edge.split(":doc")[1])]
    assert first.question + first.answer in doc


@needs_shared()
def test_read_questions_keeps_shared_files_as_written():
    bio = read_questions(SHARED / "wmdp" / "bio_questions.json")
    assert len(bio) == 1273 and bio[0]["answer"] == 0 and len(bio[0]["choices"]) == 4
    ccs = read_questions(SHARED / "mmlu" / "test" / "college_computer_science_test.csv")
    assert len(ccs) == 100
    assert ccs[10]["choices"][0] == "None"  # a pandas-based reader would turn this into NaN


def test_local_template_matches_lm_evals_own_tasks():
    ours = yaml.safe_load(lm_eval_mcq.TEMPLATE.read_text())
    for theirs_path in (
        LM_EVAL_TASKS / "wmdp" / "_default_template_yaml",
        LM_EVAL_TASKS / "mmlu" / "default" / "_default_template_yaml",
    ):
        theirs = yaml.safe_load(theirs_path.read_text())
        for key in ("output_type", "doc_to_text", "doc_to_choice", "doc_to_target", "metric_list"):
            assert ours[key] == theirs[key], (theirs_path, key)


@needs_shared()
def test_lm_eval_scores_local_slices_on_the_tiny_model(tmp_path, tiny_chat):
    suite = LMEvalMCQ(
        ["bio"],
        True,
        ["anatomy", "virology"],
        "local",
        str(SHARED / "wmdp"),
        str(SHARED / "mmlu"),
        limit=20,
        batch_size=16,
        cache_dir=str(tmp_path),
        owner="benchmark",
    )
    result = suite.evaluate(tiny_chat, suite.tasks())
    bio = result.generations["wmdp_bio"]
    questions = json.loads((SHARED / "wmdp" / "bio_questions.json").read_text())[:20]
    assert [r["question"] for r in bio] == [q["question"] for q in questions]
    assert [r["ground_truth"] for r in bio] == ["ABCD"[q["answer"]] for q in questions]
    assert 0.0 <= result.metrics["wmdp_bio/acc"] <= 1.0
    assert result.metrics["wmdp_bio/acc"] == pytest.approx(sum(r["correct"] for r in bio) / 20)
    mmlu = result.generations["mmlu_anatomy"] + result.generations["mmlu_virology"]
    assert len(mmlu) == 40
    assert result.metrics["mmlu/acc"] == pytest.approx(sum(r["correct"] for r in mmlu) / 40)
    assert all(r["correct"] == float(r["prediction"] == r["ground_truth"]) for r in bio + mmlu)
    # lm-eval declares accuracy higher-is-better; on the unlearned WMDP subset it flips
    assert result.directions == {
        "wmdp_bio/acc": False,
        "wmdp_bio/acc_stderr": None,
        "mmlu/acc": True,
        "mmlu/acc_stderr": None,
    }
    assert_declared_as_before(result)


def test_summarise_pools_subjects_by_size():
    def sample(doc_id, acc, target=0):
        scores = [(-1.0, False), (-2.0, False), (-3.0, False), (-4.0, False)]
        return {
            "doc_id": doc_id,
            "doc": {"question": f"q{doc_id}"},
            "target": target,
            "acc": acc,
            "filtered_resps": scores,
        }

    output = {
        "samples": {
            "mmlu_a": [sample(1, 0.0, 1), sample(0, 1.0), sample(2, 0.0, 3)],
            "mmlu_b": [sample(0, 1.0)],
        },
        "results": {
            "mmlu_a": {"acc,none": 1 / 3, "acc_stderr,none": 1 / 3},
            "mmlu_b": {"acc,none": 1.0, "acc_stderr,none": 0.0},
        },
    }
    result = summarise(output)
    # (1 + 1) correct of 4; pooled var = (2 * (1/3)^2 * 3 + 0) / (4 - 2) = 1/3, stderr = sqrt(1/12)
    assert result.metrics["mmlu/acc"] == pytest.approx(0.5)
    assert result.metrics["mmlu/acc_stderr"] == pytest.approx(math.sqrt(1 / 12))
    assert [r["question"] for r in result.generations["mmlu_a"]] == ["q0", "q1", "q2"]
    assert [r["ground_truth"] for r in result.generations["mmlu_a"]] == ["A", "B", "D"]
    assert {r["prediction"] for r in result.generations["mmlu_a"]} == {"A"}
    assert result.directions == {"mmlu/acc": True, "mmlu/acc_stderr": None}
    declared = {**output, "higher_is_better": {"mmlu_a": {"acc": False}, "mmlu_b": {"acc": False}}}
    assert summarise(declared).directions["mmlu/acc"] is False  # as the tasks declare


def test_chunks_split_prompt_and_continuation_as_written():
    text = " ".join(f"w{i}" for i in range(25))
    items = chunk_items([text], "forget", chunk_words=10, prompt_words=3, count=None, seed=0)
    assert [qa.question for qa in items] == ["w0 w1 w2", "w10 w11 w12", "w20 w21 w22"]
    assert items[0].answer == " w3 w4 w5 w6 w7 w8 w9"
    assert items[2].answer == " w23 w24"  # a 5-word tail is kept (>= half of 10)
    assert all(qa.plain and qa.edge == "forget:doc0" for qa in items)
    assert len(chunk_items([text], "f", 10, 3, count=2, seed=0)) == 2


@pytest.mark.parametrize(
    "name,content",
    [
        ("c.json", json.dumps(["alpha beta", {"text": "gamma"}])),
        ("c.jsonl", '"alpha beta"\n\n{"text": "gamma"}\n'),
    ],
)
def test_corpus_formats(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    assert read_documents(str(path), "benchmark.forget_corpus") == ["alpha beta", "gamma"]
    txt = tmp_path / "c.txt"
    txt.write_text("one document\n\nwith two paragraphs")
    assert read_documents(str(txt), "k") == ["one document\n\nwith two paragraphs"]


def bad_corpus(tmp_path, payload):
    path = tmp_path / "bad.json"
    path.write_text(payload)
    return {"forget_corpus": str(path)}


@needs_shared()
@pytest.mark.parametrize(
    "make_args,error,message",
    [
        (lambda t: {"subsets": ["bioo"]}, ValueError, r"unknown WMDP subset\(s\) \['bioo'\]"),
        (lambda t: {"mode": "offline"}, ValueError, "benchmark.mode='offline'"),
        (
            lambda t: {"forget_corpus": str(t / "nope.jsonl")},
            FileNotFoundError,
            "Corpus file .*nope.jsonl not found. Fix: set benchmark.forget_corpus",
        ),
        (
            lambda t: bad_corpus(t, json.dumps([{"body": "x"}])),
            ValueError,
            "record 0 is neither a string nor a record with a string 'text' field",
        ),
        (lambda t: bad_corpus(t, "[]"), ValueError, "holds no text"),
        (lambda t: bad_corpus(t, '["too short"]'), ValueError, "no document of at least 100"),
        (lambda t: bad_corpus(t, "{"), ValueError, "is not valid JSON"),
        (
            lambda t: {"retain_corpus": str(NEWS / "raw" / "forget.json")},
            ValueError,
            "are both .* Fix: use two disjoint corpora",
        ),
        (lambda t: {"prompt_words": 150}, ValueError, "prompt_words=150 must be positive"),
        (
            lambda t: {"mode": "local", "wmdp_dir": str(t)},
            FileNotFoundError,
            r"1 question file\(s\) missing.*Fix: set benchmark.wmdp_dir",
        ),
        (
            lambda t: {"reference_path": str(t / "ref.json")},
            FileNotFoundError,
            "benchmark.reference_path=.* not found",
        ),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, make_args, error, message):
    with pytest.raises(error, match=message):
        stand_in(tmp_path, **{"subsets": ["bio"], **make_args(tmp_path)}).load()


@needs_shared()
@pytest.mark.parametrize(
    "name,content,message",
    [
        (
            "bio_questions.json",
            json.dumps([{"question": "q", "choices": ["a"] * 4, "answer": "A"}]),
            "row 0 is not a question with 4 string choices and an integer answer",
        ),
        ("bio_questions.json", json.dumps({"question": "q"}), "must hold a JSON list"),
        ("test/anatomy_test.csv", "q,a,b,c,d,0\n", "has header .* Fix: use the cais/mmlu CSV"),
        (
            "test/anatomy_test.csv",
            "question,choice0,choice1,choice2,choice3,answer\nq,a,b,c,d,7\n",
            "row 0 is not a question",
        ),
    ],
)
def test_bad_question_files_fail_before_any_model_loads(tmp_path, name, content, message):
    for sub, src in (("wmdp", SHARED / "wmdp" / "bio_questions.json"),):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "bio_questions.json").write_bytes(src.read_bytes())
    (tmp_path / "mmlu" / "test").mkdir(parents=True)
    (tmp_path / "mmlu" / "test" / "anatomy_test.csv").write_bytes(
        (SHARED / "mmlu" / "test" / "anatomy_test.csv").read_bytes()
    )
    target = tmp_path / ("wmdp" if name.startswith("bio") else "mmlu") / name
    target.write_text(content)
    bench = stand_in(
        tmp_path, subsets=["bio"], wmdp_dir=str(tmp_path / "wmdp"), mmlu_dir=str(tmp_path / "mmlu")
    )
    with pytest.raises(ValueError, match=message):
        bench.load()


def test_unreachable_hub_names_every_local_fix(tmp_path, monkeypatch):
    monkeypatch.setattr("lunar_exp.models.hub_reachable", lambda: False)
    bench = WMDPBenchmark(wmdp_dir=str(tmp_path / "none"), cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        bench.load()
    text = str(err.value)
    assert text.startswith("benchmark.forget_corpus, benchmark.retain_corpus, the WMDP/MMLU")
    for fix in ("benchmark.forget_corpus=/path", "benchmark.wmdp_dir=", "model.path=/local/dir"):
        assert fix in text
