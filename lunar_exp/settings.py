"""Settings declared once: each setting's type, default, range and help live in one field.

A component (a method, the training loop, the fine-tuning stage) is a dataclass whose fields are
its settings; Hydra's ``_target_`` instantiation passes the config keys as keyword arguments::

    @dataclass(kw_only=True)
    class NPO:
        beta: float = setting(0.1, gt=0, help="inverse temperature of the preference loss.")

        def __post_init__(self) -> None:
            validate(self, "method")

The type comes from the annotation: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``
(the choices), a list of those (``list[float]``, checked item by item as ``name[i]``) or a
dataclass, each optionally ``| None``. Other annotations (e.g. ``list[int] | Literal["auto"]``)
are left to the component's own checks. :func:`validate` checks every type first, then every
range, and raises the project's one-line error, ``<prefix>.<name>=<value> ... Fix: ...``.
Checks that need the loaded model (layer ranges) stay in the component's ``check(chat)``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any, Literal

_TYPE_FIXES = {
    bool: "is not true or false. Fix: e.g. {key}=true.",
    int: "is not an integer. Fix: give a whole number, e.g. {key}=7.",
    float: "is not a number. Fix: give a number, e.g. {key}=1e-5 (see --cfg job for the current "
    "values).",
    str: "is not a string. Fix: quote it, e.g. {key}='...'.",
}


@dataclasses.dataclass(frozen=True)
class Rule:
    """What one setting accepts: a kind, choices, a list of them, None, and bounds."""

    kind: type | None = None  # None: not checked here
    choices: tuple = ()
    many: bool = False  # a list whose items follow the rule (named ``name[i]``)
    optional: bool = False  # None passes
    gt: float | None = None
    ge: float | None = None
    le: float | None = None


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    factory: Any = dataclasses.MISSING,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
) -> Any:
    """A dataclass field with its one-line help and bounds (``gt`` >, ``ge`` >=, ``le`` <=).

    A list or dict default is copied for each instance; ``factory`` builds other defaults.
    """
    if isinstance(default, list | dict):
        default, factory = dataclasses.MISSING, functools.partial(copy.deepcopy, default)
    metadata = {"help": help, "gt": gt, "ge": ge, "le": le}
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


def validate(component: object, prefix: str, skip: Iterable[str] = ()) -> None:
    """Check every setting of a dataclass ``component`` (except ``skip``) against its field."""
    rules = _rules(type(component))
    skip = set(skip)
    values = vars(component)
    check(prefix, [(n, values[n], r) for n, r in rules.items() if n not in skip])


def check(prefix: str, entries: Iterable[tuple[str, object, Rule]]) -> None:
    """Raise ValueError for the first (name, value, rule) of a wrong type, else out of range."""
    flat = [item for name, value, rule in entries for item in _items(prefix, name, value, rule)]
    for name, value, rule in flat:
        _check_type(_key(prefix, name), value, rule)
    for name, value, rule in flat:
        _check_range(_key(prefix, name), value, rule)


def _key(prefix: str, name: str) -> str:
    """The override that sets ``name``: ``method.lr``, or ``seed`` for a top-level key."""
    return f"{prefix}.{name}" if prefix else name


def describe(cls: type, prefix: str) -> list[str]:
    """One line per setting of dataclass ``cls``: key, default, bounds and help."""
    lines = []
    for field in dataclasses.fields(cls):
        default = field.default
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        rule = _rules(cls)[field.name]
        bounds = f", {_bounds(rule)}" if _has_bounds(rule) else ""
        help_text = field.metadata.get("help", "")
        lines.append(f"{_key(prefix, field.name)} (default {default!r}{bounds}): {help_text}")
    return lines


def _items(prefix: str, name: str, value: object, rule: Rule):
    if value is None and rule.optional:
        return []
    if not rule.many:
        return [(name, value, rule)]
    if isinstance(value, str) or not isinstance(value, Sequence):
        key = _key(prefix, name)
        raise ValueError(f"{key}={value!r} is not a list. Fix: give a list, e.g. {key}=[...].")
    item = dataclasses.replace(rule, many=False, optional=False)
    return [(f"{name}[{i}]", v, item) for i, v in enumerate(value)]


def _check_type(key: str, value: object, rule: Rule) -> None:
    if rule.choices:
        if value not in rule.choices:
            *head, last = map(str, rule.choices)
            options = f"{', '.join(head)} or {last}" if head else last
            raise ValueError(f"{key}={value!r}: use {options}. Fix: e.g. {key}={rule.choices[0]}.")
        return
    kind = rule.kind
    if kind is None:
        return
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if not ok:
        name = kind.__name__
        fix = _TYPE_FIXES.get(kind, f"is not a {name}. Fix: set its keys, e.g. {{key}}.<key>=...")
        raise ValueError(f"{key}={value!r} {fix.format(key=key)}")


def _check_range(key: str, value: Any, rule: Rule) -> None:
    if not _has_bounds(rule):
        return
    below = (rule.gt is not None and value <= rule.gt) or (rule.ge is not None and value < rule.ge)
    if below or (rule.le is not None and value > rule.le):
        raise ValueError(f"{key}={value} is out of range. Fix: use a value {_bounds(rule)}.")


def _has_bounds(rule: Rule) -> bool:
    return any(bound is not None for bound in (rule.gt, rule.ge, rule.le))


def _bounds(rule: Rule) -> str:
    """``> 0``, ``>= 1``, ``<= 1`` or ``in (0, 1]``."""
    low = f"({rule.gt}" if rule.gt is not None else None
    low = f"[{rule.ge}" if rule.ge is not None else low
    if rule.le is None:
        return f"> {rule.gt}" if rule.gt is not None else f">= {rule.ge}"
    return f"in {low}, {rule.le}]" if low else f"<= {rule.le}"


@functools.cache
def _rules(cls: type) -> dict[str, Rule]:
    hints = typing.get_type_hints(cls)
    return {f.name: _rule(hints[f.name], f.metadata) for f in dataclasses.fields(cls)}


def _rule(hint: Any, metadata: typing.Mapping[str, Any]) -> Rule:
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        hint = members[0] if len(members) == 1 else None  # a real union: the component checks
    many = typing.get_origin(hint) in (list, Sequence)
    if many:
        hint = (*typing.get_args(hint), None)[0]
    if typing.get_origin(hint) is Literal:
        return Rule(choices=typing.get_args(hint), many=many, optional=optional)
    known = isinstance(hint, type) and (hint in _TYPE_FIXES or dataclasses.is_dataclass(hint))
    return Rule(
        kind=hint if known else None,
        many=many,
        optional=optional,
        gt=metadata.get("gt"),
        ge=metadata.get("ge"),
        le=metadata.get("le"),
    )
