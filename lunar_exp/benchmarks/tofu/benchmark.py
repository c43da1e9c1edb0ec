"""TOFU (Maini et al. 2024): fictitious authors, forget01/05/10, and its official evaluation.

Forget quality needs the per-item forget truth ratios of a *retain model* (trained without the
forget set). ``retain_reference`` gives them as a file (this project's ``retain_reference.json``,
open-unlearning's ``TOFU_EVAL.json`` or an official ``eval_log_aggregated.json``), or
``finetune`` lets the pipeline train that model with the run's own fine-tuning stage on the
retain split (cached). Without either, forget quality is reported as missing (``null``) with a
warning, never silently.

Membership inference runs the six attacks of ``lunar_exp.metrics.mia`` (``mia_attacks``) on the
forget items (members) against the holdout items: ``mia/<attack>_auc``, and ``privleak/<attack>``
against the retain model's AUC of the same attack (``privleak`` is min-k's, as before). The
Reference attack needs the retain model's per-item losses, so only ``retain_reference=finetune``
gives it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any, Literal, cast

from lunar_exp.benchmarks.common import knowledge_graph as kg
from lunar_exp.benchmarks.common.directions import DEVIATION_SCORE
from lunar_exp.benchmarks.tofu import evaluation as tofu_eval
from lunar_exp.benchmarks.tofu.data import (
    QUESTIONS_PER_AUTHOR,
    SPLITS,
    TofuSource,
    first_authors,
    to_items,
)
from lunar_exp.interfaces import (
    QA,
    BenchmarkData,
    ChatModel,
    EvalResult,
    Generation,
    RequestUnits,
    UnlearnData,
)
from lunar_exp.metrics import tofu
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
# The ``format`` of a reference read from open-unlearning's TOFU_EVAL.json.
OPEN_UNLEARNING_FORMAT = "open-unlearning TOFU_EVAL.json"
# Directions of the suite's metrics beyond the per-split ones (tofu_eval declares those).
SUITE_DIRECTIONS: dict[str, bool | None] = {
    "forget_quality": True,
    "model_utility": True,
    "mia/min_k_auc": None,  # best near the retain model's AUC
    "privleak/reference_auc": None,
    "privleak": None,  # best at 0
    **DEVIATION_SCORE,
}


@dataclass(kw_only=True)
class TofuBenchmark:
    """TOFU forget/retain splits, evaluated with the reference implementation's suite."""

    name = "tofu"  # not a setting: unannotated, so no dataclass field

    path: str | None = setting(
        None, help="local directory of TOFU split files; None reads hub_id from the hub."
    )
    split: str = setting(
        "forget10",
        help="forget01, forget05 or forget10 (with retain99/95/90, holdout01/05/10).",
    )
    forget_authors: int | None = setting(
        None, ge=1, help="use only the first N forget authors (20 questions each); None = all."
    )
    retain_authors: int | None = setting(
        None, ge=1, help="train on the first N retain authors only; None = the whole retain split."
    )
    retain_eval_limit: int | None = setting(
        None,
        ge=1,
        help="evaluate the first N retain_perturbed items that are in the retain training set.",
    )
    known_facts_limit: int | None = setting(
        None, ge=1, help="evaluate the first N real-authors and world-facts items."
    )
    holdout_limit: int | None = setting(
        None, ge=1, help="first N holdout items for the membership attack."
    )
    retain_reference: str | None = setting(
        None,
        help="file of the retain model's per-item forget truth ratios, finetune (train the "
        "retain model here), or None (forget quality missing).",
    )
    reference_auc: float | None = setting(
        None, help="the retain model's min-k AUC for privleak, overriding the reference's."
    )
    min_k: float = setting(
        0.4, gt=0, le=1, help="fraction of lowest token log-probs in the min-k and min-k++ attacks."
    )
    mia_attacks: list[
        Literal["loss", "zlib", "min_k", "min_k_plus_plus", "gradnorm", "reference"]
    ] = setting(
        list(ATTACKS),
        help="membership attacks scored (min_k is required; gradnorm costs a backward per item).",
    )
    n_abstain: int = setting(
        16, ge=0, help="unknown-person abstention questions taught during fine-tuning."
    )
    n_reference: int = setting(
        32, ge=0, help="unknown-person questions defining LUNAR's unlearning vector."
    )
    max_new_tokens: int = setting(200, ge=1, help="generation budget (the reference uses 200).")
    eval_batch_size: int = setting(16, ge=1, help="sequences per batch.")
    hub_id: str = setting("locuslab/TOFU", help="dataset repository on the hub.")
    seed: int = setting(0, help="seed of the generated abstention and reference questions.")
    idk_path: str | None = setting(
        None,
        help="\"I don't know\" answers, one a line (TOFU's idontknow.jsonl): each forget item "
        "gets one, drawn with the seed (QA.abstention, IdkDPO's preferred answer); None: "
        "IdkDPO's one fixed sentence.",
    )

    def __post_init__(self) -> None:
        validate(self, "benchmark")
        check_attacks(self.mia_attacks, "benchmark.mia_attacks")
        if self.split not in SPLITS:
            raise ValueError(
                f"benchmark.split={self.split!r} is not a TOFU forget split. "
                f"Fix: use one of {sorted(SPLITS)}."
            )

    @property
    def limits(self) -> dict[str, int | None]:
        """How many items of each limited evaluation set are scored (None = all)."""
        return {
            "retain": self.retain_eval_limit,
            "known_facts": self.known_facts_limit,
            "holdout": self.holdout_limit,
        }

    # ----- data -------------------------------------------------------------------------------

    def load(self) -> BenchmarkData:
        """Read the splits, take the configured subsets, add abstention and reference prompts.

        The evaluation sets are lists of :class:`TofuItem` (``forget``, ``retain``,
        ``real_authors``, ``world_facts``, ``holdout``); a ``retain_reference`` file is read here.
        """
        source = TofuSource(self.path, self.hub_id)
        retain_split, holdout_split = SPLITS[self.split]
        split_items = self._forget_items(source)
        chosen = first_authors(split_items, self.forget_authors)
        forget_qa = _as_qa(chosen, "forget_author")
        forget = [  # each item knows its author: sequential requests name authors
            dataclasses.replace(it, edge=qa.edge) for it, qa in zip(chosen, forget_qa, strict=True)
        ]
        retain = first_authors(to_items(source.records(retain_split)), self.retain_authors)
        known = {it.question for it in retain}
        retain_eval = [
            it for it in to_items(source.records("retain_perturbed")) if it.question in known
        ]
        if not retain_eval:
            raise ValueError(
                "No retain_perturbed question is in the retain training set. Fix: raise "
                "benchmark.retain_authors (retain_perturbed covers the first 20 authors)."
            )
        eval_sets = {
            "forget": forget,
            "retain": _limit(retain_eval, self.limits["retain"]),
            "real_authors": _limit(
                to_items(source.records("real_authors_perturbed")), self.limits["known_facts"]
            ),
            "world_facts": _limit(
                to_items(source.records("world_facts_perturbed")), self.limits["known_facts"]
            ),
            "holdout": _limit(to_items(source.records(holdout_split)), self.limits["holdout"]),
        }
        data = UnlearnData(
            tuple(self._with_idk_answers(forget_qa)),
            tuple(_as_qa(retain, "author")),
            *self._unknown_questions(),
        )
        generation = Generation(self.max_new_tokens, self.eval_batch_size)
        reference = self._file_reference(len(split_items), len(forget))
        return BenchmarkData(data, eval_sets, generation, reference)

    def _forget_items(self, source: TofuSource) -> list[tofu_eval.TofuItem]:
        plain = source.records(self.split)
        perturbed = to_items(source.records(f"{self.split}_perturbed"))
        if [r["question"] for r in plain] != [it.question for it in perturbed]:
            raise ValueError(
                f"{self.split} and {self.split}_perturbed list different questions. "
                "Fix: use matching TOFU files."
            )
        missing = [it.question for it in perturbed if not it.paraphrased_answer]
        if missing or any(len(it.perturbed_answers) == 0 for it in perturbed):
            raise ValueError(
                f"{self.split}_perturbed lacks paraphrased_answer/perturbed_answer fields. "
                "Fix: use the TOFU *_perturbed evaluation files."
            )
        return perturbed

    def _with_idk_answers(self, items: list[QA]) -> list[QA]:
        """``items`` with an "I don't know" answer each, drawn from ``idk_path`` (seeded)."""
        if self.idk_path is None:
            return items
        answers = read_idk_answers(Path(self.idk_path))
        rng = random.Random(self.seed)
        return [dataclasses.replace(qa, abstention=rng.choice(answers)) for qa in items]

    def _unknown_questions(self) -> tuple[tuple[QA, ...], tuple[QA, ...]]:
        rng = random.Random(self.seed)
        names = kg.make_names(rng, self.n_abstain + self.n_reference, set())
        abstain = kg.unknown_questions(rng, names[: self.n_abstain], "unknown")
        reference = kg.unknown_questions(rng, names[self.n_abstain :], "reference")
        return tuple(abstain), tuple(reference)

    # ----- sequential requests (interfaces.SplitsRequests) -------------------------------------

    def request_units(self, data: UnlearnData) -> RequestUnits:
        """The run's forget authors (``forget_author_000`` = the split's first), in order."""
        names = tuple(dict.fromkeys(qa.edge for qa in data.forget))
        return RequestUnits(names, "forget author", "benchmark.forget_authors")

    def request_scores(
        self,
        result: EvalResult,
        eval_sets: Mapping[str, Any],
        units: Collection[str],
        reference: Mapping[str, Any] | None = None,
    ) -> dict[str, float]:
        """ROUGE-1, truth ratio, min-k AUC and forget quality of the forget items of ``units``.

        Forget quality is the KS test of these items' truth ratios against the retain model's
        ratios of the same items; it is left out when the reference's ratios are not one per
        scored forget item (a file of another size), and it has less power than the whole
        set's (fewer items: larger p-values). The min-k AUC compares these items with every
        holdout item.
        """
        rows = result.generations["forget"]
        chosen = [i for i, it in enumerate(eval_sets["forget"]) if it.edge in units]
        if not chosen:
            return {}
        ratios = [cast(float, rows[i]["truth_ratio"]) for i in chosen]
        scores = {
            "forget/rouge1_recall": fmean(cast(float, rows[i]["rouge1_recall"]) for i in chosen),
            "forget/truth_ratio": tofu.truth_ratio_closer_to_1(ratios),
        }
        holdout = [cast(float, r["min_k"]) for r in result.generations.get("holdout", [])]
        if holdout and "min_k" in rows[0]:
            scores["mia/min_k_auc"] = mia_auc(
                [cast(float, rows[i]["min_k"]) for i in chosen], holdout
            )
        reference_ratios = (reference or {}).get("forget_truth_ratio") or []
        if len(reference_ratios) == len(rows):
            scores["forget_quality"] = tofu.forget_quality(
                ratios, [reference_ratios[i] for i in chosen]
            )
        return scores

    # ----- retain-model reference -------------------------------------------------------------

    def wants_retain_model(self) -> bool:
        """Whether the pipeline must train and score a retain model for this benchmark."""
        return self.retain_reference == FINETUNE_REFERENCE

    def reference_record(self, chat: ChatModel, eval_sets: Mapping[str, Any]) -> dict[str, Any]:
        """Score a retain model: forget truth ratios, every attack's AUC, per-item losses.

        ``item_loss`` (the retain model's mean answer NLL of each forget and holdout item) is what
        the Reference attack subtracts; ``mia_auc`` gives each ``privleak/<attack>`` its retain
        AUC (the Reference attack's is 0.5: the retain model is its own reference).
        """
        bs = self.eval_batch_size
        forget, holdout = eval_sets["forget"], eval_sets["holdout"]
        losses = {
            name: tofu_eval.mean_losses(
                chat, [it.question for it in items], [it.answer for it in items], bs
            )
            for name, items in (("forget", forget), ("holdout", holdout))
        }
        scores = {
            name: tofu_eval.mia_scores(
                chat,
                items,
                bs,
                self.min_k,
                self.mia_attacks,
                name=f"retain model {name}",
                losses=losses[name],
                reference_losses=losses[name],
            )
            for name, items in (("forget", forget), ("holdout", holdout))
        }
        aucs = attack_aucs(scores["forget"], scores["holdout"])
        return {
            "format": "lunar_exp.tofu_retain_reference/2",
            "split": self.split,
            "forget_truth_ratio": tofu_eval.forget_truth_ratios(chat, forget, bs),
            "min_k_auc": aucs["min_k"],
            "mia_auc": aucs,
            "item_loss": losses,
        }

    def _file_reference(self, n_split: int, n_scored: int) -> dict | None:
        """The retain reference file's record, its truth ratios aligned with the scored items.

        An open-unlearning ``TOFU_EVAL.json`` holds one truth ratio per index of the whole split:
        its count must be the split's, and the run's items (the split's first ``n_scored``) take
        theirs by index. The other formats hold a list; a count different from the scored items'
        is allowed (the KS test compares two samples) but said.
        """
        if self.retain_reference in (None, FINETUNE_REFERENCE):
            return None
        path = Path(self.retain_reference)
        record = read_reference(path)
        ratios = record["forget_truth_ratio"]
        if record.get("format") == OPEN_UNLEARNING_FORMAT:
            if len(ratios) != n_split:
                raise ValueError(
                    f"{path} holds {len(ratios)} forget truth ratios but benchmark.split="
                    f"{self.split} has {n_split} items. Fix: use the retain model's "
                    f"TOFU_EVAL.json evaluated on {self.split} (open-unlearning forget_split)."
                )
            return {**record, "forget_truth_ratio": ratios[:n_scored]}
        if len(ratios) != n_scored:
            log.warning(
                "Forget quality compares the %d scored forget items with the %d truth ratios "
                "of %s (a two-sample KS test; the counts differ)",
                n_scored,
                len(ratios),
                path,
            )
        return record

    # ----- evaluation -------------------------------------------------------------------------

    def evaluate(
        self,
        chat: ChatModel,
        eval_sets: Mapping[str, Any],
        reference: Mapping[str, Any] | None = None,
    ) -> EvalResult:
        """The full suite: forget/retain/real-authors/world-facts, FQ, MU, memorisation, MIA.

        ``reference`` is the retain model's record (a ``retain_reference`` file or
        :meth:`reference_record`); without it forget quality is missing. Starts from
        :meth:`evaluate_core`, so the keys the two share cannot differ.
        """
        bs, new = self.eval_batch_size, self.max_new_tokens
        core = self.evaluate_core(chat, eval_sets, reference)
        metrics, generations = dict(core.metrics), dict(core.generations)
        directions = dict(core.directions)
        for split in ("real_authors", "world_facts"):
            split_metrics, records = tofu_eval.evaluate_known_facts(
                chat, split, eval_sets[split], new, bs
            )
            metrics.update(split_metrics)
            generations[split] = records
            directions.update(tofu_eval.known_facts_directions(split))
        memo, forget_stats = tofu_eval.memorisation(chat, eval_sets["forget"], bs)
        metrics["forget/extraction_strength"] = memo["extraction_strength"]
        metrics["forget/exact_memorization"] = memo["exact_memorization"]
        directions.update(tofu_eval.MEMORISATION_DIRECTIONS)
        mia_metrics = self._membership(chat, eval_sets, generations, forget_stats, reference)
        metrics.update(mia_metrics)
        scored = [a for a in self.mia_attacks if f"mia/{a}_auc" in mia_metrics]
        directions.update(attack_directions(scored))
        metrics["model_utility"] = tofu.model_utility([metrics[k] for k in tofu.UTILITY_KEYS])
        directions.update(SUITE_DIRECTIONS)
        return EvalResult(metrics, generations, directions)  # a missing FQ is None, as below

    def evaluate_core(
        self,
        chat: ChatModel,
        eval_sets: Mapping[str, Any],
        reference: Mapping[str, Any] | None = None,
    ) -> EvalResult:
        """Forget and retain only: ROUGE, probabilities, truth ratios, forget quality and DS.

        What attacks score with ``attack_eval=core``: the keys are those of :meth:`evaluate`
        without real authors, world facts, memorisation, the membership suite and model utility.
        """
        scores: dict[str, float] = {}
        generations: dict[str, list[dict[str, object]]] = {}
        directions: dict[str, bool | None] = {"forget_quality": True, **DEVIATION_SCORE}
        forget_ratios: list[float] = []
        for split in ("forget", "retain"):
            split_metrics, records, ratios = tofu_eval.evaluate_qa_split(
                chat, split, eval_sets[split], self.max_new_tokens, self.eval_batch_size
            )
            scores.update(split_metrics)
            generations[split] = records
            directions.update(tofu_eval.qa_split_directions(split))
            forget_ratios = ratios if split == "forget" else forget_ratios
        metrics: dict[str, float | None] = {
            **scores,
            "forget_quality": self._forget_quality(forget_ratios, reference),
            "deviation_score": deviation_score(
                scores["forget/rouge1_recall"], scores["retain/rouge1_recall"]
            ),
        }
        # EvalResult.metrics (lunar_exp/interfaces.py) is declared dict[str, float], but a
        # missing forget quality is None (metrics.json null), as the pipeline expects.
        return EvalResult(metrics, generations, directions)

    def _forget_quality(self, ratios: list[float], reference: Mapping | None) -> float | None:
        if reference is None:
            log.warning(
                "TOFU forget quality is MISSING: no retain-model reference. Fix: set "
                "benchmark.retain_reference to a retain_reference.json / official "
                "eval_log_aggregated.json, or to 'finetune' to train the retain model here."
            )
            return None
        return tofu.forget_quality(ratios, reference["forget_truth_ratio"])

    def _membership(
        self,
        chat: ChatModel,
        eval_sets: Mapping[str, Any],
        generations: dict[str, list[dict[str, object]]],
        forget_stats: list[tofu_eval.TokenStats],
        reference: Mapping | None,
    ) -> dict[str, float]:
        """Every attack on the forget (members) vs holdout items: AUCs and privleak.

        Each item's scores go into its generations row (a ``holdout`` split is added).
        """
        retain_losses = (reference or {}).get("item_loss") or {}
        if "reference" in self.mia_attacks and not retain_losses:
            log.info(
                "TOFU Reference attack left out (no mia/reference_auc): it needs the retain "
                "model's per-item losses. Fix: benchmark.retain_reference=finetune."
            )
        forget_losses = [cast(float, r["answer_nll"]) for r in generations["forget"]]
        generations["holdout"] = [
            {"split": "holdout", "question": it.question, "ground_truth": it.answer}
            for it in eval_sets["holdout"]
        ]
        scores = {
            name: tofu_eval.mia_scores(
                chat,
                eval_sets[name],
                self.eval_batch_size,
                self.min_k,
                self.mia_attacks,
                name=name,
                losses=forget_losses if name == "forget" else None,
                stats=forget_stats if name == "forget" else None,
                reference_losses=retain_losses.get(name),
            )
            for name in ("forget", "holdout")
        }
        for name, split_scores in scores.items():
            tofu_eval.add_scores(generations[name], split_scores)
        return self._privacy(attack_aucs(scores["forget"], scores["holdout"]), reference)

    def _privacy(self, aucs: Mapping[str, float], reference: Mapping | None) -> dict[str, float]:
        """Each attack's AUC and privleak; ``privleak`` and its reference AUC stay min-k's."""
        reference_auc = self.reference_auc or (reference or {}).get("min_k_auc")
        if reference_auc is None:
            log.warning(
                "TOFU privleak uses the default reference AUC 0.5: the retain reference has no "
                "min-k AUC. Fix: set benchmark.reference_auc, or "
                "benchmark.retain_reference=finetune."
            )
            reference_auc = DEFAULT_REFERENCE_AUC
        retain_aucs = {**(reference or {}).get("mia_auc", {}), "min_k": reference_auc}
        metrics, defaulted = attack_metrics(aucs, retain_aucs)
        if defaulted:
            log.warning(
                "TOFU privleak/%s uses the default reference AUC 0.5: the retain reference has "
                "no AUC of that attack. Fix: benchmark.retain_reference=finetune, or a retain "
                "TOFU_EVAL.json with mia_<attack>.",
                ",".join(defaulted),
            )
        return {
            **metrics,
            "privleak/reference_auc": reference_auc,
            "privleak": privleak(aucs["min_k"], reference_auc),
        }


def read_reference(path: Path) -> dict:
    """Read a retain-model reference file.

    Three formats: this project's ``retain_reference.json`` (a list under
    ``forget_truth_ratio``), open-unlearning's ``TOFU_EVAL.json`` (``forget_truth_ratio`` holds
    ``{"agg_value", "value_by_index": {"0": {"score": ...}, ...}}``; ``mia_<attack>.agg_value``
    are the attacks' AUCs, kept as ``mia_auc`` and ``min_k_auc``) and the original TOFU
    ``eval_log_aggregated.json``. All three hold TOFU's
    truth ratio P(perturbed)/P(paraphrased) per item (open-unlearning's ``forget_Truth_Ratio``
    with the ``closer_to_1_better`` aggregator, also after its late-2025 change, which only
    gave the ``prob_mean`` aggregator the new definition correct/(correct+wrong)).
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"Retain reference {path} not found. Fix: set benchmark.retain_reference to an "
            "existing file, to 'finetune', or to null."
        )
    record = json.loads(path.read_text())
    if isinstance(record.get("forget_truth_ratio"), dict):
        return _open_unlearning_reference(record, path)
    if "forget_truth_ratio" in record:
        return record
    if "eval_log_forget.json" in record:
        values = record["eval_log_forget.json"]["truth_ratio"]
        return {"forget_truth_ratio": [values[k] for k in sorted(values, key=int)]}
    raise ValueError(
        f"{path} is neither a lunar_exp retain_reference.json (key forget_truth_ratio) nor an "
        "official TOFU eval_log_aggregated.json (key eval_log_forget.json). Fix: point "
        "benchmark.retain_reference at one of those."
    )


def read_idk_answers(path: Path) -> list[str]:
    """The non-empty lines of an "I don't know" file (plain text or one JSON string a line)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"benchmark.idk_path={str(path)!r} not found. Fix: point it at TOFU's "
            "idontknow.jsonl (one answer a line) or set benchmark.idk_path=null."
        )
    answers = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith('"'):
            text = json.loads(text)
        if text:
            answers.append(text)
    if not answers:
        raise ValueError(
            f"benchmark.idk_path={str(path)!r} holds no answer. Fix: one answer a line, or "
            "benchmark.idk_path=null."
        )
    return answers


def _open_unlearning_reference(record: dict, path: Path) -> dict:
    """Truth ratios by index (0..n-1, each present) and min-k AUC of a TOFU_EVAL.json."""
    by_index = record["forget_truth_ratio"].get("value_by_index")
    if not isinstance(by_index, dict) or not by_index:
        raise ValueError(
            f"{path}: forget_truth_ratio has no value_by_index. Fix: give the retain model's "
            "TOFU_EVAL.json written by open-unlearning's TOFU evaluator."
        )
    scores = {int(index): entry.get("score") for index, entry in by_index.items()}
    missing = [i for i in range(len(scores)) if scores.get(i) is None]
    if missing:
        raise ValueError(
            f"{path}: forget_truth_ratio.value_by_index lacks a score for index {missing[:5]} "
            f"of 0..{len(scores) - 1}. Fix: evaluate the retain model on the whole forget split."
        )
    out: dict[str, Any] = {
        "format": OPEN_UNLEARNING_FORMAT,
        "forget_truth_ratio": [float(scores[i]) for i in range(len(scores))],
    }
    aucs = open_unlearning_aucs(record)
    if aucs:
        out["mia_auc"] = aucs
    if "min_k" in aucs:
        out["min_k_auc"] = aucs["min_k"]
    return out


def _limit(items: list, count: int | None) -> list:
    return items if count is None else items[:count]


def _as_qa(items: list[tofu_eval.TofuItem], prefix: str) -> list[QA]:
    return [
        QA(
            it.question,
            it.answer,
            f"{prefix}_{index // QUESTIONS_PER_AUTHOR:03d}",
            paraphrase=it.paraphrased_question,
        )
        for index, it in enumerate(items)
    ]
