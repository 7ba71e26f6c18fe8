"""Where kopf keeps the last handled state of a workload: in memory, as a digest, not on the object.

kopf compares each event's "essence" (spec, labels, annotations) with the last handled one to tell a
create from an update from nothing new. Its default stores that essence as an annotation on the object,
which costs one PATCH per workload (and per spec change), duplicated by its consistency timeout under load.
The reconcile is level-triggered: every entry point runs the same reconcile of the whole object, so the
operator needs only to know whether the essence changed since this process last handled it. A digest per
workload uid in memory answers that; after a restart nothing is remembered, so every workload is handled
once as a creation, which runs the same reconcile a resume would.
"""

import hashlib
import json
from collections.abc import Iterable
from typing import Any, cast

import kopf

from mlworkload.constants import GROUP


def _digest(essence: Any) -> str:
    """The essence without the operator's own annotations (kopf's progress, the watchdog's recheck stamp)."""
    trimmed = dict(essence)
    annotations = dict((trimmed.get("metadata") or {}).get("annotations") or {})
    annotations = {key: value for key, value in annotations.items() if not key.startswith(f"{GROUP}/")}
    trimmed["metadata"] = {**(trimmed.get("metadata") or {}), "annotations": annotations}
    return hashlib.sha256(json.dumps(trimmed, sort_keys=True, default=str).encode()).hexdigest()[:16]


# What kopf's essence leaves out at the top level (its build deletes these stanzas).
_NOT_ESSENCE = frozenset({"apiVersion", "kind", "metadata", "status"})


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """Last handled essences as digests by uid. `fetch` hands kopf either the object's own essence (nothing
    changed since it was handled), a stand-in that differs from it (something changed), or None (never
    handled in this process)."""

    def __init__(self) -> None:
        super().__init__()
        self._handled: dict[str, str] = {}

    def build(self, *, body: kopf.Body, extra_fields: Iterable[kopf.FieldSpec] | None = None) -> kopf.BodyEssence:
        """kopf's essence (all but status and system fields; labels and annotations less kopf's own), without
        its deep copy of the whole body, status and all, on every event (a tenth of the operator's CPU at scale).
        kopf builds the metadata part; the spec is shared with the body: bodies are replaced whole on each event,
        never changed in place, and essences are only compared and digested."""
        fields = list(extra_fields or [])
        if fields or self.ignored_fields:  # fields picked from anywhere (no handler of ours asks): kopf's way
            return super().build(body=body, extra_fields=fields)
        metadata = body.get("metadata", {})
        picked = {key: metadata[key] for key in ("labels", "annotations") if key in metadata}
        essence = cast(dict[str, Any], super().build(body=kopf.Body(cast(kopf.RawBody, {"metadata": picked}))))
        essence.update((key, value) for key, value in body.items() if key not in _NOT_ESSENCE)
        return cast(kopf.BodyEssence, essence)

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        handled = self._handled.get(str(body.get("metadata", {}).get("uid")))
        if handled is None:
            return None
        current = self.build(body=body)
        if _digest(current) == handled:
            return current
        stand_in: dict[str, Any] = {"spec": {"handled-digest": handled}}  # only ever diffed, never read by handlers
        return cast(kopf.BodyEssence, stand_in)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self._handled[str(body.get("metadata", {}).get("uid"))] = _digest(essence)

    def forget(self, uid: str) -> None:
        self._handled.pop(uid, None)

    def __len__(self) -> int:
        return len(self._handled)


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """kopf's progress annotations, less one write: kopf marks the prefix of its annotations on each object
    it stores progress on (`<prefix>/kopf-managed`, so other kopf operators do not take them for changes), even
    when the progress is purged in the same patch because the handler finished at once. Nothing of ours is
    left on such an object to mark, so the marker is dropped from that patch; a handler that retries keeps
    its progress, and the marker with it."""

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        """The essence without kopf's progress annotations; kopf deep-copies all of it for that, a copy of the
        stanzas it edits is enough (the essence is a fresh copy of the object already, and is only compared)."""
        copied: dict[str, Any] = dict(essence)
        if isinstance(copied.get("metadata"), dict):
            copied["metadata"] = dict(copied["metadata"])
            if isinstance(copied["metadata"].get("annotations"), dict):
                copied["metadata"]["annotations"] = dict(copied["metadata"]["annotations"])
        cleared = cast(kopf.BodyEssence, copied)
        annotations = copied.get("metadata", {}).get("annotations", {})
        ours = {key for key in annotations if self.prefix and key.startswith(f"{self.prefix}/")}
        self.remove_annotations(cleared, ours)
        self.remove_empty_stanzas(cleared)
        return cleared

    def purge(self, *, key: kopf.HandlerId, body: kopf.Body, patch: kopf.Patch) -> None:
        super().purge(key=key, body=body, patch=patch)
        metadata = patch.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        marker, prefix = f"{self.prefix}/kopf-managed", f"{self.prefix}/"
        if marker not in annotations:
            return
        kept = [k for k, v in annotations.items() if k.startswith(prefix) and k != marker and v is not None]
        on_body = [
            k for k in body.get("metadata", {}).get("annotations") or {}
            if k.startswith(prefix) and k != marker and annotations.get(k, "") is not None
        ]  # fmt: skip
        if kept or on_body:
            return
        del annotations[marker]
        if not annotations:
            del metadata["annotations"]
        if not metadata:
            del patch["metadata"]
