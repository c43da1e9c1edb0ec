"""Metric loggers (torchtune-style interface); metrics.json is written by the pipeline itself.

The pipeline opens the configured logger with :func:`logging_run`; while it is open, training
loops send per-step losses through :func:`log_train_step` (a no-op with no logger).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from lunar_exp.bookkeeping import wandb_support
from lunar_exp.interfaces import MetricLogger

log = logging.getLogger(__name__)


_active_logger: MetricLogger | None = None


@contextmanager
def logging_run(logger: MetricLogger | None) -> Iterator[None]:
    """Make ``logger`` the target of :func:`log_train_step`, and close it when the body ends.

    The logger is closed with exit code 0 when the body returns and 1 when it raises, so a W&B
    run is finished (and marked failed) even when the job crashes.
    """
    global _active_logger
    _active_logger = logger
    exit_code = 1
    try:
        yield
        exit_code = 0
    finally:
        _active_logger = None
        if logger is not None:
            logger.close(exit_code=exit_code)


def log_train_step(stage: str, step: int, values: Mapping[str, float]) -> None:
    """Log one optimizer step's values as ``train/<stage>/<name>``; a no-op with no logger."""
    if _active_logger is not None:
        _active_logger.log_metrics({f"train/{stage}/{k}": v for k, v in values.items()}, step)


class ConsoleLogger:
    """Logs the config and metrics to the run's log file (``lunar_exp.log``) and the console.

    Per-step training values go to the DEBUG level, so they stay out of the default log.
    """

    def log_config(self, config: Mapping[str, object]) -> None:
        """Log the composed config once."""
        log.info("config: %s", json.dumps(config, default=str))

    def log_metrics(self, metrics: Mapping[str, object], step: int | None = None) -> None:
        """Log a dict of metrics (per-step ones at DEBUG level)."""
        log.log(
            logging.INFO if step is None else logging.DEBUG,
            "metrics%s: %s",
            "" if step is None else f" (step {step})",
            json.dumps(metrics, default=str, sort_keys=True),
        )

    def close(self, exit_code: int = 0) -> None:
        """Nothing to release."""


class WandbLogger:
    """Mirrors a run to Weights & Biases.

    It logs the composed config (plus the Hydra group choices under ``hydra_choices`` and the
    variant, ``lunar_exp.bookkeeping.variant``, under ``hydra_variant``), every
    ``metrics.json`` key as run summary, per-step training losses (``train/<stage>/<name>`` against
    ``train/<stage>/step``), ``generations.jsonl`` as the table ``generations``, and the run dir's
    PNG plots (LUNAR's layer sweep is drawn to ``layer_sweep.png`` when the run has one). No
    credential is ever passed in or logged: wandb reads ``WANDB_API_KEY`` or ``~/.netrc`` itself.

    Args:
        project: W&B project.
        entity: W&B entity (user or team); None uses the account's default.
        group: run group, e.g. one sweep.
        tags: run tags.
        name: run name; None lets wandb pick one.
        mode: ``online``, ``offline`` or ``auto`` (online when credentials exist, else offline;
            ``WANDB_MODE=offline|disabled`` wins). ``online`` without credentials fails at once.
        dir: where wandb writes its ``wandb/`` folder; None: ``$WANDB_DIR``, else the run dir.
        run_dir: the run dir holding ``generations.jsonl``; None: the Hydra run dir.
    """

    def __init__(
        self,
        project: str = "lunar_exp",
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | tuple[str, ...] = (),
        name: str | None = None,
        mode: str = "auto",
        dir: str | None = None,
        run_dir: str | None = None,
    ) -> None:
        resolved = wandb_support.resolve_mode(mode)
        import wandb

        hydra_dir, self.choices = wandb_support.hydra_runtime()
        self.run_dir = Path(run_dir) if run_dir else (hydra_dir or Path.cwd())
        wandb_dir = Path(dir or os.environ.get("WANDB_DIR") or self.run_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        self._step_keys: set[str] = set()
        self._run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            tags=[str(t) for t in tags] or None,
            name=name,
            mode=resolved,
            dir=str(wandb_dir),
        )

    @property
    def _active(self):
        """The open wandb run (closed loggers take no more calls)."""
        if self._run is None:
            raise RuntimeError("This W&B logger is closed.")
        return self._run

    def log_config(self, config: Mapping[str, object]) -> None:
        """Store the composed config, the Hydra group choices and the run's variant."""
        extra = {"hydra_choices": self.choices, "hydra_variant": wandb_support.hydra_variant()}
        self._active.config.update({**config, **extra}, allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, object], step: int | None = None) -> None:
        """Per-step values go to the history (one step axis per stage); results to the summary."""
        if step is None:
            self._active.summary.update(dict(metrics))
            return
        payload = dict(metrics)
        for key in metrics:
            step_key = f"{key.rpartition('/')[0]}/step"
            if step_key not in self._step_keys:
                self._active.define_metric(step_key)
                self._active.define_metric(f"{key.rpartition('/')[0]}/*", step_metric=step_key)
                self._step_keys.add(step_key)
            payload[step_key] = step
        self._active.log(payload)

    def close(self, exit_code: int = 0) -> None:
        """Upload the run's generations and plots (on success), finish the run, stop wandb."""
        import wandb

        if self._run is None:
            return
        try:
            if exit_code == 0:
                self._log_run_files()
        finally:
            self._run.finish(exit_code=exit_code)
            self._run = None
            wandb.teardown()  # wandb-core outlives finish() otherwise, until the process exits

    def _log_run_files(self) -> None:
        import wandb

        generations = self.run_dir / "generations.jsonl"
        if generations.is_file():
            columns, rows = wandb_support.generations_rows(generations)
            self._active.log({"generations": wandb.Table(columns=columns, data=rows)})
        _draw_layer_sweep(self.run_dir)
        images = {
            f"plots/{p.stem}": wandb.Image(str(p)) for p in sorted(self.run_dir.glob("*.png"))
        }
        if images:
            self._active.log(images)


def _draw_layer_sweep(run_dir: Path) -> None:
    """Draw ``layer_sweep.png`` from the run's ``unlearn_info.json`` when LUNAR swept layers."""
    try:
        info = json.loads((run_dir / "unlearn_info.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(info, dict) and info.get("layer_sweep"):
        from lunar_exp.table.plots import plot_layer_sweeps  # matplotlib only when needed

        plot_layer_sweeps({run_dir.name: info}, run_dir / "layer_sweep.png")
