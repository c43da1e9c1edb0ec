"""Which MUSE items a run scores: limits, and the aligned subset for small CPU runs.

``align_sets`` keeps only the first evaluation items whose evidence occurs in the corpora (a
knowmem answer, placed by its question's words; a verbmem continuation; a privleak text) and
returns the passages around that evidence, so a short fine-tuning stage teaches exactly what is
scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lunar_exp.benchmarks.muse.data import (
    DOCUMENT_SEPARATOR,
    MuseSource,
    document_at,
    document_passages,
    document_starts,
    first_found,
    first_words,
    last_words,
)


@dataclass(frozen=True)
class MuseEvalSets:
    """The evaluation items of one run."""

    forget_qa: list[dict]
    forget_icl: list[dict]
    retain_qa: list[dict]
    retain_icl: list[dict]
    verbmem: list[dict]
    privleak_forget: list[str]
    privleak_holdout: list[str]
    # forget_qa / verbmem / privleak_forget -> the forget document (forget:doc<i>) of each item
    # whose evidence lies in the run's forget documents, None for the others (forget_units());
    # sequential requests (method.requests) group the items by it.
    forget_units: dict[str, list[str | None]] = field(default_factory=dict)

    def named(self) -> dict[str, list]:
        """The sets by field name: a MUSE run's ``BenchmarkData.eval_sets``."""
        return dict(vars(self))


@dataclass(frozen=True)
class Limits:
    """First-N limits per evaluation kind (None = all)."""

    knowmem: int | None = None
    verbmem: int | None = None
    privleak: int | None = None


def read_eval_sets(
    source: MuseSource, verbmem_prompt_words: int | None, privleak_max_words: int | None
) -> MuseEvalSets:
    """All evaluation items; verbmem prompts cut to their last words, privleak texts to first."""
    return MuseEvalSets(
        forget_qa=source.records("knowmem/forget_qa"),
        forget_icl=source.records("knowmem/forget_qa_icl"),
        retain_qa=source.records("knowmem/retain_qa"),
        retain_icl=source.records("knowmem/retain_qa_icl"),
        verbmem=[
            {"prompt": last_words(r["prompt"], verbmem_prompt_words), "gt": r["gt"]}
            for r in source.records("verbmem/forget")
        ],
        privleak_forget=[
            first_words(t, privleak_max_words) for t in source.texts("privleak/forget")
        ],
        privleak_holdout=[
            first_words(t, privleak_max_words) for t in source.texts("privleak/holdout")
        ],
    )


def limit_sets(sets: MuseEvalSets, limits: Limits) -> MuseEvalSets:
    """The first items of each kind."""
    return replace(
        sets,
        forget_qa=sets.forget_qa[: limits.knowmem],
        retain_qa=sets.retain_qa[: limits.knowmem],
        verbmem=sets.verbmem[: limits.verbmem],
        privleak_forget=sets.privleak_forget[: limits.privleak],
        privleak_holdout=sets.privleak_holdout[: limits.privleak],
    )


def align_sets(
    sets: MuseEvalSets,
    forget_docs: list[str],
    retain_docs: list[str],
    limits: Limits,
    passage_words: int,
) -> tuple[MuseEvalSets, list[tuple[str, int]], list[tuple[str, int]]]:
    """The first items found in the corpora, with the forget and retain passages around them.

    Each passage comes with the index of the document holding its evidence.
    """
    forget_text = DOCUMENT_SEPARATOR.join(forget_docs)
    retain_text = DOCUMENT_SEPARATOR.join(retain_docs)
    fqa = _find_answers(sets.forget_qa, forget_text, limits.knowmem)
    rqa = _find_answers(sets.retain_qa, retain_text, limits.knowmem)
    verb = first_found([r["gt"] for r in sets.verbmem], forget_text, limits.verbmem)
    leak = first_found(sets.privleak_forget, forget_text, limits.privleak)
    # A verbmem prompt ends right before its continuation: teach the prompt's tail too.
    verb_spans = [(max(0, s - len(sets.verbmem[i]["prompt"]) - 1), e) for i, (s, e) in verb]
    aligned = replace(
        sets,
        forget_qa=[sets.forget_qa[i] for i, _ in fqa],
        retain_qa=[sets.retain_qa[i] for i, _ in rqa],
        verbmem=[sets.verbmem[i] for i, _ in verb],
        privleak_forget=[sets.privleak_forget[i] for i, _ in leak],
        privleak_holdout=sets.privleak_holdout[: limits.privleak],
    )
    forget_spans = [span for _, span in fqa + leak] + verb_spans
    return (
        aligned,
        document_passages(forget_docs, forget_spans, passage_words),
        document_passages(retain_docs, [span for _, span in rqa], passage_words),
    )


def forget_units(sets: MuseEvalSets, forget_docs: list[str]) -> dict[str, list[str | None]]:
    """The forget document (``forget:doc<i>``) of each forget-side item, None if not found.

    Items are placed as :func:`align_sets` places them (a knowmem answer by its question's
    words; a verbmem continuation, a privleak text verbatim).
    """
    corpus, starts = DOCUMENT_SEPARATOR.join(forget_docs), document_starts(forget_docs)
    found = {
        "forget_qa": _find_answers(sets.forget_qa, corpus, None),
        "verbmem": first_found([r["gt"] for r in sets.verbmem], corpus, None),
        "privleak_forget": first_found(sets.privleak_forget, corpus, None),
    }
    named = sets.named()
    units: dict[str, list[str | None]] = {}
    for name, places in found.items():
        by_index = {
            index: f"forget:doc{document_at(starts, begin)}" for index, (begin, _) in places
        }
        units[name] = [by_index.get(index) for index in range(len(named[name]))]
    return units


def _find_answers(records: list[dict], corpus: str, limit: int | None):
    answers, questions = [r["answer"] for r in records], [r["question"] for r in records]
    return first_found(answers, corpus, limit, hints=questions)


def check_eval_sets(sets: MuseEvalSets) -> None:
    """Raise ValueError naming the first empty evaluation set."""
    named = sets.named()
    for name in ("forget_qa", "retain_qa", "verbmem", "privleak_forget", "privleak_holdout"):
        if not named[name]:
            raise ValueError(
                f"The MUSE evaluation set {name} is empty (limits, or with align_to_eval no item "
                "found in the documents used). Fix: raise the benchmark's *_limit or *_docs, or "
                "set benchmark.align_to_eval=false."
            )
