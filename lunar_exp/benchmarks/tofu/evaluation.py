"""TOFU's evaluation suite on a live model (METRICS.md §1).

Probabilities and the LOSS, ZLib and Reference attacks use the answer followed by the chat
template's end-of-turn token (as the official logs and open-unlearning's ``evaluate_probability``
count the EOS token); extraction strength, exact memorisation and the Min-K, Min-K++ and GradNorm
attacks use the answer tokens alone (open-unlearning's ``tokenwise_logprobs`` excludes EOS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean

from lunar_exp.benchmarks.common.directions import knowledge, knowledge_directions
from lunar_exp.benchmarks.tofu.data import TofuItem
from lunar_exp.interfaces import QA, ChatModel
from lunar_exp.metrics import tofu
from lunar_exp.metrics.coherence import add_coherence, coherence_directions, coherence_metrics
from lunar_exp.metrics.mia import (
    TokenStats,
    gradnorm_scores,
    min_k_plus_plus_score,
    min_k_score,
    reference_scores,
    token_stats,
    zlib_score,
)
from lunar_exp.metrics.primitives import answer_nll, greedy_generate, padding_id
from lunar_exp.metrics.text import fact_recall, is_refusal, mean_of_defined, rouge_recall
from lunar_exp.prompts import encode_item_pairs, encode_item_prompts

# Memorisation of the forget answers (:func:`memorisation`): less is better unlearned.
MEMORISATION_DIRECTIONS = {
    "forget/extraction_strength": knowledge("forget", True),
    "forget/exact_memorization": knowledge("forget", True),
}


def qa_split_directions(split: str) -> dict[str, bool]:
    """Directions of :func:`evaluate_qa_split`'s metrics on ``split``.

    The truth ratio is higher-is-better on every split: on retain a higher aggregate prefers the
    true answer; on forget the aggregate is closeness to 1 (no preference left), also higher.
    """
    return {
        **knowledge_directions(
            split,
            ("prob", "rouge1_recall", "rougeL_recall", "fact_recall"),
            ("answer_nll", "refusal_rate"),
        ),
        **coherence_directions(split, refusal_direction=knowledge(split, False)),
        f"{split}/truth_ratio": True,
    }


def known_facts_directions(split: str) -> dict[str, bool]:
    """Directions of :func:`evaluate_known_facts`'s metrics (kept knowledge)."""
    return {
        **knowledge_directions(
            split,
            ("prob_normalised", "rouge1_recall", "rougeL_recall", "fact_recall"),
            ("refusal_rate",),
        ),
        **coherence_directions(split, refusal_direction=knowledge(split, False)),
        f"{split}/truth_ratio": True,
    }


def _pad(chat: ChatModel) -> int:
    return padding_id(chat.tokenizer)


def mean_losses(
    chat: ChatModel, questions: Sequence[str], answers: Sequence[str], batch_size: int
) -> list[float]:
    """Mean answer-token NLL (answer + end of turn) of each question/answer pair."""
    items = [QA(q, a, "tofu") for q, a in zip(questions, answers, strict=True)]
    pairs = encode_item_pairs(chat.tokenizer, items, chat.system_prompt)
    return answer_nll(chat.model, pairs, _pad(chat), batch_size, desc="tofu answer losses")


def paraphrased_answers(items: Sequence[TofuItem]) -> list[str]:
    """Each item's paraphrased answer (the TOFU ``*_perturbed`` files give every item one)."""
    answers = []
    for it in items:
        if it.paraphrased_answer is None:
            raise ValueError(
                f"TOFU item {it.question!r} has no paraphrased_answer. Fix: use the TOFU "
                "*_perturbed evaluation files."
            )
        answers.append(it.paraphrased_answer)
    return answers


def perturbed_losses(chat: ChatModel, items: Sequence[TofuItem], batch_size: int):
    """Per item, the mean losses of its perturbed answers (one flat batch, regrouped)."""
    questions = [it.question for it in items for _ in it.perturbed_answers]
    answers = [a for it in items for a in it.perturbed_answers]
    flat = iter(mean_losses(chat, questions, answers, batch_size))
    return [[next(flat) for _ in it.perturbed_answers] for it in items]


def answer_pairs(chat: ChatModel, items: Sequence[TofuItem]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, bare answer ids) of each item: the answer without the end of turn."""
    qa = [QA(it.question, it.answer, "tofu") for it in items]
    prompts = encode_item_prompts(chat.tokenizer, qa, chat.system_prompt)
    labels = [chat.tokenizer(it.answer, add_special_tokens=False)["input_ids"] for it in items]
    return list(zip(prompts, labels, strict=True))


def answer_token_scores(chat: ChatModel, items: Sequence[TofuItem], batch_size: int):
    """(token statistics, label ids) of each item's bare answer tokens, teacher-forced."""
    pairs = answer_pairs(chat, items)
    stats = token_stats(chat.model, pairs, _pad(chat), batch_size, desc="tofu tokens")
    return [(st, labels) for st, (_, labels) in zip(stats, pairs, strict=True)]


def generate_answers(chat: ChatModel, items: Sequence[TofuItem], max_new_tokens: int, bs: int):
    """Greedy answers, scored by ROUGE recall, fact-word recall and refusal detection."""
    qa = [QA(it.question, it.answer, "tofu") for it in items]
    prompts = encode_item_prompts(chat.tokenizer, qa, chat.system_prompt)
    responses = greedy_generate(
        chat.model, chat.tokenizer, prompts, max_new_tokens, bs, desc="tofu generate"
    )
    answers = [it.answer for it in items]
    rouge = rouge_recall(answers, responses)
    facts = fact_recall([it.question for it in items], answers, responses)
    return responses, rouge, facts, [float(is_refusal(r)) for r in responses]


def fact_recall_metric(split: str, facts: Sequence[float | None]) -> dict[str, float]:
    """``<split>/fact_recall`` when any answer of the split has a fact word."""
    mean = mean_of_defined(facts)
    return {} if mean is None else {f"{split}/fact_recall": mean}


def truth_ratios(correct: Sequence[float], perturbed: Sequence[Sequence[float]]) -> list[float]:
    """Per-item truth ratios from correct-answer and perturbed-answer mean losses."""
    return [tofu.truth_ratio(c, p) for c, p in zip(correct, perturbed, strict=True)]


def evaluate_qa_split(
    chat: ChatModel, split: str, items: Sequence[TofuItem], max_new_tokens: int, bs: int
) -> tuple[dict[str, float], list[dict[str, object]], list[float]]:
    """Forget or retain split: probability, ROUGE, truth ratio (+ memorisation on forget).

    Returns the metrics, the per-item records and the per-item truth ratios.
    """
    responses, rouge, facts, refusals = generate_answers(chat, items, max_new_tokens, bs)
    gt = mean_losses(chat, [it.question for it in items], [it.answer for it in items], bs)
    para = mean_losses(chat, [it.question for it in items], paraphrased_answers(items), bs)
    ratios = truth_ratios(para, perturbed_losses(chat, items, bs))
    aggregate = tofu.truth_ratio_closer_to_1 if split == "forget" else tofu.truth_ratio_true_better
    metrics = {
        f"{split}/prob": fmean(math.exp(-x) for x in gt),
        f"{split}/answer_nll": fmean(gt),
        f"{split}/rouge1_recall": fmean(rouge["rouge1_recall"]),
        f"{split}/rougeL_recall": fmean(rouge["rougeL_recall"]),
        **fact_recall_metric(split, facts),
        f"{split}/refusal_rate": fmean(refusals),
        f"{split}/truth_ratio": aggregate(ratios),
        **coherence_metrics(split, responses),
    }
    records = [
        {
            "split": split,
            "question": it.question,
            "ground_truth": it.answer,
            "response": resp,
            "rouge1_recall": r1,
            "rougeL_recall": rl,
            "fact_recall": fact,
            "refusal": bool(ref),
            "answer_nll": loss,
            "truth_ratio": tr,
        }
        for it, resp, r1, rl, fact, ref, loss, tr in zip(
            items,
            responses,
            rouge["rouge1_recall"],
            rouge["rougeL_recall"],
            facts,
            refusals,
            gt,
            ratios,
            strict=True,
        )
    ]
    add_coherence(records, responses)
    return metrics, records, ratios


def evaluate_known_facts(
    chat: ChatModel, split: str, items: Sequence[TofuItem], max_new_tokens: int, bs: int
) -> tuple[dict[str, float], list[dict[str, object]]]:
    """Real authors / world facts: normalised probability, ROUGE and truth ratio vs the answer."""
    responses, rouge, facts, refusals = generate_answers(chat, items, max_new_tokens, bs)
    gt = mean_losses(chat, [it.question for it in items], [it.answer for it in items], bs)
    wrong = perturbed_losses(chat, items, bs)
    metrics = {
        f"{split}/prob_normalised": fmean(
            tofu.normalised_prob(c, p) for c, p in zip(gt, wrong, strict=True)
        ),
        f"{split}/rouge1_recall": fmean(rouge["rouge1_recall"]),
        f"{split}/rougeL_recall": fmean(rouge["rougeL_recall"]),
        **fact_recall_metric(split, facts),
        f"{split}/truth_ratio": tofu.truth_ratio_true_better(truth_ratios(gt, wrong)),
        f"{split}/refusal_rate": fmean(refusals),
        **coherence_metrics(split, responses),
    }
    records: list[dict[str, object]] = [
        {"split": split, "question": it.question, "ground_truth": it.answer, "response": resp}
        for it, resp in zip(items, responses, strict=True)
    ]
    add_coherence(records, responses)
    return metrics, records


def memorisation(
    chat: ChatModel, items: Sequence[TofuItem], bs: int
) -> tuple[dict[str, float], list[TokenStats]]:
    """Extraction strength and exact memorisation of the bare answers, and their token stats."""
    scores = answer_token_scores(chat, items, bs)
    metrics = {
        "extraction_strength": fmean(
            tofu.extraction_strength(st.argmax, lab) for st, lab in scores
        ),
        "exact_memorization": fmean(tofu.exact_memorization(st.argmax, lab) for st, lab in scores),
    }
    return metrics, [st for st, _ in scores]


def mia_scores(
    chat: ChatModel,
    items: Sequence[TofuItem],
    bs: int,
    k: float,
    attacks: Sequence[str],
    *,
    name: str,
    losses: Sequence[float] | None = None,
    stats: Sequence[TokenStats] | None = None,
    reference_losses: Sequence[float] | None = None,
) -> dict[str, list[float]]:
    """Per-item scores of each of ``attacks`` (``lunar_exp.metrics.mia``) on ``items``.

    ``losses`` (mean NLL of answer + end of turn) and ``stats`` (bare-answer token statistics)
    are reused when the caller has them. The reference attack is scored only with the retain
    model's ``reference_losses`` of the same items.
    """
    wanted = set(attacks)
    if wanted & {"loss", "zlib", "reference"} and losses is None:
        questions, answers = [it.question for it in items], [it.answer for it in items]
        losses = mean_losses(chat, questions, answers, bs)
    if wanted & {"min_k", "min_k_plus_plus"} and stats is None:
        stats = [st for st, _ in answer_token_scores(chat, items, bs)]
    scores: dict[str, list[float]] = {}
    for attack in attacks:
        if attack == "loss" and losses is not None:
            scores["loss"] = list(losses)
        elif attack == "zlib" and losses is not None:
            scores["zlib"] = [zlib_score(x, it.answer) for x, it in zip(losses, items, strict=True)]
        elif attack == "min_k" and stats is not None:
            scores["min_k"] = [min_k_score(st.logprobs, k) for st in stats]
        elif attack == "min_k_plus_plus" and stats is not None:
            scores["min_k_plus_plus"] = [
                min_k_plus_plus_score(st.logprobs, st.mu, st.variance, k) for st in stats
            ]
        elif attack == "gradnorm":
            pairs = answer_pairs(chat, items)
            scores["gradnorm"] = gradnorm_scores(chat.model, pairs, _pad(chat), f"{name} gradnorm")
        elif attack == "reference" and losses is not None and reference_losses is not None:
            scores["reference"] = reference_scores(losses, reference_losses, name)
    return scores


def add_scores(records: Sequence[dict[str, object]], scores: dict[str, list[float]]) -> None:
    """Write each attack's per-item score into the item's record, keyed by the attack's name."""
    for attack, values in scores.items():
        for record, value in zip(records, values, strict=True):
            record[attack] = value


def forget_truth_ratios(chat: ChatModel, items: Sequence[TofuItem], bs: int) -> list[float]:
    """Per-item forget truth ratios (paraphrased vs perturbed), for a retain-model reference."""
    questions = [it.question for it in items]
    para = mean_losses(chat, questions, paraphrased_answers(items), bs)
    return truth_ratios(para, perturbed_losses(chat, items, bs))
