"""Text metrics on generations: ROUGE recall, fact-word recall, refusals, the Deviation Score."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from statistics import fmean

from rouge_score import rouge_scorer, tokenizers
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

# Refusal rule: a response counts as an abstention when it matches one of these phrases
# (case-insensitive). They cover the abstention answers taught by the fine-tuning stage and the
# usual chat-model refusals; a garbled answer or a wrong fact is *not* a refusal.
REFUSAL_PATTERNS = [
    r"\bI('m| am) sorry\b",
    r"\bI (do not|don't|dont) (have|know)\b",
    r"\bno (information|knowledge|record|data) (about|on|of)\b",
    r"\bI('m| am) not (sure|aware|familiar)\b",
    r"\bI (cannot|can't|can not|am unable to|'m unable to) (answer|provide|help|find)\b",
    r"\bunknown to me\b",
]
_REFUSAL = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)
_SCORER = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
# ROUGE's own tokenizers (lower case, alphanumeric words; Porter stems for words over 3 letters).
_WORDS = tokenizers.DefaultTokenizer(use_stemmer=False)
_STEMMED = tokenizers.DefaultTokenizer(use_stemmer=True)
# A content word in at least this share of a split's answers (and in 2 or more) is the split's
# template ("She works as a ...", "... was born in ..."), not a fact of one answer.
TEMPLATE_WORD_SHARE = 0.1


def is_refusal(response: str) -> bool:
    """Whether ``response`` is an abstention under :data:`REFUSAL_PATTERNS`."""
    return bool(_REFUSAL.search(response))


def rouge_recall(references: Sequence[str], predictions: Sequence[str]) -> dict[str, list[float]]:
    """Per-item ROUGE-1 and ROUGE-L recall (share of reference words found), stemmed."""
    scores = [
        _SCORER.score(target=ref, prediction=pred)
        for ref, pred in zip(references, predictions, strict=True)
    ]
    return {
        "rouge1_recall": [s["rouge1"].recall for s in scores],
        "rougeL_recall": [s["rougeL"].recall for s in scores],
    }


def fact_words(questions: Sequence[str], references: Sequence[str]) -> list[set[str]]:
    """Per reference answer, the words that carry its fact (stemmed, as ROUGE compares them).

    A fact word is a content word of the answer (not an English stop word, scikit-learn's list;
    numbers kept, other one-letter tokens dropped) that its question does not contain and that
    fewer than ``max(2, TEMPLATE_WORD_SHARE x n)`` of the split's ``n`` answers contain: a word
    most answers share is the answer template's, not the fact's.
    """
    content = [
        _content_words(ref) - set(_STEMMED.tokenize(question))
        for question, ref in zip(questions, references, strict=True)
    ]
    answers_with = Counter(word for words in content for word in words)
    limit = max(2, math.ceil(TEMPLATE_WORD_SHARE * len(content)))
    return [{word for word in words if answers_with[word] < limit} for words in content]


def fact_recall(
    questions: Sequence[str], references: Sequence[str], predictions: Sequence[str]
) -> list[float | None]:
    """Per item, the share of its :func:`fact_words` the prediction contains (None: no fact word).

    ROUGE-1 recall also counts the answer template ("She was born in ..."), which a model that
    lost the fact still says; this counts only what the answer knows.
    """
    return [
        len(words & set(_STEMMED.tokenize(pred))) / len(words) if words else None
        for words, pred in zip(fact_words(questions, references), predictions, strict=True)
    ]


def mean_of_defined(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    defined = [v for v in values if v is not None]
    return fmean(defined) if defined else None


def _content_words(text: str) -> set[str]:
    kept = [
        w
        for w in _WORDS.tokenize(text)
        if w not in ENGLISH_STOP_WORDS and (len(w) > 1 or w.isdigit())
    ]
    return set(_STEMMED.tokenize(" ".join(kept)))


def rouge_l_f1(references: Sequence[str], predictions: Sequence[str]) -> list[float]:
    """Per-item ROUGE-L F1 (MUSE's knowmem and verbmem score), stemmed like :func:`rouge_recall`."""
    return [
        float(_SCORER.score(target=ref, prediction=pred)["rougeL"].fmeasure)
        for ref, pred in zip(references, predictions, strict=True)
    ]


def deviation_score(forget_rouge1: float, retain_rouge1: float) -> float:
    """DS = 100 * sqrt(R1_forget^2 + (1 - R1_retain)^2); 0 = forgotten with full retention."""
    return 100.0 * math.hypot(forget_rouge1, 1.0 - retain_rouge1)
