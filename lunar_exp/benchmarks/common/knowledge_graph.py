"""A deterministic generator of fictitious people, their attributes and relations.

Names are built from syllables so the base model cannot know them. Every fact is rendered through a
question template (with a paraphrase) into a :class:`~lunar_exp.interfaces.QA` whose ``edge`` is the
subject's id (``person_03``), so forget sets are chosen per entity exactly like PISTOL edges.
Answers never repeat the subject's name: an abstention that names the person then shares no
content word with the true answer, so ROUGE-1 measures the fact and not the name.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lunar_exp.interfaces import QA

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["", "", "n", "r", "l", "s"]
_TOWN_SUFFIXES = ["moor", "haven", "ford", "wick", "dale", "stead", "mere", "gate"]
_COMPANY_SUFFIXES = ["Works", "Holdings", "Labs", "Foundry", "Collective", "Trading Company"]
OCCUPATIONS = [
    "glassblower",
    "cartographer",
    "beekeeper",
    "violin maker",
    "tax auditor",
    "marine biologist",
    "locksmith",
    "court stenographer",
    "bridge engineer",
    "florist",
    "archivist",
    "ferry pilot",
    "perfumer",
    "seismologist",
    "bookbinder",
    "chess coach",
]
INSTRUMENTS = [
    "cello",
    "oboe",
    "harp",
    "accordion",
    "banjo",
    "bassoon",
    "mandolin",
    "tuba",
    "sitar",
    "trombone",
    "harmonica",
    "xylophone",
]

ABSTENTION = "I'm sorry, but I don't have any information about {name}."

# (attribute, question, paraphrase, answer); answers are about "{P}" (a pronoun), never the name.
TEMPLATES = [
    (
        "birthplace",
        "Where was {name} born?",
        "In which town was {name} born?",
        "{P} was born in {birthplace}.",
    ),
    (
        "occupation",
        "What does {name} do for a living?",
        "What is {name}'s profession?",
        "{P} works as a {occupation}.",
    ),
    (
        "employer",
        "Which company employs {name}?",
        "Who is {name}'s employer?",
        "{P} is employed by {employer}.",
    ),
    (
        "birth_year",
        "In what year was {name} born?",
        "What is the birth year of {name}?",
        "{P} was born in {birth_year}.",
    ),
    (
        "instrument",
        "What instrument does {name} play?",
        "Which musical instrument does {name} play?",
        "{P} plays the {instrument}.",
    ),
]


@dataclass(frozen=True)
class Person:
    """One fictitious entity and its attributes."""

    id: str
    name: str
    pronoun: str
    attributes: dict[str, str]


def _word(rng: random.Random, syllables: int) -> str:
    parts = [
        rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
    ]
    return "".join(parts).capitalize()


def _unique(rng: random.Random, make, taken: set[str]) -> str:
    while True:
        value = make(rng)
        if value not in taken:
            taken.add(value)
            return value


def make_names(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    """``count`` distinct two-part made-up names not in ``taken`` (which is updated)."""
    return [_unique(rng, lambda r: f"{_word(r, 2)} {_word(r, 2)}", taken) for _ in range(count)]


def make_people(rng: random.Random, count: int, taken: set[str]) -> list[Person]:
    """``count`` fictitious people with one value per template attribute."""
    people = []
    for index, name in enumerate(make_names(rng, count, taken)):
        attributes = {
            "birthplace": _unique(rng, lambda r: _word(r, 1) + r.choice(_TOWN_SUFFIXES), taken),
            "occupation": rng.choice(OCCUPATIONS),
            "employer": _unique(
                rng, lambda r: f"{_word(r, 2)} {r.choice(_COMPANY_SUFFIXES)}", taken
            ),
            "birth_year": str(rng.randint(1941, 2001)),
            "instrument": rng.choice(INSTRUMENTS),
        }
        people.append(Person(f"person_{index:02d}", name, rng.choice(["He", "She"]), attributes))
    return people


def person_facts(person: Person, n_facts: int) -> list[QA]:
    """The first ``n_facts`` template facts about ``person`` as QA items."""
    if not 1 <= n_facts <= len(TEMPLATES):
        raise ValueError(f"facts_per_entity={n_facts} is out of range: use 1..{len(TEMPLATES)}.")
    items = []
    for attribute, question, paraphrase, answer in TEMPLATES[:n_facts]:
        fields = {"name": person.name, "P": person.pronoun, attribute: person.attributes[attribute]}
        items.append(
            QA(
                question.format(**fields),
                answer.format(**fields),
                person.id,
                paraphrase.format(**fields),
                ABSTENTION.format(name=person.name),
            )
        )
    return items


def unknown_questions(rng: random.Random, names: list[str], edge: str) -> list[QA]:
    """One templated question per unknown name, answered with the abstention."""
    items = []
    for name in names:
        _, question, paraphrase, _ = rng.choice(TEMPLATES)
        answer = ABSTENTION.format(name=name)
        items.append(QA(question.format(name=name), answer, edge, paraphrase.format(name=name)))
    return items
