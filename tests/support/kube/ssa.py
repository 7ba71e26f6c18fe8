"""Server-side apply, simplified to what an operator relies on: field ownership per manager.

Each apply records the set of leaf field paths the manager's configuration contains (a leaf is a scalar,
a list, or an empty map: lists are atomic). On the next apply by the same manager, fields it applied
before but omits now are removed unless another applier also owns them; fields set by plain writes or by
the server are never touched. Ownership is stored where a real server keeps it, in
``metadata.managedFields`` (``operation: Apply``, ``fieldsType: FieldsV1``), one entry per manager and
subresource.

Simplified: only appliers own fields (no ``operation: Update`` entries, so a PUT/PATCH does not take
ownership away from an applier); lists are always atomic (the real server merges ``listType: map/set``
lists per element); a conflict is raised only when another applier owns the very same path with a
different value.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

FieldPath = tuple[str, ...]
Owners = dict[tuple[str, str], set[FieldPath]]  # (manager, subresource) -> owned paths

# Identity and server-owned metadata: present in configurations, never owned by an applier.
_NOT_OWNED: Final = frozenset(
    {("apiVersion",), ("kind",), ("metadata",), ("status",)}
    | {
        ("metadata", name)
        for name in (
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generateName",
            "selfLink",
        )
    }
)
_MISSING: Final = object()


class ApplyConflict(Exception):
    """Another applier owns a field with a different value and ``force`` was not given (409 Conflict)."""

    def __init__(self, conflicts: Iterable[tuple[str, FieldPath]]) -> None:
        listed = "; ".join(f'conflict with "{manager}": .{".".join(path)}' for manager, path in sorted(conflicts))
        super().__init__(f"Apply failed with conflicts: {listed}")


def leaf_paths(value: Any, prefix: FieldPath = ()) -> set[FieldPath]:
    """The owned leaves of a configuration: scalars, lists (atomic) and empty maps."""
    if isinstance(value, Mapping) and value:
        return {path for key, sub in value.items() for path in leaf_paths(sub, (*prefix, str(key)))}
    return set() if prefix in _NOT_OWNED else {prefix}


def get_path(obj: Any, path: FieldPath) -> Any:
    for part in path:
        if not isinstance(obj, Mapping) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def remove_path(obj: dict[str, Any], path: FieldPath) -> None:
    """Delete a field in place and prune the maps this leaves empty (top-level keys stay)."""
    parents: list[dict[str, Any]] = [obj]
    for part in path[:-1]:
        child = parents[-1].get(part)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(parents) - 1, 0, -1):
        if parents[depth]:
            break
        parents[depth - 1].pop(path[depth - 1], None)


def apply_merge(target: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay a configuration: maps merge, scalars and lists replace, ``null`` removes."""
    result = dict(target)
    for key, value in config.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = apply_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def encode_fields(paths: Iterable[FieldPath]) -> dict[str, Any]:
    """FieldsV1 as the real server writes it: nested ``{"f:spec": {"f:replicas": {}}}``."""
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return tree


def decode_fields(tree: Mapping[str, Any], prefix: FieldPath = ()) -> set[FieldPath]:
    paths: set[FieldPath] = set()
    for key, sub in tree.items():
        if not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        children = decode_fields(sub, path) if isinstance(sub, Mapping) else set()
        paths |= children or {path}
    return paths


def read_owners(obj: Mapping[str, Any] | None) -> Owners:
    entries = ((obj or {}).get("metadata") or {}).get("managedFields") or []
    return {
        (entry["manager"], entry.get("subresource", "")): decode_fields(entry.get("fieldsV1") or {})
        for entry in entries
        if entry.get("operation") == "Apply"
    }


def write_owners(previous: Mapping[str, Any] | None, owners: Owners, api_version: str) -> list[dict[str, Any]]:
    """managedFields entries; an entry keeps its old timestamp when its field set did not change."""
    old_entries = {
        (entry["manager"], entry.get("subresource", "")): entry
        for entry in ((previous or {}).get("metadata") or {}).get("managedFields") or []
    }
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries = []
    for (manager, subresource), paths in sorted(owners.items()):
        fields = encode_fields(paths)
        old = old_entries.get((manager, subresource))
        if old is not None and old.get("fieldsV1") == fields:
            entries.append(old)
            continue
        entry = {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        }
        entries.append(entry | ({"subresource": subresource} if subresource else {}))
    return entries


@dataclass
class ApplyResult:
    obj: dict[str, Any]
    owners: Owners = field(default_factory=dict)


def server_side_apply(
    current: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    *,
    manager: str,
    subresource: str,
    force: bool,
) -> ApplyResult:
    """Merge ``config`` into ``current`` the way an apply does, and compute the new field owners."""
    owners = read_owners(current)
    new_paths = leaf_paths(config)
    conflicts = {
        (other, path)
        for other, paths in owners.items()
        if other != (manager, subresource)
        for path in paths & new_paths
        if get_path(current, path) != get_path(config, path)
    }
    if conflicts and not force:
        raise ApplyConflict((other[0], path) for other, path in conflicts)
    for other, path in conflicts:
        owners[other].discard(path)

    result = copy.deepcopy(dict(current or {}))
    co_owned = set().union(*(paths for key, paths in owners.items() if key != (manager, subresource)))
    for stale in owners.get((manager, subresource), set()) - new_paths - co_owned:
        remove_path(result, stale)
    owners[manager, subresource] = new_paths
    owners = {key: paths for key, paths in owners.items() if paths}
    return ApplyResult(apply_merge(result, config), owners)
