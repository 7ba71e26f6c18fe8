"""The PATCH flavours of the API server: JSON merge patch, strategic merge patch, and JSON patch.

Strategic merge patch is emulated with a fixed table of merge keys for the built-in lists that matter
(containers, env, volumes, ownerReferences, conditions ...) and set semantics for ``finalizers``, plus the
``$patch: delete`` and ``$deleteFromPrimitiveList/<field>`` directives. The real server reads merge keys
from the Go types of every kind; any list not in the table is replaced wholesale, as in a merge patch.
Custom resources reject strategic merge patches with 415, exactly like the real server.
"""

from __future__ import annotations

import copy
from typing import Any, Final

import jsonpatch

MERGE_KEYS: Final[dict[str, str]] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
}
PRIMITIVE_SETS: Final[frozenset[str]] = frozenset({"finalizers"})
_DELETE_FROM_PRIMITIVE_LIST: Final = "$deleteFromPrimitiveList/"


class PatchError(ValueError):
    """A patch that cannot be applied: the API server answers 422 Invalid."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: dicts merge recursively, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """A merge patch that merges the known keyed lists by key and ``finalizers`` as a set."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM_PRIMITIVE_LIST):
            field = key.removeprefix(_DELETE_FROM_PRIMITIVE_LIST)
            result[field] = [item for item in result.get(field) or [] if item not in value]
        elif key.startswith("$"):
            continue  # $setElementOrder/..., $retainKeys, $patch on maps: ordering hints, not data
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS:
            result[key] = _merge_keyed_list(result.get(key) or [], value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in PRIMITIVE_SETS:
            existing = list(result.get(key) or [])
            result[key] = existing + [item for item in value if item not in existing]
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_keyed_list(existing: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    result = list(existing)
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            result.append(copy.deepcopy(item))
            continue
        index = next(
            (i for i, old in enumerate(result) if isinstance(old, dict) and old.get(merge_key) == item[merge_key]), None
        )
        if item.get("$patch") == "delete":
            result = [old for i, old in enumerate(result) if i != index]
        elif index is None:
            result.append(copy.deepcopy(item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (via the ``jsonpatch`` library that kopf already depends on)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    try:
        return jsonpatch.apply_patch(target, operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, TypeError) as error:
        raise PatchError(f"the JSON patch could not be applied: {error}") from error
