"""Roles (Protocols, no base classes) and data containers shared across the package."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class QA:
    """One question/answer item; ``edge`` names its fact group (an entity or a relation).

    ``plain`` items are raw text rather than a chat exchange: ``question`` is a text prefix (a
    document's start, a few-shot prompt, or empty) and ``answer`` its continuation; they are
    tokenized as is, without the chat template (see :mod:`lunar_exp.prompts`).
    """

    question: str
    answer: str
    edge: str
    paraphrase: str | None = None
    abstention: str | None = None  # the benchmark's "I don't know" answer to this question
    plain: bool = False


@dataclass(frozen=True)
class UnlearnData:
    """Everything a run needs from a benchmark, as text.

    Attributes:
        forget: items to unlearn.
        retain: items whose answers must survive.
        abstain: questions about entities that exist nowhere, answered with an abstention; taught by
            the fine-tuning stage so the target model has an "I don't know" region.
        reference: unverifiable questions (with abstention answers) whose activations define LUNAR's
            unlearning vector; disjoint from ``abstain``.
    """

    forget: tuple[QA, ...]
    retain: tuple[QA, ...]
    abstain: tuple[QA, ...] = ()
    reference: tuple[QA, ...] = ()

    def finetune_items(self) -> tuple[QA, ...]:
        """Items the target model is taught: every fact plus the abstention set."""
        return self.forget + self.retain + self.abstain


@dataclass
class ChatModel:
    """A causal LM, its tokenizer and the system prompt every stage renders prompts with."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    system_prompt: str | None
    name: str


@dataclass
class UnlearnOutcome:
    """What a method reports besides editing the model in place.

    ``control``, when set, is inference-time unlearning: the method left the weights alone and
    ``control(chat)`` is a context manager that switches the unlearning on (LUNAR ``mode=hook``);
    every evaluation of the unlearned model runs inside it.
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    tensors: Mapping[str, torch.Tensor] = field(default_factory=dict)
    info: Mapping[str, object] = field(default_factory=dict)
    control: Callable[[ChatModel], AbstractContextManager] | None = None


class Benchmark(Protocol):
    """A source of forget/retain data and the evaluation that scores a model on it."""

    name: str

    def load(self) -> UnlearnData:
        """Return the run's data; raise ValueError naming the problem and the fix on bad input."""
        ...

    def evaluate(self, chat: ChatModel, data: UnlearnData) -> EvalResult:
        """Score ``chat`` on ``data``; keys are ``<split>/<metric>``."""
        ...


class Method(Protocol):
    """An unlearning method: edits ``chat.model`` in place."""

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Unlearn ``data.forget`` while keeping ``data.retain``."""
        ...

    # Optional: ``check(self, chat) -> None`` validates settings against the loaded model before
    # the fine-tuning stage, so bad values fail at once; the pipeline calls it when present.


@dataclass
class EvalResult:
    """Aggregated metrics plus the per-item generations they came from."""

    metrics: dict[str, float]
    generations: dict[str, list[dict[str, object]]]
