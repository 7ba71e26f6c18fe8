"""The change log behind WATCH: one global, ordered history of writes plus live subscriptions.

Every committed write is one ``Change`` with the cluster-wide resourceVersion it produced. A watch that
names a resourceVersion replays the retained changes after it and then follows live ones; the history is
bounded, and a resourceVersion older than what was dropped is answered with 410 Gone, as etcd compaction
makes a real server do. Label/field-selector watches see an object entering the selection as ADDED and
leaving it as DELETED, like the real watch cache.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
from dataclasses import dataclass, field

from tests.support.kube.resources import Obj, ResourceSpec
from tests.support.kube.selectors import FieldSelector, LabelSelector


@dataclass(frozen=True)
class Change:
    """One committed write; ``old`` is the previous state (None for ADDED)."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    spec: ResourceSpec
    obj: Obj
    old: Obj | None = None


@dataclass(frozen=True)
class WatchFilter:
    """Which objects one watch stream covers."""

    key: tuple[str, str]
    namespace: str | None = None
    labels: LabelSelector = field(default_factory=LabelSelector)
    fields: FieldSelector = field(default_factory=FieldSelector)

    def matches(self, obj: Obj) -> bool:
        namespace = obj.get("metadata", {}).get("namespace")
        in_scope = self.namespace is None or namespace == self.namespace
        return in_scope and self.labels.matches(obj) and self.fields.matches(obj)

    def event_type(self, change: Change) -> str | None:
        """The event this watcher sees for a change, or None when the change is outside its selection."""
        if change.spec.key != self.key:
            return None
        if change.type == "DELETED":
            return "DELETED" if self.matches(change.obj) else None
        now = self.matches(change.obj)
        before = change.old is not None and self.matches(change.old)
        if now and before:
            return "MODIFIED"
        if now:
            return "ADDED"
        return "DELETED" if before else None


class GoneError(Exception):
    """The requested resourceVersion is older than the retained history (410 Gone / Expired)."""


@dataclass(eq=False)
class Subscription:
    """A live watch: changes are queued for its stream; None tells the stream the server is stopping."""

    filter: WatchFilter
    queue: asyncio.Queue[Change | None]


class _Window:
    """The retained changes of one kind, oldest first, in resourceVersion order: appends and drops are O(1),
    and finding where a resourceVersion falls is a bisection."""

    def __init__(self) -> None:
        self._changes: list[Change] = []
        self._start = 0  # changes before this index were dropped; compacted once they are half the list

    def append(self, change: Change) -> None:
        self._changes.append(change)

    def drop_oldest(self) -> Change:
        dropped = self._changes[self._start]
        self._start += 1
        if self._start * 2 >= len(self._changes):
            del self._changes[: self._start]
            self._start = 0
        return dropped

    def after(self, rv: int) -> list[Change]:
        index = bisect.bisect_right(self._changes, rv, lo=self._start, key=lambda change: change.rv)
        return self._changes[index:]


class ChangeLog:
    """Bounded history of changes plus the set of live subscriptions (used only on the server loop).

    Indexed by kind, so a write costs the watches of its kind (not every open watch) and a watch that
    resumes from a resourceVersion reads only its kind's changes since then; the history bound and
    its 410 floor stay global, as before."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._order: collections.deque[tuple[str, str]] = collections.deque()  # the kind of each retained change
        self._windows: dict[tuple[str, str], _Window] = {}
        self._subscriptions: dict[tuple[str, str], dict[Subscription, None]] = {}  # ordered sets, per kind
        self.floor = 0  # the newest resourceVersion whose change was dropped from the history

    def record(self, change: Change) -> None:
        key = change.spec.key
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        window.append(change)
        self._order.append(key)
        while len(self._order) > self._limit:
            self.floor = self._windows[self._order.popleft()].drop_oldest().rv
        for subscription in list(self._subscriptions.get(key, ())):
            if subscription.filter.event_type(change) is not None:
                subscription.queue.put_nowait(change)

    def since(self, rv: int, key: tuple[str, str] | None = None) -> list[Change]:
        """The retained changes after ``rv`` (of one kind, given its key), oldest first; GoneError when
        changes after ``rv`` were already dropped."""
        if rv < self.floor:
            raise GoneError(f"too old resource version: {rv} ({self.floor + 1})")
        if key is not None:
            window = self._windows.get(key)
            return window.after(rv) if window is not None else []
        return sorted((change for window in self._windows.values() for change in window.after(rv)), key=_rv)

    def subscribe(self, watch_filter: WatchFilter) -> Subscription:
        subscription = Subscription(watch_filter, asyncio.Queue())
        self._subscriptions.setdefault(watch_filter.key, {})[subscription] = None
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._subscriptions.get(subscription.filter.key, {})
        subscriptions.pop(subscription, None)
        if not subscriptions:
            self._subscriptions.pop(subscription.filter.key, None)

    def close(self) -> None:
        """End every live watch stream (used at shutdown so connections do not hold the server open)."""
        for subscription in self._all():
            subscription.queue.put_nowait(None)

    def watched(self) -> list[tuple[str, str, str | None]]:
        """(group, plural, namespace or None for all) of every open watch."""
        return sorted(((*s.filter.key, s.filter.namespace) for s in self._all()), key=str)

    def _all(self) -> list[Subscription]:
        return [subscription for subscriptions in self._subscriptions.values() for subscription in subscriptions]


def _rv(change: Change) -> int:
    return change.rv
