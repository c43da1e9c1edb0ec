import random
import re

import pytest

from lunar_exp.benchmarks.common import knowledge_graph as kg
from lunar_exp.benchmarks.qa.synthetic import SyntheticBenchmark
from lunar_exp.interfaces import EdgeSplit
from lunar_exp.metrics.text import is_refusal, rouge_recall
from tests.legacy_directions import assert_declared_as_before


def test_generator_is_deterministic_by_seed():
    assert SyntheticBenchmark(seed=3).load() == SyntheticBenchmark(seed=3).load()
    assert SyntheticBenchmark(seed=3).load() != SyntheticBenchmark(seed=4).load()


def test_splits_follow_forget_edges():
    bench = SyntheticBenchmark(
        n_entities=5, facts_per_entity=3, forget_edges=["person_01", "person_03"]
    ).load()
    data = bench.unlearn
    assert {qa.edge for qa in data.forget} == {"person_01", "person_03"}
    assert len(data.forget) == 6 and len(data.retain) == 9
    assert not {qa.edge for qa in data.retain} & {"person_01", "person_03"}
    # the evaluation sets are the same split, in the same order
    assert bench.eval_sets == {"forget": data.forget, "retain": data.retain}
    assert (bench.generation.max_new_tokens, bench.generation.batch_size) == (32, 16)
    assert bench.retain_reference is None


def test_load_and_evaluate_leave_the_settings_alone(tiny_chat):
    benchmark = SyntheticBenchmark(n_entities=3, facts_per_entity=1, max_new_tokens=2)
    settings = dict(vars(benchmark))
    loaded = benchmark.load()
    result = benchmark.evaluate(tiny_chat, {"forget": loaded.eval_sets["forget"]})
    assert vars(benchmark) == settings
    assert set(result.metrics) == {
        f"forget/{k}"
        for k in (
            "rouge1_recall",
            "rougeL_recall",
            "fact_recall",
            "refusal_rate",
            "answer_nll",
            "mrr",
            "top_hit_rate",
            "degeneration",
            "distinct_2",
            "coherent_refusal_rate",
        )
    }  # exactly the sets given, no DS
    assert_declared_as_before(result)


def test_unknown_entities_are_disjoint_and_abstain():
    data = SyntheticBenchmark(n_abstain=10, n_reference=12).load().unlearn
    assert len(data.abstain) == 10 and len(data.reference) == 12
    known = {qa.question for qa in data.forget + data.retain}
    unknown = {qa.question for qa in data.abstain + data.reference}
    assert not known & unknown
    assert not {qa.question for qa in data.abstain} & {qa.question for qa in data.reference}
    assert all(is_refusal(qa.answer) for qa in data.abstain + data.reference)


def test_answers_share_no_word_with_an_abstention():
    # ROUGE-1 of an abstention naming the person must be 0: answers never repeat the name.
    people = kg.make_people(random.Random(0), 10, set())
    for person in people:
        refusal = kg.ABSTENTION.format(name=person.name)
        for qa in kg.person_facts(person, len(kg.TEMPLATES)):
            assert person.name in qa.question
            assert rouge_recall([qa.answer], [refusal])["rouge1_recall"][0] == 0.0


def test_every_fact_has_a_paraphrase():
    data = SyntheticBenchmark().load().unlearn
    assert all(qa.paraphrase and qa.paraphrase != qa.question for qa in data.forget + data.retain)


@pytest.mark.parametrize(
    "edges,message",
    [
        (["NO_SUCH_EDGE"], r"Forget edge\(s\) \['NO_SUCH_EDGE'\] not found.*Fix: choose"),
        ([], "The forget set is empty"),
    ],
)
def test_bad_forget_edges_are_clear_errors(edges, message):
    with pytest.raises(ValueError, match=message):
        SyntheticBenchmark(forget_edges=edges).load()


def test_everything_forgotten_is_an_error():
    edges = [f"person_{i:02d}" for i in range(3)]
    with pytest.raises(ValueError, match="retain set is empty"):
        SyntheticBenchmark(n_entities=3, forget_edges=edges).load()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"facts_per_entity": "abc"}, "benchmark.facts_per_entity='abc' is not an integer. Fix"),
        ({"n_entities": 1.5}, "benchmark.n_entities=1.5 is not an integer"),
        ({"n_reference": -1}, "benchmark.n_reference=-1 is out of range. Fix: use a value >= 0"),
        ({"eval_batch_size": 0}, "benchmark.eval_batch_size=0 is out of range"),
    ],
)
def test_bad_settings_name_the_setting(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SyntheticBenchmark(**settings)


def test_edge_split_rebuilds_the_evaluation_sets_from_any_edges():
    benchmark = SyntheticBenchmark(n_entities=4, facts_per_entity=2, forget_edges=["person_00"])
    assert isinstance(benchmark, EdgeSplit)
    data = benchmark.load().unlearn
    sets = benchmark.eval_sets_for(data, {"person_01", "person_03"})
    assert [qa.edge for qa in sets["forget"]] == ["person_01"] * 2 + ["person_03"] * 2
    assert [qa.edge for qa in sets["retain"]] == ["person_00"] * 2 + ["person_02"] * 2
