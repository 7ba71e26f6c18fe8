"""A problem with user input: where it is (a field path) and what to do about it.

Every refusal the operator gives, from schema errors to policy checks, is a list of these, so the
CLI, the webhook and status conditions all print the same one line per problem.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str
    rule: str = ""  # which check found it (metrics label); not part of the message

    def __str__(self) -> str:
        line = f"{self.path}: {self.message}" if self.path else self.message
        return printable(line)


def printable(text: str) -> str:
    """One terminal-safe line: user-supplied names may carry newlines or escape sequences."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


class Refused(Exception):
    """Input that cannot be accepted; carries every problem found, not just the first."""

    def __init__(self, problems: Sequence[Problem], subject: str = "") -> None:
        self.problems = list(problems)
        self.subject = subject
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        prefix = f"{self.subject}: " if self.subject else ""
        return [f"{prefix}{problem}" for problem in self.problems]


# Field names and label keys; anything else (a colon, a space, an empty key) would blur the path.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][\w./-]*")


def field_path(location: Iterable[str | int]) -> str:
    """('spec', 'workerGroups', 0, 'name') -> 'spec.workerGroups[0].name'; an odd key is quoted: spec.'a: b'."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            name = part if _PLAIN_KEY.fullmatch(part) else repr(part)
            path += f".{name}" if path else name
    return path


def problems_from_validation(error: ValidationError, prefix: str = "") -> list[Problem]:
    """pydantic's errors as field-path problems; a multi-line message becomes one problem a line."""
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        location = [part for part in item["loc"] if not _is_union_tag(part)]
        path = field_path([prefix, *location] if prefix else location)
        message = _message(item)
        problems.extend(Problem(path, line) for line in message.splitlines() if line.strip())
    return problems


def _is_union_tag(part: str | int) -> bool:
    # pydantic names the member of a union or the validator function in the location.
    return isinstance(part, str) and (part.startswith("function-") or part in {"str", "int", "float"})


def _message(item: object) -> str:
    assert isinstance(item, dict)
    kind: str = item["type"]
    message: str = item["msg"]
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    elif kind == "extra_forbidden":
        message = "unknown field; remove it (check the spelling against `kubectl explain`)"
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "string_pattern_mismatch":
        pattern = item.get("ctx", {}).get("pattern", "")
        message = f"{item.get('input')!r} does not match {pattern}"
    elif kind in {"enum", "literal_error"}:
        allowed = message.split("Input should be ")[-1]
        message = f"{item.get('input')!r} is not one of the allowed values ({allowed})"
    return message
