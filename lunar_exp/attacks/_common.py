"""What every attack receives, and helpers shared by several attacks."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from lunar_exp.hooks import decoder_layers
from lunar_exp.interfaces import (
    Benchmark,
    ChatModel,
    CoreEvaluation,
    EvalResult,
    Generation,
    UnlearnData,
    UnlearnOutcome,
)

log = logging.getLogger(__name__)

# Layer used by attacks on methods that edit no particular layer, as a fraction of the depth
# (0.8 x 30 = 24 on SmolLM2-135M, the layer LUNAR edits there).
FALLBACK_DEPTH = 0.8


def no_control(_chat: ChatModel) -> AbstractContextManager:
    """The control of a method that edited the weights: nothing to switch on."""
    return nullcontext()


@dataclass
class AttackTarget:
    """The unlearned model and everything an attack may use to attack it.

    Attributes:
        chat: the unlearned model (must be bit-identical after the attack).
        data: the run's forget/retain data (all requested edges as forget for sequential runs).
        benchmark: the run's benchmark; its ``evaluate`` scores the attacked model.
        eval_sets: the evaluation sets every evaluation of the run scores.
        generation: the benchmark's generation settings, for attacks that score QA items.
        outcome: the method's report (LUNAR's unlearning vectors, edited layers, coefficients).
        after: the unlearned model's own evaluation (the baseline every attack is compared to).
        reference: the run's retain-model reference, passed to every evaluation.
        control: switches inference-time unlearning on (LUNAR ``mode=hook``); a no-op otherwise.
        run_dir: the run's output folder, for attack plots (None: write no files).
        core_only: score with the benchmark's core evaluation (forget and retain,
            :class:`CoreEvaluation`) where it has one (``attack_eval=core``).
    """

    chat: ChatModel
    data: UnlearnData
    benchmark: Benchmark
    eval_sets: Mapping[str, Any]
    generation: Generation
    outcome: UnlearnOutcome
    after: EvalResult | None
    reference: Mapping[str, Any] | None = None
    control: Callable[[ChatModel], AbstractContextManager] = no_control
    run_dir: Path | None = None
    core_only: bool = False

    def evaluate(self, chat: ChatModel | None = None) -> EvalResult:
        """The benchmark's evaluation of ``chat`` (default: the unlearned model), control on.

        Its core evaluation when ``core_only`` and the benchmark has one (else the full one).
        """
        model = chat or self.chat
        with self.control(model):
            if self.core_only and isinstance(self.benchmark, CoreEvaluation):
                return self.benchmark.evaluate_core(model, self.eval_sets, self.reference)
            return self.benchmark.evaluate(model, self.eval_sets, self.reference)


def edited_layers(target: AttackTarget, layers: list[int] | None) -> list[int]:
    """``layers`` if given, else the layers the method edited, else a fallback depth."""
    if layers is not None:
        chosen = [int(layer) for layer in layers]
    elif target.outcome.edited_layers:
        chosen = list(target.outcome.edited_layers)
    else:
        count = len(decoder_layers(target.chat.model))
        chosen = [min(int(FALLBACK_DEPTH * count), count - 2)]
        log.info("Method reports no edited layer; attacking layer %s", chosen)
    check_attack_layers(target.chat.model, chosen, "layers")
    return chosen


def check_attack_layers(model, layers: list[int], setting: str) -> None:
    """One clear error when an attack's layer index does not exist in ``model``."""
    count = len(decoder_layers(model))
    bad = [layer for layer in layers if not 0 <= layer < count]
    if bad:
        raise ValueError(
            f"Attack layer {bad} is out of range for a {count}-layer model. Fix: set "
            f"attack.<name>.{setting} within 0..{count - 1}, or null for the edited layers."
        )


@contextmanager
def model_copy(chat: ChatModel) -> Iterator[ChatModel]:
    """A deep copy of ``chat``'s model (same tokenizer), released when the context ends."""
    clone = ChatModel(copy.deepcopy(chat.model), chat.tokenizer, chat.system_prompt, chat.name)
    try:
        yield clone
    finally:
        del clone.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def linear_weights(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The weight of every linear layer inside the decoder blocks, by module name."""
    blocks = decoder_layers(model)
    return {
        f"{index}.{name}": module.weight
        for index, block in enumerate(blocks)
        for name, module in block.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def relative_change(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict:
    """Frobenius-relative change and the fraction of entries that moved, over all tensors."""
    diff_sq = base_sq = changed = total = 0.0
    for name, old in before.items():
        new = after[name].to(old.dtype)
        diff = new - old
        diff_sq += float(diff.double().pow(2).sum())
        base_sq += float(old.double().pow(2).sum())
        changed += float((diff != 0).sum())
        total += old.numel()
    return {
        "weights/relative_change": (diff_sq / max(base_sq, 1e-30)) ** 0.5,
        "weights/changed_fraction": changed / max(total, 1.0),
    }
