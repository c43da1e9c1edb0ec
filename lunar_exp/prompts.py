"""One system-prompt policy for every stage (fine-tuning, directions, unlearning, evaluation).

Policy: every prompt is rendered with the tokenizer's own chat template as the two turns
``[system: system_prompt, user: question]`` followed by the generation prompt. The system turn is
always written explicitly (an empty string is allowed), so templates that inject a default system
prompt when none is given (SmolLM2, Qwen2.5) never do so silently, and the shared prefix of every
prompt is known. Answers are appended as the assistant turn, closed by the template's end-of-turn
token. The same function renders prompts for fine-tuning, LUNAR's directions and activations,
baseline training and evaluation, so no stage sees a different prompt than another.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


def render_prompt(tokenizer: PreTrainedTokenizerBase, question: str, system_prompt: str) -> str:
    """Render one question as a chat prompt ending with the assistant generation prompt."""
    messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def end_of_turn(tokenizer: PreTrainedTokenizerBase) -> str:
    """Return the text that closes an assistant turn in this tokenizer's template."""
    probe = tokenizer.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "XYZ"}], tokenize=False
    )
    return probe.split("XYZ", 1)[1].rstrip("\n") if "XYZ" in probe else tokenizer.eos_token


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, questions: Sequence[str], system_prompt: str
) -> list[list[int]]:
    """Token ids of each rendered prompt (no special tokens added beyond the template's)."""
    texts = [render_prompt(tokenizer, q, system_prompt) for q in questions]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    answers: Sequence[str],
    system_prompt: str,
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
