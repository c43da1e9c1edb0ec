"""WMDP and MMLU multiple-choice accuracy through lm-eval, on the live model (nothing is saved).

``hub`` mode runs lm-eval's own tasks ``wmdp_bio``/``wmdp_chem``/``wmdp_cyber`` and ``mmlu`` (or
``mmlu_<subject>``), which download ``cais/wmdp`` and ``cais/mmlu``. ``local`` mode runs twins of
those tasks (``tasks/mcq_local.yaml``: the same prompt, choices and metric) on local
copies: WMDP's ``<subset>_questions.json`` and MMLU's ``test/<subject>_test.csv``. The questions
are validated and written once, with absolute paths, into a cache entry lm-eval reads. ``auto``
picks ``local`` when the local directories exist.

Metric keys: ``wmdp_<subset>/acc`` and ``/acc_stderr``; ``mmlu/acc`` and ``/acc_stderr`` pooled
over the subjects weighted by size, as lm-eval's ``mmlu`` group reports them. Directions come
from the tasks' ``metric_list`` (lm-eval's ``higher_is_better``), flipped on the WMDP tasks,
whose hazardous knowledge the run unlearns; a standard error has no preferred direction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lunar_exp.benchmarks.lm_eval.questions import read_questions, write_json
from lunar_exp.bookkeeping import cache
from lunar_exp.interfaces import ChatModel, EvalResult

WMDP_SUBJECTS = {"bio": "biology", "chem": "chemistry", "cyber": "cybersecurity"}
MODES = ("auto", "local", "hub")
TEMPLATE = Path(__file__).with_name("tasks") / "mcq_local.yaml"
LETTERS = "ABCD"


@dataclass(frozen=True)
class MCQTasks:
    """The lm-eval tasks a run scores: their names and, for local tasks, where their YAMLs are."""

    names: tuple[str, ...]
    include_dir: Path | None


@dataclass(frozen=True)
class LocalTask:
    """One local lm-eval task: its name, subject description and question file."""

    name: str
    description: str
    source: Path


class LMEvalMCQ:
    """Scores WMDP subsets and MMLU subjects with lm-eval (used by ``wmdp`` and ``utility``).

    Args:
        wmdp_subsets: WMDP subsets to score (``bio``, ``chem``, ``cyber``); may be empty.
        mmlu: score MMLU as well.
        mmlu_subjects: MMLU subjects; None = all (every CSV locally, lm-eval's ``mmlu`` group on
            the hub).
        mode: ``auto``, ``local`` or ``hub``.
        wmdp_dir: directory of ``<subset>_questions.json`` (cais/wmdp form).
        mmlu_dir: directory holding ``test/<subject>_test.csv`` (cais/mmlu form).
        limit: first N questions of each task (each WMDP subset, each MMLU subject); None = all.
        batch_size: lm-eval batch size.
        cache_dir: where the local tasks are written.
        owner: the config node named in error messages (``benchmark`` or ``utility``).
    """

    def __init__(
        self,
        wmdp_subsets: list[str],
        mmlu: bool,
        mmlu_subjects: list[str] | None,
        mode: str,
        wmdp_dir: str,
        mmlu_dir: str,
        limit: int | None,
        batch_size: int,
        cache_dir: str,
        owner: str,
    ) -> None:
        unknown = sorted(set(wmdp_subsets) - set(WMDP_SUBJECTS))
        if unknown:
            raise ValueError(
                f"{owner}.subsets has unknown WMDP subset(s) {unknown}. "
                f"Fix: choose from {sorted(WMDP_SUBJECTS)}."
            )
        if mode not in MODES:
            raise ValueError(f"{owner}.mode={mode!r}. Fix: use one of {list(MODES)}.")
        if not wmdp_subsets and not mmlu:
            raise ValueError(f"{owner} selects no task. Fix: give WMDP subsets or enable MMLU.")
        if limit is not None and limit < 1:
            raise ValueError(f"{owner}.limit={limit}. Fix: use a positive count or null (all).")
        self.wmdp_subsets = list(dict.fromkeys(wmdp_subsets))
        self.mmlu = mmlu
        self.mmlu_subjects = list(mmlu_subjects) if mmlu_subjects else None
        self.mode = mode
        self.wmdp_dir, self.mmlu_dir = Path(wmdp_dir).resolve(), Path(mmlu_dir).resolve()
        self.limit, self.batch_size = limit, batch_size
        self.cache_dir, self.owner = Path(cache_dir), owner

    def needs_hub(self) -> bool:
        """Whether the questions come from the Hugging Face hub."""
        if self.mode != "auto":
            return self.mode == "hub"
        dirs = [self.wmdp_dir] * bool(self.wmdp_subsets) + [self.mmlu_dir] * self.mmlu
        return not all(d.is_dir() for d in dirs)

    def tasks(self) -> MCQTasks:
        """Resolve the mode and write the local tasks, so bad input fails before any model loads.

        Raises:
            FileNotFoundError: a question file is missing, or the hub is needed but unreachable.
            ValueError: a question file has the wrong schema.
        """
        names, include_dir = self._hub_plan() if self.needs_hub() else self._local_plan()
        return MCQTasks(tuple(names), include_dir)

    def evaluate(self, chat: ChatModel, tasks: MCQTasks) -> EvalResult:
        """Accuracy of ``chat.model`` on ``tasks``, with one record per question."""
        names, include_dir = list(tasks.names), tasks.include_dir
        return summarise(run_lm_eval(chat, names, include_dir, self.limit, self.batch_size))

    def _hub_plan(self) -> tuple[list[str], None]:
        from lunar_exp.models import hub_reachable

        if not hub_reachable():
            raise FileNotFoundError(
                f"No local WMDP/MMLU questions at {self.owner}.wmdp_dir={self.wmdp_dir} / "
                f"{self.owner}.mmlu_dir={self.mmlu_dir} and the Hugging Face hub (cais/wmdp, "
                f"cais/mmlu) is unreachable. Fix: set {self.owner}.wmdp_dir=... and "
                f"{self.owner}.mmlu_dir=... to local copies (e.g. ../shared/benchdata/wmdp and "
                "../shared/benchdata/mmlu)."
            )
        names = [f"wmdp_{s}" for s in self.wmdp_subsets]
        if self.mmlu:
            names += [f"mmlu_{s}" for s in self.mmlu_subjects] if self.mmlu_subjects else ["mmlu"]
        return names, None

    def _local_plan(self) -> tuple[list[str], Path]:
        tasks = [
            LocalTask(f"wmdp_{s}", WMDP_SUBJECTS[s], self.wmdp_dir / f"{s}_questions.json")
            for s in self.wmdp_subsets
        ]
        if self.mmlu:
            tasks += [
                LocalTask(
                    f"mmlu_{s}", s.replace("_", " "), self.mmlu_dir / "test" / f"{s}_test.csv"
                )
                for s in self._local_subjects()
            ]
        missing = [str(t.source) for t in tasks if not t.source.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} question file(s) missing, e.g. {missing[0]}. Fix: set "
                f"{self.owner}.wmdp_dir (<subset>_questions.json) and {self.owner}.mmlu_dir "
                f"(test/<subject>_test.csv) to the local copies, or {self.owner}.mode=hub."
            )
        return [t.name for t in tasks], render_tasks(tasks, self.cache_dir)

    def _local_subjects(self) -> list[str]:
        if self.mmlu_subjects:
            return self.mmlu_subjects
        found = sorted(p.name[: -len("_test.csv")] for p in self.mmlu_dir.glob("test/*_test.csv"))
        if not found:
            raise FileNotFoundError(
                f"No MMLU test/<subject>_test.csv under {self.mmlu_dir}. Fix: set "
                f"{self.owner}.mmlu_dir to a local cais/mmlu copy."
            )
        return found


def render_tasks(tasks: list[LocalTask], cache_dir: Path) -> Path:
    """Validate each task's questions and write task YAMLs with JSON copies into a cache entry.

    The entry is keyed by the template and the sources' paths, sizes and modification times, so
    unchanged data is neither re-validated nor re-read by ``datasets``.
    """
    template = TEMPLATE.read_text()
    stamp = [(t.name, t.description, str(t.source), t.source.stat().st_size) for t in tasks]
    stamp += [t.source.stat().st_mtime_ns for t in tasks]
    entry = cache_dir / "lm_eval_tasks" / cache.config_key(template, stamp)
    if cache.read_entry(entry) is None:
        base = yaml.safe_load(template)

        def fill(tmp: Path) -> None:
            for task in tasks:
                write_json(tmp / f"{task.name}.json", read_questions(task.source))
                config = {
                    **base,
                    "task": task.name,
                    "description": "The following are multiple choice questions (with "
                    f"answers) about {task.description}.\n\n",
                    "dataset_kwargs": {"data_files": {"test": str(entry / f"{task.name}.json")}},
                }
                (tmp / f"{task.name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

        cache.write_entry(entry, fill, {"tasks": [t.name for t in tasks]})
    return entry


def run_lm_eval(
    chat: ChatModel, tasks: list[str], include_dir: Path | None, limit: int | None, batch_size: int
) -> Mapping[str, Any]:
    """``lm_eval.simple_evaluate`` on the in-memory model; local tasks only when ``include_dir``."""
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    if include_dir is None:
        manager = TaskManager()
    else:
        manager = TaskManager(include_path=str(include_dir), include_defaults=False)
    # lm-eval's register_model decorator is unannotated and asserts issubclass(cls, LM), so its
    # type checker view of HFLM is type[LM], whose constructor takes none of HFLM's arguments.
    model = HFLM(pretrained=chat.model, tokenizer=chat.tokenizer, batch_size=batch_size)  # pyright: ignore[reportCallIssue]
    # No reseeding: lm-eval would otherwise reset the run's global RNG state mid-pipeline. Its
    # seeds are annotated int, but its docstring and code take None as "do not seed".
    output = simple_evaluate(
        model=model,
        tasks=[*tasks],
        task_manager=manager,
        limit=limit,
        random_seed=None,  # pyright: ignore[reportArgumentType]
        numpy_random_seed=None,  # pyright: ignore[reportArgumentType]
        torch_random_seed=None,  # pyright: ignore[reportArgumentType]
    )
    if output is None:  # lm-eval returns results on the first distributed rank only
        raise RuntimeError("lm-eval returned no results (not the first distributed rank).")
    return output


def summarise(output: Mapping[str, Any]) -> EvalResult:
    """Metrics per WMDP subset, MMLU pooled over subjects, and one record per question."""
    samples, results = output["samples"], output["results"]
    declared = output.get("higher_is_better", {})
    metrics: dict[str, float] = {}
    directions: dict[str, bool | None] = {}
    for task in sorted(t for t in samples if t.startswith("wmdp_")):
        metrics.update(_task_metrics(task, [results[task]], [len(samples[task])]))
        directions.update(_task_directions(task, [declared.get(task, {})], unlearned=True))
    subjects = sorted(t for t in samples if t.startswith("mmlu_"))
    if subjects:
        stats = [results[t] for t in subjects]
        metrics.update(_task_metrics("mmlu", stats, [len(samples[t]) for t in subjects]))
        hib = [declared.get(t, {}) for t in subjects]
        directions.update(_task_directions("mmlu", hib, unlearned=False))
    generations = {
        task: [_record(task, s) for s in sorted(rows, key=lambda s: s["doc_id"])]
        for task, rows in sorted(samples.items())
    }
    directions = {key: directions[key] for key in metrics}
    return EvalResult(metrics, generations, directions)


def _task_metrics(name: str, stats: list[dict], sizes: list[int]) -> dict[str, float]:
    """Size-weighted accuracy and lm-eval's pooled standard error (omitted when undefined)."""
    from lm_eval.api.metrics import pooled_sample_stderr

    total = sum(sizes)
    metrics = {
        f"{name}/acc": sum(s["acc,none"] * n for s, n in zip(stats, sizes, strict=True)) / total
    }
    stderrs: list[float] = [
        e for s in stats if isinstance(e := s.get("acc_stderr,none"), int | float)
    ]
    if len(stderrs) == len(stats) and total > len(sizes):
        stderr = pooled_sample_stderr(stderrs, sizes)  # = the task's own stderr for one task
        if math.isfinite(stderr):
            metrics[f"{name}/acc_stderr"] = float(stderr)
    return metrics


def _task_directions(
    name: str, declared: list[dict[str, bool | None]], unlearned: bool
) -> dict[str, bool | None]:
    """Directions of ``<name>/acc`` and ``<name>/acc_stderr``.

    Accuracy goes as the tasks' ``metric_list`` declares it (``higher_is_better``; accuracy is
    higher-is-better when a task declares nothing), flipped when the run unlearns the task's
    knowledge (WMDP); a standard error has no preferred direction (None).
    """
    values = {hib.get("acc", True) for hib in declared} or {True}
    higher = values.pop() if len(values) == 1 else None
    if higher is not None and unlearned:
        higher = not higher
    return {f"{name}/acc": higher, f"{name}/acc_stderr": None}


def _record(task: str, sample: dict) -> dict[str, object]:
    scores = [loglik for loglik, _ in sample["filtered_resps"]]
    return {
        "split": task,
        "question": sample["doc"]["question"],
        "ground_truth": LETTERS[int(sample["target"])],
        "prediction": LETTERS[max(range(len(scores)), key=scores.__getitem__)],
        "correct": float(sample["acc"]),
    }
