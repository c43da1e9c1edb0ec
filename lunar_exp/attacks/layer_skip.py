"""Layer skip: the edited block(s) pass their input through unchanged (LUNAR.md §4)."""

from __future__ import annotations

from dataclasses import dataclass

from lunar_exp.attacks._common import AttackTarget, check_attack_layers, edited_layers
from lunar_exp.hooks import skip_blocks
from lunar_exp.interfaces import EvalResult
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class LayerSkip:
    """Evaluate the unlearned model with some decoder blocks turned into identities."""

    layers: list[int] | None = setting(
        None,
        help="blocks to skip; null: the layers the method edited (LUNAR's down_proj layers, "
        "RMU's layer), else the fallback depth of lunar_exp.attacks._common.",
    )

    def __post_init__(self) -> None:
        validate(self, "attack.layer_skip")

    def check(self, chat, data) -> None:
        """Fail before any expensive stage when explicit layers do not fit the model."""
        if self.layers is not None:
            check_attack_layers(chat.model, self.layers, "layers")

    def evaluate(self, target: AttackTarget) -> tuple[EvalResult, dict[str, object]]:
        """The benchmark's evaluation with the blocks skipped."""
        layers = edited_layers(target, self.layers)
        with skip_blocks(target.chat.model, layers):
            return target.evaluate(), {"layers": layers}
