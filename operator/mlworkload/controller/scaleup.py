"""Pods the cluster autoscaler cannot place: GCE quota or stockout at scale-up, read from its pod events.

A node pool made with 0 nodes only meets GCE when the autoscaler scales it up for a pending pod.
When that fails, the autoscaler posts a `FailedScaleUp` Warning on the pod ("Node scale up in zones
... associated with this pod failed: GCE quota exceeded. Pod is at risk of not being scheduled.",
or "GCE out of resources" for a stockout). The same failure kinds as a failed pool creation apply.
"""

import datetime
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

from mlworkload.constants import LABEL_WORKLOAD
from mlworkload.controller.kube import RESOURCES, KubeApi
from mlworkload.gcp.errors import FailureKind, classify_message
from mlworkload.gcp.provisioner import Readiness

PODS = RESOURCES["v1", "Pod"]
EVENTS = RESOURCES["v1", "Event"]
FAILED_SCALE_UP: Final = "FailedScaleUp"
# An older failure says nothing about now: the autoscaler repeats the event while it keeps failing.
RECENT: Final = datetime.timedelta(minutes=10)
_SURFACED: Final = frozenset({FailureKind.QUOTA, FailureKind.STOCKOUT})


def _when(event: Mapping[str, Any]) -> datetime.datetime | None:
    stamp = event.get("lastTimestamp") or event.get("eventTime") or (event.get("series") or {}).get("lastObservedTime")
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def scale_up_failure(
    events: Iterable[Mapping[str, Any]], pods: Collection[str], now: datetime.datetime
) -> Readiness | None:
    """The newest recent quota/stockout scale-up failure of one of `pods`, as a NodePoolsReady blocker."""
    found: list[tuple[datetime.datetime, str, str]] = []
    for event in events:
        pod = (event.get("involvedObject") or {}).get("name")
        when = _when(event)
        if event.get("reason") != FAILED_SCALE_UP or pod not in pods or when is None or now - when > RECENT:
            continue
        found.append((when, str(pod), str(event.get("message") or "")))
    for _, pod, message in sorted(found, reverse=True):
        failure = classify_message(message)
        if failure.kind in _SURFACED:
            return Readiness(False, failure.kind.value, f"pod {pod} cannot get a node: {message}", permanent=True)
    return None


async def observe_scale_up(kube: KubeApi, namespace: str, workload: str, now: datetime.datetime) -> Readiness | None:
    """Read the workload's pending pods and their autoscaler events (two LISTs; only while Ray is not ready)."""
    pods = await kube.list(PODS, namespace, {LABEL_WORKLOAD: workload}, {"status.phase": "Pending"})
    if not pods:
        return None
    events = await kube.list(EVENTS, namespace, {}, {"involvedObject.kind": "Pod", "reason": FAILED_SCALE_UP})
    return scale_up_failure(events, {pod["metadata"]["name"] for pod in pods}, now)
