"""Layer skip: the edited block(s) pass their input through unchanged (LUNAR.md §4)."""

from __future__ import annotations

from collections.abc import Sequence

from lunar_exp.attacks._common import AttackTarget, check_attack_layers, edited_layers
from lunar_exp.hooks import skip_blocks
from lunar_exp.interfaces import EvalResult


class LayerSkip:
    """Evaluate the unlearned model with some decoder blocks turned into identities.

    Args:
        layers: blocks to skip; default: the layers the method edited (LUNAR's ``down_proj``
            layers, RMU's layer), else the fallback depth of :mod:`lunar_exp.attacks._common`.
    """

    def __init__(self, layers: Sequence[int] | None = None) -> None:
        self.layers = None if layers is None else [int(layer) for layer in layers]

    def check(self, chat, data) -> None:
        """Fail before any expensive stage when explicit layers do not fit the model."""
        if self.layers is not None:
            check_attack_layers(chat.model, self.layers, "layers")

    def evaluate(self, target: AttackTarget) -> tuple[EvalResult, dict[str, object]]:
        """The benchmark's evaluation with the blocks skipped."""
        layers = edited_layers(target, self.layers)
        with skip_blocks(target.chat.model, layers):
            return target.evaluate(), {"layers": layers}
