import math

import pytest

from lunar_exp.metrics.text import (
    deviation_score,
    fact_recall,
    fact_words,
    is_refusal,
    mean_of_defined,
    rouge_recall,
)


def test_rouge_recall_by_hand():
    # reference "she was born in lunwick" (5 words); prediction has "born", "lunwick":
    # ROUGE-1 recall = 2/5; LCS ("born ... lunwick") = 2 -> ROUGE-L recall 2/5.
    scores = rouge_recall(["She was born in Lunwick."], ["Lunwick? He was not born there."])
    assert scores["rouge1_recall"][0] == pytest.approx(3 / 5)  # "was" also matches
    # with stemming, "plays" matches "play"
    scores = rouge_recall(["He plays the harp."], ["I play harp"])
    assert scores["rouge1_recall"][0] == pytest.approx(2 / 4)
    assert scores["rougeL_recall"][0] == pytest.approx(2 / 4)


def test_deviation_score_by_hand():
    assert deviation_score(0.0, 1.0) == 0.0
    assert deviation_score(1.0, 1.0) == pytest.approx(100.0)
    # sqrt(0.3^2 + (1-0.6)^2) = sqrt(0.09 + 0.16) = 0.5
    assert deviation_score(0.3, 0.6) == pytest.approx(50.0)
    assert deviation_score(0.1, 0.9) == pytest.approx(100 * math.sqrt(0.02))


@pytest.mark.parametrize(
    "text,expected",
    [
        ("I'm sorry, but I don't have any information about Vorbil Monmil.", True),
        ("I don't know who that is.", True),
        ("I have no information about this person.", True),
        ("She was born in Lunwick.", False),
        ("She works as a s Zul Zav Zav", False),
        ("Sorry-town is where she was born.", False),
    ],
)
def test_refusal_rule(text, expected):
    assert is_refusal(text) is expected


# Fact-word recall: the answer's content words minus its question's and the split's template words.
FACT_QUESTIONS = [
    "Where was Vorbil Monmil born?",
    "What does Vorbil Monmil do for a living?",
    "Where was Kenpus Ardle born?",
    "What does Kenpus Ardle do for a living?",
]
FACT_ANSWERS = [
    "She was born in Lunwick.",
    "She works as a locksmith.",
    "He was born in Desgal's harbour.",
    "He works as a baker.",
]


def test_fact_words_drop_stop_question_and_template_words():
    words = fact_words(FACT_QUESTIONS, FACT_ANSWERS)
    # "born" is in the question; "she", "in", "as", "a" are stop words; "works" (stem "work") is
    # in 2 of the 4 answers, and the limit is max(2, ceil(0.1 x 4)) = 2 answers: a template word.
    # "Desgal's" is tokenized into "desgal" and the one-letter "s", which is dropped.
    assert words == [{"lunwick"}, {"locksmith"}, {"desgal", "harbour"}, {"baker"}]


def test_fact_recall_counts_only_fact_words():
    responses = [
        "She was born in Lunrourouches.",  # template kept, fact lost: ROUGE-1 4/5, facts 0/1
        "I'm sorry, I don't know.",
        "He was born in the harbour of Desgal.",  # 2 of 2 fact words
        "He works as a baker, like his father.",
    ]
    facts = fact_recall(FACT_QUESTIONS, FACT_ANSWERS, responses)
    assert facts == [0.0, 0.0, 1.0, 1.0]
    assert rouge_recall(FACT_ANSWERS[:1], responses[:1])["rouge1_recall"] == [0.8]
    # A half-known answer: one of its two fact words.
    assert fact_recall(FACT_QUESTIONS, FACT_ANSWERS, ["", "", "Desgal.", ""])[2] == 0.5


def test_fact_recall_is_none_without_fact_words_and_the_mean_skips_it():
    # Both answers say only what the questions and the shared template say.
    questions = ["Is Lunwick a town?", "Is Desgal a town?"]
    answers = ["Yes, Lunwick is a town.", "Yes, Desgal is a town."]
    assert fact_words(questions, answers) == [set(), set()]
    assert fact_recall(questions, answers, ["Yes.", "No."]) == [None, None]
    assert mean_of_defined([None, 0.5, None, 1.0]) == 0.75
    assert mean_of_defined([None]) is None
