"""Checks on a benchmark's data before any expensive work starts."""

from __future__ import annotations

from lunar_exp.interfaces import ChatModel, UnlearnData
from lunar_exp.prompts import encode_item_pairs


def check_unlearn_data(data: UnlearnData, chat: ChatModel) -> None:
    """Raise ValueError (problem and fix in one message) on unusable data."""
    if not data.forget:
        raise ValueError(
            "The forget set is empty. Fix: set benchmark.forget_edges to edges present in the data."
        )
    if not data.retain:
        raise ValueError("The retain set is empty. Fix: leave some edges out of the forget set.")
    overlap = {qa.question for qa in data.forget} & {qa.question for qa in data.retain}
    if overlap:
        example = next(iter(overlap))
        raise ValueError(
            f"{len(overlap)} question(s) are in both the forget and retain sets "
            f"(e.g. {example!r}). Fix: make the forget and retain sets disjoint."
        )
    _check_context_length(data, chat)


def _check_context_length(data: UnlearnData, chat: ChatModel) -> None:
    limit = chat.model.config.to_dict().get("max_position_embeddings")
    if not limit:
        return
    items = data.finetune_items() + data.reference
    pairs = encode_item_pairs(chat.tokenizer, items, chat.system_prompt)
    longest = max(len(p) + len(a) for p, a in pairs)
    if longest > limit:
        raise ValueError(
            f"A question/answer pair is {longest} tokens long, beyond the model's "
            f"context of {limit}. Fix: shorten the benchmark items or use a model "
            "with a longer context."
        )
