"""Which way is better for a knowledge metric, by split (the rule every evaluation declares with).

A knowledge metric grows with what the model knows (ROUGE, probability, MRR, accuracy) or shrinks
with it (answer NLL, refusal rate). On a kept split (retain, real authors, MMLU) "better" means
more knowledge; on a forget split it means less, so the direction flips there.
"""

from __future__ import annotations

from collections.abc import Iterable


def is_forget_split(split: str) -> bool:
    """True for a split whose knowledge the run unlearns (``forget``, ``forget_knowmem`` ...)."""
    return split.rpartition("/")[2].startswith("forget")


def knowledge(split: str, grows_with_knowledge: bool) -> bool:
    """True when higher is better for such a metric on ``split``, False when lower is."""
    return grows_with_knowledge != is_forget_split(split)


def knowledge_directions(
    split: str, grows: Iterable[str] = (), shrinks: Iterable[str] = ()
) -> dict[str, bool]:
    """``<split>/<name>`` -> direction for metrics that grow or shrink with knowledge."""
    out = {f"{split}/{name}": knowledge(split, True) for name in grows}
    out.update({f"{split}/{name}": knowledge(split, False) for name in shrinks})
    return out


# The Deviation Score is a distance from the ideal (forget 0, retain 1): lower is better.
DEVIATION_SCORE = {"deviation_score": False}
