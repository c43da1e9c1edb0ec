import math

import pytest

from lunar_exp.metrics.text import deviation_score, is_refusal, rouge_recall


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
