"""MUSE's evaluation on a live model (METRICS.md §2): knowmem, verbmem and the membership attacks.

Every prompt is plain text (MUSE targets base models: no chat template). Knowmem prompts follow
the reference implementations (jaechan-repo/muse_bench ``knowmem/get_rouge_qa.py``,
open-unlearning's ``Question: / Answer:`` template): each few-shot example as "Question: q",
newline, "Answer: a", blank line; then "Question: q", newline, "Answer: " (with the trailing
space both use).

The membership attacks score every token of a privleak text after the tokenizer's start (the
same tokens for all six; open-unlearning drops the last one from min-k, min-k++ and gradnorm).
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from lunar_exp.benchmarks.common.directions import knowledge, knowledge_directions
from lunar_exp.interfaces import QA, ChatModel
from lunar_exp.metrics.coherence import add_coherence, repetition_directions, repetition_metrics
from lunar_exp.metrics.mia import (
    TokenStats,
    gradnorm_scores,
    loss_score,
    min_k_plus_plus_score,
    min_k_score,
    reference_scores,
    token_stats,
    zlib_score,
)
from lunar_exp.metrics.primitives import greedy_generate, padding_id
from lunar_exp.metrics.text import rouge_l_f1, rouge_recall
from lunar_exp.prompts import encode_item_pairs, encode_item_prompts

STOPWORDS = ("\n\n", "\nQuestion", "Question:")
# Characters of a long prompt or text kept in generations.jsonl to identify the item.
EXCERPT_CHARS = 200

Records = list[dict[str, object]]
# verbmem reproduces forget text: less is better unlearned.
VERBMEM_DIRECTIONS = {
    "forget/verbmem_rougeL_f1": knowledge("forget", True),
    **repetition_directions("forget_verbmem"),
}


def knowmem_directions(split: str) -> dict[str, bool]:
    """Directions of :func:`knowmem`'s metrics on ``split`` (flipped on forget)."""
    return {
        **knowledge_directions(split, ("knowmem_rougeL_f1", "rouge1_recall")),
        **repetition_directions(f"{split}_knowmem"),
    }


def few_shot_prompt(examples: Sequence[dict], question: str) -> str:
    """The knowmem prompt: every in-context example, then the question to answer."""
    shots = "".join(f"Question: {e['question']}\nAnswer: {e['answer']}\n\n" for e in examples)
    return f"{shots}Question: {question}\nAnswer: "


def cut_at_stopwords(text: str, stopwords: Sequence[str] = STOPWORDS) -> str:
    """The part of ``text`` before the first stopword (each applied in turn), stripped."""
    for word in stopwords:
        text = text.split(word)[0]
    return text.strip()


def _pad_id(chat: ChatModel) -> int:
    return padding_id(chat.tokenizer)


def _generate(chat: ChatModel, items: Sequence[QA], max_new_tokens: int, bs: int, desc: str):
    prompts = encode_item_prompts(chat.tokenizer, items, chat.system_prompt)
    return greedy_generate(chat.model, chat.tokenizer, prompts, max_new_tokens, bs, desc=desc)


def knowmem(
    chat: ChatModel,
    records: Sequence[dict],
    examples: Sequence[dict],
    split: str,
    max_new_tokens: int,
    batch_size: int,
) -> tuple[dict[str, float], Records]:
    """Few-shot greedy answers scored by ROUGE-L F1 (MUSE) and ROUGE-1 recall (the DS input).

    Their repetition (``<split>_knowmem/degeneration``, ``/distinct_2``) is scored too; each row's
    ``context`` is the zero-shot prompt the target model's fluency score reads the answer after.
    """
    items = [
        QA(few_shot_prompt(examples, r["question"]), r["answer"], "knowmem", plain=True)
        for r in records
    ]
    raw = _generate(chat, items, max_new_tokens, batch_size, f"eval {split} knowmem")
    responses = [cut_at_stopwords(text) for text in raw]
    answers = [r["answer"] for r in records]
    f1 = rouge_l_f1(answers, responses)
    recall = rouge_recall(answers, responses)["rouge1_recall"]
    metrics = {
        f"{split}/knowmem_rougeL_f1": fmean(f1),
        f"{split}/rouge1_recall": fmean(recall),
        **repetition_metrics(f"{split}_knowmem", responses),
    }
    rows = [
        {
            "split": f"{split}_knowmem",
            "question": r["question"],
            "context": few_shot_prompt((), r["question"]),
            "ground_truth": r["answer"],
            "response": response,
            "rougeL_f1": score,
            "rouge1_recall": r1,
        }
        for r, response, score, r1 in zip(records, responses, f1, recall, strict=True)
    ]
    add_coherence(rows, responses, refusals=False)
    return metrics, rows


def truncate_tokens(chat: ChatModel, text: str, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (MUSE scores that much of the gt)."""
    ids = chat.tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    truncated = chat.tokenizer.decode(ids, skip_special_tokens=True)
    if not isinstance(truncated, str):  # one flat id list decodes to one string
        raise TypeError(f"decoding {len(ids)} token ids gave {type(truncated).__name__}")
    return truncated


def verbmem(
    chat: ChatModel, records: Sequence[dict], max_new_tokens: int, batch_size: int
) -> tuple[dict[str, float], Records]:
    """Greedy continuations of forget-text prefixes, ROUGE-L F1 against the true continuation.

    Their repetition is scored too (``forget_verbmem/degeneration``, ``/distinct_2``); each
    row's ``context`` is the prefix the continuation's fluency is scored after.
    """
    truths = [truncate_tokens(chat, r["gt"], max_new_tokens) for r in records]
    items = [
        QA(r["prompt"], t, "verbmem", plain=True) for r, t in zip(records, truths, strict=True)
    ]
    responses = _generate(chat, items, max_new_tokens, batch_size, "eval forget verbmem")
    f1 = rouge_l_f1(truths, responses)
    rows = [
        {
            "split": "forget_verbmem",
            "question": "…" + r["prompt"][-EXCERPT_CHARS:],
            "context": r["prompt"],
            "ground_truth": truth,
            "response": response,
            "rougeL_f1": score,
        }
        for r, truth, response, score in zip(records, truths, responses, f1, strict=True)
    ]
    add_coherence(rows, responses, refusals=False)
    metrics = {
        "forget/verbmem_rougeL_f1": fmean(f1),
        **repetition_metrics("forget_verbmem", responses),
    }
    return metrics, rows


def text_pairs(chat: ChatModel, texts: Sequence[str]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, text ids) of each whole text, scored as a plain continuation of nothing."""
    items = [QA("", text, "privleak", plain=True) for text in texts]
    return encode_item_pairs(chat.tokenizer, items, chat.system_prompt)


def text_stats(chat: ChatModel, texts: Sequence[str], batch_size: int, split: str):
    """Teacher-forced :class:`TokenStats` of every token of each text."""
    pairs = text_pairs(chat, texts)
    return token_stats(chat.model, pairs, _pad_id(chat), batch_size, f"eval {split}")


def text_losses(stats: Sequence[TokenStats]) -> list[float]:
    """Each text's mean token NLL (the LOSS attack's score)."""
    return [loss_score(st.logprobs) for st in stats]


def attack_scores(
    chat: ChatModel,
    texts: Sequence[str],
    stats: Sequence[TokenStats],
    k: float,
    attacks: Sequence[str],
    split: str,
    reference_losses: Sequence[float] | None = None,
) -> dict[str, list[float]]:
    """Per-text scores of each of ``attacks``.

    The reference attack is scored only with the retain model's ``reference_losses`` of the
    same texts.
    """
    losses = text_losses(stats)
    scores: dict[str, list[float]] = {}
    for attack in attacks:
        if attack == "loss":
            scores["loss"] = losses
        elif attack == "zlib":
            scores["zlib"] = [zlib_score(x, t) for x, t in zip(losses, texts, strict=True)]
        elif attack == "min_k":
            scores["min_k"] = [min_k_score(st.logprobs, k) for st in stats]
        elif attack == "min_k_plus_plus":
            scores["min_k_plus_plus"] = [
                min_k_plus_plus_score(st.logprobs, st.mu, st.variance, k) for st in stats
            ]
        elif attack == "gradnorm":
            pairs = text_pairs(chat, texts)
            scores["gradnorm"] = gradnorm_scores(
                chat.model, pairs, _pad_id(chat), f"{split} gradnorm"
            )
        elif attack == "reference" and reference_losses is not None:
            scores["reference"] = reference_scores(losses, reference_losses, split)
    return scores


def score_rows(texts: Sequence[str], scores: dict[str, list[float]], split: str) -> Records:
    """One generations row per text: its excerpt and each attack's score."""
    return [
        {
            "split": split,
            "question": text[:EXCERPT_CHARS],
            **{attack: values[i] for attack, values in scores.items()},
        }
        for i, text in enumerate(texts)
    ]
