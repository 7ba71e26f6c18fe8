"""The change log behind WATCH: one global, ordered history of writes plus live subscriptions.

Every committed write is one ``Change`` with the cluster-wide resourceVersion it produced. A watch that
names a resourceVersion replays the retained changes after it and then follows live ones; the history is
bounded, and a resourceVersion older than what was dropped is answered with 410 Gone, as etcd compaction
makes a real server do. Label/field-selector watches see an object entering the selection as ADDED and
leaving it as DELETED, like the real watch cache.
"""

from __future__ import annotations

import asyncio
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


class ChangeLog:
    """Bounded history of changes plus the set of live subscriptions (used only on the server loop)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._changes: collections.deque[Change] = collections.deque()
        self._subscriptions: set[Subscription] = set()
        self.floor = 0  # the newest resourceVersion whose change was dropped from the history

    def record(self, change: Change) -> None:
        self._changes.append(change)
        while len(self._changes) > self._limit:
            self.floor = self._changes.popleft().rv
        for subscription in list(self._subscriptions):
            if subscription.filter.event_type(change) is not None:
                subscription.queue.put_nowait(change)

    def since(self, rv: int) -> list[Change]:
        if rv < self.floor:
            raise GoneError(f"too old resource version: {rv} ({self.floor + 1})")
        return [change for change in self._changes if change.rv > rv]

    def subscribe(self, watch_filter: WatchFilter) -> Subscription:
        subscription = Subscription(watch_filter, asyncio.Queue())
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def close(self) -> None:
        """End every live watch stream (used at shutdown so connections do not hold the server open)."""
        for subscription in list(self._subscriptions):
            subscription.queue.put_nowait(None)

    def watched(self) -> list[tuple[str, str, str | None]]:
        """(group, plural, namespace or None for all) of every open watch."""
        return sorted(((*s.filter.key, s.filter.namespace) for s in self._subscriptions), key=str)
