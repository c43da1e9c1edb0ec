"""Roles (Protocols, no base classes) and data containers shared across the package."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    from lunar_exp.attacks._common import AttackTarget


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
    every evaluation of the unlearned model runs inside it. ``edited_layers`` names the decoder
    blocks the method changed on purpose (LUNAR's ``down_proj`` layers, RMU's layer); attacks
    aimed at the edit (layer skip, reverse direction) read it. Empty: no particular layer.
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    tensors: Mapping[str, torch.Tensor] = field(default_factory=dict)
    info: Mapping[str, object] = field(default_factory=dict)
    control: Callable[[ChatModel], AbstractContextManager] | None = None
    edited_layers: tuple[int, ...] = ()


@dataclass(frozen=True)
class Generation:
    """How a benchmark generates answers: new-token budget and prompts per batch.

    Attacks that score QA items themselves (paraphrase, relearn) generate with these settings.
    """

    max_new_tokens: int
    batch_size: int


@dataclass(frozen=True)
class BenchmarkData:
    """Everything a run needs from a benchmark, returned by :meth:`Benchmark.load`.

    Attributes:
        unlearn: the text the fine-tuning and unlearning stages see.
        eval_sets: named evaluation sets, in the benchmark's own item type (QA tuples, TOFU
            items, MUSE sets, lm-eval task specs); :meth:`Benchmark.evaluate` scores them.
        generation: the benchmark's generation settings.
        retain_reference: a retain-model reference the benchmark read from a file at load time
            (TOFU forget quality, MUSE privleak); None when there is none or the run trains one
            (:class:`TrainsRetainModel`).
    """

    unlearn: UnlearnData
    eval_sets: Mapping[str, Any]
    generation: Generation
    retain_reference: Mapping[str, Any] | None = None


class Benchmark(Protocol):
    """A source of forget/retain data and the evaluation that scores a model on it.

    A benchmark object holds its settings only: :meth:`load` returns the data and
    :meth:`evaluate` scores exactly the sets it is given, keeping no state between calls.
    """

    name: str

    def load(self) -> BenchmarkData:
        """Return the run's data; raise ValueError naming the problem and the fix on bad input."""
        ...

    def evaluate(
        self,
        chat: ChatModel,
        eval_sets: Mapping[str, Any],
        reference: Mapping[str, Any] | None = None,
    ) -> EvalResult:
        """Score ``chat`` on ``eval_sets``; keys are ``<split>/<metric>``, each with a direction.

        ``reference`` is the retain-model reference (:attr:`BenchmarkData.retain_reference` or
        :meth:`TrainsRetainModel.reference_record`'s record); benchmarks without one ignore it.
        """
        ...


@runtime_checkable
class TrainsRetainModel(Protocol):
    """A benchmark whose reference can come from a retain model the run trains itself.

    When :meth:`wants_retain_model` is true, the pipeline fine-tunes a fresh base model on
    everything but the forget set and passes :meth:`reference_record`'s record to every
    :meth:`Benchmark.evaluate` call (``lunar_exp.retain_reference``).
    """

    def wants_retain_model(self) -> bool:
        """Whether this run's settings ask for a trained retain model (``finetune``)."""
        ...

    def reference_record(self, chat: ChatModel, eval_sets: Mapping[str, Any]) -> dict[str, Any]:
        """Score the retain model ``chat`` on ``eval_sets``: the record evaluate() compares to."""
        ...


@runtime_checkable
class CoreEvaluation(Protocol):
    """A benchmark with a cheaper evaluation of the forget and retain sets alone.

    With ``attack_eval=core`` every attack scores the attacked model with :meth:`evaluate_core`
    instead of :meth:`Benchmark.evaluate`: what an attack changes (forget recovery, retain
    damage, the Deviation Score) without the sets it does not aim at (TOFU's real-authors and
    world-facts questions, the membership suite).
    """

    def evaluate_core(
        self,
        chat: ChatModel,
        eval_sets: Mapping[str, Any],
        reference: Mapping[str, Any] | None = None,
    ) -> EvalResult:
        """The forget and retain part of :meth:`Benchmark.evaluate`, with the same keys."""
        ...


@runtime_checkable
class EdgeSplit(Protocol):
    """A benchmark whose forget and retain evaluation sets are chosen by edges.

    Sequential requests (``method.requests``) need it: their evaluation sets are rebuilt with
    every requested edge on the forget side.
    """

    def eval_sets_for(self, data: UnlearnData, forget_edges: Collection[str]) -> Mapping[str, Any]:
        """Evaluation sets with ``forget_edges``' items of ``data`` as forget, the rest retain."""
        ...


@dataclass(frozen=True)
class RequestUnits:
    """What sequential requests (``method.requests``) name on a :class:`SplitsRequests` benchmark.

    Attributes:
        names: every unit of the run's forget set, in data order; a unit is a ``QA.edge`` of
            ``UnlearnData.forget`` (TOFU: ``forget_author_000``; MUSE: ``forget:doc12``).
        kind: what a unit is, for messages ("forget author", "forget document").
        limit: the setting that shrinks the forget set, for messages (``benchmark.forget_authors``).
    """

    names: tuple[str, ...]
    kind: str
    limit: str


@runtime_checkable
class SplitsRequests(Protocol):
    """A benchmark whose forget set can be unlearned in sequential requests (``method.requests``).

    The requests split the run's forget set: together they name every unit of
    :meth:`request_units` once; each request unlearns its units' items against the unchanged retain
    set, and every evaluation scores the run's own evaluation sets (so the result after the last
    request is comparable with a one-shot run). :meth:`request_scores` restricts an evaluation to
    one request's items.
    """

    def request_units(self, data: UnlearnData) -> RequestUnits:
        """The units a request may name: the edges of ``data.forget``, in order."""
        ...

    def request_scores(
        self,
        result: EvalResult,
        eval_sets: Mapping[str, Any],
        units: Collection[str],
        reference: Mapping[str, Any] | None = None,
    ) -> dict[str, float]:
        """Forget metrics of ``result`` over the evaluation items of ``units`` only.

        Keys are the evaluation's own (``forget/rouge1_recall`` at least, when ``units`` have
        scored items); a metric a subset cannot give is left out.
        """
        ...


@runtime_checkable
class Method(Protocol):
    """An unlearning method (``conf/method/``): edits ``chat.model`` in place.

    Settings are dataclass fields declared with :func:`lunar_exp.settings.setting` and checked
    when Hydra builds the method; checks that need the loaded model come through
    :class:`ChecksModel`.
    """

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Unlearn ``data.forget`` while keeping ``data.retain``."""
        ...


@runtime_checkable
class ChecksModel(Protocol):
    """A method whose settings must fit the loaded model (layer indices in range).

    The pipeline calls :meth:`check` right after loading the model, before the fine-tuning
    stage, so a bad value fails at once.
    """

    def check(self, chat: ChatModel) -> None:
        """Raise ValueError naming the setting and the fix when it does not fit ``chat``."""
        ...


class Attack(Protocol):
    """An attack on the unlearned model (``conf/attack/``), evaluated after unlearning.

    An attack leaves the unlearned model as it found it: hook attacks live inside context
    managers, weight attacks work on a copy (:func:`lunar_exp.attacks._common.model_copy`).
    """

    def check(self, chat: ChatModel, data: UnlearnData) -> None:
        """Reject the run's model or data before any expensive stage (ValueError with a fix)."""
        ...

    def evaluate(self, target: AttackTarget) -> tuple[EvalResult, dict[str, object]]:
        """The attacked model's evaluation and details (numbers become ``attack/<name>/`` keys)."""
        ...


class Utility(Protocol):
    """A general-capability evaluation any benchmark can add (``conf/utility/``).

    Its metrics are reported under ``utility/`` before and after unlearning.
    """

    def load(self) -> Mapping[str, Any]:
        """Read and check the evaluation sets before any model is loaded."""
        ...

    def evaluate(self, chat: ChatModel, eval_sets: Mapping[str, Any]) -> EvalResult:
        """Score ``chat`` on ``eval_sets``; every metric with its direction."""
        ...


class MetricLogger(Protocol):
    """Where a run's config, per-step training values and results go (``conf/logger/``)."""

    def log_config(self, config: Mapping[str, object]) -> None:
        """Log the composed config (and other run-level records) once."""
        ...

    def log_metrics(self, metrics: Mapping[str, object], step: int | None = None) -> None:
        """Log metrics: per-step values with ``step``, the run's results without."""
        ...

    def close(self, exit_code: int = 0) -> None:
        """Release the logger; a non-zero ``exit_code`` marks the run failed."""
        ...


@dataclass
class EvalResult:
    """Aggregated metrics, the per-item generations they came from, and which way is better.

    ``directions`` has an entry for every key of ``metrics``, declared by the code that computes
    the metric: True when higher is better, False when lower is, None when closeness to a target
    counts (privleak near 0, a min-k AUC near the retain model's). On a forget split "better"
    means "better unlearned" (less knowledge); on every other split it means "better kept".
    """

    metrics: dict[str, Any]  # numbers; None where a metric cannot be computed, or a label
    generations: dict[str, list[dict[str, object]]]
    directions: dict[str, bool | None]
