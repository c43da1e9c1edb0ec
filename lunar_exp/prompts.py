"""One system-prompt policy for every stage (fine-tuning, directions, unlearning, evaluation).

Policy: every prompt is rendered with the tokenizer's own chat template as the two turns
``[system: system_prompt, user: question]`` followed by the generation prompt. The system turn is
always written explicitly (an empty string is allowed), so templates that inject a default system
prompt when none is given (SmolLM2, Qwen2.5) never do so silently, and the shared prefix of every
prompt is known. Answers are appended as the assistant turn, closed by the template's end-of-turn
token. The same function renders prompts for fine-tuning, LUNAR's directions and activations,
baseline training and evaluation, so no stage sees a different prompt than another.

Plain items (``QA.plain``: document text, few-shot prompts of benchmarks made for base models) are
the one exception, by design: they are tokenized as is with the tokenizer's own special tokens
(e.g. Llama's BOS), and their answer is the bare continuation with no end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from lunar_exp.interfaces import QA


def render_prompt(
    tokenizer: PreTrainedTokenizerBase, question: str, system_prompt: str | None
) -> str:
    """Render one question as a chat prompt ending with the assistant generation prompt.

    ``system_prompt=None`` leaves the system turn out, for templates that inject no default
    (Llama-2's ``[INST] q [/INST]``, the format of the official TOFU models).
    """
    if tokenizer.chat_template is None:
        raise ValueError(
            "The tokenizer has no chat template, but this benchmark asks chat questions. Fix: "
            "use a chat model or set model.chat_template to a Jinja chat template."
        )
    messages = [{"role": "user", "content": question}]
    if system_prompt is not None:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return _as_text(
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    )


def _as_text(rendered: object) -> str:
    """``apply_chat_template(..., tokenize=False)`` returns text; say so to the type checker."""
    assert isinstance(rendered, str), f"chat template rendered {type(rendered).__name__}"
    return rendered


def end_of_turn(tokenizer: PreTrainedTokenizerBase) -> str:
    """Return the text that closes an assistant turn in this tokenizer's template."""
    probe = _as_text(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "XYZ"}],
            tokenize=False,
        )
    )
    if "XYZ" in probe:
        return probe.split("XYZ", 1)[1].rstrip("\n")
    return str(tokenizer.eos_token)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], system_prompt: str | None
) -> list[list[int]]:
    """Token ids of each rendered prompt (no special tokens added beyond the template's)."""
    texts = [render_prompt(tokenizer, q, system_prompt) for q in questions]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    answers: Sequence[str],
    system_prompt: str | None,
) -> list[tuple[list[int], list[int]]]:
    """Token ids of (prompt, answer + end of turn) for each question/answer pair."""
    eot = end_of_turn(tokenizer)
    prompts = encode_prompts(tokenizer, questions, system_prompt)
    answer_ids = [tokenizer(a + eot, add_special_tokens=False)["input_ids"] for a in answers]
    return list(zip(prompts, answer_ids, strict=True))


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix shared by every prompt (the template's fixed head)."""
    if not prompts:
        return 0
    shortest = min(len(p) for p in prompts)
    for i in range(shortest):
        token = prompts[0][i]
        if any(p[i] != token for p in prompts):
            return i
    return shortest


def encode_plain(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of raw text with the tokenizer's own special tokens; never empty."""
    ids: list[int] = list(tokenizer(text)["input_ids"]) if text else []
    if not ids:
        start = tokenizer.bos_token_id
        ids = [special_id(start if start is not None else tokenizer.eos_token_id)]
    return ids


def special_id(value: object) -> int:
    """A special token's id as an int (tokenizers type these loosely); one clear error if unset."""
    if not isinstance(value, int):
        raise ValueError(
            f"The tokenizer has no id for a special token it needs (got {value!r}). Fix: use a "
            "tokenizer with bos/eos tokens."
        )
    return value


def encode_item_prompts(
    tokenizer: PreTrainedTokenizerBase, items: Sequence[QA], system_prompt: str | None
) -> list[list[int]]:
    """Prompt ids of each item: the chat template for QA items, raw text for plain ones."""
    chat = [i for i, qa in enumerate(items) if not qa.plain]
    rendered = encode_prompts(tokenizer, [items[i].question for i in chat], system_prompt)
    out: list[list[int]] = [[] for _ in items]
    for i, ids in zip(chat, rendered, strict=True):
        out[i] = ids
    for i, qa in enumerate(items):
        if qa.plain:
            out[i] = encode_plain(tokenizer, qa.question)
    return out


def encode_item_pairs(
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[QA],
    system_prompt: str | None,
    answers: Sequence[str] | None = None,
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) of each item, optionally with replacement answers.

    QA items end their answer with the template's end of turn; plain items get the bare
    continuation (a leading space is kept, since it is part of the text).
    """
    answers = [qa.answer for qa in items] if answers is None else list(answers)
    prompts = encode_item_prompts(tokenizer, items, system_prompt)
    eot = end_of_turn(tokenizer) if any(not qa.plain for qa in items) else ""
    answer_ids = [
        tokenizer(a if qa.plain else a + eot, add_special_tokens=False)["input_ids"]
        for qa, a in zip(items, answers, strict=True)
    ]
    return list(zip(prompts, answer_ids, strict=True))
