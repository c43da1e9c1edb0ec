"""Coherence of generated answers: degeneration, distinct-n and coherent refusals.

* **Degeneration** of one answer is Welleck et al.'s *seq-rep-n* ("Neural Text Generation with
  Unlikelihood Training", ICLR 2020, arXiv 1908.04319, §4): the share of the answer's n-grams
  that repeat an n-gram seen before in the same answer, ``1 - |unique n-grams| / |n-grams|``
  (0 = no repetition; an answer with fewer than n words has no n-grams and scores 0). Here n = 2
  over lower-cased words (:data:`WORD`), so the score does not depend on the model's tokenizer.
* **distinct-n** of a split is Li et al.'s *distinct-n* ("A Diversity-Promoting Objective
  Function for Neural Conversation Models", NAACL 2016, arXiv 1510.03055, §4.3): the number of
  distinct n-grams over all the split's answers divided by their total number of n-grams (as
  it is usually implemented; the paper scales by the number of generated tokens). A method that
  collapses every answer to one string, or into loops, scores low.
* An answer is **degenerate** when its seq-rep-2 exceeds :data:`DEGENERATE_ABOVE` or it loops:
  a span of 1 to :data:`LOOP_MAX_WORDS` words said :data:`LOOP_REPEATS` times in a row ("Ken Ken
  Ken", "Zallu Zallu Zallu"). A **coherent refusal** is a refusal
  (``lunar_exp.metrics.text.is_refusal``) that is not degenerate.
* **Fluency** (:func:`fluency_nll`) is the *target* model's mean NLL of each answer's tokens given
  its prompt (lower = more fluent). The pipeline scores the target's answers when it evaluates
  the target, and the rest with the target reloaded after all evaluations and attacks
  (``lunar_exp.pipeline``), so an unlearned model's answers are judged by the model before
  unlearning, not by itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from statistics import fmean

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lunar_exp.interfaces import QA
from lunar_exp.metrics.primitives import answer_nll, padding_id
from lunar_exp.metrics.text import is_refusal
from lunar_exp.prompts import encode_item_prompts

# Words: letters/digits with inner apostrophes ("don't" is one word), lower-cased.
WORD = re.compile(r"\w+(?:'\w+)*")
REP_N = 2  # n of seq-rep-n (the per-answer degeneration score)
DISTINCT_N = 2  # n of distinct-n (the per-split diversity score)
# An answer whose seq-rep-2 exceeds this is degenerate. Chosen on the 194 distinct refusals of
# 12 runs' generations (docs/benchmarks.md, "Coherence"): 166 score 0 (a one-sentence refusal
# repeats no bigram) and a fluent refusal that says "I don't" twice in 16 words scores 1/15,
# while the default run's looping "... about Kenpus Ken Ken Ken ..." scores 0.58 (its 8-"Ken"
# cut quoted in issue 18: 0.33). Loops too short to pass 0.1 ("... about 'Vrou Zallav Zallav
# Zallav.", 1/12) are caught by the loop rule.
DEGENERATE_ABOVE = 0.1
LOOP_REPEATS = 3  # a span said this many times in a row is a loop
LOOP_MAX_WORDS = 4  # longest span (in words) the loop rule looks for


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (punctuation dropped, apostrophes kept inside)."""
    return WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """Every contiguous n-gram of ``tokens``, in order (none when there are fewer than n)."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def seq_rep_n(text: str, n: int = REP_N) -> float:
    """Welleck et al.'s seq-rep-n: share of the answer's n-grams that are repeats (0 if none)."""
    grams = ngrams(words(text), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def distinct_n(texts: Sequence[str], n: int = DISTINCT_N) -> float:
    """Li et al.'s distinct-n over ``texts``: distinct n-grams / all n-grams (1.0 if none)."""
    grams = [g for text in texts for g in ngrams(words(text), n)]
    if not grams:
        return 1.0
    return len(set(grams)) / len(grams)


def has_loop(tokens: Sequence[str]) -> bool:
    """Whether a span of 1..LOOP_MAX_WORDS words occurs LOOP_REPEATS times back to back."""
    for width in range(1, LOOP_MAX_WORDS + 1):
        for start in range(len(tokens) - LOOP_REPEATS * width + 1):
            span = tokens[start : start + width]
            if all(
                tokens[start + k * width : start + (k + 1) * width] == span
                for k in range(1, LOOP_REPEATS)
            ):
                return True
    return False


def is_degenerate(text: str) -> bool:
    """Whether the answer repeats itself: seq-rep-2 above DEGENERATE_ABOVE, or a loop."""
    return seq_rep_n(text) > DEGENERATE_ABOVE or has_loop(words(text))


def is_coherent_refusal(text: str) -> bool:
    """A refusal (``is_refusal``) that is not degenerate."""
    return is_refusal(text) and not is_degenerate(text)


def repetition_metrics(split: str, responses: Sequence[str]) -> dict[str, float]:
    """``<split>/degeneration`` (mean seq-rep-2) and ``<split>/distinct_2`` of ``responses``."""
    return {
        f"{split}/degeneration": fmean(seq_rep_n(r) for r in responses),
        f"{split}/distinct_{DISTINCT_N}": distinct_n(responses),
    }


def repetition_directions(split: str) -> dict[str, bool]:
    """Less repetition and more distinct bigrams are better on every split."""
    return {f"{split}/degeneration": False, f"{split}/distinct_{DISTINCT_N}": True}


def coherence_metrics(split: str, responses: Sequence[str]) -> dict[str, float]:
    """:func:`repetition_metrics` and ``<split>/coherent_refusal_rate``."""
    refusals = [float(is_coherent_refusal(r)) for r in responses]
    return {
        **repetition_metrics(split, responses),
        f"{split}/coherent_refusal_rate": fmean(refusals),
    }


def coherence_directions(split: str, refusal_direction: bool) -> dict[str, bool]:
    """Directions of :func:`coherence_metrics`' keys on ``split``.

    The coherent refusal rate goes the way the split's ``refusal_rate`` goes
    (``refusal_direction``).
    """
    return {
        **repetition_directions(split),
        f"{split}/coherent_refusal_rate": refusal_direction,
    }


def add_coherence(
    records: Sequence[dict[str, object]], responses: Sequence[str], *, refusals: bool = True
) -> None:
    """Write each answer's ``degeneration`` (and ``coherent_refusal``) into its record."""
    for record, response in zip(records, responses, strict=True):
        record["degeneration"] = seq_rep_n(response)
        if refusals:
            record["coherent_refusal"] = is_coherent_refusal(response)


def fluency_prompt(record: Mapping[str, object]) -> QA:
    """The prompt an answer is scored after, with the answer.

    The record's ``context`` as plain text when it has one (MUSE), else its ``question`` in the
    chat template (how QA answers were generated).
    """
    response = str(record["response"])
    context = record.get("context")
    if isinstance(context, str):
        return QA(context, response, "fluency", plain=True)
    return QA(str(record["question"]), response, "fluency")


def fluency_nll(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    system_prompt: str | None,
    records: Sequence[Mapping[str, object]],
    batch_size: int,
) -> list[float | None]:
    """``model``'s mean NLL of each record's ``response`` tokens after its prompt.

    The bare answer tokens are scored (no end of turn: an answer cut by the generation budget is
    not penalised for not ending). None for an empty answer, which has no token to score.
    """
    items = [fluency_prompt(r) for r in records]
    prompts = encode_item_prompts(tokenizer, items, system_prompt)
    answers = [tokenizer(qa.answer, add_special_tokens=False)["input_ids"] for qa in items]
    scored = [i for i, ids in enumerate(answers) if ids]
    pairs = [(prompts[i], answers[i]) for i in scored]
    values = (
        answer_nll(model, pairs, padding_id(tokenizer), batch_size, desc="fluency") if pairs else []
    )
    out: list[float | None] = [None] * len(records)
    for i, value in zip(scored, values, strict=True):
        out[i] = value
    return out


def score_fluency(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    system_prompt: str | None,
    generations: Mapping[str, Sequence[dict[str, object]]],
    batch_size: int,
) -> dict[str, float | None]:
    """Score every generated answer of ``generations`` with ``model`` (the target model).

    Writes ``fluency_nll`` into each record that has a ``response`` and returns
    ``<split>/fluency_nll``, the split's mean (None when no answer could be scored), for each
    split with answers. Splits of scores alone (membership rows) are left as they are.
    """
    metrics: dict[str, float | None] = {}
    for split, records in generations.items():
        answered = [r for r in records if isinstance(r.get("response"), str)]
        if not answered:
            continue
        values = fluency_nll(model, tokenizer, system_prompt, answered, batch_size)
        for record, value in zip(answered, values, strict=True):
            record["fluency_nll"] = value
        scored = [v for v in values if v is not None]
        metrics[f"{split}/fluency_nll"] = fmean(scored) if scored else None
    return metrics


def fluency_directions(metrics: Mapping[str, object]) -> dict[str, bool]:
    """Lower fluency NLL is better on every split (the target model finds the answer natural)."""
    return dict.fromkeys(metrics, False)
