"""Evaluation only (``method=none``): no unlearning, the run scores the model as it was loaded.

``python -m lunar_exp method=none finetune=none model.path=<hub id | dir | .gguf>`` scores any
checkpoint (a published target or unlearned model, a run's ``unlearned_model/``) on the chosen
benchmark. The model is evaluated once: the pipeline reuses that evaluation as the "after"
evaluation, so ``metrics.json`` holds the same numbers under ``before/<key>`` and ``<key>``.
Attacks run on the model as loaded; those aimed at a method's edited layers need their layers
given (:func:`check_attack_layers_given`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lunar_exp.attacks.layer_skip import LayerSkip
from lunar_exp.attacks.reverse_direction import ReverseDirection
from lunar_exp.interfaces import ChatModel, UnlearnData, UnlearnOutcome

# Attacks whose ``layers: null`` means "the layers the method edited" (``UnlearnOutcome``).
EDIT_AIMED_ATTACKS = (LayerSkip, ReverseDirection)


@dataclass(kw_only=True)
class NoUnlearning:
    """Leaves the model untouched; the run's evaluation is the model's as loaded."""

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Nothing to unlearn: an empty outcome (no edited layer, no tensors)."""
        return UnlearnOutcome()


def check_attack_layers_given(attacks: Mapping[str, object]) -> None:
    """Reject attacks aimed at a method's edit (``layers: null``) when no method edited anything.

    Layer skip and reverse direction attack "the layers the method edited"; with ``method=none``
    there are none, and a fallback depth would attack an arbitrary layer of the checkpoint.
    """
    aimed = sorted(name for name, attack in attacks.items() if _aims_at_the_edit(attack))
    if aimed:
        name = aimed[0]
        settings = ", ".join(f"attack.{n}.layers" for n in aimed)
        raise ValueError(
            f"{settings}=null means the layers a method edited, but method=none edits none. "
            f"Fix: give the checkpoint's edited layers (attack.{name}.layers=[...]) or drop "
            "the attack."
        )


def _aims_at_the_edit(attack: object) -> bool:
    """Whether ``attack`` targets the method's edited layers (its ``layers`` left at null)."""
    return isinstance(attack, EDIT_AIMED_ATTACKS) and attack.layers is None
