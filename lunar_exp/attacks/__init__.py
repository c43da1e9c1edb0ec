"""Attacks on an unlearned model: each rebuilds or hooks it, then the evaluation runs again.

One attack per module; ``conf/attack/`` is the registry (``attack=[layer_skip,relearn]``,
``attack=all``). :func:`lunar_exp.attacks.runner.run_attacks` evaluates them in turn and prefixes
their metrics with ``attack/<name>/``. No attack leaves hooks or weight changes on the unlearned
model: hook attacks live inside context managers, the others work on a deep copy.
"""
