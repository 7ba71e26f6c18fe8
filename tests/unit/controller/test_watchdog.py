"""Which deleted workloads the watchdog gives a new look (controller/watchdog.py)."""

from datetime import UTC, datetime
from typing import Any

from mlworkload.constants import FINALIZER
from mlworkload.controller.watchdog import stuck_deletions

NOW = datetime(2026, 12, 6, 17, 0, 0, tzinfo=UTC)


def workload(name: str, deleted: str | None, finalizers: list[str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "team",
        "finalizers": [FINALIZER] if finalizers is None else finalizers,
    }
    if deleted is not None:
        metadata["deletionTimestamp"] = deleted
    return {"metadata": metadata}


def test_only_a_deletion_older_than_the_period_that_still_waits_on_the_finalizer_is_stuck() -> None:
    workloads = [
        workload("live", None),
        workload("just-deleted", "2026-12-06T16:59:59Z"),
        workload("stuck", "2026-12-06T16:59:00Z"),
        workload("others-finalizer", "2026-12-06T16:50:00Z", finalizers=["example.com/keep"]),
        workload("no-finalizers", "2026-12-06T16:50:00Z", finalizers=[]),
    ]
    assert stuck_deletions(workloads, NOW, after_seconds=30) == {"team/stuck"}


def test_the_period_is_a_strict_bound() -> None:
    exactly = [workload("w", "2026-12-06T16:59:30Z")]
    assert stuck_deletions(exactly, NOW, after_seconds=30) == set()
    assert stuck_deletions(exactly, NOW, after_seconds=29.5) == {"team/w"}
