"""Bounded exponential backoff, kept per key (a pool, a binding, a cluster) in memory.

Memory is enough: after a restart the first attempt simply comes sooner, which is the safe side.
"""

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base_seconds: float
    max_seconds: float
    clock: Callable[[], float]
    _attempts: dict[Hashable, int] = field(default_factory=dict)
    _not_before: dict[Hashable, float] = field(default_factory=dict)

    def failed(self, key: Hashable) -> float:
        """Record a failure; returns the delay before the next attempt (base, 2x base, ... up to max)."""
        attempts = self._attempts.get(key, 0) + 1
        self._attempts[key] = attempts
        delay = min(self.base_seconds * 2.0 ** (attempts - 1), self.max_seconds)
        self._not_before[key] = self.clock() + delay
        return delay

    def succeeded(self, key: Hashable) -> None:
        self._attempts.pop(key, None)
        self._not_before.pop(key, None)

    def due(self, key: Hashable) -> bool:
        return self.clock() >= self._not_before.get(key, 0.0)

    def attempts(self, key: Hashable) -> int:
        return self._attempts.get(key, 0)
