"""The idle decision (controller/idle.py): observation + previous record + now -> the next record, suspension."""

import datetime

import pytest

from mlworkload.api.workload import IdleStatus
from mlworkload.controller.idle import decide, is_idle, seconds_until

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)
READY = [{"type": "HeadPodReady", "status": "True"}, {"type": "RayClusterProvisioned", "status": "True"}]


def cluster(desired: int, ready: int, **status: object) -> dict[str, object]:
    return {"status": {"state": "ready", "conditions": READY, "desiredWorkerReplicas": desired,
                       "readyWorkerReplicas": ready, **status}}  # fmt: skip


def at(seconds: float) -> datetime.datetime:
    return NOW + datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("ray", "floor", "idle"),
    [
        (cluster(0, 0), 0, True),
        (cluster(1, 1), 1, True),  # at the floor
        (cluster(2, 1), 1, False),  # the autoscaler wants a worker more: work is pending
        (cluster(1, 2), 1, False),  # a worker above the floor still runs
        (None, 0, False),  # no RayCluster yet
        ({"status": {"state": "ready", "conditions": READY}}, 0, False),  # no worker counts: nothing known
        (cluster(0, 0, conditions=[{"type": "HeadPodReady", "status": "False"}], state=""), 0, False),
        (cluster(0, 0, conditions=[{"type": "RayClusterSuspended", "status": "True"}], state="suspended"), 0, False),
    ],
)
def test_idle_is_ready_with_no_worker_above_the_floor(ray: dict[str, object] | None, floor: int, idle: bool) -> None:
    assert is_idle(ray, floor) is idle


def test_the_window_opens_runs_without_writes_and_suspends_at_its_deadline() -> None:
    opened = decide(None, window=600, idle=True, generation=3, now=NOW)
    assert opened.record == IdleStatus(since="2026-11-23T12:00:00Z", deadline="2026-11-23T12:10:00Z")
    assert not opened.suspend
    running = decide(opened.record, window=600, idle=True, generation=3, now=at(599))
    assert running.record == opened.record  # the same record: nothing to write while the window runs
    assert not running.suspend
    due = decide(running.record, window=600, idle=True, generation=3, now=at(600))
    assert (due.suspend, due.newly_suspended) == (True, True)
    assert due.record is not None
    assert (due.record.suspended_at, due.record.suspended_generation) == ("2026-11-23T12:10:00Z", 3)
    kept = decide(due.record, window=600, idle=False, generation=3, now=at(900))  # KubeRay suspended it
    assert (kept.record, kept.suspend, kept.newly_suspended) == (due.record, True, False)


def test_any_activity_ends_the_window_and_the_next_idle_observation_opens_a_new_one() -> None:
    opened = decide(None, window=600, idle=True, generation=1, now=NOW)
    busy = decide(opened.record, window=600, idle=False, generation=1, now=at(300))
    assert (busy.record, busy.suspend) == (None, False)
    again = decide(busy.record, window=600, idle=True, generation=1, now=at(400))
    assert again.record is not None
    assert again.record.since == "2026-11-23T12:06:40Z"


def test_a_changed_limit_moves_the_deadline_of_the_running_window() -> None:
    opened = decide(None, window=600, idle=True, generation=1, now=NOW)
    shorter = decide(opened.record, window=120, idle=True, generation=1, now=at(130))
    assert shorter.suspend
    assert decide(opened.record, window=None, idle=True, generation=1, now=at(700)).record is None  # no limit now


def test_a_spec_change_resumes_an_idle_suspension() -> None:
    suspended = decide(None, window=60, idle=True, generation=5, now=NOW)
    suspended = decide(suspended.record, window=60, idle=True, generation=5, now=at(60))
    assert suspended.suspend
    resumed = decide(suspended.record, window=60, idle=False, generation=6, now=at(120))
    assert (resumed.record, resumed.suspend) == (None, False)
    # Still idle right after the resume (KubeRay has not moved yet): a new window, not at once a new suspension.
    fresh = decide(suspended.record, window=60, idle=True, generation=6, now=at(120))
    assert not fresh.suspend
    assert fresh.record is not None
    assert fresh.record.since == "2026-11-23T12:02:00Z"


def test_a_restart_resumes_the_window_from_status() -> None:
    record = IdleStatus(since="2026-11-23T11:55:00Z", deadline="2026-11-23T12:05:00Z")
    assert decide(record, window=600, idle=True, generation=1, now=at(299)).record == record
    assert decide(record, window=600, idle=True, generation=1, now=at(300)).suspend


def test_seconds_until_the_deadline() -> None:
    assert seconds_until("2026-11-23T12:10:00Z", NOW) == 600
    assert seconds_until("2026-11-23T11:50:00Z", NOW) == 0
    assert seconds_until(None, NOW) is None
