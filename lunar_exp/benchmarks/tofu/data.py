"""TOFU data from the hub (``locuslab/TOFU``) or a local directory of the same splits.

Local files may be a JSON array, several JSON arrays concatenated (one per line, as in the
``datasets`` re-exports) or JSONL (the hub's own format); keys ``prompt``/``response`` are read as
``question``/``answer``. Each TOFU author has 20 consecutive questions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lunar_exp.models import hub_dataset_cached, hub_reachable

HUB_ID = "locuslab/TOFU"
QUESTIONS_PER_AUTHOR = 20
# forget split -> (matching retain split, matching holdout split)
SPLITS = {
    "forget01": ("retain99", "holdout01"),
    "forget05": ("retain95", "holdout05"),
    "forget10": ("retain90", "holdout10"),
}
KEY_ALIASES = {"prompt": "question", "response": "answer"}


@dataclass(frozen=True)
class TofuItem:
    """A TOFU question with its answer and the alternatives the truth ratio compares."""

    question: str
    answer: str
    paraphrased_answer: str | None = None
    perturbed_answers: tuple[str, ...] = ()
    paraphrased_question: str | None = None
    # The author's edge (QA.edge, e.g. forget_author_000): the unit sequential requests name;
    # set on the forget items, empty elsewhere.
    edge: str = ""


def parse_records(text: str, source: str) -> list[dict]:
    """Parse a JSON array, concatenated JSON arrays or JSONL into one list of records."""
    decoder = json.JSONDecoder()
    records: list[dict] = []
    position, size = 0, len(text)
    while True:
        while position < size and text[position].isspace():
            position += 1
        if position >= size:
            return records
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{source} is not JSON, JSONL or concatenated JSON arrays ({err.msg}). "
                "Fix: point benchmark.path at a directory of TOFU split files."
            ) from err
        records.extend(value if isinstance(value, list) else [value])


def normalise(record: dict, source: str, index: int) -> dict:
    """Rename ``prompt``/``response`` keys and check question and answer are strings."""
    out = {KEY_ALIASES.get(k, k): v for k, v in record.items()}
    for key in ("question", "answer"):
        if not isinstance(out.get(key), str):
            raise ValueError(
                f"{source} record {index} has no string '{key}' (keys: {sorted(record)}). "
                "Fix: use TOFU files with question/answer (or prompt/response) fields."
            )
    return out


class TofuSource:
    """Reads TOFU splits by name from ``path`` (a directory) or from the hub.

    Args:
        path: local directory holding ``<split>.json`` / ``<split>.jsonl``; None reads the hub.
        hub_id: dataset repository on the Hugging Face hub.
    """

    def __init__(self, path: str | None = None, hub_id: str = HUB_ID) -> None:
        self.path = Path(path).expanduser().resolve() if path else None
        self.hub_id = hub_id
        if self.path is not None and not self.path.is_dir():
            raise FileNotFoundError(
                f"TOFU directory {self.path} not found. Fix: set benchmark.path to a directory "
                f"with the TOFU split files, or benchmark.path=null to read {hub_id} from the hub."
            )
        if self.path is None and not (hub_reachable() or hub_dataset_cached(hub_id)):
            raise ConnectionError(
                f"The Hugging Face hub is unreachable and {hub_id} is not in the local datasets "
                "cache, so it cannot be downloaded. Fix: "
                "set benchmark.path to a local directory of TOFU split files (e.g. "
                "../shared/benchdata/tofu)."
            )

    def records(self, split: str) -> list[dict]:
        """The split's records with normalised keys; raises if missing or malformed."""
        raw, source = self._local(self.path, split) if self.path else self._hub(split)
        if not raw:
            raise ValueError(f"TOFU split {split} in {source} is empty. Fix: check the data files.")
        return [normalise(r, source, i) for i, r in enumerate(raw)]

    def _local(self, directory: Path, split: str) -> tuple[list[dict], str]:
        for suffix in (".json", ".jsonl"):
            file = directory / f"{split}{suffix}"
            if file.is_file():
                return parse_records(file.read_text(), str(file)), str(file)
        raise FileNotFoundError(
            f"TOFU split '{split}' not found in {directory} (looked for {split}.json/.jsonl). "
            "Fix: add the file or pick another benchmark.split."
        )

    def _hub(self, split: str) -> tuple[list[dict], str]:
        from datasets import Dataset, load_dataset

        rows = load_dataset(self.hub_id, split, split="train")
        if not isinstance(rows, Dataset):  # one split asked for: one Dataset of dict rows
            raise TypeError(f"{self.hub_id}:{split} loaded as {type(rows).__name__}, not a Dataset")
        return rows.to_list(), f"{self.hub_id}:{split}"


def to_items(records: list[dict]) -> list[TofuItem]:
    """TofuItems from normalised records (perturbed answers as a tuple, possibly empty)."""
    return [
        TofuItem(
            r["question"],
            r["answer"],
            r.get("paraphrased_answer"),
            tuple(r.get("perturbed_answer") or ()),
            r.get("paraphrased_question"),
        )
        for r in records
    ]


def first_authors(items: list, authors: int | None) -> list:
    """The first ``authors`` authors' questions (all when None)."""
    return items if authors is None else items[: authors * QUESTIONS_PER_AUTHOR]
