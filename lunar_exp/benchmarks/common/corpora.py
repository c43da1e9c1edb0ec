"""Text corpora (local JSON/JSONL/TXT files or Hugging Face datasets) cut into plain items.

A corpus is named by a local path or a hub spec ``owner/name:config`` (e.g.
``cais/wmdp-corpora:cyber-forget-corpus``). Local formats: ``.json`` (a list of strings or of
``{"text": ...}`` records), ``.jsonl`` (one string or ``{"text": ...}`` record per line) and
``.txt`` (the whole file is one document). Documents are cut into windows of ``chunk_words``
words; each window becomes a plain item whose first ``prompt_words`` words are the prompt and
whose rest is the continuation, so every item has its own prompt (LUNAR's forget prompts must
differ from each other).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from lunar_exp.interfaces import QA

LOCAL_SUFFIXES = (".json", ".jsonl", ".txt")
TEXT_FIELD = "text"
_HUB_SPEC = re.compile(r"^[\w.-]+/[\w.-]+:[\w.-]+$")
_WORD = re.compile(r"\S+\s*")


def read_documents(spec: str, key: str, max_documents: int | None = None) -> list[str]:
    """The first ``max_documents`` (all when None) non-empty documents of a corpus.

    Args:
        spec: local file path or hub spec ``owner/name:config``.
        key: the config key that named the corpus, used in error messages.
        max_documents: read at most this many documents.

    Raises:
        FileNotFoundError: the file is missing, or the hub is needed but unreachable.
        ValueError: the file has the wrong format or holds no text.
    """
    if is_hub_spec(spec):
        documents = islice(_read_hub(spec, key), max_documents)
    elif Path(spec).suffix in LOCAL_SUFFIXES or Path(spec).exists():
        documents = islice(_read_local(Path(spec), key), max_documents)
    else:
        raise ValueError(
            f"{key}={spec!r} is neither a local {'/'.join(LOCAL_SUFFIXES)} file nor a hub "
            "spec. Fix: give a file path or owner/name:config (e.g. "
            "cais/wmdp-corpora:cyber-forget-corpus)."
        )
    texts = [text for text in documents if text.strip()]
    if not texts:
        raise ValueError(f"{key}={spec!r} holds no text. Fix: point it at a non-empty corpus.")
    return texts


def is_hub_spec(spec: str) -> bool:
    """Whether ``spec`` names a hub dataset (``owner/name:config``) rather than a local file."""
    return bool(_HUB_SPEC.match(spec)) and not Path(spec).exists()


def _read_local(path: Path, key: str) -> Iterator[str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"Corpus file {path} not found. Fix: set {key} to an existing "
            f"{'/'.join(LOCAL_SUFFIXES)} file."
        )
    if path.suffix == ".txt":
        yield path.read_text()
        return
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}). Fix: give a JSON list "
            'of strings or {"text": ...} records (JSONL: one per line).'
        ) from err
    if not isinstance(records, list):
        raise ValueError(
            f"{path} must hold a JSON list of documents. Fix: give a list of strings or "
            '{"text": ...} records.'
        )
    for index, record in enumerate(records):
        yield _record_text(record, f"{path} record {index}")


def _record_text(record: object, where: str) -> str:
    if isinstance(record, str):
        return record
    if isinstance(record, dict) and isinstance(record.get(TEXT_FIELD), str):
        return record[TEXT_FIELD]
    raise ValueError(
        f"{where} is neither a string nor a record with a string {TEXT_FIELD!r} field. "
        f'Fix: store each document as a string or {{"{TEXT_FIELD}": ...}}.'
    )


def _read_hub(spec: str, key: str) -> Iterator[str]:
    from lunar_exp.models import hub_dataset_cached, hub_reachable

    if not (hub_reachable() or hub_dataset_cached(*spec.split(":", 1))):
        raise FileNotFoundError(
            f"{key}={spec!r} needs the Hugging Face hub, which is unreachable. Fix: download the "
            f"corpus elsewhere and set {key}=/path/to/corpus.jsonl (or .json/.txt)."
        )
    from datasets import load_dataset

    repo, config = spec.split(":")
    for index, record in enumerate(load_dataset(repo, config, split="train", streaming=True)):
        yield _record_text(record, f"{spec} row {index}")


def chunk_items(
    documents: list[str],
    role: str,
    chunk_words: int,
    prompt_words: int,
    count: int | None,
    seed: int,
) -> list[QA]:
    """Cut documents into windows and draw ``count`` of them (all when None) as plain items.

    Windows shorter than half of ``chunk_words`` (a document's tail) are dropped. The item's
    ``edge`` is ``<role>:doc<index>``; whitespace inside a window is kept as written.
    """
    if not 0 < prompt_words < chunk_words // 2:
        raise ValueError(
            f"prompt_words={prompt_words} must be positive and below half of "
            f"chunk_words={chunk_words}. Fix: raise chunk_words or lower prompt_words."
        )
    windows = [
        (index, pieces)
        for index, text in enumerate(documents)
        for pieces in _windows(text, chunk_words)
        if len(pieces) >= chunk_words // 2
    ]
    if count is not None and count < len(windows):
        windows = random.Random(seed).sample(windows, count)
    return [_plain_item(pieces, prompt_words, f"{role}:doc{index}") for index, pieces in windows]


def _windows(text: str, chunk_words: int) -> Iterator[list[str]]:
    pieces = _WORD.findall(text)
    for start in range(0, len(pieces), chunk_words):
        yield pieces[start : start + chunk_words]


def _plain_item(pieces: list[str], prompt_words: int, edge: str) -> QA:
    head = "".join(pieces[:prompt_words])
    question = head.rstrip()
    answer = head[len(question) :] + "".join(pieces[prompt_words:]).rstrip()
    return QA(question, answer, edge, plain=True)
