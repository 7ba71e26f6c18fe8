"""When kopf's copy of an MLWorkload is as good as reading it again: a steady reconcile reads nothing.

Reconcile decides GCP side effects from the workload's status (what the operator recorded it added), so it
must never act on a copy older than this process's own last write or release. Reading the object under the
workload's lock guarantees that, at one GET per reconcile. This process knows exactly which changes it made
itself, so it can tell when kopf's copy (the body a timer or change handler was given) already includes them:

- a copy whose resourceVersion is the one this process's last status write returned, or the one it last
  read and reconciled from without writing, includes everything this process did: used as is;
- any other version, after this process wrote: the copy may predate that write (the watch lags), so read;
- after this process released the workload's GCP resources (deletion) or a reconcile failed halfway: read,
  always. A reconcile that waited on the lock with a copy from before the deletion would otherwise grant
  again what the release just revoked (chaos seed 549898 left a pool and a bucket member so);
- never seen by this process (the first pass after a restart): kopf's copy comes from a listing or event
  newer than anything this process did, so it is used as is.

Changes made by others (a user's edit, a deletion) reach kopf as events and trigger a reconcile of their own;
a copy that misses one is as stale as a read an instant earlier would have been. resourceVersions are only
compared for equality, as the API conventions allow.
"""

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final

# Workloads released recently, by uid: enough to outlast any reconcile that waited behind a deletion.
RELEASED_REMEMBERED: Final = 10_000


def _identity(body: Mapping[str, Any]) -> tuple[str | None, str | None]:
    meta = body.get("metadata") or {}
    return meta.get("uid"), meta.get("resourceVersion")


class WorkloadVersions:
    """By workload uid: the resourceVersion that includes this process's last change to it, or None when the
    next reconcile must read (its last one stopped halfway); absent when this process never reconciled it."""

    def __init__(self) -> None:
        self._current: dict[str, str | None] = {}
        self._released: OrderedDict[str, None] = OrderedDict()

    def usable(self, body: Mapping[str, Any]) -> bool:
        """Whether `body` (kopf's copy) may be reconciled without reading the object first."""
        uid, version = _identity(body)
        if uid is None or version is None or uid in self._released:
            return False
        return uid not in self._current or self._current[uid] == version

    def reconciled(self, uid: str, version: str | None) -> None:
        """A reconcile finished: `version` includes everything it did (its status write's, or the one it read);
        None when the write's answer named none, and the next reconcile reads."""
        if uid not in self._released:
            self._current[uid] = version

    def unsure(self, uid: str) -> None:
        """A reconcile stopped halfway (its writes may or may not have landed): the next one reads."""
        self.reconciled(uid, None)

    def released(self, uid: str) -> None:
        """The workload's GCP resources were (or are being) released: every later reconcile reads."""
        self._current.pop(uid, None)
        self._released[uid] = None
        self._released.move_to_end(uid)
        while len(self._released) > RELEASED_REMEMBERED:
            self._released.popitem(last=False)

    def __len__(self) -> int:
        return len(self._current)
