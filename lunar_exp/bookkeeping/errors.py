"""Which exceptions are the user's to fix, and how to say so in one line."""

from __future__ import annotations

import gc
import logging
import sys
import traceback

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


def release_failed_run(err: BaseException) -> None:
    """Free what a failed run still holds, so the next job of a sequential sweep has the memory.

    The exception's traceback keeps every frame of the failed run alive, and with them its
    locals: the model, the optimizer and its states, activations. Hydra's basic launcher keeps
    the exception (in the job's result) until the sweep ends, so after one out-of-memory failure
    every later job on that GPU would fail too. This clears the locals of every frame of ``err``
    and of the exceptions chained to it (the traceback text stays printable), collects the
    reference cycles and returns the CUDA allocator's cached blocks to the driver.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
