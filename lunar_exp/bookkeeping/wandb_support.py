"""Plain helpers for :class:`lunar_exp.bookkeeping.loggers.WandbLogger`.

Mode, credentials, generations rows.

Nothing here imports wandb, so the checks run (and fail) before wandb starts its service.
"""

from __future__ import annotations

import json
import netrc
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

MODES = ("online", "offline", "auto")
DEFAULT_HOST = "https://api.wandb.ai"


def netrc_path() -> Path:
    """The netrc file wandb reads: ``$NETRC`` when set, else ``~/.netrc``."""
    return Path(os.environ.get("NETRC") or "~/.netrc").expanduser()


def has_credentials() -> bool:
    """True when wandb can authenticate: ``WANDB_API_KEY``, an identity token or a netrc login."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).netloc
    try:
        login = netrc.netrc(str(netrc_path())).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(login and login[2])


WandbMode = Literal["online", "offline", "disabled"]


def resolve_mode(mode: str) -> WandbMode:
    """The wandb mode to start in, failing at once when ``online`` has no credentials.

    ``auto`` follows ``WANDB_MODE`` when it is ``offline`` or ``disabled``; otherwise it is
    ``online`` with credentials and ``offline`` without.

    Raises:
        ValueError: an unknown mode, or ``online`` without an API key or netrc login.
    """
    if mode not in MODES:
        raise ValueError(
            f"logger.mode={mode!r} is not a W&B mode. Fix: use online, offline or auto."
        )
    if mode == "auto":
        forced = os.environ.get("WANDB_MODE")
        if forced == "offline" or forced == "disabled":
            return forced
        return "online" if has_credentials() else "offline"
    if mode == "online" and not has_credentials():
        host = urlsplit(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).netloc
        raise ValueError(
            f"logger.mode=online needs W&B credentials, but WANDB_API_KEY is not set and "
            f"{netrc_path()} has no login for {host}. Fix: export WANDB_API_KEY (or run "
            "`wandb login`), or use logger.mode=offline and upload later with `wandb sync`."
        )
    return "online" if mode == "online" else "offline"


def hydra_runtime() -> tuple[Path | None, dict[str, str]]:
    """(run dir, group choices) of the Hydra job in progress; (None, {}) outside Hydra.

    Hydra's own choices (``hydra/...``) are left out.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None, {}
    runtime = HydraConfig.get().runtime
    choices = {
        str(k): str(v) for k, v in runtime.choices.items() if not str(k).startswith("hydra/")
    }
    return Path(runtime.output_dir), choices


def hydra_variant() -> str:
    """The Hydra job's variant (``bookkeeping.variant``, table grouping); empty outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    from lunar_exp.bookkeeping.variant import variant_name

    if not HydraConfig.initialized():
        return ""
    return variant_name(HydraConfig.get().overrides.task)


def _cell(value: object) -> object:
    """A value a wandb.Table cell holds: scalars as they are, containers as JSON text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value)


def generations_rows(path: Path) -> tuple[list[Any], list[Any]]:
    """Columns (in order of first appearance) and rows of a ``generations.jsonl`` file."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    columns: list[str] = []
    for record in records:
        columns += [key for key in record if key not in columns]
    rows = [[_cell(record.get(column)) for column in columns] for record in records]
    return columns, rows
