"""General questions: pinned by LUNAR (``method.general_path``), replayed by the fine-tuning stage.

LUNAR's edit ``c r v^T`` moves every row by ``c r (v . x)``; the regression makes ``v . x`` 1 on
the forget rows and 0 on the pinned ones, and says nothing about rows unlike both. On the TOFU
twin real-authors and world-facts questions got about half of ``c r`` (docs/lunar_collateral.md).
Pinning general questions (never evaluation items) with the model's own answers constrains
``v`` on that region too. The fine-tuning stage can replay such questions with the base model's
own answers (``finetune.replay_path``) so the target keeps answering them. Sources: a folder of
MMLU-style ``<subject>_dev.csv`` files (a ``question`` column) or a JSON list of
``{"question": ...}`` / ``{"instruction": ...}`` records.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from lunar_exp.interfaces import QA, ChatModel
from lunar_exp.metrics.primitives import greedy_generate
from lunar_exp.prompts import encode_item_prompts


def load_general_prompts(
    path: str | Path | Sequence[str | Path],
    limit: int | None,
    option: str = "method.general_path",
) -> tuple[QA, ...]:
    """The first ``limit`` (all when None) general questions of ``path``, without answers.

    ``path`` is one source or a list of them, read in order (e.g. MMLU's dev folder and a JSON
    file of one's own); ``option`` names the setting that gave it, for the error message.
    """
    sources = [path] if isinstance(path, str | Path) else _source_list(path, option)
    if not sources:
        raise ValueError(
            f"{option}=[] names no source. Fix: give a path, a list of paths, or {option}=null."
        )
    questions = [q for source in sources for q in _source_questions(source, option)]
    chosen = questions if limit is None else questions[:limit]
    return tuple(QA(question=q, answer="", edge="general") for q in chosen)


def _source_list(path: object, option: str) -> list[str | Path]:
    """``path`` as a list of sources; a clear error when it is not a list of paths."""
    given = list(path) if isinstance(path, Sequence) else [path]
    sources = [source for source in given if isinstance(source, str | Path)]
    if len(sources) != len(given):
        raise ValueError(
            f"{option}={path!r} is not a path or a list of paths. Fix: e.g. "
            f"{option}=../shared/benchdata/mmlu/dev or "
            f"'{option}=[../shared/benchdata/mmlu/dev,mine.json]'."
        )
    return sources


def _source_questions(path: str | Path, option: str) -> list[str]:
    """The non-empty questions of one source: a folder of MMLU-style CSV files or a JSON list."""
    source = Path(path)
    if source.is_dir():
        questions = _csv_questions(sorted(source.glob("*.csv")))
    elif source.is_file():
        questions = json_questions(source)
    else:
        raise FileNotFoundError(
            f"{option}={path} does not exist. Fix: point it at a folder of MMLU-style "
            '<subject>_dev.csv files or a JSON list of {"question": ...} records, or set '
            f"{option}=null."
        )
    questions = [q for q in questions if q.strip()]
    if not questions:
        raise ValueError(
            f"{option}={path} holds no question. Fix: use a folder of *.csv files "
            'with a question column or a JSON list of {"question": ...} records.'
        )
    return questions


def _csv_questions(paths: Sequence[Path]) -> list[str]:
    questions = []
    for path in paths:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if "question" not in (reader.fieldnames or []):
                raise ValueError(
                    f"{path} has no question column (columns: {reader.fieldnames}). Fix: use "
                    "MMLU-style CSV files (question, choice0..3, answer)."
                )
            questions += [row["question"] for row in reader]
    return questions


def json_questions(
    path: Path, fix: str = "Fix: give one, or a folder of MMLU-style CSV files."
) -> list[str]:
    """The questions of a JSON list of ``{"question": ...}`` / ``{"instruction": ...}`` records.

    ``fix`` ends the error message when the file is not such a list.
    """
    try:
        records = json.loads(path.read_text())
        return [_question(record) for record in records]
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(
            f'{path} is not a JSON list of {{"question": ...}} records ({err!r}). {fix}'
        ) from err


def _question(record: object) -> str:
    if not isinstance(record, dict):
        raise TypeError(f"a record is a {type(record).__name__}, not an object")
    for key in ("question", "instruction"):
        if key in record:
            return str(record[key])
    raise KeyError(f"a record has neither question nor instruction: {sorted(record)}")


def with_own_answers(
    chat: ChatModel,
    items: Sequence[QA],
    max_new_tokens: int,
    batch_size: int,
    desc: str = "lunar general answers",
) -> tuple[QA, ...]:
    """``items`` answered greedily by ``chat`` itself (unchanged when ``max_new_tokens`` is 0)."""
    if max_new_tokens == 0 or not items:
        return tuple(items)
    prompts = encode_item_prompts(chat.tokenizer, items, chat.system_prompt)
    answers = greedy_generate(chat.model, chat.tokenizer, prompts, max_new_tokens, batch_size, desc)
    return tuple(
        dataclasses.replace(qa, answer=answer.strip())
        for qa, answer in zip(items, answers, strict=True)
    )
