"""Autoscaler scale-up failures on a workload's pods become a NodePoolsReady blocker."""

import datetime

import pytest

from mlworkload.controller.scaleup import scale_up_failure
from tests.support.clock import NOW

QUOTA = ("Node scale up in zones us-central1-a associated with this pod failed: GCE quota exceeded. "
         "Pod is at risk of not being scheduled.")  # fmt: skip
STOCKOUT = ("Node scale up in zones us-central1-b associated with this pod failed: GCE out of resources. "
            "Pod is at risk of not being scheduled.")  # fmt: skip


def event(pod: str, message: str, minutes_ago: float = 1, reason: str = "FailedScaleUp") -> dict[str, object]:
    stamp = (NOW - datetime.timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"reason": reason, "message": message, "lastTimestamp": stamp,
            "involvedObject": {"kind": "Pod", "name": pod}}  # fmt: skip


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        ([event("w-gpu-1", QUOTA)], "QuotaExceeded"),
        ([event("w-gpu-1", STOCKOUT)], "Stockout"),
        ([event("w-gpu-1", QUOTA, minutes_ago=5), event("w-gpu-2", STOCKOUT, minutes_ago=1)], "Stockout"),  # newest
        ([event("other-pod", QUOTA)], None),  # not one of the workload's pods
        ([event("w-gpu-1", QUOTA, minutes_ago=30)], None),  # old news: the autoscaler repeats a live failure
        ([event("w-gpu-1", QUOTA, reason="TriggeredScaleUp")], None),
        ([event("w-gpu-1", "pod didn't trigger scale-up: 1 max node group size reached")], None),
    ],
)
def test_scale_up_failures(events: list[dict[str, object]], reason: str | None) -> None:
    readiness = scale_up_failure(events, {"w-gpu-1", "w-gpu-2"}, NOW)
    if reason is None:
        assert readiness is None
        return
    assert readiness is not None
    assert (readiness.ready, readiness.reason, readiness.permanent) == (False, reason, True)
    assert "cannot get a node" in readiness.message


def test_an_event_without_a_time_is_ignored() -> None:
    undated = event("w-gpu-1", QUOTA)
    del undated["lastTimestamp"]
    assert scale_up_failure([undated], {"w-gpu-1"}, NOW) is None
