"""Sequential requests on MUSE: the run's forget documents are the request units (local data)."""

import json

import pytest

from lunar_exp.benchmarks.muse.benchmark import MUSEBenchmark
from lunar_exp.benchmarks.muse.data import document_at, document_starts
from lunar_exp.interfaces import EvalResult, SplitsRequests
from lunar_exp.sequential import check_requests, request_data
from tests.benchmarks.test_muse import NEWS, small_news
from tests.conftest import compose_config, needs_shared


def test_document_offsets_in_the_joined_corpus():
    # "ab" + "\n\n" + "cde" + "\n\n" + "f": documents start at 0, 4 and 9
    starts = document_starts(["ab", "cde", "f"])
    assert starts == [0, 4, 9]
    assert [document_at(starts, i) for i in (0, 3, 4, 8, 9)] == [0, 0, 1, 1, 2]


def forget_documents() -> list[str]:
    return json.loads((NEWS / "raw" / "forget.json").read_text())


def evidence(sets: dict) -> dict[str, list[str]]:
    """The text each forget-side item is placed by: knowmem answer, verbmem start, privleak."""
    return {
        "forget_qa": [r["answer"] for r in sets["forget_qa"]],
        "verbmem": [r["gt"][:100] for r in sets["verbmem"]],
        "privleak_forget": list(sets["privleak_forget"]),
    }


def muse_smollm() -> MUSEBenchmark:
    """The benchmark of +exp=muse_smollm (the aligned News subset) on the shared copy."""
    cfg = compose_config(["+exp=muse_smollm", f"paths.data_dir={NEWS.parents[1]}"])
    settings = {k: v for k, v in cfg.benchmark.items() if k != "_target_"}
    return MUSEBenchmark(**settings)


@needs_shared()
def test_aligned_items_and_passages_belong_to_the_document_holding_their_evidence():
    bench = muse_smollm()
    loaded = bench.load()
    data, sets = loaded.unlearn, loaded.eval_sets
    names = bench.request_units(data).names
    assert isinstance(bench, SplitsRequests) and len(names) == len(set(names)) > 2
    documents = forget_documents()
    passages = {
        name: [qa.question + qa.answer for qa in data.forget if qa.edge == name] for name in names
    }
    owners = sets["forget_units"]
    for kind, texts in evidence(sets).items():
        assert len(owners[kind]) == len(texts) and None not in owners[kind]
        for text, owner in zip(texts, owners[kind], strict=True):
            assert text in documents[int(owner.removeprefix("forget:doc"))]
            # the request that names this document unlearns the passage holding the evidence
            assert any(text in passage for passage in passages[owner])
    # request 1 of 2 forgets exactly its documents' passages; the retain passages stay
    requests = check_requests(2, data, bench)
    second = request_data(data, requests, 1, keep_retain=True)
    assert {qa.edge for qa in second.forget} == set(requests[1]) == set(names[len(requests[0]) :])
    assert second.retain == data.retain


@needs_shared()
def test_unaligned_chunks_and_items_are_placed_in_the_first_documents():
    bench = small_news(forget_docs=20, knowmem_limit=None, verbmem_limit=None, privleak_limit=None)
    loaded = bench.load()
    units = bench.request_units(loaded.unlearn)
    assert units.names == tuple(f"forget:doc{i}" for i in range(20))
    documents = forget_documents()
    for kind, texts in evidence(loaded.eval_sets).items():
        owners = loaded.eval_sets["forget_units"][kind]
        placed = [(t, o) for t, o in zip(texts, owners, strict=True) if o is not None]
        assert placed, kind  # some items of every kind come from the first 20 documents
        assert all(t in documents[int(o.removeprefix("forget:doc"))] for t, o in placed)
    with pytest.raises(ValueError, match=r"unknown forget documents \['forget:doc20'\]"):
        check_requests([["forget:doc20"]], loaded.unlearn, bench)


def test_request_scores_restrict_the_forget_metrics_to_the_requests_documents():
    bench = MUSEBenchmark(path=str(NEWS))
    sets = {
        "forget_units": {
            "forget_qa": ["forget:doc1", "forget:doc2", None],
            "verbmem": ["forget:doc2", "forget:doc1"],
            "privleak_forget": ["forget:doc1", "forget:doc1", "forget:doc2"],
        }
    }
    generations = {
        "forget_knowmem": [
            {"rouge1_recall": 1.0, "rougeL_f1": 0.8},
            {"rouge1_recall": 0.5, "rougeL_f1": 0.4},
            {"rouge1_recall": 0.0, "rougeL_f1": 0.0},  # found in no forget document
        ],
        "forget_verbmem": [{"rougeL_f1": 0.6}, {"rougeL_f1": 0.2}],
        "privleak_forget": [{"min_k": 0.1}, {"min_k": 0.2}, {"min_k": 0.9}],
        "privleak_holdout": [{"min_k": 0.5}, {"min_k": 0.6}],
    }
    result = EvalResult({}, generations, {})
    assert bench.request_scores(result, sets, ["forget:doc1"]) == {
        "forget/rouge1_recall": 1.0,
        "forget/knowmem_rougeL_f1": 0.8,
        "forget/verbmem_rougeL_f1": 0.2,
        "mia/min_k_auc": 1.0,  # 0.1, 0.2 below both holdout scores (holdout labelled 1)
    }
    both = bench.request_scores(result, sets, ["forget:doc1", "forget:doc2"])
    assert both["forget/rouge1_recall"] == 0.75 and both["forget/verbmem_rougeL_f1"] == 0.4
    # 0.9 sits above both holdout scores: 4 of the 6 (forget, holdout) pairs are ordered
    assert both["mia/min_k_auc"] == pytest.approx(4 / 6)
    assert bench.request_scores(result, sets, ["forget:doc5"]) == {}
    assert bench.request_scores(result, {}, ["forget:doc1"]) == {}
