"""Which exceptions are the user's to fix, and how to say so in one line."""

from __future__ import annotations

import logging
import sys

from hydra.errors import InstantiationException
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)

# Bad input (config values, paths, data) rather than bugs: reported as one line, exit code 2.
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    ConnectionError,
    TypeError,
    InstantiationException,
    OmegaConfBaseException,
)


def user_error_message(err: BaseException) -> str:
    """The innermost cause's message, on one line (Hydra wraps constructor errors)."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    text = " ".join(str(err).split())
    if isinstance(err, TypeError):
        return f"{text}. Fix: check the types of the overridden values (see --cfg job)."
    return text


def require_numbers(prefix: str, **values: object) -> None:
    """Raise ValueError naming the first setting that is not a number (bools excluded)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(
                f"{prefix}.{name}={value!r} is not a number. Fix: give a number, e.g. "
                f"{prefix}.{name}=1e-5 (see --cfg job for the current values)."
            )


def require_ranges(
    prefix: str,
    positive: dict[str, object] | None = None,
    non_negative: dict[str, object] | None = None,
) -> None:
    """Raise ValueError naming the first setting that is not a number > 0 / >= 0 respectively."""
    positive, non_negative = positive or {}, non_negative or {}
    require_numbers(prefix, **positive, **non_negative)
    bad = [(name, value, "> 0") for name, value in positive.items() if value <= 0]
    bad += [(name, value, ">= 0") for name, value in non_negative.items() if value < 0]
    if bad:
        name, value, rule = bad[0]
        raise ValueError(f"{prefix}.{name}={value} is out of range. Fix: use a value {rule}.")


def require_index(prefix: str, name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is an integer (a layer index, a count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"{prefix}.{name}={value!r} is not an integer. Fix: give a whole number, e.g. "
            f"{prefix}.{name}=7."
        )


def require_counts(prefix: str, at_least: int, **values: object) -> None:
    """Raise ValueError naming the first value that is not an integer >= ``at_least``.

    None passes: it means "no limit" for the optional counts of the benchmarks.
    """
    for name, value in values.items():
        if value is None:
            continue
        require_index(prefix, name, value)
        if value < at_least:
            raise ValueError(
                f"{prefix}.{name}={value} is out of range. Fix: use a value >= {at_least}."
            )


def require_fraction(prefix: str, name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is a number in (0, 1]."""
    require_numbers(prefix, **{name: value})
    if not 0 < value <= 1:
        raise ValueError(f"{prefix}.{name}={value} is out of range. Fix: use a value in (0, 1].")


class JobFailed(Exception):
    """One multirun job failed; Hydra records it and goes on with the other jobs."""


# (run dir, reason) of the jobs of this process's multirun that failed, for the end-of-sweep
# summary; jobs that run in other processes (SLURM, submitit local) report in their own logs.
FAILED_JOBS: list[tuple[str, str]] = []


def report_failure(err: Exception, multirun: bool, run_dir: str = "") -> None:
    """Report a run that raised ``err``; returns only when the caller should re-raise it.

    Bad input prints one line, ``lunar_exp: error: <problem>. Fix: <fix>``, and exits 2. In a
    multirun (``-m``) the job's log gets the reason and :class:`JobFailed` is raised instead:
    Hydra's launchers catch an ``Exception`` (never ``SystemExit``) per job, run the remaining
    jobs and re-raise the first failure at the end, so the sweep exits 1 with every other job's
    results complete, and the failed job's dir keeps ``.hydra/`` and its log but no metrics.json.
    """
    user = isinstance(err, USER_ERRORS)
    if user:
        print(f"lunar_exp: error: {user_error_message(err)}", file=sys.stderr)
    if multirun:
        message = user_error_message(err) if user else f"{type(err).__name__}: {err}"
        log.error("Job failed: %s", message, exc_info=None if user else err)
        FAILED_JOBS.append((run_dir, message))
        raise JobFailed(message) from (None if user else err)
    if user:
        sys.exit(2)


def summarize_failed_jobs() -> None:
    """At the end of a sweep, name every failed job and its reason (Hydra re-raises the first)."""
    if not FAILED_JOBS:
        return
    lines = [
        f"lunar_exp: {len(FAILED_JOBS)} sweep job(s) failed (no metrics.json; details in each "
        "job's lunar_exp.log; rerun the sweep to retry only these):"
    ]
    lines += [f"  {run_dir}: {reason}" for run_dir, reason in FAILED_JOBS]
    print("\n".join(lines), file=sys.stderr)
