"""Generic QA scoring for attacks that change the questions (paraphrase, relearn)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import fmean

from lunar_exp.benchmarks.qa.evaluation import evaluate_qa
from lunar_exp.interfaces import QA, ChatModel, EvalResult, Generation
from lunar_exp.metrics.primitives import answer_nll, padding_id
from lunar_exp.prompts import encode_item_pairs


def score_qa(
    chat: ChatModel, generation: Generation, splits: Mapping[str, Sequence[QA]]
) -> EvalResult:
    """The QA benchmarks' evaluation of ``splits`` with the benchmark's generation settings."""
    return evaluate_qa(chat, splits, generation.max_new_tokens, generation.batch_size)


def mean_answer_nll(chat: ChatModel, items: Sequence[QA], batch_size: int = 16) -> float:
    """Mean teacher-forced answer NLL of ``items``."""
    pairs = encode_item_pairs(chat.tokenizer, items, chat.system_prompt)
    return fmean(answer_nll(chat.model, pairs, padding_id(chat.tokenizer), batch_size))
