"""Metric loggers (torchtune-style interface); metrics.json is written by the pipeline itself."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)


class ConsoleLogger:
    """Logs the config and metrics to the run's log file (``lunar_exp.log``) and the console."""

    def log_config(self, config: Mapping[str, object]) -> None:
        """Log the composed config once."""
        log.info("config: %s", json.dumps(config, default=str))

    def log_metrics(self, metrics: Mapping[str, object], step: int | None = None) -> None:
        """Log a dict of metrics."""
        log.info(
            "metrics%s: %s",
            "" if step is None else f" (step {step})",
            json.dumps(metrics, default=str, sort_keys=True),
        )

    def close(self) -> None:
        """Nothing to release."""
