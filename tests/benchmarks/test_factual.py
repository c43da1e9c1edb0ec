"""utility=factual: the LUNAR repository's real-world facts scored before and after unlearning."""

import json
import re

import pytest
from hydra.utils import instantiate

from lunar_exp.benchmarks.utility.factual import FactualUtility
from lunar_exp.metrics.text import rouge_recall
from tests.conftest import SHARED, compose_config, needs_shared

FACTUAL = SHARED / "lunar" / "factual_data.json"


@needs_shared()
def test_the_official_file_gives_its_168_retain_facts():
    utility = instantiate(compose_config(["utility=factual"]).utility)
    facts = utility.load()["factual"]
    assert len(facts) == 168
    assert all(qa.edge == "retain" for qa in facts)
    assert facts[0].question == "Which author is known for the novel '1984'?"


def write_facts(tmp_path, records):
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(records))
    return str(path)


def test_a_selection_without_records_names_the_edges_found(tmp_path):
    path = write_facts(tmp_path, [{"question": "q?", "answer": "a", "edge": "forget"}])
    with pytest.raises(ValueError, match=re.escape("selects no record of")) as err:
        FactualUtility(path=path).load()
    assert "its edges: ['forget']" in str(err.value) and "Fix: set utility.edges" in str(err.value)


def test_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="utility.path=.* not found. Fix:"):
        FactualUtility(path=str(tmp_path / "none.json")).load()


def test_scores_are_the_generations_scores_with_knowledge_directions(tmp_path, tiny_chat):
    records = [
        {"question": f"Who wrote book {i}?", "answer": f"Author {i}", "edge": "retain"}
        for i in range(5)
    ] + [{"question": "Who wrote Romeo and Juliet?", "answer": "Shakespeare", "edge": "forget"}]
    utility = FactualUtility(path=write_facts(tmp_path, records), limit=4, max_new_tokens=6)
    sets = utility.load()
    assert [qa.answer for qa in sets["factual"]] == [f"Author {i}" for i in range(4)]
    result = utility.evaluate(tiny_chat, sets)
    rows = result.generations["factual"]
    assert len(rows) == 4
    expected = rouge_recall([r["ground_truth"] for r in rows], [r["response"] for r in rows])
    recall = sum(expected["rouge1_recall"]) / 4
    assert result.metrics["factual/rouge1_recall"] == pytest.approx(recall)
    assert result.metrics["factual/refusal_rate"] == pytest.approx(
        sum(r["refusal"] for r in rows) / 4
    )
    assert result.directions["factual/rouge1_recall"] is True
    assert result.directions["factual/refusal_rate"] is False
