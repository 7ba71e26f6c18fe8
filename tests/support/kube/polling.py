"""Polling with a deadline: the only way tests wait for the operator, the watch streams or the GC.

Tests never sleep a fixed time to "let things happen"; they poll a condition until it holds or the
deadline passes, so they are as fast as the system and fail with a clear message when it is stuck.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = "") -> T:
    """Return the first truthy result of ``condition()``; raise AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition!r} (last: {result!r})")
        time.sleep(interval)  # the polling interval, not a synchronisation point
