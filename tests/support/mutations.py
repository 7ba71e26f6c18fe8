"""Mutations of API documents for the hostile-input suites (CLI and webhook): hostile values swapped in,
keys deleted, values buried in lists. Shared so that both paths are attacked the same way."""

import copy
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

# A refusal names a field: a path rooted at a document's top-level field, or a position in a file.
FIELD = re.compile(
    r"(?:^|[ (:])(?:spec|metadata|apiVersion|kind)(?:[.\[:]| |$)"  # spec.workerGroups[0].name: ...
    r"|(?:[A-Za-z][\w-]*|'[^']*'|\"[^\"]*\"): unknown field"  # 'a b': unknown field
    r"|^\S+:\d+(?::\d+)?: "  # file.yaml:3:5: ...
)

HOSTILE_VALUES: list[Any] = [
    None, True, "", "x", "1e999999999", "-4", "0", "-1Gi", "99999999999999999999999Pi", "0.000000001m",
    "\x1b[31mred\n", "a" * 300, 0, -1, 1, 2**31, -(2**63), 2**64, 10**40, -(10**40), 1.5, -0.0, 1e308, -1e308,
    [], {}, [[[[[]]]]], [None], [{"name": None}], {"a": {"b": [1, {"c": None}]}}, [1, "two", [3.0]],
]  # fmt: skip

Path_ = tuple[str | int, ...]


def paths(node: Any, prefix: Path_ = ()) -> Iterator[Path_]:
    """Every path into a document, the root's children and deeper (the root itself is never replaced)."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def parent_of(document: Any, path: Path_) -> Any:
    for part in path[:-1]:
        document = document[part]
    return document


def swap(document: Any, path: Path_, value: Any) -> None:
    parent_of(document, path)[path[-1]] = copy.deepcopy(value)


def delete(document: Any, path: Path_, _: Any) -> None:
    del parent_of(document, path)[path[-1]]


def nest(document: Any, path: Path_, depth: Any) -> None:
    parent = parent_of(document, path)
    for _ in range(depth % 8 + 1):
        parent[path[-1]] = [parent[path[-1]]]


DATA_MUTATIONS: dict[str, Callable[[Any, Path_, Any], None]] = {"swap": swap, "delete": delete, "nest": nest}


def mutate(document: Any, rng: random.Random, steps: int = 3) -> list[str]:
    """One to `steps` random mutations of `document`, in place; their names."""
    names = []
    for _ in range(rng.randint(1, steps)):
        candidates = list(paths(document))
        if not candidates:
            break
        path = rng.choice(candidates)
        name = rng.choice(sorted(DATA_MUTATIONS))
        value = rng.choice(HOSTILE_VALUES) if name != "nest" else rng.randint(0, 7)
        DATA_MUTATIONS[name](document, path, value)
        names.append(name)
    return names
