"""MUSE-News / MUSE-Books (arXiv 2407.06460), scored as open-unlearning does (METRICS.md §2).

Unlearning data, all plain text (no chat template):

* forget: chunks of ``raw/forget``; each chunk's first ``prompt_words`` words are its prompt and
  the rest its continuation, so every forget prompt differs (LUNAR needs distinct prompts).
* retain: chunks of ``retain_corpus`` (the hub's ``raw/retain1``; the local News copy has no raw
  retain split, so ``privleak/retain``, i.e. retain2 chunks, stands in there).
* reference (LUNAR's unlearning vector r = mean reference - mean forget activation): chunks of
  the last ``n_reference`` documents of ``reference_corpus``, text the target model never saw
  (``privleak/holdout`` by default, ``raw/holdout`` on the hub), so r points from "memorised
  text" to "unseen text". LUNAR only reads (and pins) these rows; no stage trains on them.
* abstain: none (MUSE has no "I don't know" answers).

``align_to_eval`` builds a small self-consistent subset for CPU runs: only the first evaluation
items whose evidence occurs in the corpora (a knowmem answer, a verbmem continuation, a privleak
text) are scored, and the forget and retain sets are the passages (``chunk_words`` words) around
that evidence, so a short fine-tuning stage teaches exactly what is evaluated.

Privleak runs the six membership attacks of ``lunar_exp.metrics.mia`` (``mia_attacks``) on
``privleak/forget`` (members) against ``privleak/holdout``: ``mia/<attack>_auc`` and
``privleak/<attack>`` against the retrained model's AUC of the same attack (``privleak`` is
min-k's, as open-unlearning reports it). The Reference attack needs the retrained model's per-text
losses, so only ``retain_reference_auc=finetune`` gives it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import fmean
from typing import Any, Literal, cast

from lunar_exp.benchmarks.common.corpora import chunk_items
from lunar_exp.benchmarks.common.directions import DEVIATION_SCORE
from lunar_exp.benchmarks.muse import evaluation as muse_eval
from lunar_exp.benchmarks.muse.data import MuseSource, passage_items
from lunar_exp.benchmarks.muse.sets import (
    Limits,
    align_sets,
    check_eval_sets,
    forget_units,
    limit_sets,
    read_eval_sets,
)
from lunar_exp.interfaces import (
    BenchmarkData,
    ChatModel,
    EvalResult,
    Generation,
    RequestUnits,
    UnlearnData,
)
from lunar_exp.metrics.mia import (
    ATTACKS,
    DEFAULT_REFERENCE_AUC,
    attack_aucs,
    attack_directions,
    attack_metrics,
    check_attacks,
    mia_auc,
    open_unlearning_aucs,
    privleak,
)
from lunar_exp.metrics.text import deviation_score
from lunar_exp.settings import setting, validate

log = logging.getLogger(__name__)

FINETUNE_REFERENCE = "finetune"
# Keys holding the retrained model's min-k AUC: this project's retain_reference.json, then a
# metrics.json of a run on the retrained model (its ``before/`` value is the model as loaded).
REFERENCE_KEYS = ("min_k_auc", "before/mia/min_k_auc")
# Where a reference record without a ``source`` came from: the retain model trained here.
FINETUNE_SOURCE = "retain model (finetune)"
# Attacks that score forget chunks as QA items (relearn) generate this many tokens.
QA_MAX_NEW_TOKENS = 32
# The privacy metrics' directions (beside each attack's): privleak is best near 0.
PRIVACY_DIRECTIONS: dict[str, bool | None] = {
    "privleak/reference_auc": None,
    "privleak/reference_source": None,  # a note (where the min-k reference AUC came from)
    "privleak": None,
}


def read_reference_aucs(path: Path) -> dict[str, float]:
    """The retrained model's AUC of each membership attack found in a JSON file.

    Read from this project's files (min-k under :data:`REFERENCE_KEYS`, the others under
    ``mia_auc`` of a ``retain_reference.json`` or ``before/mia/<attack>_auc`` of a metrics.json)
    or open-unlearning's ``MUSE_EVAL.json`` of the retain model (``mia_<attack>.agg_value``; its
    AUCs label forget 0 and holdout 1 on loss-like scores, as here). Min-k's must be there.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not JSON or holds no min-k AUC.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"benchmark.retain_reference_auc={str(path)!r} not found. Fix: give the retrained "
            "model's AUC as a number, the path of a metrics.json / retain_reference.json, or "
            "'finetune'."
        )
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err.msg}). Fix: point at a metrics.json."
        ) from err
    record = record if isinstance(record, dict) else {}
    aucs = open_unlearning_aucs(record)
    own = record.get("mia_auc")
    own = own if isinstance(own, dict) else {}
    for attack in ATTACKS:
        value = own.get(attack, record.get(f"before/mia/{attack}_auc"))
        if isinstance(value, int | float):
            aucs[attack] = float(value)
    for key in REFERENCE_KEYS:
        if isinstance(record.get(key), int | float):
            aucs["min_k"] = float(record[key])
            break
    if "min_k" not in aucs:
        raise ValueError(
            f"{path} holds none of {list(REFERENCE_KEYS)} nor open-unlearning's "
            "mia_min_k.agg_value. Fix: give the metrics.json of a run on the retrained model "
            "(e.g. model.path=muse-bench/MUSE-news_retrain), its MUSE_EVAL.json, or a number."
        )
    return aucs


@dataclass(kw_only=True)
class MUSEBenchmark:
    """MUSE knowmem, verbmem and privleak on the News or Books corpus.

    A count or limit of 0 is accepted and empties its set; :meth:`load` says which set is empty.
    """

    name = "muse"  # not a setting: unannotated, so no dataclass field

    path: str | None = setting(
        None,
        help="local directory laid out like ../shared/benchdata/muse/news; None reads the hub.",
    )
    hub_id: str = setting(
        "muse-bench/MUSE-News",
        help="muse-bench/MUSE-News or muse-bench/MUSE-Books (read when path is None).",
    )
    forget_docs: int | None = setting(
        None, ge=0, help="use the first N raw/forget documents (all when None)."
    )
    retain_corpus: str = setting("raw/retain1", help="split whose documents form the retain set.")
    retain_docs: int | None = setting(
        None, ge=0, help="use the first N retain documents (all when None)."
    )
    reference_corpus: str = setting(
        "privleak/holdout",
        help="split whose last n_reference documents give LUNAR's reference.",
    )
    n_reference: int = setting(32, ge=0, help="reference chunks (one draw per run, seeded).")
    chunk_words: int = setting(
        256,
        ge=1,
        help="words per chunk (a document's tail shorter than half a chunk is dropped).",
    )
    prompt_words: int = setting(32, ge=1, help="words of each chunk used as its prompt.")
    align_to_eval: bool = setting(
        False, help="score only items found in the corpora; teach the passages around them."
    )
    knowmem_limit: int | None = setting(
        None, ge=0, help="first N knowmem questions per split (all when None)."
    )
    verbmem_limit: int | None = setting(None, ge=0, help="first N verbmem items (all when None).")
    privleak_limit: int | None = setting(
        None, ge=0, help="first N privleak forget and holdout texts (all when None)."
    )
    verbmem_prompt_words: int | None = setting(
        None, ge=1, help="keep the last N words of each verbmem prompt (all when None)."
    )
    privleak_max_words: int | None = setting(
        None, ge=1, help="keep the first N words of each privleak text (all when None)."
    )
    knowmem_max_new_tokens: int = setting(32, ge=1, help="knowmem generation budget (MUSE: 32).")
    verbmem_max_new_tokens: int = setting(
        128, ge=1, help="verbmem continuation length; the truth is cut to as many tokens."
    )
    min_k: float = setting(
        0.4,
        gt=0,
        le=1,
        help="fraction of lowest token log-probs in the min-k and min-k++ attacks (MUSE: 0.4).",
    )
    mia_attacks: list[
        Literal["loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm", "reference"]
    ] = setting(
        list(ATTACKS),
        help="membership attacks scored (min_k is required; gradnorm costs a backward per text).",
    )
    retain_reference_auc: float | str | None = setting(
        None,
        help="the retrained model's AUCs for privleak: a number (min-k's), the path of a "
        "metrics.json / retain_reference.json / open-unlearning MUSE_EVAL.json, finetune (train "
        "the retain model with the fine-tuning stage, cached), or None (0.5, with a warning).",
    )
    eval_batch_size: int = setting(8, ge=1, help="prompts per generation or scoring batch.")
    seed: int = setting(0, help="seed of the chunk draws.")

    def __post_init__(self) -> None:
        validate(self, "benchmark")
        check_attacks(self.mia_attacks, "benchmark.mia_attacks")
        auc = self.retain_reference_auc
        if isinstance(auc, int | float) and not 0 <= auc <= 1:
            raise ValueError(
                f"benchmark.retain_reference_auc={auc} is not an AUC. Fix: give "
                "a number in [0, 1], a metrics.json path, 'finetune' or null."
            )

    @property
    def limits(self) -> Limits:
        """The first-N limits of the knowmem, verbmem and privleak sets."""
        return Limits(self.knowmem_limit, self.verbmem_limit, self.privleak_limit)

    # ----- data -------------------------------------------------------------------------------

    def load(self) -> BenchmarkData:
        """Read the splits, choose the evaluation items and cut the corpora into chunks.

        The evaluation sets are :class:`MuseEvalSets`' fields (knowmem questions and in-context
        examples, verbmem items, privleak texts); a ``retain_reference_auc`` file is read here.
        """
        reference = self._file_reference()  # read first: a bad file fails before any training
        source = MuseSource(self.path, self.hub_id)
        # empty documents kept: forget:doc<i> is raw/forget's i-th document (chunks none of it)
        forget_docs = source.texts("raw/forget", keep_empty=True)[: self.forget_docs]
        retain_docs = source.texts(self.retain_corpus)[: self.retain_docs]
        reference_docs = source.texts(self.reference_corpus)
        reference_docs = reference_docs[max(0, len(reference_docs) - self.n_reference) :]
        sets = read_eval_sets(source, self.verbmem_prompt_words, self.privleak_max_words)
        self._warn_on_reference_overlap(len(sets.privleak_holdout))
        if self.align_to_eval:
            sets, forget_passages, retain_passages = align_sets(
                sets, forget_docs, retain_docs, self.limits, self.chunk_words
            )
            forget = passage_items(forget_passages, "forget", self.prompt_words)
            retain = passage_items(retain_passages, "retain", self.prompt_words)
        else:
            sets = limit_sets(sets, self.limits)
            forget = self._chunks(forget_docs, "forget", None)
            retain = self._chunks(retain_docs, "retain", None)
        check_eval_sets(sets)
        sets = replace(sets, forget_units=forget_units(sets, forget_docs))
        reference_chunks = self._chunks(reference_docs, "reference", self.n_reference)
        if not forget or not retain:
            empty = "forget" if not forget else "retain"
            raise ValueError(
                f"The MUSE {empty} set is empty: no document reaches half of chunk_words="
                f"{self.chunk_words} words. Fix: lower benchmark.chunk_words or use more documents."
            )
        scored = {k: v for k, v in sets.named().items() if k != "forget_units"}
        sizes = {k: len(v) for k, v in scored.items() if not k.endswith("icl")}
        log.info(
            "MUSE %s: %d forget, %d retain, %d reference chunks; scored items %s",
            *(self.hub_id, len(forget), len(retain), len(reference_chunks), sizes),
        )
        data = UnlearnData(tuple(forget), tuple(retain), (), tuple(reference_chunks))
        generation = Generation(QA_MAX_NEW_TOKENS, self.eval_batch_size)
        return BenchmarkData(data, sets.named(), generation, reference)

    def _chunks(self, documents: list[str], role: str, count: int | None):
        return chunk_items(documents, role, self.chunk_words, self.prompt_words, count, self.seed)

    def _warn_on_reference_overlap(self, holdout_total: int) -> None:
        if self.reference_corpus != "privleak/holdout":
            return
        used = min(holdout_total, self.limits.privleak or holdout_total)
        if used + self.n_reference > holdout_total:
            log.warning(
                "LUNAR's reference documents (the last %d of privleak/holdout) are also privleak "
                "non-members (the first %d of %d); set benchmark.reference_corpus=raw/holdout "
                "(hub) or lower benchmark.privleak_limit to keep them apart.",
                self.n_reference,
                used,
                holdout_total,
            )

    # ----- sequential requests (interfaces.SplitsRequests) -------------------------------------

    def request_units(self, data: UnlearnData) -> RequestUnits:
        """The forget documents (``forget:doc<i>``, i its index in raw/forget) the run teaches."""
        names = tuple(dict.fromkeys(qa.edge for qa in data.forget))
        return RequestUnits(names, "forget document", "benchmark.forget_docs")

    def request_scores(
        self,
        result: EvalResult,
        eval_sets: Mapping[str, Any],
        units: Collection[str],
        reference: Mapping[str, Any] | None = None,
    ) -> dict[str, float]:
        """Knowmem, verbmem and min-k AUC over the forget-side items found in ``units``.

        Items whose evidence lies in no forget document of the run belong to no request. The
        min-k AUC compares the request's privleak texts with every holdout text; privleak
        itself is left out (the retrained model's AUC is one number for the whole forget set).
        """
        owners = eval_sets.get("forget_units") or {}
        out = result.generations

        def rows(split: str, name: str) -> list[dict[str, object]]:
            if name not in owners:
                return []
            pairs = zip(out[split], owners[name], strict=True)
            return [row for row, owner in pairs if owner in units]

        scores: dict[str, float] = {}
        knowmem = rows("forget_knowmem", "forget_qa")
        if knowmem:
            scores["forget/rouge1_recall"] = _mean(knowmem, "rouge1_recall")
            scores["forget/knowmem_rougeL_f1"] = _mean(knowmem, "rougeL_f1")
        verbmem = rows("forget_verbmem", "verbmem")
        if verbmem:
            scores["forget/verbmem_rougeL_f1"] = _mean(verbmem, "rougeL_f1")
        texts, holdout = rows("privleak_forget", "privleak_forget"), out.get("privleak_holdout")
        if texts and holdout and "min_k" in texts[0]:
            scores["mia/min_k_auc"] = mia_auc(_values(texts, "min_k"), _values(holdout, "min_k"))
        return scores

    # ----- the retrained model's AUC (privleak) -------------------------------------------------

    def wants_retain_model(self) -> bool:
        """Whether the pipeline must train and score a retain model for this benchmark."""
        return self.retain_reference_auc == FINETUNE_REFERENCE

    def reference_record(self, chat: ChatModel, eval_sets: Mapping[str, Any]) -> dict[str, Any]:
        """Score a retain (retrained) model on privleak forget vs holdout.

        Every attack's AUC (``mia_auc``; min-k's also as ``min_k_auc``) and each text's loss
        (``item_loss``), which the Reference attack subtracts (its own AUC is 0.5: the retain
        model is its own reference).
        """
        scores, losses = {}, {}
        for name in ("forget", "holdout"):
            texts = eval_sets[f"privleak_{name}"]
            stats = muse_eval.text_stats(chat, texts, self.eval_batch_size, f"privleak_{name}")
            losses[name] = muse_eval.text_losses(stats)
            scores[name] = muse_eval.attack_scores(
                chat, texts, stats, self.min_k, self.mia_attacks, f"privleak_{name}", losses[name]
            )
        aucs = attack_aucs(scores["forget"], scores["holdout"])
        return {
            "format": "lunar_exp.muse_retain_reference/2",
            "min_k_auc": aucs["min_k"],
            "mia_auc": aucs,
            "item_loss": losses,
        }

    def _file_reference(self) -> dict[str, Any] | None:
        """The retrained model's AUCs from the ``retain_reference_auc`` file, if one is given."""
        given = self.retain_reference_auc
        if not isinstance(given, str) or self.wants_retain_model():
            return None
        aucs = read_reference_aucs(Path(given))
        return {"min_k_auc": aucs["min_k"], "mia_auc": aucs, "source": given}

    def _reference_auc(self, reference: Mapping[str, Any] | None) -> tuple[float, str]:
        given = self.retain_reference_auc
        if reference is not None:
            return float(reference["min_k_auc"]), str(reference.get("source", FINETUNE_SOURCE))
        if isinstance(given, int | float):
            return float(given), "given"
        log.warning(
            "privleak uses the default retrained-model AUC 0.5: no benchmark.retain_reference_auc "
            "was given (a number, a metrics.json of a run on the retrained model, or 'finetune')."
        )
        return DEFAULT_REFERENCE_AUC, "default 0.5 (no retrained-model AUC given)"

    # ----- evaluation -------------------------------------------------------------------------

    def _attack_scores(
        self, chat: ChatModel, eval_sets: Mapping[str, Any], reference: Mapping[str, Any] | None
    ) -> tuple[dict[str, dict[str, list[float]]], dict[str, list]]:
        """Every attack's per-text scores on privleak forget and holdout, and their rows."""
        retain_losses = (reference or {}).get("item_loss") or {}
        if "reference" in self.mia_attacks and not retain_losses:
            log.info(
                "MUSE Reference attack left out (no mia/reference_auc): it needs the retrained "
                "model's per-text losses. Fix: benchmark.retain_reference_auc=finetune."
            )
        scores, rows = {}, {}
        for name in ("forget", "holdout"):
            split, texts = f"privleak_{name}", eval_sets[f"privleak_{name}"]
            stats = muse_eval.text_stats(chat, texts, self.eval_batch_size, split)
            scores[name] = muse_eval.attack_scores(
                chat, texts, stats, self.min_k, self.mia_attacks, split, retain_losses.get(name)
            )
            rows[split] = muse_eval.score_rows(texts, scores[name], split)
        return scores, rows

    def privacy(
        self,
        chat: ChatModel,
        eval_sets: Mapping[str, Any],
        reference: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, object], dict[str, list]]:
        """Each attack's AUC and privleak; ``privleak`` and its reference AUC stay min-k's.

        ``privleak/reference_source`` is a note (a string) saying where min-k's reference AUC
        came from, so tables show a defaulted reference.
        """
        scores, rows = self._attack_scores(chat, eval_sets, reference)
        aucs = attack_aucs(scores["forget"], scores["holdout"])
        reference_auc, source = self._reference_auc(reference)
        retain_aucs = {**(reference or {}).get("mia_auc", {}), "min_k": reference_auc}
        metrics, defaulted = attack_metrics(aucs, retain_aucs)
        if defaulted:
            log.warning(
                "MUSE privleak/%s uses the default retrained-model AUC 0.5: the reference has no "
                "AUC of that attack. Fix: benchmark.retain_reference_auc=finetune, or the "
                "retrained model's MUSE_EVAL.json with mia_<attack>.",
                ",".join(defaulted),
            )
        return {
            **metrics,
            "privleak/reference_auc": reference_auc,
            "privleak/reference_source": source,
            "privleak": privleak(aucs["min_k"], reference_auc),
        }, rows

    def evaluate(
        self,
        chat: ChatModel,
        eval_sets: Mapping[str, Any],
        reference: Mapping[str, Any] | None = None,
    ) -> EvalResult:
        """Knowmem (forget, retain), verbmem (forget), privleak and the Deviation Score.

        ``reference`` holds the retrained model's AUCs (``min_k_auc``, ``mia_auc``) and, from
        :meth:`reference_record`, its per-text losses; without it privleak uses
        ``retain_reference_auc`` or 0.5.
        """
        bs = self.eval_batch_size
        scores: dict[str, float] = {}  # knowmem and verbmem
        generations: dict[str, list[dict[str, object]]] = {}
        directions: dict[str, bool | None] = {}
        for split in ("forget", "retain"):
            split_metrics, rows = muse_eval.knowmem(
                chat,
                eval_sets[f"{split}_qa"],
                eval_sets[f"{split}_icl"],
                split,
                self.knowmem_max_new_tokens,
                bs,
            )
            scores.update(split_metrics)
            generations[f"{split}_knowmem"] = rows
            directions.update(muse_eval.knowmem_directions(split))
        verb_metrics, generations["forget_verbmem"] = muse_eval.verbmem(
            chat, eval_sets["verbmem"], self.verbmem_max_new_tokens, bs
        )
        scores.update(verb_metrics)
        directions.update(muse_eval.VERBMEM_DIRECTIONS)
        privacy_metrics, mia_rows = self.privacy(chat, eval_sets, reference)
        generations.update(mia_rows)
        directions.update(PRIVACY_DIRECTIONS)
        directions.update(
            attack_directions(a for a in self.mia_attacks if f"mia/{a}_auc" in privacy_metrics)
        )
        metrics: dict[str, object] = {
            **scores,
            **privacy_metrics,
            "deviation_score": deviation_score(
                scores["forget/rouge1_recall"], scores["retain/rouge1_recall"]
            ),
        }
        directions.update(DEVIATION_SCORE)
        # EvalResult.metrics (lunar_exp/interfaces.py) is declared dict[str, float], but
        # privleak/reference_source is a note (a string) that metrics.json and the tables carry.
        return EvalResult(metrics, generations, directions)


def _values(rows: Sequence[Mapping[str, object]], key: str) -> list[float]:
    return [float(cast(float, row[key])) for row in rows]


def _mean(rows: Sequence[Mapping[str, object]], key: str) -> float:
    return fmean(_values(rows, key))
