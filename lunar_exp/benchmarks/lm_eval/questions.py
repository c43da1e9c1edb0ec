"""Read and validate four-choice questions: WMDP JSON and MMLU CSV, both in the cais/* form."""

from __future__ import annotations

import csv
import json
from pathlib import Path

MMLU_HEADER = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]


def read_questions(path: Path) -> list[dict[str, object]]:
    """``[{question, choices[4], answer}]`` from a WMDP ``.json`` or an MMLU ``.csv`` file.

    Raises:
        ValueError: the file is not a non-empty list of questions with four string choices and
            an integer answer 0-3.
    """
    rows = _read_csv(path) if path.suffix == ".csv" else _read_json(path)
    if not rows:
        raise ValueError(f"{path} holds no questions. Fix: point the config at a non-empty copy.")
    for index, row in enumerate(rows):
        _check_question(row, f"{path} row {index}")
    return [{k: row[k] for k in ("question", "choices", "answer")} for row in rows]


def write_json(path: Path, rows: list[dict[str, object]]) -> None:
    """Write ``rows`` as one JSON list (what the ``json`` dataset builder reads)."""
    path.write_text(json.dumps(rows, ensure_ascii=False))


def _read_json(path: Path) -> list:
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}). Fix: give a JSON list "
            "of {question, choices[4], answer} records (cais/wmdp form)."
        ) from err
    if not isinstance(rows, list):
        raise ValueError(
            f"{path} must hold a JSON list. Fix: give [{{question, choices[4], answer}}, ...]."
        )
    return rows


def _read_csv(path: Path) -> list[dict[str, object]]:
    # The csv module keeps every field a string; pandas-based readers would turn "None" into NaN.
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames != MMLU_HEADER:
            raise ValueError(
                f"{path} has header {reader.fieldnames}. Fix: use the cais/mmlu CSV form with "
                f"header {','.join(MMLU_HEADER)} (answer = index 0-3)."
            )
        return [
            {
                "question": row["question"],
                "choices": [row[f"choice{i}"] for i in range(4)],
                "answer": _index(row["answer"]),
            }
            for row in reader
        ]


def _index(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.strip().isdigit() else value


def _check_question(row: object, where: str) -> None:
    valid = (
        isinstance(row, dict)
        and isinstance(row.get("question"), str)
        and isinstance(row.get("choices"), list)
        and len(row["choices"]) == 4
        and all(isinstance(choice, str) for choice in row["choices"])
        and type(row.get("answer")) is int
        and 0 <= row["answer"] < 4
    )
    if not valid:
        raise ValueError(
            f"{where} is not a question with 4 string choices and an integer answer 0-3 "
            f"({str(row)[:120]}). Fix: use the cais/wmdp form {{question, choices[4], answer}} "
            "(MMLU CSV: question,choice0..3,answer)."
        )
