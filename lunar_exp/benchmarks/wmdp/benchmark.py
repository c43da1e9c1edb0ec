"""WMDP (Li et al. 2024, arXiv 2403.03218): unlearn hazardous-knowledge corpora, keep MMLU.

Data: forget and retain texts from ``cais/wmdp-corpora`` (by default the cyber pair; the bio
forget corpus is gated and must be requested, then given as a local JSONL file) or any local
JSON/JSONL/TXT corpora, cut into plain items (:mod:`lunar_exp.benchmarks.common.corpora`). LUNAR's
reference prompts are unknown-person questions with abstention answers (as in ``qa_json``), or a
JSON file of ``[{question, answer}]``. Evaluation: WMDP and MMLU accuracy through lm-eval
(:mod:`lunar_exp.benchmarks.lm_eval.mcq`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lunar_exp.benchmarks.common import knowledge_graph as kg
from lunar_exp.benchmarks.common.corpora import chunk_items, is_hub_spec, read_documents
from lunar_exp.benchmarks.lm_eval.mcq import LMEvalMCQ
from lunar_exp.benchmarks.qa.qa_json import read_qa_file
from lunar_exp.interfaces import QA, BenchmarkData, ChatModel, EvalResult, Generation, UnlearnData
from lunar_exp.settings import setting, validate

# Attacks that score forget chunks as QA items (relearn) generate with these settings.
QA_GENERATION = Generation(max_new_tokens=32, batch_size=16)


@dataclass(kw_only=True)
class WMDPBenchmark:
    """Forget/retain corpora as plain text items; WMDP and MMLU accuracy via lm-eval."""

    name = "wmdp"  # not a setting: unannotated, so no dataclass field

    subsets: list[str] = setting(["bio", "cyber"], help="WMDP subsets scored (bio, chem, cyber).")
    mmlu: bool = setting(True, help="also score MMLU (the utility the WMDP paper reports).")
    mmlu_subjects: list[str] | None = setting(None, help="MMLU subjects; None = all 57.")
    mode: Literal["auto", "local", "hub"] = setting(
        "auto",
        help="where the questions come from: hub, local or auto (local when wmdp_dir and "
        "mmlu_dir exist).",
    )
    wmdp_dir: str = setting(
        "../shared/benchdata/wmdp", help="local <subset>_questions.json files (cais/wmdp form)."
    )
    mmlu_dir: str = setting(
        "../shared/benchdata/mmlu", help="local test/<subject>_test.csv files (cais/mmlu form)."
    )
    limit: int | None = setting(
        None,
        ge=1,
        help="first N questions of each lm-eval task (each subset, each MMLU subject); None = all.",
    )
    eval_batch_size: int = setting(8, ge=1, help="lm-eval batch size.")
    forget_corpus: str = setting(
        "cais/wmdp-corpora:cyber-forget-corpus",
        help="forget texts: a JSON/JSONL/TXT file or a hub spec owner/name:config.",
    )
    retain_corpus: str = setting(
        "cais/wmdp-corpora:cyber-retain-corpus", help="retain texts, likewise."
    )
    n_forget: int | None = setting(256, ge=1, help="forget chunks drawn at random (None = all).")
    n_retain: int | None = setting(256, ge=1, help="retain chunks drawn at random (None = all).")
    chunk_words: int = setting(200, ge=1, help="words per chunk (~1.3 tokens each for English).")
    prompt_words: int = setting(
        12, ge=1, help="leading words of a chunk that form its prompt; the rest is the answer."
    )
    max_documents: int | None = setting(
        None, ge=1, help="read at most this many documents of each corpus (None = all)."
    )
    reference_path: str | None = setting(
        None, help="optional JSON [{question, answer}] of LUNAR reference prompts."
    )
    n_reference: int = setting(
        32,
        ge=0,
        help="generated unknown-person reference questions when reference_path is unset.",
    )
    cache_dir: str = setting(".cache", help="where the local lm-eval tasks are written.")
    seed: int = setting(0, help="seed of the chunk draw and the generated reference questions.")

    def __post_init__(self) -> None:
        validate(self, "benchmark")
        if self.forget_corpus == self.retain_corpus:
            raise ValueError(
                f"benchmark.forget_corpus and retain_corpus are both {self.forget_corpus!r}. "
                "Fix: use two disjoint corpora."
            )
        self.subsets = list(self.subsets)
        # Not a setting: the lm-eval tasks (it checks the subsets), directories resolved now.
        self.suite = LMEvalMCQ(
            self.subsets,
            self.mmlu,
            self.mmlu_subjects,
            self.mode,
            self.wmdp_dir,
            self.mmlu_dir,
            self.limit,
            self.eval_batch_size,
            self.cache_dir,
            owner="benchmark",
        )

    @property
    def corpora(self) -> dict[str, tuple[str, int | None]]:
        """Each role's corpus spec and how many of its chunks are drawn (None = all)."""
        return {
            "forget": (self.forget_corpus, self.n_forget),
            "retain": (self.retain_corpus, self.n_retain),
        }

    def load(self) -> BenchmarkData:
        """Read and chunk both corpora, prepare the lm-eval tasks, add reference prompts.

        The one evaluation set, ``mcq``, is the lm-eval task list (:class:`MCQTasks`).
        """
        self._check_hub()
        forget, retain = (self._chunks(role) for role in ("forget", "retain"))
        tasks = self.suite.tasks()
        data = UnlearnData(tuple(forget), tuple(retain), (), tuple(self._reference()))
        return BenchmarkData(data, {"mcq": tasks}, QA_GENERATION)

    def evaluate(
        self,
        chat: ChatModel,
        eval_sets: Mapping[str, Any],
        reference: Mapping[str, Any] | None = None,
    ) -> EvalResult:
        """WMDP accuracy per subset and MMLU accuracy (lower WMDP, unchanged MMLU is the goal)."""
        return self.suite.evaluate(chat, eval_sets["mcq"])

    def _check_hub(self) -> None:
        """One message naming every hub-only input when the hub is unreachable."""
        from lunar_exp.models import hub_reachable

        needs = [
            f"benchmark.{role}_corpus"
            for role, (spec, _) in self.corpora.items()
            if is_hub_spec(spec)
        ]
        if self.suite.needs_hub():
            needs.append("the WMDP/MMLU questions (benchmark.wmdp_dir/mmlu_dir absent)")
        if needs and not hub_reachable():
            raise FileNotFoundError(
                f"{', '.join(needs)} need the Hugging Face hub, which is unreachable. Fix: use "
                "local copies: benchmark.forget_corpus=/path/forget.jsonl and "
                "benchmark.retain_corpus=/path/retain.jsonl (JSON/JSONL/TXT), "
                "benchmark.wmdp_dir=<dir of <subset>_questions.json>, "
                "benchmark.mmlu_dir=<dir of test/<subject>_test.csv>, and model.path=/local/dir "
                "for a hub model."
            )

    def _chunks(self, role: str) -> list[QA]:
        spec, count = self.corpora[role]
        documents = read_documents(spec, f"benchmark.{role}_corpus", self.max_documents)
        items = chunk_items(documents, role, self.chunk_words, self.prompt_words, count, self.seed)
        if not items:
            raise ValueError(
                f"benchmark.{role}_corpus={spec!r} has no document of at least "
                f"{self.chunk_words // 2} words. Fix: lower benchmark.chunk_words."
            )
        return items

    def _reference(self) -> list[QA]:
        if self.reference_path is not None:
            path = Path(self.reference_path)
            if not path.is_file():
                raise FileNotFoundError(
                    f"benchmark.reference_path={path} not found. Fix: point it at a JSON file "
                    "of [{question, answer}] or set it to null (generated questions)."
                )
            records = read_qa_file(path, required=("question", "answer"))
            return [QA(qa.question, qa.answer, "reference") for qa in records]
        rng = random.Random(self.seed)
        names = kg.make_names(rng, self.n_reference, set())
        return kg.unknown_questions(rng, names, "reference")
