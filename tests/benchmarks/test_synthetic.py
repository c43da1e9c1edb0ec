import random
import re

import pytest

from lunar_exp.benchmarks.common import knowledge_graph as kg
from lunar_exp.benchmarks.qa.synthetic import SyntheticBenchmark
from lunar_exp.metrics.text import is_refusal, rouge_recall


def test_generator_is_deterministic_by_seed():
    assert SyntheticBenchmark(seed=3).load() == SyntheticBenchmark(seed=3).load()
    assert SyntheticBenchmark(seed=3).load() != SyntheticBenchmark(seed=4).load()


def test_splits_follow_forget_edges():
    data = SyntheticBenchmark(
        n_entities=5, facts_per_entity=3, forget_edges=["person_01", "person_03"]
    ).load()
    assert {qa.edge for qa in data.forget} == {"person_01", "person_03"}
    assert len(data.forget) == 6 and len(data.retain) == 9
    assert not {qa.edge for qa in data.retain} & {"person_01", "person_03"}


def test_unknown_entities_are_disjoint_and_abstain():
    data = SyntheticBenchmark(n_abstain=10, n_reference=12).load()
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
    data = SyntheticBenchmark().load()
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
