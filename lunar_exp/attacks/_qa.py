"""Generic QA scoring for attacks that change the questions (paraphrase, relearn)."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from lunar_exp.benchmarks.qa.evaluation import evaluate_qa
from lunar_exp.interfaces import QA, Benchmark, ChatModel, EvalResult
from lunar_exp.metrics.primitives import answer_nll, padding_id
from lunar_exp.prompts import encode_item_pairs


def eval_settings(benchmark: Benchmark) -> tuple[int, int]:
    """The benchmark's generation budget and batch size (32 and 16 when it has none)."""
    return getattr(benchmark, "max_new_tokens", 32), getattr(benchmark, "eval_batch_size", 16)


def score_qa(chat: ChatModel, benchmark: Benchmark, splits: dict[str, Sequence[QA]]) -> EvalResult:
    """The QA benchmarks' evaluation of ``splits`` with ``benchmark``'s generation settings."""
    return evaluate_qa(chat, splits, *eval_settings(benchmark))


def mean_answer_nll(chat: ChatModel, items: Sequence[QA], batch_size: int = 16) -> float:
    """Mean teacher-forced answer NLL of ``items``."""
    pairs = encode_item_pairs(chat.tokenizer, items, chat.system_prompt)
    return fmean(answer_nll(chat.model, pairs, padding_id(chat.tokenizer), batch_size))
