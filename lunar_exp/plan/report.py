"""The plan: every stage's peak per GPU as a table, and the settings that would make it fit."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from lunar_exp.plan.arch import Arch
from lunar_exp.plan.estimate import GIB, Stage, checkpointing_on, method_name, plan_stages
from lunar_exp.plan.lengths import Lengths

COLUMNS = ("weights", "gradients", "optimizer", "activations", "reference")


@dataclass(frozen=True)
class Plan:
    """The estimate of one composed config."""

    stages: list[Stage]
    peak_gib: float
    fits: bool


@dataclass(frozen=True)
class Fix:
    """Overrides that bring the peak under the budget, and the peak with them."""

    overrides: tuple[str, ...]
    peak_gib: float
    launch: str


def make_plan(cfg: DictConfig, arch: Arch, lengths: Lengths) -> Plan:
    """Stages, overall peak (GiB per GPU) and whether it fits ``plan.gpu_gib``."""
    stages = plan_stages(cfg, arch, lengths)
    peak = max(stage.parts.total for stage in stages) / GIB
    return Plan(stages, peak, peak + float(cfg.plan.overhead_gib) <= float(cfg.plan.gpu_gib))


def fixes(cfg: DictConfig, arch: Arch, lengths: Lengths) -> list[Fix]:
    """For each kind of change, the smallest one that fits (none when nothing of that kind does)."""
    found = []
    for family in _families(cfg, arch):
        for overrides in family:
            changed = _with(cfg, overrides)
            plan = make_plan(changed, arch, lengths)
            if plan.fits:
                world = int(changed.plan.world_size)
                launch = f"torchrun --nproc_per_node {world} -m" if world > 1 else "python -m"
                found.append(Fix(overrides, plan.peak_gib, launch))
                break
    return found


def _with(cfg: DictConfig, overrides: tuple[str, ...]) -> DictConfig:
    changed = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    assert isinstance(changed, DictConfig)
    for item in overrides:
        key, value = item.split("=", 1)
        OmegaConf.update(changed, key, yaml.safe_load(value), force_add=True)
    return changed


def _families(cfg: DictConfig, arch: Arch) -> Iterator[list[tuple[str, ...]]]:
    """Families of changes, each from the mildest to the strongest."""
    world = int(cfg.plan.world_size)
    more_gpus = [(f"plan.world_size={n}",) for n in (2, 4, 8) if n > world]
    yield more_gpus
    loop = cfg.method.get("loop")
    if loop is not None:
        checkpoint = ("method.loop.gradient_checkpointing=true",)
        if not checkpointing_on(loop.get("gradient_checkpointing"), arch):
            yield [checkpoint]
            yield [checkpoint + w for w in more_gpus]
        yield list(
            _halvings(
                "method.loop.batch_size",
                int(loop.batch_size),
                "method.loop.grad_accum",
                int(loop.grad_accum),
            )
        )
        yield [
            ("method.trainable_params=\\.mlp\\.",),
            ("method.trainable_params=\\.mlp\\.down_proj\\.",),
        ]
    if method_name(cfg) == "LUNAR":
        if str(cfg.method.get("gram_dtype", "float64")) == "float64":
            yield [("method.gram_dtype=float32",)]
        yield list(_halvings("method.activation_batch_size", int(cfg.method.activation_batch_size)))
    if cfg.finetune.get("enabled", False):
        yield list(_halvings("finetune.batch_size", int(cfg.finetune.batch_size)))
    if "eval_batch_size" in cfg.benchmark:
        yield list(_halvings("benchmark.eval_batch_size", int(cfg.benchmark.eval_batch_size)))
    if cfg.get("batch_tokens"):
        yield list(_halvings("batch_tokens", int(cfg.batch_tokens)))


def _halvings(key: str, value: int, accum_key: str | None = None, accum: int = 1):
    factor = 2
    while value // factor >= 1:
        step = (f"{key}={value // factor}",)
        yield step + ((f"{accum_key}={accum * factor}",) if accum_key else ())
        factor *= 2


def render(cfg: DictConfig, arch: Arch, lengths: Lengths, plan: Plan, found: list[Fix]) -> str:
    """The plan as text: model, lengths, one table row per stage, verdict and fixes."""
    world, budget = int(cfg.plan.world_size), float(cfg.plan.gpu_gib)
    lines = [
        f"Memory plan (per GPU, GiB) for {arch.name}: {arch.n_params / 1e9:.2f}B params, "
        f"{arch.layers} layers, d={arch.hidden}, d_ff={arch.intermediate}, vocab={arch.vocab}",
        f"  architecture: {arch.source}",
        f"  lengths: {lengths.source}",
        f"  world size {world}, model.dtype={cfg.model.dtype}, device {cfg.plan.device}, "
        f"method {method_name(cfg)}",
        "",
        _row(("stage", *COLUMNS, "peak")),
        _row(("-" * 8,) * (len(COLUMNS) + 2)),
    ]
    for stage in plan.stages:
        values = [getattr(stage.parts, c) / GIB for c in COLUMNS]
        lines.append(_row((stage.name, *_gib(values), *_gib([stage.parts.total / GIB]))))
    lines.append("")
    for stage in plan.stages:
        lines.extend(f"  {stage.name}: {note}" for note in stage.notes)
    overhead = float(cfg.plan.overhead_gib)
    verdict = "fits" if plan.fits else "does NOT fit"
    lines += [
        "",
        f"Peak per GPU: {plan.peak_gib:.2f} GiB (+ {overhead:g} GiB CUDA context and allocator "
        f"slack) {verdict} a {budget:g} GiB GPU (plan.gpu_gib).",
    ]
    if not plan.fits:
        lines.append(
            "Settings that would make it fit (each alone):"
            if found
            else "No single change tried makes it fit: combine them or use a larger GPU."
        )
        for fix in found:
            run_overrides = [shlex.quote(o) for o in fix.overrides if not o.startswith("plan.")]
            command = " ".join([fix.launch, "lunar_exp", "...", *run_overrides])
            lines.append(f"  {fix.peak_gib:7.2f} GiB  {command}")
    return "\n".join(lines)


def _gib(values: list[float]) -> list[str]:
    return [f"{v:.2f}" for v in values]


def _row(cells) -> str:
    first, *rest = cells
    return f"{first:<10}" + "".join(f"{c:>12}" for c in rest)


def write_json(
    path: str, cfg: DictConfig, arch: Arch, lengths: Lengths, plan: Plan, found: list[Fix]
) -> None:
    """The plan as JSON (``plan.json=PATH``): bytes per part and stage, peak, fixes."""
    record = {
        "model": {"name": arch.name, "params": arch.n_params, "source": arch.source},
        "lengths": asdict(lengths),
        "world_size": int(cfg.plan.world_size),
        "gpu_gib": float(cfg.plan.gpu_gib),
        "method": method_name(cfg),
        "stages": {
            s.name: {
                **{c: getattr(s.parts, c) for c in COLUMNS},
                "total": s.parts.total,
                "notes": list(s.notes),
            }
            for s in plan.stages
        },
        "peak_gib": plan.peak_gib,
        "fits": plan.fits,
        "fixes": [asdict(f) for f in found],
    }
    Path(path).write_text(json.dumps(record, indent=2) + "\n")


Planner = Callable[[DictConfig], tuple[Arch, Lengths, Plan]]
