"""kopf's start-up gate with many objects: waiters woken when the set's state changes, not on every toggle
(mlworkload/kopf_startup.py)."""

import asyncio

from kopf._cogs.aiokits import aiotoggles

from mlworkload.kopf_startup import wake_only_on_change


class CountingCondition(asyncio.Condition):
    """The set's condition, counting how often waiters are woken."""

    def __init__(self) -> None:
        super().__init__()
        self.wake_ups = 0

    def notify_all(self) -> None:
        self.wake_ups += 1
        super().notify_all()


async def gate(objects: int) -> tuple[int, int]:
    """kopf's start-up with `objects` listed: each worker drops its toggle and waits for all. Returns the
    wake-ups and how many workers passed the gate."""
    indexed = aiotoggles.ToggleSet(all)
    condition = CountingCondition()
    indexed._condition = condition
    toggles = [await indexed.make_toggle(name=f"object {n}") for n in range(objects)]
    passed = 0

    async def worker(toggle: aiotoggles.Toggle) -> None:
        nonlocal passed
        await indexed.drop_toggle(toggle)
        await indexed.wait_for(True)
        passed += 1

    await asyncio.gather(*(worker(toggle) for toggle in toggles))
    return condition.wake_ups, passed


def test_the_gate_opens_once_for_everyone_with_one_wake_up() -> None:
    wake_only_on_change()
    wake_ups, passed = asyncio.run(gate(500))
    assert passed == 500
    # One when the first toggle turns the empty set off (nobody waits yet), one when the last goes. kopf
    # itself: one per toggle made or dropped (1,000), each waking every worker already waiting.
    assert wake_ups == 2


def test_waiters_are_woken_exactly_when_the_set_changes_state() -> None:
    wake_only_on_change()

    async def scenario() -> list[tuple[bool, int]]:
        paused = aiotoggles.ToggleSet(any)  # as kopf's operator_paused: on while any toggle is on
        condition = CountingCondition()
        paused._condition = condition
        states = []
        first = await paused.make_toggle(True, name="peering a")  # off -> on
        states.append((paused.is_on(), condition.wake_ups))
        second = await paused.make_toggle(True, name="peering b")  # still on
        states.append((paused.is_on(), condition.wake_ups))
        await paused.drop_toggle(first)  # still on
        states.append((paused.is_on(), condition.wake_ups))
        await paused.drop_toggles([second])  # on -> off
        states.append((paused.is_on(), condition.wake_ups))
        return states

    assert asyncio.run(scenario()) == [(True, 1), (True, 1), (True, 1), (False, 2)]
