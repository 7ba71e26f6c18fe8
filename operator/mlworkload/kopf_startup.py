"""A linear start-up for kopf with many indexed objects.

kopf holds every handler back until every index has its initial listing: each object listed gets a toggle
in one `ToggleSet`, its worker drops the toggle once indexed and then waits for the whole set to be on.
kopf 1.45 wakes every waiting worker on every toggle added or dropped (`notify_all` in
`kopf/_cogs/aiokits/aiotoggles.py`), and each wakes to re-check the set: O(N^2) wake-ups for N objects.
With the child caches (controller/observe.py) a restart of 1,000 workloads indexes about 7,000 objects,
and the wake-ups took 124 s of CPU before the first handler ran (bench/bench_scale.py; yappi: most of it
in `Condition.wait` and `ToggleSet.is_on`).

A waiter of a set waits for the set's state (`ToggleSet.wait_for`), and a toggle's own waiters are woken
by the toggle's own `turn_to`, which this leaves alone. So adding or dropping a toggle needs to wake the
waiters only when it changes the set's state: for `all` during start-up, once, when the last toggle goes.
"""

import logging
from collections.abc import Iterable

from kopf._cogs.aiokits import aiotoggles

logger = logging.getLogger(__name__)


async def _make_toggle(
    self: aiotoggles.ToggleSet, __val: bool = False, *, name: str | None = None
) -> aiotoggles.Toggle:
    toggle = aiotoggles.Toggle(__val, name=name, condition=self._condition)
    async with self._condition:
        before = self.is_on()
        self._toggles.add(toggle)
        if self.is_on() != before:
            self._condition.notify_all()
    return toggle


async def _drop_toggles(self: aiotoggles.ToggleSet, toggles: Iterable[aiotoggles.Toggle]) -> None:
    async with self._condition:
        before = self.is_on()
        self._toggles.difference_update(toggles)
        if self.is_on() != before:
            self._condition.notify_all()


async def _drop_toggle(self: aiotoggles.ToggleSet, toggle: aiotoggles.Toggle) -> None:
    await _drop_toggles(self, [toggle])


def wake_only_on_change() -> None:
    """Install the change-only wake-ups on kopf's ToggleSet (idempotent; kopf's own methods otherwise)."""
    toggle_set = aiotoggles.ToggleSet
    if not all(hasattr(toggle_set, name) for name in ("make_toggle", "drop_toggle", "drop_toggles")):
        logger.warning("kopf's ToggleSet has changed: start-up wake-ups left as kopf makes them")
        return
    toggle_set.make_toggle = _make_toggle  # type: ignore[method-assign]
    toggle_set.drop_toggle = _drop_toggle  # type: ignore[method-assign]
    toggle_set.drop_toggles = _drop_toggles  # type: ignore[method-assign]
