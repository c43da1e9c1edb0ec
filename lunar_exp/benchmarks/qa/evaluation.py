"""Evaluation shared by the QA benchmarks (synthetic, qa_json)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import fmean

from lunar_exp.benchmarks.common.directions import (
    DEVIATION_SCORE,
    knowledge,
    knowledge_directions,
)
from lunar_exp.interfaces import QA, ChatModel, EvalResult
from lunar_exp.metrics.coherence import add_coherence, coherence_directions, coherence_metrics
from lunar_exp.metrics.primitives import answer_nll, greedy_generate_ranked, padding_id
from lunar_exp.metrics.text import (
    deviation_score,
    fact_recall,
    is_refusal,
    mean_of_defined,
    rouge_recall,
)
from lunar_exp.prompts import encode_item_pairs, encode_item_prompts, special_id

TOP_HIT_RANK = 100  # LUNAR's hit rate: share of answer tokens ranked in the top 100
# Metrics of :func:`evaluate_split` that grow with what the model knows, and those that shrink.
GROWS_WITH_KNOWLEDGE = ("rouge1_recall", "rougeL_recall", "fact_recall", "mrr", "top_hit_rate")
SHRINKS_WITH_KNOWLEDGE = ("refusal_rate", "answer_nll")


def split_directions(split: str) -> dict[str, bool]:
    """Directions of :func:`evaluate_split`'s metrics on ``split`` (flipped on a forget split)."""
    return {
        **knowledge_directions(split, GROWS_WITH_KNOWLEDGE, SHRINKS_WITH_KNOWLEDGE),
        **coherence_directions(split, refusal_direction=knowledge(split, False)),
    }


def evaluate_split(
    chat: ChatModel, items: Sequence[QA], max_new_tokens: int, batch_size: int, split: str
) -> tuple[dict[str, float], list[dict[str, object]]]:
    """Generate answers for ``items`` and score them; returns metrics and per-item records.

    ROUGE recall, fact-word recall (``lunar_exp.metrics.text.fact_recall``), refusals and
    coherence (``lunar_exp.metrics.coherence``: degeneration, distinct-2, coherent refusals)
    score the generations; MRR and top-hit rate score, per answer
    token j, its rank in the free-running generation's step j (LUNAR.md section 3); answer NLL
    is teacher-forced.
    """
    tok = chat.tokenizer
    answers = [qa.answer for qa in items]
    prompts = encode_item_prompts(tok, items, chat.system_prompt)
    targets = [
        tok(a, add_special_tokens=False)["input_ids"] or [special_id(tok.eos_token_id)]
        for a in answers
    ]
    responses, ranks = greedy_generate_ranked(
        chat.model, tok, prompts, targets, max_new_tokens, batch_size, desc=f"eval {split}"
    )
    rouge = rouge_recall(answers, responses)
    facts = fact_recall([qa.question for qa in items], answers, responses)
    mrr = [fmean(1.0 / r for r in item) for item in ranks]
    top_hit = [fmean(float(r <= TOP_HIT_RANK) for r in item) for item in ranks]
    refusals = [float(is_refusal(r)) for r in responses]
    pad = padding_id(tok)
    nll = answer_nll(chat.model, encode_item_pairs(tok, items, chat.system_prompt), pad, batch_size)
    metrics = {f"{split}/{name}": fmean(values) for name, values in rouge.items()}
    if (fact_mean := mean_of_defined(facts)) is not None:
        metrics[f"{split}/fact_recall"] = fact_mean
    metrics[f"{split}/refusal_rate"] = fmean(refusals)
    metrics[f"{split}/answer_nll"] = fmean(nll)
    metrics[f"{split}/mrr"] = fmean(mrr)
    metrics[f"{split}/top_hit_rate"] = fmean(top_hit)
    metrics.update(coherence_metrics(split, responses))
    records = [
        {
            "split": split,
            "edge": qa.edge,
            "question": qa.question,
            "ground_truth": qa.answer,
            "response": resp,
            "rouge1_recall": r1,
            "fact_recall": fact,
            "refusal": bool(ref),
            "answer_nll": n,
            "mrr": m,
            "top_hit_rate": h,
        }
        for qa, resp, r1, fact, ref, n, m, h in zip(
            items,
            responses,
            rouge["rouge1_recall"],
            facts,
            refusals,
            nll,
            mrr,
            top_hit,
            strict=True,
        )
    ]
    add_coherence(records, responses)
    return metrics, records


def evaluate_qa(
    chat: ChatModel, splits: Mapping[str, Sequence[QA]], max_new_tokens: int, batch_size: int
) -> EvalResult:
    """Evaluate every split, then the Deviation Score when forget and retain are both scored."""
    metrics: dict[str, float] = {}
    generations: dict[str, list[dict[str, object]]] = {}
    directions: dict[str, bool | None] = {}
    for split, items in splits.items():
        split_metrics, records = evaluate_split(chat, items, max_new_tokens, batch_size, split)
        metrics.update(split_metrics)
        generations[split] = records
        directions.update(split_directions(split))
    if "forget/rouge1_recall" in metrics and "retain/rouge1_recall" in metrics:
        metrics["deviation_score"] = deviation_score(
            metrics["forget/rouge1_recall"], metrics["retain/rouge1_recall"]
        )
        directions.update(DEVIATION_SCORE)
    return EvalResult(metrics, generations, directions)
