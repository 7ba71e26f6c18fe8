"""Bounded exponential backoff with jitter, kept per key (a pool, a binding, a cluster) in memory.

Memory is enough for most keys: after a restart the first attempt simply comes sooner, which is the
safe side. A pool's failed creation is the exception: its attempts and next attempt time are written
to the workload's status and handed back with `restore`, so a restart neither resets the count shown
to users nor hammers GKE during a stockout.

Jitter (a factor drawn uniformly from [1 - jitter, 1 + jitter]) keeps many workloads, or many
operators sharing a GKE cluster, from retrying in lock-step after one failure.
"""

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_seconds: float
    max_seconds: float
    clock: Callable[[], float]
    jitter: float = 0.0  # 0.2: each delay is 80 % to 120 % of the exponential one
    rng: random.Random = field(default_factory=random.Random)
    _attempts: dict[Hashable, int] = field(default_factory=dict)
    _not_before: dict[Hashable, float] = field(default_factory=dict)

    def failed(self, key: Hashable) -> float:
        """Record a failure; returns the delay before the next attempt (base, 2x base, ... up to max, jittered)."""
        attempts = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempts
        delay = min(self.base_seconds * 2.0 ** min(attempts - 1, 64), self.max_seconds)
        if self.jitter:
            delay *= self.rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        self._not_before[key] = self.clock() + delay
        return delay

    def succeeded(self, key: Hashable) -> None:
        self._attempts.pop(key, None)
        self._not_before.pop(key, None)

    def due(self, key: Hashable) -> bool:
        return self.clock() >= self._not_before.get(key, 0.0)

    def attempts(self, key: Hashable) -> int:
        return self._attempts.get(key, 0)

    def next_attempt(self, key: Hashable) -> float | None:
        """When the next attempt is due, on `clock`; None when nothing failed."""
        return self._not_before.get(key)

    def restore(self, key: Hashable, attempts: int, delay: float) -> None:
        """Take back a schedule recorded before a restart: `attempts` failures, the next one `delay` from now.

        The record may come from a status anyone can write: the delay is bounded to [0, max] so a forged
        far-future time cannot stop retries, and the count only feeds the (capped) exponent.
        """
        if key in self._attempts or attempts <= 0:
            return
        self._attempts[key] = attempts
        self._not_before[key] = self.clock() + min(max(delay, 0.0), self.max_seconds)
