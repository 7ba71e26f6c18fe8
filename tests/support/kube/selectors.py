"""Label and field selectors with the API server's syntax, so LIST and WATCH filter as on a real cluster.

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists), ``!k``.
Field selectors: ``path=value``, ``path==value``, ``path!=value`` over dotted paths such as
``metadata.name`` or ``metadata.namespace``. The real server accepts only a few paths per kind; the
emulator accepts any dotted path (a simplification that never rejects what the real server accepts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

_SET_RE: Final = re.compile(r"^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$")
_KEY_RE: Final = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$")

Requirement = Callable[[Mapping[str, str]], bool]


class SelectorError(ValueError):
    """A malformed selector: the API server answers 400 BadRequest."""


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside ``(...)`` value sets."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    terms.append(current.strip())
    return [term for term in terms if term]


def _checked_key(key: str, selector: str) -> str:
    if not _KEY_RE.match(key):
        raise SelectorError(f"invalid selector {selector!r}: bad key {key!r}")
    return key


def _parse_label_term(term: str, selector: str) -> Requirement:
    if match := _SET_RE.match(term):
        key, operator, raw_values = match.groups()
        values = {value.strip() for value in raw_values.split(",") if value.strip()}
        _checked_key(key, selector)
        if operator == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for operator in ("!=", "==", "="):
        if operator in term:
            key, _, value = (part.strip() for part in term.partition(operator))
            _checked_key(key, selector)
            if operator == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        key = _checked_key(term[1:].strip(), selector)
        return lambda labels: key not in labels
    key = _checked_key(term, selector)
    return lambda labels: key in labels


def _equality(term: str) -> tuple[str, str] | None:
    """``(key, value)`` of a ``k=v`` / ``k==v`` term (already validated by ``_parse_label_term``), else None."""
    if _SET_RE.match(term) or "!=" in term or "=" not in term:
        return None
    operator = "==" if "==" in term else "="
    key, _, value = (part.strip() for part in term.partition(operator))
    return key, value


@dataclass(frozen=True)
class LabelSelector:
    """A parsed ``labelSelector``; all requirements must hold (they are AND-ed, as in Kubernetes).

    ``equalities`` repeats the ``k=v`` terms as data, so the store can answer from its label index
    instead of testing every object of a namespace (the requirements still decide)."""

    requirements: tuple[Requirement, ...] = ()
    equalities: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, selector: str | None) -> LabelSelector:
        terms = _split_terms(selector or "")
        requirements = tuple(_parse_label_term(term, selector or "") for term in terms)
        return cls(requirements, tuple(pair for term in terms if (pair := _equality(term)) is not None))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement(labels) for requirement in self.requirements)


def _field_value(obj: Mapping[str, Any], path: str) -> str | None:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return None if value is None else str(value)


@dataclass(frozen=True)
class FieldSelector:
    """A parsed ``fieldSelector`` (equality and inequality on dotted paths)."""

    terms: tuple[tuple[str, bool, str], ...] = ()  # (path, must_equal, value)

    @classmethod
    def parse(cls, selector: str | None) -> FieldSelector:
        terms = []
        for term in _split_terms(selector or ""):
            operator = next((op for op in ("!=", "==", "=") if op in term), None)
            if operator is None:
                raise SelectorError(f"invalid field selector {selector!r}: {term!r} has no operator")
            path, _, value = (part.strip() for part in term.partition(operator))
            terms.append((path, operator != "!=", value))
        return cls(tuple(terms))

    def required(self, path: str) -> str | None:
        """The value an equality term demands of ``path`` (the first, if several), else None."""
        return next((value for term_path, equal, value in self.terms if equal and term_path == path), None)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        # An absent field compares as the empty string, like the server's field label conversion.
        return all(((_field_value(obj, path) or "") == value) == equal for path, equal, value in self.terms)
