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
from pathlib import Path
from typing import Any

from lunar_exp.benchmarks.common import knowledge_graph as kg
from lunar_exp.benchmarks.common.corpora import chunk_items, is_hub_spec, read_documents
from lunar_exp.benchmarks.lm_eval.mcq import LMEvalMCQ
from lunar_exp.benchmarks.qa.qa_json import read_qa_file
from lunar_exp.bookkeeping.errors import require_counts
from lunar_exp.interfaces import QA, BenchmarkData, ChatModel, EvalResult, Generation, UnlearnData

# Attacks that score forget chunks as QA items (relearn) generate with these settings.
QA_GENERATION = Generation(max_new_tokens=32, batch_size=16)


class WMDPBenchmark:
    """Forget/retain corpora as plain text items; WMDP and MMLU accuracy via lm-eval.

    Args:
        subsets: WMDP subsets scored (``bio``, ``chem``, ``cyber``).
        mmlu: also score MMLU (the utility the WMDP paper reports).
        mmlu_subjects: MMLU subjects; None = all 57.
        mode: where the questions come from: ``hub``, ``local`` or ``auto`` (local when
            ``wmdp_dir`` and ``mmlu_dir`` exist).
        wmdp_dir: local ``<subset>_questions.json`` files (cais/wmdp form).
        mmlu_dir: local ``test/<subject>_test.csv`` files (cais/mmlu form).
        limit: first N questions of each lm-eval task (each subset, each MMLU subject); None = all.
        eval_batch_size: lm-eval batch size.
        forget_corpus: forget texts: a JSON/JSONL/TXT file or a hub spec ``owner/name:config``.
        retain_corpus: retain texts, likewise.
        n_forget: forget chunks drawn at random (None = all).
        n_retain: retain chunks drawn at random (None = all).
        chunk_words: words per chunk (~1.3 tokens each for English text).
        prompt_words: leading words of a chunk that form its prompt; the rest is the answer.
        max_documents: read at most this many documents of each corpus (None = all).
        reference_path: optional JSON ``[{question, answer}]`` of LUNAR reference prompts.
        n_reference: generated unknown-person reference questions when ``reference_path`` is unset.
        cache_dir: where the local lm-eval tasks are written.
        seed: seed of the chunk draw and the generated reference questions.
    """

    name = "wmdp"

    def __init__(
        self,
        subsets: list[str] | None = None,
        mmlu: bool = True,
        mmlu_subjects: list[str] | None = None,
        mode: str = "auto",
        wmdp_dir: str = "../shared/benchdata/wmdp",
        mmlu_dir: str = "../shared/benchdata/mmlu",
        limit: int | None = None,
        eval_batch_size: int = 8,
        forget_corpus: str = "cais/wmdp-corpora:cyber-forget-corpus",
        retain_corpus: str = "cais/wmdp-corpora:cyber-retain-corpus",
        n_forget: int | None = 256,
        n_retain: int | None = 256,
        chunk_words: int = 200,
        prompt_words: int = 12,
        max_documents: int | None = None,
        reference_path: str | None = None,
        n_reference: int = 32,
        cache_dir: str = ".cache",
        seed: int = 0,
    ) -> None:
        require_counts(
            "benchmark",
            1,
            limit=limit,
            eval_batch_size=eval_batch_size,
            n_forget=n_forget,
            n_retain=n_retain,
            chunk_words=chunk_words,
            prompt_words=prompt_words,
            max_documents=max_documents,
        )
        require_counts("benchmark", 0, n_reference=n_reference)
        if forget_corpus == retain_corpus:
            raise ValueError(
                f"benchmark.forget_corpus and retain_corpus are both {forget_corpus!r}. "
                "Fix: use two disjoint corpora."
            )
        self.suite = LMEvalMCQ(
            ["bio", "cyber"] if subsets is None else list(subsets),
            mmlu,
            mmlu_subjects,
            mode,
            wmdp_dir,
            mmlu_dir,
            limit,
            eval_batch_size,
            cache_dir,
            owner="benchmark",
        )
        self.corpora = {"forget": (forget_corpus, n_forget), "retain": (retain_corpus, n_retain)}
        self.chunk_words, self.prompt_words = chunk_words, prompt_words
        self.max_documents = max_documents
        self.reference_path, self.n_reference = reference_path, n_reference
        self.seed = seed

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
