"""W&B runs -> :class:`RunRecord` objects (the same rows as run dirs give).

:func:`record_from_wandb` is the whole conversion, on plain dicts; :func:`fetch_wandb_runs` is the
thin shell around ``wandb.Api()`` that feeds it.
"""

from __future__ import annotations

from collections.abc import Mapping

from lunar_exp.table.runs import RunRecord, config_seed, is_number, labels_from, read_directions

# W&B run states; only "finished" runs have complete results.
FINISHED = "finished"


def record_from_wandb(
    path: str, state: str, config: Mapping[str, object], summary: Mapping[str, object]
) -> RunRecord:
    """One W&B run as a record.

    Args:
        path: ``entity/project/run_id``.
        state: the run's state (``finished``, ``failed``, ``crashed``, ``running``, ...).
        config: the run's config, as :class:`lunar_exp.bookkeeping.loggers.WandbLogger` logs it
            (the composed config plus ``hydra_choices`` and ``hydra_variant``, see
            ``lunar_exp.bookkeeping.variant``, and the pipeline's ``metric_directions``).
        summary: the run's summary (``metrics.json`` keys plus W&B's own ``_``-prefixed ones).

    Returns:
        The record; its metrics are None unless the run finished (a failed run).
    """
    choices = config.get("hydra_choices")
    choices = choices if isinstance(choices, Mapping) else {}
    labels = labels_from(choices, config, config.get("hydra_variant"))
    metrics = {k: v for k, v in summary.items() if not k.startswith("_") and is_number(v)}
    return RunRecord(
        source=path,
        labels=labels,
        seed=config_seed(config),
        metrics=metrics if state == FINISHED else None,
        directions=read_directions(config.get("metric_directions")),
    )


def fetch_wandb_runs(project: str) -> list[RunRecord]:
    """Every run of ``entity/project`` (needs network access and W&B credentials)."""
    import wandb

    return [
        record_from_wandb(
            "/".join(run.path), run.state, dict(run.config), dict(run.summary.items())
        )
        for run in wandb.Api().runs(project)
    ]
