"""MUSE data (``muse-bench/MUSE-News`` / ``MUSE-Books``) from the hub or a local directory.

Splits are named ``subset/split`` with the hub's names (``raw/forget``, ``knowmem/retain_qa``,
``privleak/holdout``, ...). A local directory holds ``<subset>/<split>.json`` files laid out like
``../shared/benchdata/muse/news``, where some splits carry the upstream repository's names
(``knowmem/retain2_qa`` for the hub's ``retain_qa``, ``privleak/retain2`` for ``retain``); both
names are accepted. Text subsets (raw, privleak) are lists of strings locally and rows with a
``text`` field on the hub; knowmem rows are ``{question, answer}``, verbmem rows ``{prompt, gt}``.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from pathlib import Path

from lunar_exp.interfaces import QA
from lunar_exp.models import hub_dataset_cached, hub_reachable

# Hub dataset -> its local copy in ../shared/benchdata (used in messages).
HUB_IDS = {"muse-bench/MUSE-News": "muse/news", "muse-bench/MUSE-Books": "muse/books"}
TEXT_SUBSETS = ("raw", "privleak")
RECORD_FIELDS = {"knowmem": ("question", "answer"), "verbmem": ("prompt", "gt")}
# Hub split name -> the name the upstream repository (and the shared local copy) uses.
LOCAL_NAMES = {
    "knowmem/retain_qa": "knowmem/retain2_qa",
    "knowmem/retain_qa_icl": "knowmem/retain2_qa_icl",
    "privleak/retain": "privleak/retain2",
}
# MUSE's own corpus files join documents with a blank line (raw/forget.txt).
DOCUMENT_SEPARATOR = "\n\n"
_WORD = re.compile(r"\S+\s*")
# Evidence search for knowmem answers: question words (4+ letters) looked for within HINT_CONTEXT
# characters of each of the answer's first MAX_OCCURRENCES occurrences.
_HINT_WORD = re.compile(r"[a-z]{4,}")
HINT_CONTEXT = 400
MAX_OCCURRENCES = 500


def parse_split_name(name: str) -> tuple[str, str]:
    """Split ``subset/split`` and check the subset is one MUSE has.

    Raises:
        ValueError: the name is not ``subset/split`` with a known subset.
    """
    subset, _, split = name.partition("/")
    if not split or subset not in (*TEXT_SUBSETS, *RECORD_FIELDS):
        raise ValueError(
            f"Unknown MUSE split {name!r}. Fix: name it subset/split with subset in "
            f"{[*TEXT_SUBSETS, *RECORD_FIELDS]}, e.g. raw/retain1 or privleak/retain."
        )
    return subset, split


def rows_to_texts(rows: Iterable[object], source: str) -> list[str]:
    """Documents of a text subset from strings (local files) or ``{"text": ...}`` rows (hub).

    Raises:
        ValueError: a row is neither a string nor a record with a string ``text`` field.
    """
    texts = []
    for index, row in enumerate(rows):
        text = row.get("text") if isinstance(row, dict) else row
        if not isinstance(text, str):
            raise ValueError(
                f"{source} row {index} is neither a string nor a record with a string 'text' "
                "field. Fix: use MUSE files (a JSON list of strings, or hub rows {text})."
            )
        texts.append(text)
    return texts


def rows_to_records(rows: Iterable[object], fields: Sequence[str], source: str) -> list[dict]:
    """Records holding exactly ``fields``, each a string, from local or hub rows.

    Raises:
        ValueError: a row lacks one of the string fields.
    """
    records = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not all(isinstance(row.get(f), str) for f in fields):
            shown = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(
                f"{source} row {index} lacks string field(s) {list(fields)} (has {shown}). "
                "Fix: use MUSE files with the hub's schema."
            )
        records.append({f: row[f] for f in fields})
    return records


class MuseSource:
    """Reads MUSE splits from a local directory or the Hugging Face hub.

    Args:
        path: local directory (``<subset>/<split>.json``); None reads the hub.
        hub_id: ``muse-bench/MUSE-News`` or ``muse-bench/MUSE-Books``.
    """

    def __init__(self, path: str | None, hub_id: str) -> None:
        if hub_id not in HUB_IDS:
            raise ValueError(
                f"benchmark.hub_id={hub_id!r} is not a MUSE corpus. Fix: use one of "
                f"{sorted(HUB_IDS)}."
            )
        self.hub_id, local = hub_id, f"../shared/benchdata/{HUB_IDS[hub_id]}"
        self.path = Path(path) if path else None
        if self.path is not None and not self.path.is_dir():
            raise FileNotFoundError(
                f"MUSE directory {self.path} not found. Fix: set benchmark.path to a directory "
                f"laid out like {local}, or benchmark.path=null to read {hub_id} from the hub."
            )
        if self.path is None and not (hub_reachable() or hub_dataset_cached(hub_id)):
            raise FileNotFoundError(
                f"The Hugging Face hub is unreachable, so {hub_id} cannot be read. Fix: set "
                f"benchmark.path to a local copy (e.g. {local}; the News "
                "copy has no raw/retain1 or raw/holdout, so also set "
                "benchmark.retain_corpus=privleak/retain benchmark.reference_corpus=privleak/"
                "holdout), and model.path to a local model directory for a hub model."
            )

    def texts(self, name: str, keep_empty: bool = False) -> list[str]:
        """Documents of a raw or privleak split, empty documents dropped unless ``keep_empty``.

        With ``keep_empty`` the i-th text is the split's i-th document (named ``forget:doc<i>``).
        """
        subset, _ = parse_split_name(name)
        if subset not in TEXT_SUBSETS:
            raise ValueError(f"{name!r} is not a text split. Fix: use a raw/ or privleak/ split.")
        rows, source = self._rows(name)
        return [t for t in rows_to_texts(rows, source) if keep_empty or t.strip()]

    def records(self, name: str) -> list[dict]:
        """Records of a knowmem (question, answer) or verbmem (prompt, gt) split."""
        subset, _ = parse_split_name(name)
        if subset not in RECORD_FIELDS:
            raise ValueError(f"{name!r} has no records. Fix: use a knowmem/ or verbmem/ split.")
        rows, source = self._rows(name)
        return rows_to_records(rows, RECORD_FIELDS[subset], source)

    def _rows(self, name: str) -> tuple[list, str]:
        rows, source = self._local(self.path, name) if self.path else self._hub(name)
        if not rows:
            raise ValueError(f"MUSE split {source} is empty. Fix: check the data files.")
        return rows, source

    def _local(self, directory: Path, name: str) -> tuple[list, str]:
        candidates = [directory / f"{n}.json" for n in (name, LOCAL_NAMES.get(name, name))]
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            raise FileNotFoundError(
                f"MUSE split {name!r} not found in {directory} (looked for "
                f"{', '.join(sorted({str(c) for c in candidates}))}). Fix: add the file, or "
                "choose another split (e.g. benchmark.retain_corpus=privleak/retain)."
            )
        try:
            rows = json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{file} is not valid JSON ({err.msg} at line {err.lineno}). Fix: restore the "
                "MUSE file."
            ) from err
        if not isinstance(rows, list):
            raise ValueError(f"{file} must hold a JSON list. Fix: restore the MUSE file.")
        return rows, str(file)

    def _hub(self, name: str) -> tuple[list, str]:
        from datasets import load_dataset

        subset, split = parse_split_name(name)
        return list(load_dataset(self.hub_id, subset, split=split)), f"{self.hub_id}:{name}"


def first_found(
    needles: Sequence[str],
    corpus: str,
    limit: int | None,
    hints: Sequence[str] | None = None,
) -> list[tuple[int, tuple[int, int]]]:
    """The first ``limit`` (all when None) needles found in ``corpus``: (index, char span).

    With ``hints`` (knowmem questions), short needles such as "2017" are placed where the
    surrounding text shares the most words with the hint, and only counted as found when it
    shares at least half of them (otherwise the answer's source is not in the corpus).
    """
    found = []
    for index, needle in enumerate(needles):
        start = _locate(corpus, needle, hints[index] if hints else None)
        if start is not None:
            found.append((index, (start, start + len(needle))))
            if limit is not None and len(found) == limit:
                break
    return found


def _locate(corpus: str, needle: str, hint: str | None) -> int | None:
    start = corpus.find(needle)
    if hint is None or start < 0:
        return start if start >= 0 else None
    words = set(_HINT_WORD.findall(hint.lower()))
    best, best_start = -1, None
    for _ in range(MAX_OCCURRENCES):
        if start < 0:
            break
        context = corpus[max(0, start - HINT_CONTEXT) : start + len(needle) + HINT_CONTEXT].lower()
        shared = sum(word in context for word in words)
        if shared > best:
            best, best_start = shared, start
        start = corpus.find(needle, start + 1)
    return best_start if 2 * best >= len(words) else None


def passages(corpus: str, spans: Sequence[tuple[int, int]], words: int) -> list[str]:
    """The text around each char span, widened (centred) to at least ``words`` words.

    Passages come out in corpus order, identical ones once.
    """
    return [corpus[begin:end] for begin, end, _ in passage_spans(corpus, spans, words)]


def passage_spans(
    corpus: str, spans: Sequence[tuple[int, int]], words: int
) -> list[tuple[int, int, int]]:
    """(start, end, evidence start) of each :func:`passages` passage, in corpus order.

    The evidence start is the first of the given spans the passage was widened from.
    """
    starts = [m.start() for m in _WORD.finditer(corpus)]
    ranges: dict[tuple[int, int], int] = {}
    for begin, end in spans:
        first = max(0, bisect_right(starts, begin) - 1)
        last = max(first + 1, bisect_left(starts, end))
        low = max(0, first - max(0, words - (last - first)) // 2)
        ranges.setdefault((low, min(len(starts), max(last, low + words))), begin)
    bounds = [*starts, len(corpus)]
    return [(bounds[low], bounds[high], ranges[low, high]) for low, high in sorted(ranges)]


def document_starts(documents: Sequence[str]) -> list[int]:
    """Where each document starts in ``DOCUMENT_SEPARATOR.join(documents)``."""
    starts, position = [], 0
    for document in documents:
        starts.append(position)
        position += len(document) + len(DOCUMENT_SEPARATOR)
    return starts


def document_at(starts: Sequence[int], offset: int) -> int:
    """The index of the document holding character ``offset`` of the joined corpus."""
    return max(0, bisect_right(starts, offset) - 1)


def document_passages(
    documents: Sequence[str], spans: Sequence[tuple[int, int]], words: int
) -> list[tuple[str, int]]:
    """:func:`passages` of the joined ``documents``, each with the index of its document.

    A passage belongs to the document holding its evidence (the span it was widened from), even
    where the widening reaches into the next document.
    """
    corpus, starts = DOCUMENT_SEPARATOR.join(documents), document_starts(documents)
    return [
        (corpus[begin:end], document_at(starts, evidence))
        for begin, end, evidence in passage_spans(corpus, spans, words)
    ]


def passage_items(passages: Sequence[tuple[str, int]], role: str, prompt_words: int) -> list[QA]:
    """One plain item per (passage, document index), whatever its length.

    The first ``prompt_words`` words are the prompt, the rest (leading space kept) the
    continuation; ``edge`` is ``<role>:doc<document index>``, as for chunks (a document's
    passages share it).
    """
    items = []
    for text, document in passages:
        prompt = first_words(text, prompt_words)
        items.append(QA(prompt, text[len(prompt) :].rstrip(), f"{role}:doc{document}", plain=True))
    return items


def first_words(text: str, count: int | None) -> str:
    """The first ``count`` words of ``text`` (all when None), trailing space removed."""
    return text if count is None else "".join(_WORD.findall(text)[:count]).rstrip()


def last_words(text: str, count: int | None) -> str:
    """The last ``count`` words of ``text`` (all when None)."""
    return text if count is None else "".join(_WORD.findall(text)[-count:])
