"""Clocks for tests: a fixed wall-clock instant, and a clock tests move by hand (as Kueue injects one), where
time passes only when a test says so."""

import datetime

# The wall clock of the reconcile tests (condition transition times, scale-up events' ages).
NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)


class ManualClock:
    def __init__(self, start: float = 5000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
