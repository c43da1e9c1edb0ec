"""TOFU loaders on the shared copies (local and hub code paths) and the suite on the tiny model."""

import json
import logging

import datasets
import pytest

from lunar_exp.benchmarks.tofu import data as tofu_data
from lunar_exp.benchmarks.tofu.benchmark import TofuBenchmark, read_idk_answers, read_reference
from lunar_exp.benchmarks.tofu.data import TofuSource, parse_records
from lunar_exp.interfaces import CoreEvaluation, TrainsRetainModel
from lunar_exp.metrics.mia import ATTACKS, privleak
from lunar_exp.prompts import render_prompt
from tests.conftest import SHARED, compose_config, needs_shared
from tests.legacy_directions import assert_declared_as_before

TOFU = SHARED / "tofu"
OFFICIAL = TOFU / "locuslab_tofu"
RETAIN90_LOG = (
    OFFICIAL
    / "eval_logs/ft_epoch5_lr1e-05_llama2-7b_retain90_wd0.01/eval_results/ds_size300"
    / "eval_log_aggregated.json"
)


def small_tofu(**overrides) -> TofuBenchmark:
    settings = dict(
        path=str(TOFU),
        split="forget01",
        forget_authors=1,
        retain_authors=1,
        retain_eval_limit=6,
        known_facts_limit=4,
        holdout_limit=6,
        max_new_tokens=6,
        eval_batch_size=8,
        n_abstain=2,
        n_reference=2,
    )
    settings.update(overrides)
    return TofuBenchmark(**settings)


def test_parse_records_reads_arrays_concatenated_arrays_and_jsonl():
    assert parse_records('[{"a": 1}, {"a": 2}]', "x") == [{"a": 1}, {"a": 2}]
    assert parse_records('[{"a": 1}]\n[{"a": 2}, {"a": 3}]\n', "x") == [
        {"a": 1},
        {"a": 2},
        {"a": 3},
    ]
    assert parse_records('{"a": 1}\n{"a": 2}\n', "x") == [{"a": 1}, {"a": 2}]
    with pytest.raises(ValueError, match="not JSON"):
        parse_records("[{", "x")


@needs_shared()
@pytest.mark.parametrize(
    ("split", "forget", "retain", "holdout"),
    [("forget01", 40, 3960, 40), ("forget05", 200, 3800, 200), ("forget10", 400, 3600, 400)],
)
def test_every_split_loads_from_the_shared_copy(split, forget, retain, holdout):
    bench = TofuBenchmark(path=str(TOFU), split=split)
    loaded = bench.load()
    data, sets = loaded.unlearn, loaded.eval_sets
    assert (len(data.forget), len(data.retain)) == (forget, retain)
    assert len(sets["holdout"]) == holdout
    assert len(sets["retain"]) == 400  # retain_perturbed lies within every retain split
    assert len(sets["real_authors"]) == 100
    assert len(sets["world_facts"]) == 117
    assert all(len(it.perturbed_answers) == 5 for it in sets["forget"])
    assert all(len(it.perturbed_answers) == 3 for it in sets["world_facts"])
    # prompt/response keys of the forget file are read as question/answer
    assert data.forget[-1].question == sets["forget"][-1].question
    assert data.forget[-1].answer == sets["forget"][-1].answer
    assert loaded.retain_reference is None
    assert vars(bench) == vars(TofuBenchmark(path=str(TOFU), split=split))  # settings only
    assert {qa.edge for qa in data.forget} == {
        f"forget_author_{i:03d}" for i in range(forget // 20)
    }
    # TOFU's paraphrased questions feed the paraphrase attack
    assert all(qa.paraphrase and qa.paraphrase != qa.question for qa in data.forget)


@needs_shared()
def test_hub_code_path_reads_the_hub_schema(monkeypatch, tmp_path):
    # The official locuslab copy is the hub's JSONL; serve it through datasets as the hub would.
    hub_file = OFFICIAL / "real_authors_perturbed.json"
    calls = []
    real_load_dataset = datasets.load_dataset

    def fake_load_dataset(repo, name, split):
        calls.append((repo, name, split))
        return real_load_dataset("json", data_files=str(hub_file), split="train")

    monkeypatch.setattr(tofu_data, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    from_hub = TofuSource(None).records("real_authors_perturbed")
    local = TofuSource(str(TOFU)).records("real_authors_perturbed")
    assert calls == [("locuslab/TOFU", "real_authors_perturbed", "train")]
    assert from_hub == local


def test_unreachable_hub_fails_at_once_naming_the_fix(monkeypatch):
    monkeypatch.setattr(tofu_data, "hub_reachable", lambda: False)
    with pytest.raises(ConnectionError, match="benchmark.path"):
        TofuBenchmark(path=None).load()


@needs_shared()
def test_bad_input_gets_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="forget01"):
        TofuBenchmark(path=str(TOFU), split="forget99")
    with pytest.raises(FileNotFoundError, match="benchmark.path"):
        TofuBenchmark(path=str(tmp_path / "nope")).load()
    (tmp_path / "forget01.json").write_text(json.dumps([{"q": "x"}]))
    with pytest.raises(ValueError, match="no string 'question'"):
        TofuBenchmark(path=str(tmp_path), split="forget01").load()
    (tmp_path / "forget01.json").write_text(json.dumps([{"question": "x", "answer": "y"}]))
    with pytest.raises(FileNotFoundError, match="forget01_perturbed"):
        TofuBenchmark(path=str(tmp_path), split="forget01").load()


@needs_shared()
def test_official_log_is_a_valid_retain_reference():
    record = read_reference(RETAIN90_LOG)
    assert len(record["forget_truth_ratio"]) == 300
    assert all(value > 0 for value in record["forget_truth_ratio"])


@needs_shared()
def test_tiny_model_suite_reports_every_key_and_missing_forget_quality(tiny_chat, caplog):
    bench = small_tofu()
    loaded = bench.load()
    with caplog.at_level(logging.INFO):
        result = bench.evaluate(tiny_chat, loaded.eval_sets)
    keys = {
        "forget_quality",
        "model_utility",
        "forget/truth_ratio",
        "forget/prob",
        "retain/prob",
        "forget/rougeL_recall",
        "forget/extraction_strength",
        "forget/exact_memorization",
        "real_authors/prob_normalised",
        "world_facts/truth_ratio",
        "privleak",
        "mia/min_k_auc",
        "deviation_score",
        "forget/refusal_rate",
    }
    assert keys <= set(result.metrics)
    assert result.metrics["forget_quality"] is None
    assert "forget quality is MISSING" in caplog.text
    assert 0 < result.metrics["forget/prob"] < 1
    assert len(result.generations["forget"]) == 20
    assert {"truth_ratio", "response"} <= set(result.generations["forget"][0])
    assert_declared_as_before(result)
    # every attack but Reference (no retain model), each item's score in its generations row
    scored = [a for a in ATTACKS if a != "reference"]
    for attack in scored:
        assert 0 <= result.metrics[f"mia/{attack}_auc"] <= 1
        auc = result.metrics[f"mia/{attack}_auc"]
        assert result.metrics[f"privleak/{attack}"] == pytest.approx(privleak(auc, 0.5))
        assert result.directions[f"mia/{attack}_auc"] is None
    assert "mia/reference_auc" not in result.metrics
    assert "privleak/reference" not in result.metrics
    assert "Reference attack left out" in caplog.text
    assert result.metrics["privleak"] == result.metrics["privleak/min_k"]
    assert len(result.generations["holdout"]) == 6
    for split in ("forget", "holdout"):
        assert set(scored) <= set(result.generations[split][0])
    forget_rows = result.generations["forget"]
    assert [r["loss"] for r in forget_rows] == [r["answer_nll"] for r in forget_rows]


@needs_shared()
def test_core_evaluation_scores_forget_and_retain_as_the_full_suite_does(tiny_chat):
    bench = small_tofu()
    assert isinstance(bench, CoreEvaluation)
    loaded = bench.load()
    full = bench.evaluate(tiny_chat, loaded.eval_sets)
    core = bench.evaluate_core(tiny_chat, loaded.eval_sets)
    assert {"forget/rouge1_recall", "retain/truth_ratio", "forget_quality"} <= set(core.metrics)
    assert set(core.metrics) < set(full.metrics)
    assert set(core.directions) == set(core.metrics)
    left_out = ("real_authors/", "world_facts/", "mia/", "privleak", "model_utility", "forget/ex")
    assert not [key for key in core.metrics if key.startswith(left_out)]
    assert set(core.generations) == {"forget", "retain"}
    for key, value in core.metrics.items():
        assert value == pytest.approx(full.metrics[key]), key
        assert core.directions[key] == full.directions[key], key
    assert core.metrics["deviation_score"] == pytest.approx(full.metrics["deviation_score"])


@needs_shared()
def test_reference_record_gives_forget_quality_one_for_the_same_model(tiny_chat):
    bench = small_tofu(retain_reference="finetune")
    assert isinstance(bench, TrainsRetainModel) and bench.wants_retain_model()
    loaded = bench.load()
    assert loaded.retain_reference is None  # the run trains the retain model
    record = bench.reference_record(tiny_chat, loaded.eval_sets)
    assert len(record["forget_truth_ratio"]) == 20
    assert set(record["mia_auc"]) == set(ATTACKS)
    assert record["mia_auc"]["reference"] == 0.5  # its own reference: every score is 0
    assert [len(record["item_loss"][k]) for k in ("forget", "holdout")] == [20, 6]
    result = bench.evaluate(tiny_chat, loaded.eval_sets, record)
    metrics = result.metrics
    # the model is its own retain model: identical truth ratios, KS p-value 1, privleak 0
    assert metrics["forget_quality"] == pytest.approx(1.0)
    assert metrics["privleak"] == pytest.approx(0.0, abs=1e-6)
    # ... and every attack scores as the retain model did: each privleak/<attack> is 0
    for attack in ATTACKS:
        assert metrics[f"mia/{attack}_auc"] == pytest.approx(record["mia_auc"][attack])
        assert metrics[f"privleak/{attack}"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["mia/reference_auc"] == 0.5
    assert {r["reference"] for r in result.generations["holdout"]} == {0.0}


@needs_shared()
def test_a_reference_file_is_read_at_load_time(tmp_path):
    path = tmp_path / "retain_reference.json"
    path.write_text(json.dumps({"forget_truth_ratio": [0.5] * 20, "min_k_auc": 0.4}))
    bench = small_tofu(retain_reference=str(path))
    assert not bench.wants_retain_model()
    assert bench.load().retain_reference["min_k_auc"] == 0.4
    with pytest.raises(FileNotFoundError, match="Retain reference"):
        small_tofu(retain_reference=str(tmp_path / "nope.json")).load()


SMALL_TOFU_ARGS = [
    "+exp=smoke",
    "benchmark=tofu",
    f"benchmark.path={TOFU}",
    "benchmark.split=forget01",
    "benchmark.forget_authors=1",
    "benchmark.retain_authors=1",
    "benchmark.retain_eval_limit=6",
    "benchmark.known_facts_limit=4",
    "benchmark.holdout_limit=6",
    "benchmark.max_new_tokens=6",
    "benchmark.eval_batch_size=8",
    "benchmark.n_abstain=2",
    "benchmark.n_reference=2",
]


def test_tofu_llama_template_renders_the_official_inst_format(tiny_chat):
    cfg = compose_config(["+exp=tofu_llama"])
    tok = tiny_chat.tokenizer
    tok.chat_template = cfg.model.chat_template
    rendered = render_prompt(tok, "Who is X?", cfg.model.system_prompt)
    assert rendered == f"{tok.bos_token}[INST] Who is X? [/INST]"


def open_unlearning_log(path, scores, min_k_auc=0.61):
    """A TOFU_EVAL.json as open-unlearning's TOFU evaluator writes it (only the keys read here)."""
    by_index = {str(i): {"score": score} for i, score in enumerate(scores)}
    record = {
        "forget_truth_ratio": {"agg_value": 0.7, "value_by_index": by_index},
        "mia_min_k": {"agg_value": min_k_auc},
        "mia_loss": {"agg_value": 0.3, "forget": {}, "holdout": {}},
        "mia_reference": {"agg_value": 0.5},
        "model_utility": {"agg_value": 0.6},
    }
    path.write_text(json.dumps(record))
    return str(path)


@needs_shared()
def test_an_open_unlearning_log_gives_the_forget_quality_of_the_same_lunar_exp_reference(
    tmp_path, tiny_chat
):
    # forget01 has 40 items; the small benchmark scores the first author's 20
    scores = [0.3 + 0.02 * i for i in range(40)]
    ou = small_tofu(retain_reference=open_unlearning_log(tmp_path / "TOFU_EVAL.json", scores))
    ours_path = tmp_path / "retain_reference.json"
    ours_path.write_text(json.dumps({"forget_truth_ratio": scores[:20], "min_k_auc": 0.61}))
    ours = small_tofu(retain_reference=str(ours_path))
    ou_loaded, ours_loaded = ou.load(), ours.load()
    assert ou_loaded.retain_reference["forget_truth_ratio"] == scores[:20]
    ou_metrics = ou.evaluate(tiny_chat, ou_loaded.eval_sets, ou_loaded.retain_reference).metrics
    ours_metrics = ours.evaluate(
        tiny_chat, ours_loaded.eval_sets, ours_loaded.retain_reference
    ).metrics
    assert ou_metrics["forget_quality"] == pytest.approx(ours_metrics["forget_quality"])
    assert ou_metrics["privleak/reference_auc"] == 0.61
    assert ou_metrics["privleak"] == pytest.approx(ours_metrics["privleak"])
    # each attack's privleak against the log's mia_<attack> AUC, 0.5 where it has none
    assert ou_loaded.retain_reference["mia_auc"] == {"loss": 0.3, "min_k": 0.61, "reference": 0.5}
    loss_auc = ou_metrics["mia/loss_auc"]
    assert ou_metrics["privleak/loss"] == pytest.approx(privleak(loss_auc, 0.3))
    assert ours_metrics["privleak/loss"] == pytest.approx(privleak(loss_auc, 0.5))
    assert "mia/reference_auc" not in ou_metrics  # no per-item retain losses in the log


@needs_shared()
def test_an_open_unlearning_log_of_another_split_fails_naming_both_counts(tmp_path):
    path = open_unlearning_log(tmp_path / "TOFU_EVAL.json", [0.5] * 30)
    with pytest.raises(ValueError) as err:
        small_tofu(retain_reference=path).load()
    message = str(err.value)
    assert "holds 30 forget truth ratios but benchmark.split=forget01 has 40 items" in message
    assert "Fix:" in message and "\n" not in message


def test_an_open_unlearning_log_with_a_gap_names_the_index(tmp_path):
    path = tmp_path / "TOFU_EVAL.json"
    open_unlearning_log(path, [0.5, 0.6, 0.7])
    record = json.loads(path.read_text())
    record["forget_truth_ratio"]["value_by_index"]["1"] = {"score": None}
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"lacks a score for index \[1\] of 0..2"):
        read_reference(path)


@needs_shared()
def test_a_list_reference_of_another_size_is_said(tmp_path, caplog):
    path = tmp_path / "retain_reference.json"
    path.write_text(json.dumps({"forget_truth_ratio": [0.5] * 30}))
    with caplog.at_level(logging.WARNING):
        small_tofu(retain_reference=str(path)).load()
    assert "compares the 20 scored forget items with the 30 truth ratios" in caplog.text


def test_the_attack_list_is_checked_when_the_benchmark_is_built():
    with pytest.raises(ValueError, match=r"benchmark.mia_attacks=\['loss'\] leaves out min_k"):
        TofuBenchmark(mia_attacks=["loss"])
    with pytest.raises(ValueError, match=r"benchmark.mia_attacks\[1\]='minkpp'"):
        TofuBenchmark(mia_attacks=["min_k", "minkpp"])


@needs_shared()
def test_dropped_attacks_are_neither_scored_nor_reported(tiny_chat):
    bench = small_tofu(mia_attacks=["min_k", "loss"])
    loaded = bench.load()
    result = bench.evaluate(tiny_chat, loaded.eval_sets)
    reported = {key for key in result.metrics if key.startswith("mia/")}
    assert reported == {"mia/min_k_auc", "mia/loss_auc"}
    assert "gradnorm" not in result.generations["holdout"][0]


IDK = TOFU / "locuslab_tofu" / "idontknow.jsonl"


@needs_shared()
def test_each_forget_item_draws_an_idk_answer_from_the_file():
    answers = set(IDK.read_text().splitlines()) - {""}
    assert len(answers) >= 99
    forget = small_tofu(idk_path=str(IDK)).load().unlearn.forget
    drawn = [qa.abstention for qa in forget]
    assert all(a in answers for a in drawn)
    assert len(set(drawn)) > 5  # drawn per item, not one sentence for all
    assert drawn == [qa.abstention for qa in small_tofu(idk_path=str(IDK)).load().unlearn.forget]
    other_seed = small_tofu(idk_path=str(IDK), seed=1).load().unlearn.forget
    assert drawn != [qa.abstention for qa in other_seed]
    assert all(qa.abstention is None for qa in small_tofu().load().unlearn.forget)


def test_an_idk_file_is_read_as_lines_and_checked(tmp_path):
    path = tmp_path / "idk.jsonl"
    path.write_text('I have no idea.\n\n"Not sure, sorry."\n')
    assert read_idk_answers(path) == ["I have no idea.", "Not sure, sorry."]
    path.write_text("\n \n")
    with pytest.raises(ValueError, match="holds no answer. Fix:"):
        read_idk_answers(path)
    with pytest.raises(FileNotFoundError, match="benchmark.idk_path=.* not found. Fix:"):
        read_idk_answers(tmp_path / "none.jsonl")
