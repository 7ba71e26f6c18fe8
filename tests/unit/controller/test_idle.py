"""The idle decision (controller/idle.py): observation + previous record + now -> the next record, suspension."""

import datetime

import pytest

from mlworkload.api.workload import IdleStatus
from mlworkload.controller.idle import decide, describe, is_idle, runtime_limit, seconds_until
from tests.support.documents import permissive_policy, resolved, workload

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
    assert opened.record == IdleStatus(
        since="2026-11-23T12:00:00Z", deadline="2026-11-23T12:10:00Z", reason="IdleTimeout"
    )
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
    record = IdleStatus(since="2026-11-23T11:55:00Z", deadline="2026-11-23T12:05:00Z", reason="IdleTimeout")
    assert decide(record, window=600, idle=True, generation=1, now=at(299)).record == record
    assert decide(record, window=600, idle=True, generation=1, now=at(300)).suspend


# --- the policy's runtime limit (lifecycle.maxClusterRuntimeSeconds) ----------------------------------------------

CREATED = NOW - datetime.timedelta(hours=1)


def test_the_runtime_limit_counts_from_the_creation_and_suspends_at_its_deadline() -> None:
    # Busy (not idle), no idle window: the runtime deadline alone, written once and then the same record.
    running = decide(None, window=None, idle=False, generation=2, now=NOW, runtime=7200, created=CREATED)
    assert running.record == IdleStatus(deadline="2026-11-23T13:00:00Z", reason="RuntimeLimit")
    assert not running.suspend
    assert decide(running.record, window=None, idle=False, generation=2, now=at(3599), runtime=7200,
                  created=CREATED) == running  # fmt: skip
    due = decide(running.record, window=None, idle=False, generation=2, now=at(3600), runtime=7200, created=CREATED)
    assert (due.suspend, due.newly_suspended, due.reason) == (True, True, "RuntimeLimit")
    assert due.record is not None
    assert (due.record.suspended_at, due.record.suspended_generation) == ("2026-11-23T13:00:00Z", 2)
    assert "maxClusterRuntimeSeconds (from its creation" in describe(due.record)
    kept = decide(due.record, window=None, idle=False, generation=2, now=at(9000), runtime=7200, created=CREATED)
    assert (kept.record, kept.suspend, kept.newly_suspended) == (due.record, True, False)


def test_a_resume_restarts_the_runtime_count() -> None:
    due = decide(None, window=None, idle=False, generation=2, now=at(3600), runtime=7200, created=CREATED)
    assert due.suspend
    resumed = decide(due.record, window=None, idle=False, generation=3, now=at(4000), runtime=7200, created=CREATED)
    assert not resumed.suspend
    assert resumed.record == IdleStatus(
        deadline="2026-11-23T15:06:40Z", reason="RuntimeLimit", resumed_at="2026-11-23T13:06:40Z"
    )
    # The resume is kept (the count goes on from it, not from the creation), and suspends again 2 h after it.
    again = decide(resumed.record, window=None, idle=False, generation=3, now=at(11200), runtime=7200,
                   created=CREATED)  # fmt: skip
    assert (again.suspend, again.newly_suspended) == (True, True)
    assert again.record is not None
    assert "from its last resume at 2026-11-23T13:06:40Z" in describe(again.record)
    # An idle suspension resumed: the runtime counts from that resume too.
    idle_due = decide(IdleStatus(since="2026-11-23T11:50:00Z", deadline="2026-11-23T12:00:00Z", reason="IdleTimeout"),
                      window=600, idle=True, generation=2, now=NOW, runtime=86400, created=CREATED)  # fmt: skip
    assert (idle_due.suspend, idle_due.reason) == (True, "IdleTimeout")
    back = decide(idle_due.record, window=600, idle=False, generation=3, now=at(60), runtime=86400, created=CREATED)
    assert back.record is not None
    assert (back.record.reason, back.record.resumed_at, back.record.deadline) == (
        "RuntimeLimit", "2026-11-23T12:01:00Z", "2026-11-24T12:01:00Z")  # fmt: skip


def test_the_earlier_of_the_idle_and_runtime_deadlines_is_recorded() -> None:
    # Idle window first: the idle deadline, reason IdleTimeout.
    idle_first = decide(None, window=600, idle=True, generation=1, now=NOW, runtime=7200, created=CREATED)
    assert idle_first.record == IdleStatus(
        since="2026-11-23T12:00:00Z", deadline="2026-11-23T12:10:00Z", reason="IdleTimeout"
    )
    # The runtime limit first: its deadline, while the idle window keeps its start.
    runtime_first = decide(None, window=600, idle=True, generation=1, now=at(3300), runtime=7200, created=CREATED)
    assert runtime_first.record == IdleStatus(
        since="2026-11-23T12:55:00Z", deadline="2026-11-23T13:00:00Z", reason="RuntimeLimit"
    )
    due = decide(runtime_first.record, window=600, idle=True, generation=1, now=at(3600), runtime=7200,
                 created=CREATED)  # fmt: skip
    assert (due.suspend, due.reason) == (True, "RuntimeLimit")
    # Busy again: the window closes, the runtime deadline stays.
    busy = decide(runtime_first.record, window=600, idle=False, generation=1, now=at(3400), runtime=7200,
                  created=CREATED)  # fmt: skip
    assert busy.record == IdleStatus(deadline="2026-11-23T13:00:00Z", reason="RuntimeLimit")


def test_a_busy_cluster_still_hits_the_runtime_limit() -> None:
    busy = decide(None, window=600, idle=False, generation=1, now=at(3600), runtime=7200, created=CREATED)
    assert (busy.suspend, busy.newly_suspended, busy.reason) == (True, True, "RuntimeLimit")


def test_no_runtime_limit_without_a_creation_time_and_no_record_kept_for_a_resume_without_one() -> None:
    assert decide(None, window=None, idle=False, generation=1, now=NOW, runtime=60).record is None
    suspended = IdleStatus(since="2026-11-23T11:50:00Z", deadline="2026-11-23T12:00:00Z", reason="IdleTimeout",
                           suspended_at="2026-11-23T12:00:00Z", suspended_generation=1)  # fmt: skip
    assert decide(suspended, window=600, idle=False, generation=2, now=NOW, created=CREATED).record is None


def test_seconds_until_the_deadline() -> None:
    assert seconds_until("2026-11-23T12:10:00Z", NOW) == 600
    assert seconds_until("2026-11-23T11:50:00Z", NOW) == 0
    assert seconds_until(None, NOW) is None


def test_the_runtime_limit_holds_a_service_too_and_the_idle_window_stays_cluster_only() -> None:
    policy = (
        permissive_policy().set("lifecycle.maxClusterRuntimeSeconds", 7200).set("lifecycle.maxClusterIdleSeconds", 600)
    )
    service = resolved(workload().service(), policy)
    assert (runtime_limit(service), service.idle_seconds) == (7200, None)  # the runtime cap only
    cluster_ = resolved(
        workload().group(minReplicas=0, maxReplicas=2).set("spec.autoscaling", {"enabled": True}), policy
    )
    assert (runtime_limit(cluster_), cluster_.idle_seconds) == (7200, 600)
    assert runtime_limit(resolved(workload().job(), policy)) is None  # a Job has its own deadline
    # The same decision as a Cluster's: counted from the creation, suspended at the deadline, resumed by a spec change.
    running = decide(None, window=service.idle_seconds, idle=False, generation=1, now=NOW,
                     runtime=runtime_limit(service), created=CREATED)  # fmt: skip
    assert running.record == IdleStatus(deadline="2026-11-23T13:00:00Z", reason="RuntimeLimit")
    due = decide(running.record, window=None, idle=False, generation=1, now=at(3600), runtime=7200, created=CREATED)
    assert (due.suspend, due.newly_suspended, due.reason) == (True, True, "RuntimeLimit")
    assert due.record is not None
    message = describe(due.record, service=True)
    assert "RayService was deleted" in message
    assert "Serve endpoints are down until a spec change resumes it" in message
    back = decide(due.record, window=None, idle=False, generation=2, now=at(3700), runtime=7200, created=CREATED)
    assert (back.suspend, back.record and back.record.resumed_at) == (False, "2026-11-23T13:01:40Z")
