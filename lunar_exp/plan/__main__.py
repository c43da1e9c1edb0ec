"""``python -m lunar_exp.plan <overrides of a run>``: the memory plan, before loading anything."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from lunar_exp.bookkeeping.errors import USER_ERRORS, user_error_message


def plan_config(cfg: DictConfig):
    """Architecture, lengths, plan and fixes of a composed config (no weights are loaded)."""
    from lunar_exp.plan.arch import resolve_arch
    from lunar_exp.plan.lengths import token_lengths
    from lunar_exp.plan.report import fixes, make_plan

    _check(cfg)
    arch = resolve_arch(cfg)
    lengths = token_lengths(cfg)
    plan = make_plan(cfg, arch, lengths)
    return arch, lengths, plan, ([] if plan.fits else fixes(cfg, arch, lengths))


def _check(cfg: DictConfig) -> None:
    plan = cfg.plan
    if int(plan.world_size) < 1 or float(plan.gpu_gib) <= 0 or float(plan.overhead_gib) < 0:
        raise ValueError(
            f"plan.world_size={plan.world_size}, plan.gpu_gib={plan.gpu_gib}, "
            f"plan.overhead_gib={plan.overhead_gib} out of range. Fix: world_size >= 1, "
            "gpu_gib > 0, overhead_gib >= 0."
        )
    if str(plan.device) not in ("cuda", "cpu"):
        raise ValueError(f"plan.device={plan.device!r} is not cuda or cpu. Fix: use one of them.")


@hydra.main(version_base="1.3", config_path="../../conf", config_name="plan")
def main(cfg: DictConfig) -> None:
    """Print the plan (and write it as JSON with ``plan.json=PATH``); bad input exits 2."""
    from lunar_exp.plan.report import render, write_json

    try:
        arch, lengths, plan, found = plan_config(cfg)
    except USER_ERRORS as err:
        print(f"lunar_exp: error: {user_error_message(err)}", file=sys.stderr)
        sys.exit(2)
    print(render(cfg, arch, lengths, plan, found))
    if cfg.plan.get("json"):
        write_json(str(cfg.plan.json), cfg, arch, lengths, plan, found)


if __name__ == "__main__":
    main()
