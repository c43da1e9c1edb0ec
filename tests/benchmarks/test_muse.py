import json

import pytest
from hydra.utils import instantiate

from lunar_exp.benchmarks.muse import data as muse_data
from lunar_exp.benchmarks.muse import evaluation as muse_eval
from lunar_exp.benchmarks.muse.benchmark import MUSEBenchmark
from lunar_exp.benchmarks.muse.data import LOCAL_NAMES, MuseSource, passages
from lunar_exp.benchmarks.muse.evaluation import cut_at_stopwords, few_shot_prompt
from lunar_exp.benchmarks.muse.sets import MuseEvalSets
from lunar_exp.bookkeeping.offline import hub_needs
from lunar_exp.interfaces import TrainsRetainModel
from lunar_exp.metrics.mia import ATTACKS, TokenStats
from lunar_exp.metrics.text import rouge_l_f1
from tests.conftest import SHARED, compose_config, needs_shared
from tests.legacy_directions import assert_declared_as_before

NEWS = SHARED / "muse" / "news"
SMALL = {
    "retain_corpus": "privleak/retain",
    "forget_docs": 3,
    "retain_docs": 2,
    "n_reference": 2,
    "chunk_words": 48,
    "prompt_words": 8,
    "knowmem_limit": 2,
    "verbmem_limit": 2,
    "privleak_limit": 3,
    "verbmem_prompt_words": 16,
    "privleak_max_words": 24,
}


def small_news(**overrides) -> MUSEBenchmark:
    return MUSEBenchmark(**{"path": str(NEWS), **SMALL, **overrides})


# ----- data ---------------------------------------------------------------------------------------


@needs_shared()
def test_reads_the_shared_news_copy():
    bench = small_news()
    loaded = bench.load()
    assert vars(bench) == vars(small_news())  # load() keeps nothing on the benchmark
    data = loaded.unlearn
    assert data.forget and data.retain and len(data.reference) == 2 and data.abstain == ()
    assert all(qa.plain for qa in data.forget + data.retain + data.reference)
    prompts = [qa.question for qa in data.forget]
    assert len(set(prompts)) == len(prompts)  # LUNAR needs distinct forget prompts
    assert all(len(p.split()) == 8 for p in prompts)
    assert prompts[0].startswith("Greek Prime Minister Kyriakos Mitsotakis")
    sets = MuseEvalSets(**loaded.eval_sets)
    retain_qa = json.loads((NEWS / "knowmem" / "retain2_qa.json").read_text())
    assert sets.retain_qa == retain_qa[:2]
    assert len(sets.forget_icl) == len(sets.retain_icl) == 10
    assert len(sets.verbmem) == 2 and len(sets.verbmem[0]["prompt"].split()) == 16
    assert len(sets.privleak_forget) == len(sets.privleak_holdout) == 3
    holdout = json.loads((NEWS / "privleak" / "holdout.json").read_text())
    assert all(any(qa.question in h for h in holdout[-2:]) for qa in data.reference)


@needs_shared()
def test_aligned_subset_teaches_what_it_scores():
    bench = small_news(forget_docs=None, retain_docs=None, align_to_eval=True, chunk_words=64)
    loaded = bench.load()
    data = loaded.unlearn
    forget_text = [qa.question + qa.answer for qa in data.forget]
    retain_text = [qa.question + qa.answer for qa in data.retain]
    sets = MuseEvalSets(**loaded.eval_sets)
    assert len(sets.forget_qa) == 2 and len(sets.retain_qa) == 2
    assert all(any(r["answer"] in t for t in forget_text) for r in sets.forget_qa)
    assert all(any(r["answer"] in t for t in retain_text) for r in sets.retain_qa)
    assert all(any(r["gt"][:100] in t for t in forget_text) for r in sets.verbmem)
    assert all(any(p in t for t in forget_text) for p in sets.privleak_forget)
    # "2005" (question 2) occurs first in an unrelated article: the question's words decide.
    assert sets.forget_qa[1]["answer"] == "1960s"


def test_passages_are_centred_on_the_evidence():
    text = "a b c d e f g h"
    # "e" is word 4; 3 words wanted -> one more on each side: words 3..5 = "d e f ".
    assert passages(text, [(8, 9)], 3) == ["d e f "]
    # At the start the window cannot centre; identical windows come out once.
    assert passages(text, [(0, 1), (0, 1)], 3) == ["a b c "]


@needs_shared()
def test_hub_rows_give_the_same_data_as_local_files(monkeypatch):
    datasets = pytest.importorskip("datasets")
    requested = []

    def fake_load_dataset(hub_id, subset, split):
        name = f"{subset}/{split}"
        requested.append(name)
        rows = json.loads((NEWS / f"{LOCAL_NAMES.get(name, name)}.json").read_text())
        rows = [{"text": r} if isinstance(r, str) else r for r in rows]  # the hub's schema
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(muse_data, "hub_reachable", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    local, hub = small_news(), small_news(path=None)
    assert hub.load() == local.load()  # the unlearning data and the evaluation sets
    assert {"knowmem/retain_qa", "knowmem/retain_qa_icl", "privleak/retain"} <= set(requested)


def test_unreachable_hub_fails_at_once_with_the_local_fix(monkeypatch):
    monkeypatch.setattr(muse_data, "hub_reachable", lambda: False)
    with pytest.raises(FileNotFoundError, match="hub is unreachable.*benchmark.path.*model.path"):
        MUSEBenchmark(path=None).load()


def test_muse_llama_without_the_hub_fails_before_loading_the_model(monkeypatch):
    monkeypatch.setattr(muse_data, "hub_reachable", lambda: False)
    cfg = compose_config(["+exp=muse_llama"])
    assert cfg.model.path == "muse-bench/MUSE-news_target" and list(cfg.method.layers) == [17]
    needs = " ".join(hub_needs(cfg))  # the pipeline's pre-flight check lists both
    assert "model.path=muse-bench/MUSE-news_target" in needs
    assert "muse-bench/MUSE-News would be downloaded" in needs
    with pytest.raises(FileNotFoundError, match="muse-bench/MUSE-News cannot be read"):
        instantiate(cfg.benchmark).load()


def write_file(root, name, payload):
    path = root / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"hub_id": "muse-bench/MUSE-Movies"}, ValueError, "not a MUSE corpus"),
        ({"retain_corpus": "raw"}, ValueError, "Unknown MUSE split 'raw'"),
        ({"retain_corpus": "knowmem/forget_qa"}, ValueError, "not a text split"),
        ({"retain_corpus": "raw/retain1"}, FileNotFoundError, "raw/retain1' not found"),
        ({"forget_docs": 0}, ValueError, "forget set is empty"),
        ({"knowmem_limit": 0}, ValueError, "evaluation set forget_qa is empty"),
    ],
)
@needs_shared()
def test_bad_settings_are_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        small_news(**kwargs).load()


def test_missing_dir_file_and_wrong_schema(tmp_path):
    with pytest.raises(FileNotFoundError, match="MUSE directory .* not found"):
        MUSEBenchmark(path=str(tmp_path / "nope")).load()
    with pytest.raises(FileNotFoundError, match="'raw/forget' not found"):
        MUSEBenchmark(path=str(tmp_path)).load()
    write_file(tmp_path, "raw/forget", [{"title": "no text field"}])
    with pytest.raises(ValueError, match="row 0 is neither a string nor a record"):
        MUSEBenchmark(path=str(tmp_path)).load()
    write_file(tmp_path, "knowmem/forget_qa", [{"question": "q"}])
    with pytest.raises(ValueError, match=r"row 0 lacks string field\(s\) \['question', 'answer'\]"):
        MuseSource(str(tmp_path), "muse-bench/MUSE-News").records("knowmem/forget_qa")
    with pytest.raises(ValueError, match="is not an AUC"):
        MUSEBenchmark(retain_reference_auc=1.5)


# ----- metrics ------------------------------------------------------------------------------------


def test_rouge_l_f1_by_hand():
    # reference [the, golden, snitch], prediction [the, snitch]: LCS 2, P = 2/2, R = 2/3,
    # F1 = 2PR / (P + R) = (4/3) / (5/3) = 0.8.
    assert rouge_l_f1(["the Golden Snitch"], ["the snitch"]) == [pytest.approx(0.8)]
    assert rouge_l_f1(["1472"], ["1472"]) == [1.0]
    assert rouge_l_f1(["1472"], [""]) == [0.0]


@pytest.mark.parametrize(
    "raw,cut",
    [
        (" 1472\n\nQuestion: What next?", "1472"),
        ("Paris\nQuestion: and?", "Paris"),
        ("the Snitch Question: more", "the Snitch"),
        ("two\nlines\n\nthen more", "two\nlines"),
        ("no stopword here ", "no stopword here"),
    ],
)
def test_stopwords_cut_the_answer(raw, cut):
    assert cut_at_stopwords(raw) == cut


def test_knowmem_scores_cut_answers_with_rouge_l_f1(tiny_chat, monkeypatch):
    seen = {}

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size, desc):
        seen["prompt"] = tokenizer.decode(prompts[0])
        seen["max_new_tokens"] = max_new_tokens
        return ["1472\n\nQuestion: next", "the snitch\nQuestion"]

    monkeypatch.setattr(muse_eval, "greedy_generate", fake_generate)
    records = [
        {"question": "When?", "answer": "1472"},
        {"question": "Which ball?", "answer": "the Golden Snitch"},
    ]
    examples = [{"question": "Who?", "answer": "Wood"}]
    metrics, rows = muse_eval.knowmem(tiny_chat, records, examples, "forget", 32, 8)
    assert (
        few_shot_prompt(examples, "When?")
        == "Question: Who?\nAnswer: Wood\n\nQuestion: When?\nAnswer: "
    )
    assert seen["max_new_tokens"] == 32 and "Question: When?" in seen["prompt"]
    # F1 1.0 and 0.8 (hand-computed above); ROUGE-1 recall 1 and 2/3.
    assert metrics["forget/knowmem_rougeL_f1"] == pytest.approx(0.9)
    assert metrics["forget/rouge1_recall"] == pytest.approx((1 + 2 / 3) / 2)
    assert [r["response"] for r in rows] == ["1472", "the snitch"]


# Per-text answer-token log-probs, and their min-k (k = 0.4) scores:
#   forget 1: [-1, -2, -0.5, -3, -0.1] -> lowest ceil(2.0) = 2: -3, -2 -> score 2.5
#   forget 2: [-0.2, -0.4]             -> lowest ceil(0.8) = 1: -0.4    -> score 0.4
#   holdout 1: [-4, -1, -3]            -> lowest ceil(1.2) = 2: -4, -3  -> score 3.5
#   holdout 2: [-2]                    -> score 2.0
# AUC = share of (holdout, forget) pairs with holdout > forget = (3.5>2.5, 3.5>0.4, 2.0>0.4) = 3/4.
# LOSS (mean NLL): forget 6.6/5 = 1.32, 0.6/2 = 0.3; holdout 8/3 = 2.667, 2.0 -> AUC 4/4 = 1.
# Min-K++ with mu = -1, variance = 4 at every token: z = (lp + 1) / 2
#   forget 1: [0, -0.5, 0.25, -1, 0.45] -> lowest 2: -1, -0.5 -> 0.75; forget 2: [0.4, 0.3] -> -0.3
#   holdout 1: [-1.5, 0, -1] -> 1.25; holdout 2: [-0.5] -> 0.5
#   AUC = (1.25>0.75, 1.25>-0.3, 0.5>-0.3; not 0.5>0.75) = 3/4.
LOGPROBS = [[-1.0, -2.0, -0.5, -3.0, -0.1], [-0.2, -0.4], [-4.0, -1.0, -3.0], [-2.0]]


PRIVLEAK_SETS = MuseEvalSets([], [], [], [], [], ["f1", "f2"], ["h1", "h2"]).named()


def stats(logprobs: list[float]) -> TokenStats:
    n = len(logprobs)
    return TokenStats(logprobs, [0] * n, [-1.0] * n, [4.0] * n)


def privacy_bench(monkeypatch, **kwargs) -> MUSEBenchmark:
    pending = iter(LOGPROBS)
    monkeypatch.setattr(
        muse_eval,
        "token_stats",
        lambda model, pairs, pad, bs, desc: [stats(next(pending)) for _ in pairs],
    )
    return MUSEBenchmark(**kwargs)


def test_privleak_against_a_given_reference(tiny_chat, monkeypatch):
    bench = privacy_bench(monkeypatch, retain_reference_auc=0.6)
    metrics, rows = bench.privacy(tiny_chat, PRIVLEAK_SETS)
    # ((1 - 0.75) - (1 - 0.6)) / (1 - 0.6) * 100 = (0.25 - 0.4) / 0.4 * 100 = -37.5
    assert metrics["mia/min_k_auc"] == pytest.approx(0.75)
    assert metrics["privleak"] == pytest.approx(-37.5)
    assert metrics["privleak/min_k"] == pytest.approx(-37.5)
    assert metrics["privleak/reference_source"] == "given"
    assert [r["min_k"] for r in rows["privleak_forget"]] == pytest.approx([2.5, 0.4])
    # the number given is min-k's; LOSS (AUC 1) is held against 0.5: (0 - 0.5) / 0.5 * 100
    assert metrics["mia/loss_auc"] == pytest.approx(1.0)
    assert metrics["privleak/loss"] == pytest.approx(-100.0)
    assert metrics["mia/min_k_plus_plus_auc"] == pytest.approx(0.75)
    assert [r["min_k_plus_plus"] for r in rows["privleak_holdout"]] == pytest.approx([1.25, 0.5])
    assert [r["loss"] for r in rows["privleak_forget"]] == pytest.approx([1.32, 0.3])
    assert "mia/reference_auc" not in metrics  # no retrained model's losses
    assert 0 <= metrics["mia/gradnorm_auc"] <= 1 and "mia/zlib_auc" in metrics


def test_privleak_reference_from_a_metrics_json(tiny_chat, monkeypatch, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"mia/min_k_auc": 0.1, "before/mia/min_k_auc": 0.6}))
    bench = privacy_bench(monkeypatch, retain_reference_auc=str(path))
    assert not bench.wants_retain_model()
    reference = bench._file_reference()  # what load() reads, before any model is trained
    assert reference == {"min_k_auc": 0.6, "mia_auc": {"min_k": 0.6}, "source": str(path)}
    metrics, _ = bench.privacy(tiny_chat, PRIVLEAK_SETS, reference)
    assert metrics["privleak"] == pytest.approx(-37.5)
    assert metrics["privleak/reference_source"] == str(path)
    path.write_text(json.dumps({"mia/min_k_auc": 0.6}))  # an unlearned model's AUC: refused
    with pytest.raises(ValueError, match="holds none of"):
        privacy_bench(monkeypatch, retain_reference_auc=str(path))._file_reference()


def test_privleak_reference_from_an_open_unlearning_muse_eval(tiny_chat, monkeypatch, tmp_path):
    # open-unlearning's MUSE_EVAL.json of the retain model: privleak reads mia_min_k.agg_value
    path = tmp_path / "MUSE_EVAL.json"
    record = {
        "mia_min_k": {"agg_value": 0.6, "auc": 0.6, "forget": {}, "holdout": {}},
        "mia_loss": {"agg_value": 0.8, "auc": 0.8, "forget": {}, "holdout": {}},
        "privleak": {"agg_value": 3.1},
        "forget_knowmem_ROUGE": {"agg_value": 0.3},
    }
    path.write_text(json.dumps(record))
    bench = privacy_bench(monkeypatch, retain_reference_auc=str(path))
    reference = bench._file_reference()
    assert reference == {
        "min_k_auc": 0.6,
        "mia_auc": {"min_k": 0.6, "loss": 0.8},
        "source": str(path),
    }
    metrics, _ = bench.privacy(tiny_chat, PRIVLEAK_SETS, reference)
    assert metrics["privleak"] == pytest.approx(-37.5)  # as with the number 0.6 given
    # LOSS AUC 1 against the log's 0.8: ((1 - 1) - (1 - 0.8)) / 0.2 * 100 = -100
    assert metrics["privleak/loss"] == pytest.approx(-100.0)


def test_privleak_reference_from_the_finetuned_retain_model(tiny_chat, monkeypatch):
    bench = privacy_bench(monkeypatch, retain_reference_auc="finetune")
    assert isinstance(bench, TrainsRetainModel) and bench.wants_retain_model()
    assert bench._file_reference() is None
    # the retrained model's losses: forget [1.0, 1.0], holdout [3.0, 1.0]; LOSS AUC 0.9
    record = {
        "format": "lunar_exp.muse_retain_reference/2",
        "min_k_auc": 0.6,
        "mia_auc": {"min_k": 0.6, "loss": 0.9, "reference": 0.5},
        "item_loss": {"forget": [1.0, 1.0], "holdout": [3.0, 1.0]},
    }
    metrics, rows = bench.privacy(tiny_chat, PRIVLEAK_SETS, record)
    assert metrics["privleak"] == pytest.approx(-37.5)
    assert metrics["privleak/reference_source"] == "retain model (finetune)"
    # ((1 - 1) - (1 - 0.9)) / 0.1 * 100 = -100
    assert metrics["privleak/loss"] == pytest.approx(-100.0)
    # Reference = target loss - retrained loss: forget 1.32 - 1 = 0.32, 0.3 - 1 = -0.7;
    # holdout 2.667 - 3 = -0.333, 2 - 1 = 1. Pairs holdout > forget: -0.333 > -0.7, 1 > 0.32,
    # 1 > -0.7 (not -0.333 > 0.32) -> AUC 3/4; privleak ((1 - 0.75) - 0.5) / 0.5 * 100 = -50
    assert [r["reference"] for r in rows["privleak_forget"]] == pytest.approx([0.32, -0.7])
    assert metrics["mia/reference_auc"] == pytest.approx(0.75)
    assert metrics["privleak/reference"] == pytest.approx(-50.0)


def test_privleak_without_reference_warns_and_says_so(tiny_chat, monkeypatch, caplog):
    metrics, _ = privacy_bench(monkeypatch).privacy(tiny_chat, PRIVLEAK_SETS)
    # ((1 - 0.75) - 0.5) / 0.5 * 100 = -50
    assert metrics["privleak"] == pytest.approx(-50.0)
    assert metrics["privleak/reference_auc"] == 0.5
    assert metrics["privleak/reference_source"].startswith("default 0.5")
    assert "default retrained-model AUC 0.5" in caplog.text


# ----- a tiny model end to end --------------------------------------------------------------------


@needs_shared()
def test_tiny_model_evaluate_returns_every_key(tiny_chat):
    bench = small_news(knowmem_max_new_tokens=4, verbmem_max_new_tokens=6, retain_reference_auc=0.5)
    loaded = bench.load()
    result = bench.evaluate(tiny_chat, loaded.eval_sets, loaded.retain_reference)
    expected = {
        "forget/knowmem_rougeL_f1",
        "retain/knowmem_rougeL_f1",
        "forget/verbmem_rougeL_f1",
        "forget/rouge1_recall",
        "retain/rouge1_recall",
        "privleak",
        "privleak/reference_auc",
        "privleak/reference_source",
        "deviation_score",
        *(key for a in ATTACKS[:-1] for key in (f"mia/{a}_auc", f"privleak/{a}")),
        *(
            f"{split}/{name}"
            for split in ("forget_knowmem", "retain_knowmem", "forget_verbmem")
            for name in ("degeneration", "distinct_2")
        ),
    }
    assert set(result.metrics) == expected  # no Reference attack without a retrained model
    assert {k: len(v) for k, v in result.generations.items()} == {
        "forget_knowmem": 2,
        "retain_knowmem": 2,
        "forget_verbmem": 2,
        "privleak_forget": 3,
        "privleak_holdout": 3,
    }
    row = result.generations["forget_knowmem"][0]
    assert {"split", "question", "ground_truth", "response"} <= set(row)
    assert_declared_as_before(result)


@needs_shared()
def test_tiny_model_as_its_own_retrained_model_leaks_nothing_on_any_attack(tiny_chat):
    bench = small_news(
        knowmem_max_new_tokens=4, verbmem_max_new_tokens=6, retain_reference_auc="finetune"
    )
    loaded = bench.load()
    record = bench.reference_record(tiny_chat, loaded.eval_sets)
    assert set(record["mia_auc"]) == set(ATTACKS) and record["mia_auc"]["reference"] == 0.5
    assert [len(record["item_loss"][k]) for k in ("forget", "holdout")] == [3, 3]
    result = bench.evaluate(tiny_chat, loaded.eval_sets, record)
    for attack in ATTACKS:
        assert result.metrics[f"mia/{attack}_auc"] == pytest.approx(record["mia_auc"][attack])
        assert result.metrics[f"privleak/{attack}"] == pytest.approx(0.0, abs=1e-6)
        assert result.directions[f"privleak/{attack}"] is None
    assert set(ATTACKS) <= set(result.generations["privleak_holdout"][0])
