"""run(cfg): load, fine-tune (cached), evaluate, unlearn, evaluate, write outputs."""

from __future__ import annotations

import json
import logging
import random
import resource
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lunar_exp import distributed, fluency, retain_reference, sequential
from lunar_exp.attacks._common import AttackTarget, no_control
from lunar_exp.attacks.runner import AttackResults, check_attacks, run_attacks
from lunar_exp.bookkeeping import cache, identity, open_unlearning, outputs, resume
from lunar_exp.bookkeeping.environment import ENVIRONMENT_FILE, run_environment
from lunar_exp.bookkeeping.loggers import logging_run
from lunar_exp.bookkeeping.offline import check_hub_access
from lunar_exp.bookkeeping.tuned_settings import warn_if_untuned
from lunar_exp.data_checks import check_unlearn_data
from lunar_exp.interfaces import (
    Attack,
    Benchmark,
    BenchmarkData,
    ChatModel,
    ChecksModel,
    EvalResult,
    Method,
    UnlearnData,
    UnlearnOutcome,
    Utility,
)
from lunar_exp.methods import build_method
from lunar_exp.methods.none import NoUnlearning, check_attack_layers_given
from lunar_exp.metrics.primitives import batch_token_budget
from lunar_exp.settings import setting, validate

log = logging.getLogger(__name__)

# Bump when evaluation code changes, so stored target-model evaluations are not reused.
# 4: coherence (degeneration, distinct-2, coherent refusals, fluency) in metrics and records;
# 5: fact-word recall (lunar_exp.metrics.text.fact_recall) in QA and TOFU evaluations
EVAL_VERSION = 5  # 2: MRR and top-hit rate (qa_eval); 3: metric directions stored
# Which way is better for every metrics.json key (True higher, False lower, None closeness to a
# target or no preference declared); the keys are metrics.json's, prefixes included.
DIRECTIONS_FILE = "metric_directions.json"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_cache_key(cfg: DictConfig) -> dict:
    """The part of the model config that determines the weights (not device or cache paths)."""
    node = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(node, dict), "the model config is a mapping"
    return {k: v for k, v in node.items() if k not in ("device", "device_map", "cache_dir", "name")}


@dataclass(kw_only=True)
class RunSettings:
    """The run-level settings of ``conf/config.yaml`` that the pipeline itself reads."""

    seed: int = setting(0, help="seed of Python, NumPy and torch (and of each part's ${seed}).")
    threads: int | None = setting(None, ge=1, help="torch CPU threads; null: torch's default.")
    attack_eval: Literal["full", "core"] = setting(
        "full",
        help="what every attack scores: the benchmark's full evaluation, or core (forget and "
        "retain only, on benchmarks with a cheaper core evaluation: TOFU).",
    )

    def __post_init__(self) -> None:
        validate(self, "")


def run(cfg: DictConfig) -> dict[str, object]:
    """Run one experiment and return its metrics (also written to ``metrics.json``).

    Launched as several processes (torchrun, accelerate launch, SLURM tasks), every rank runs it
    (``lunar_exp.distributed``): training is sharded, everything else is computed on every rank,
    and rank 0 alone writes the run dir, the caches and the logger, in rank 0's run dir.
    """
    RunSettings(seed=cfg.seed, threads=cfg.threads, attack_eval=cfg.get("attack_eval", "full"))
    distributed.init_from_env()
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    run_dir = Path(distributed.agree(HydraConfig.get().runtime.output_dir))
    done = distributed.agree(resume.completed_run(cfg, run_dir))
    if done is not None:
        log.info("Run already complete: %s (resume=true); skipping", run_dir)
        return done
    outputs.retire_previous_metrics(run_dir)
    logger = instantiate(cfg.logger) if cfg.get("logger") and distributed.is_main() else None
    with logging_run(logger):  # closes the logger, with a failure code when the run raises
        if logger:
            logger.log_config(OmegaConf.to_container(cfg, resolve=True))
        with batch_token_budget(cfg.get("batch_tokens")):  # memory bound of inference batches
            metrics, directions = _execute(cfg, run_dir)
        if logger:
            logger.log_config({"metric_directions": directions})
            logger.log_metrics(metrics)
    return metrics


@dataclass
class _Stages:
    """What the stages of one run share: its parts, data, evaluation sets and timings.

    ``eval_data`` and ``eval_sets`` are what every evaluation scores: the benchmark's own sets,
    or, with sequential requests, the sets with every requested edge on the forget side.
    ``reference`` is the retain-model reference passed to every evaluation.
    """

    cfg: DictConfig
    run_dir: Path
    benchmark: Benchmark
    method: Method
    attacks: dict[str, Attack]
    utility: Utility | None
    utility_sets: Mapping[str, Any]
    bench: BenchmarkData
    chat: ChatModel
    requests: list[list[str]] | None
    eval_data: UnlearnData
    eval_sets: Mapping[str, Any]
    reference: Mapping[str, Any] | None
    recorded_judge: fluency.Judge | None = None  # method=none: the judge the checkpoint names
    seconds: dict[str, float] = field(default_factory=lambda: {"eval": 0.0, "unlearn": 0.0})

    @property
    def data(self) -> UnlearnData:
        """The run's forget/retain data."""
        return self.bench.unlearn

    def evaluate(self) -> EvalResult:
        """The benchmark's evaluation of the run's model, plus the utility's metrics."""
        result = self.benchmark.evaluate(self.chat, self.eval_sets, self.reference)
        return _add_utility(self, result)


def _execute(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, object], dict[str, bool | None]]:
    run = _prepare(cfg, run_dir)
    ft = instantiate(cfg.finetune).run(run.chat, run.data, model_cache_key(cfg))
    with _timed(run, "eval"):
        before, before_cached = _evaluate_target(run, ft.path)
        before = _add_utility(run, before)
    with _timed(run, "unlearn"):
        outcome, seq = _unlearn(run, before)
    control = outcome.control or no_control
    with _timed(run, "eval"), control(run.chat):
        after = _final_evaluation(run, before, seq)
    target = AttackTarget(
        chat=run.chat,
        data=run.eval_data,
        benchmark=run.benchmark,
        eval_sets=run.eval_sets,
        generation=run.bench.generation,
        outcome=outcome,
        after=after,
        reference=run.reference,
        control=control,
        run_dir=run_dir,
        core_only=run.cfg.get("attack_eval", "full") == "core",
    )
    attacks = run_attacks(run.attacks, target)
    _write_artifacts(run, ft.path, after, outcome, attacks)
    _score_fluency(run, ft.path, before, after)  # last: it swaps the target model back in
    outputs.write_generations(run.run_dir / "generations.jsonl", before, after)
    metrics: dict[str, object] = {f"before/{k}": v for k, v in before.metrics.items()}
    directions: dict[str, bool | None] = {f"before/{k}": v for k, v in before.directions.items()}
    for part, ways in (
        (after.metrics, after.directions),
        (outcome.metrics, dict.fromkeys(outcome.metrics)),  # the method's own: none declared
        (seq.metrics, seq.directions),
        (attacks.metrics, attacks.directions),
    ):
        metrics.update(part)
        directions.update(ways)
    bookkeeping = {
        "time/finetune_s": ft.seconds,
        "time/unlearn_s": run.seconds["unlearn"],
        "time/eval_s": run.seconds["eval"],
        "time/fluency_s": run.seconds.get("fluency", 0.0),
        "finetune/cached": ft.cached,
        "before/cached": before_cached,
        "resources/peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "data/n_forget": len(run.eval_data.forget),
        "data/n_retain": len(run.eval_data.retain),
        "dist/world_size": distributed.world_size(),
        "dist/strategy": distributed.strategy(),
    }
    metrics.update(bookkeeping)
    directions.update(dict.fromkeys(bookkeeping))
    directions = _every_key(metrics, directions)
    resume.write_run_config(run_dir, cfg)
    outputs.write_json_atomic(run_dir / ENVIRONMENT_FILE, run_environment(ft.path))
    outputs.write_json_atomic(run_dir / DIRECTIONS_FILE, directions)
    outputs.write_json_atomic(run_dir / outputs.METRICS_FILE, metrics)
    if distributed.is_main():
        table = outputs.summary_table(before.metrics, after.metrics, after.directions)
        print(f"\n{table}\nrun dir: {run_dir}")
    return metrics, directions


def _every_key(metrics: Mapping[str, object], directions: Mapping[str, bool | None]) -> dict:
    """``directions`` for exactly the keys of ``metrics`` (None, with a warning, if undeclared)."""
    missing = sorted(set(metrics) - set(directions))
    if missing:
        log.warning("No direction declared for %s; written as null", missing)
    return {key: directions.get(key) for key in metrics}


def _prepare(cfg: DictConfig, run_dir: Path) -> _Stages:
    """Build every part and check them against the data and model before any expensive stage."""
    check_hub_access(cfg)
    benchmark = instantiate(cfg.benchmark)
    method, attacks = build_method(cfg.method), _attacks(cfg)
    if distributed.is_main():
        warn_if_untuned(cfg)
    utility, utility_sets = _utility(cfg)
    bench = benchmark.load()
    data = bench.unlearn
    chat = instantiate(cfg.model)
    check_unlearn_data(data, chat)
    if isinstance(method, ChecksModel):
        method.check(chat)
    requests = cfg.method.get("requests")
    eval_data, eval_sets = data, bench.eval_sets
    if requests is not None:
        requests = sequential.check_requests(requests, data, benchmark)
        eval_data = sequential.evaluation_data(data, requests)
        eval_sets = sequential.evaluation_sets(benchmark, data, requests, bench.eval_sets)
    check_attacks(attacks, chat, data)
    if isinstance(method, NoUnlearning):
        _check_evaluation_only(attacks, requests)
    reference = retain_reference.prepare(cfg, benchmark, bench, model_cache_key(cfg), run_dir)
    return _Stages(
        cfg=cfg,
        run_dir=run_dir,
        benchmark=benchmark,
        method=method,
        attacks=attacks,
        utility=utility,
        utility_sets=utility_sets,
        bench=bench,
        chat=chat,
        requests=requests,
        eval_data=eval_data,
        eval_sets=eval_sets,
        reference=reference,
        recorded_judge=fluency.recorded_judge(cfg.model)
        if isinstance(method, NoUnlearning)
        else None,
    )


def _final_evaluation(
    run: _Stages, before: EvalResult, seq: sequential.SequentialResult
) -> EvalResult:
    """The evaluation after unlearning, computed once.

    method=none changed nothing, so its one evaluation is also the "after" one; with sequential
    requests the evaluation after the last request already scored the final model (the same
    sets under the same controls), so only the utility's evaluation is added to it.
    """
    if isinstance(run.method, NoUnlearning):
        return before
    if seq.after is not None:
        return _add_utility(run, seq.after)
    return run.evaluate()


def _check_evaluation_only(attacks: dict[str, Attack], requests: object) -> None:
    """method=none takes no sequential requests, nor attacks aimed at a method's edit."""
    if requests is not None:
        raise ValueError(
            "method=none unlearns nothing, so it takes no method.requests. Fix: drop "
            "method.requests, or pick an unlearning method."
        )
    check_attack_layers_given(attacks)


def _unlearn(
    run: _Stages, before: EvalResult
) -> tuple[UnlearnOutcome, sequential.SequentialResult]:
    """One unlearning call, or one per sequential request (with ``seq/<k>/`` metrics)."""
    if not run.requests:
        return run.method.unlearn(run.chat, run.data), sequential.SequentialResult()
    seq = sequential.run_requests(
        run.method,
        run.chat,
        run.data,
        run.requests,
        run.benchmark,
        before,
        run.eval_sets,
        run.reference,
    )
    if distributed.is_main():
        sequential.plot_curve(seq.curve, run.run_dir / "sequential.png")
    return seq.outcome, seq


@contextmanager
def _timed(run: _Stages, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        run.seconds[stage] += time.perf_counter() - start


def _write_artifacts(
    run: _Stages, target_path: str, after: EvalResult, outcome, attacks: AttackResults
) -> None:
    """Generations, the method's tensors and info, attack records and (optionally) the model."""
    if run.cfg.save_model and distributed.is_main():
        if outcome.control is not None:
            log.warning(
                "save_model=true saves the weights, but this method unlearns at inference time "
                "(a hook, e.g. LUNAR mode=hook): unlearned_model/ holds the model without it. "
                "Use method.mode=edit to save the unlearned model."
            )
        run.chat.model.save_pretrained(run.run_dir / "unlearned_model", safe_serialization=True)
        run.chat.tokenizer.save_pretrained(run.run_dir / "unlearned_model")
        judge = _judge(run, target_path) or fluency.run_judge(run.cfg.model, "")
        fluency.record_judge(run.run_dir / "unlearned_model", judge)
    open_unlearning.write_eval_ou(run.run_dir, run.benchmark.name, after)
    outputs.write_unlearn_artifacts(run.run_dir, outcome)
    if run.attacks:
        outputs.write_attack_outputs(run.run_dir, attacks.records, attacks.info)


def _score_fluency(run: _Stages, target_path: str, before: EvalResult, after: EvalResult) -> None:
    """Score every generated answer before and after unlearning with the fluency judge.

    The judge is the target model (:mod:`lunar_exp.fluency`); with ``method=none`` the judge a
    saved checkpoint records, else the checkpoint itself. Answers the judge scored while it was
    evaluated are left as they are; the rest are scored with the judge swapped in for the model
    (so the run never holds two models). Runs on every rank, as evaluations do.
    """
    start = time.perf_counter()
    judge = _judge(run, target_path)
    if judge is not None:
        fluency.swap_in_judge(run.chat, judge, run.cfg.model)
    for result in (before,) if after is before else (before, after):
        fluency.add_fluency(run.chat, result, run.bench.generation.batch_size)
    run.seconds["fluency"] = time.perf_counter() - start


def _judge(run: _Stages, target_path: str) -> fluency.Judge | None:
    """The judge to load after unlearning; None when the model in memory is the judge."""
    if isinstance(run.method, NoUnlearning):
        return run.recorded_judge
    return fluency.run_judge(run.cfg.model, target_path)


def _evaluate_target(run: _Stages, target_path: str) -> tuple[EvalResult, bool]:
    """Evaluate the target model, reusing its stored evaluation when there is one.

    The target model is the same for every method of a sweep, so its evaluation is stored next to
    the cache (:func:`_target_eval_file`).
    """

    def evaluate(chat: ChatModel, eval_sets: Mapping[str, Any], reference) -> EvalResult:
        result = run.benchmark.evaluate(chat, eval_sets, reference)
        if run.recorded_judge is not None:  # a saved checkpoint: its judge scores it later
            return result
        # the loaded model is the target: it scores its own answers' fluency right away
        return fluency.add_fluency(chat, result, run.bench.generation.batch_size)

    stored = _target_eval_file(run, target_path)
    if stored is None:
        return evaluate(run.chat, run.eval_sets, run.reference), False
    try:
        record = json.loads(stored.read_text())
        log.info("Target model evaluation loaded from %s", stored)
        return EvalResult(record["metrics"], record["generations"], record["directions"]), True
    except (OSError, ValueError, KeyError):
        result = evaluate(run.chat, run.eval_sets, run.reference)
        stored.parent.mkdir(parents=True, exist_ok=True)
        outputs.write_json_atomic(stored, asdict(result))
        return result, False


def _target_eval_file(run: _Stages, target_path: str) -> Path | None:
    """Where the target model's evaluation is stored; None when the model's identity is unknown.

    Keyed by the benchmark config (and requests) and the target model: its cache entry when the
    run fine-tuned it, else (``finetune=none``) its identity (hub commit or file hashes,
    :mod:`lunar_exp.bookkeeping.identity`) with the settings that change scores (dtype, prompts).
    """
    cfg = run.cfg
    model_part: object = target_path
    if not target_path:
        node = model_cache_key(cfg)
        found = identity.model_identity(node, Path(cfg.paths.cache_dir) / "hashes")
        if found is None:
            return None
        model_part = identity.evaluation_key_parts(node, found)
    bench_cfg = OmegaConf.to_container(cfg.benchmark, resolve=True)
    extra: list[object] = [run.requests] if run.requests else []
    if run.recorded_judge is not None:  # fluency is the recorded judge's
        extra.append(asdict(run.recorded_judge))
    key = cache.config_key(EVAL_VERSION, model_part, bench_cfg, *extra)
    return Path(cfg.paths.cache_dir) / "evals" / f"{key}.json"


def _attacks(cfg: DictConfig) -> dict[str, Attack]:
    """The configured attacks (``conf/attack/``), by name; empty for ``attack=none``."""
    return {name: instantiate(node) for name, node in (cfg.get("attack") or {}).items()}


def _utility(cfg: DictConfig) -> tuple[Utility | None, Mapping[str, Any]]:
    """The configured utility evaluation (``conf/utility/``) and its loaded, checked sets.

    None and no sets for ``utility=none``.
    """
    if not cfg.get("utility"):
        return None, {}
    utility = instantiate(cfg.utility)
    return utility, utility.load()


def _add_utility(run: _Stages, result: EvalResult) -> EvalResult:
    """``result`` plus the utility's metrics, directions and records under ``utility/``."""
    if run.utility is None:
        return result
    extra = run.utility.evaluate(run.chat, run.utility_sets)
    metrics = {**result.metrics, **{f"utility/{k}": v for k, v in extra.metrics.items()}}
    directions = {
        **result.directions,
        **{f"utility/{k}": v for k, v in extra.directions.items()},
    }
    records = {
        f"utility/{split}": [{**row, "split": f"utility/{split}"} for row in rows]
        for split, rows in extra.generations.items()
    }
    return EvalResult(metrics, {**result.generations, **records}, directions)
