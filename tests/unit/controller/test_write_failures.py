"""A child write the Kubernetes API refuses becomes status, with backoff: never a silent 10-second retry loop.

Permanent refusals (422 Invalid, 403 Forbidden) stall the workload; transient ones (409, 500, 503) keep it
Reconciling without taking Ready from one that runs. One reason for the whole retry series: only the message
(attempt, next attempt time) moves, so lastTransitionTime and Argo CD's health stay put.
"""

import datetime
from typing import Any

import pytest

from mlworkload.controller.kube import KubeError
from mlworkload.controller.reconcile import Reconciler, WriteRetries, reconcile
from mlworkload.gcp.provisioner import DryRunProvisioner
from mlworkload.gcp.retry import Backoff
from mlworkload.policy import ClusterView
from tests.support.clock import ManualClock
from tests.support.documents import permissive_policy, workload
from tests.support.fake_kube import FakeKubeApi

NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)
VIEW = ClusterView(policies=[permissive_policy().obj()], default_labels={})
INVALID = KubeError(422, "Invalid", 'RayCluster.ray.io "demo" is invalid: spec.headGroupSpec: Required value')
FORBIDDEN = KubeError(403, "Forbidden", 'rayclusters.ray.io "demo" is forbidden: User cannot patch resource')
CONFLICT = KubeError(409, "Conflict", "Operation cannot be fulfilled: the object has been modified")
UNAVAILABLE = KubeError(503, "ServiceUnavailable", "the server is currently unable to handle the request")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def kube() -> FakeKubeApi:
    api = FakeKubeApi()
    api.put(workload().gpu_group().set("metadata.generation", 1).doc)
    return api


@pytest.fixture
def reconciler(kube: FakeKubeApi, clock: ManualClock) -> Reconciler:
    retries = WriteRetries(Backoff(2.0, 300.0, clock))  # no jitter: the delays are exact
    return Reconciler(kube=kube, gcp=DryRunProvisioner(), clock=lambda: NOW, write_retries=retries)


def body(kube: FakeKubeApi) -> dict[str, Any]:
    return kube.objects["MLWorkload", "team-nlp", "demo"]


def conditions(kube: FakeKubeApi) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in kube.status_of("MLWorkload", "team-nlp", "demo")["conditions"]}


@pytest.mark.parametrize(("error", "reason"), [(INVALID, "Invalid"), (FORBIDDEN, "Forbidden")])
async def test_a_permanent_refusal_stalls_naming_the_child_and_the_api_message(
    kube: FakeKubeApi, reconciler: Reconciler, error: KubeError, reason: str
) -> None:
    kube.refusals["apply RayCluster/demo"] = error
    outcome = await reconcile(reconciler, body(kube), VIEW)
    assert outcome.result == "error"
    assert outcome.retry_after == 2.0
    stalled, ready = conditions(kube)["Stalled"], conditions(kube)["Ready"]
    assert (stalled["status"], stalled["reason"], ready["status"], ready["reason"]) == ("True", reason, "False", reason)
    assert stalled["message"] == (
        f"apply RayCluster/demo: {error.status} {error.reason}: {error.message} (needs a fix; attempt 1, next at"
        " 2026-12-06T12:00:02Z)"
    )
    # Children come in dependency order: what depends on the Ray object waits for it.
    assert "apply RayCluster/demo" not in kube.writes
    assert not any(write.startswith(("apply Service/", "apply Ingress/")) for write in kube.writes)


@pytest.mark.parametrize("error", [CONFLICT, UNAVAILABLE, KubeError(500, "InternalError", "etcd timeout")])
async def test_a_transient_refusal_keeps_reconciling_and_never_stalls(
    kube: FakeKubeApi, reconciler: Reconciler, error: KubeError
) -> None:
    kube.refusals["apply NetworkPolicy/demo-head"] = error
    await reconcile(reconciler, body(kube), VIEW)
    state = conditions(kube)
    assert (state["Reconciling"]["status"], state["Reconciling"]["reason"]) == ("True", "ApplyFailed")
    assert state["Stalled"]["status"] == "False"
    assert f"apply NetworkPolicy/demo-head: {error.status}" in state["Reconciling"]["message"]


async def test_a_transient_refusal_leaves_a_running_workload_ready(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    await reconcile(reconciler, body(kube), VIEW)
    kube.objects["RayCluster", "team-nlp", "demo"]["status"] = {"state": "ready", "conditions": [
        {"type": "RayClusterProvisioned", "status": "True"}, {"type": "HeadPodReady", "status": "True"}]}  # fmt: skip
    await reconcile(reconciler, body(kube), VIEW)
    assert conditions(kube)["Ready"]["status"] == "True"
    kube.objects["NetworkPolicy", "team-nlp", "demo-head"]["spec"]["ingress"] = []  # drift to repair
    kube.refusals["apply NetworkPolicy/demo-head"] = UNAVAILABLE
    await reconcile(reconciler, body(kube), VIEW)
    state = conditions(kube)
    assert state["Ready"]["status"] == "True"
    assert (state["Reconciling"]["status"], state["Reconciling"]["reason"]) == ("True", "ApplyFailed")


async def test_retries_back_off_exponentially_under_one_reason_and_reset_on_success(
    kube: FakeKubeApi, reconciler: Reconciler, clock: ManualClock
) -> None:
    kube.refusals["apply RayCluster/demo"] = INVALID
    delays, transitions = [], set()
    for _ in range(4):
        outcome = await reconcile(reconciler, body(kube), VIEW)
        delays.append(outcome.retry_after)
        transitions.add(conditions(kube)["Stalled"]["lastTransitionTime"])
        clock.advance(outcome.retry_after or 0)
    assert delays == [2.0, 4.0, 8.0, 16.0]
    assert len(transitions) == 1  # the same Stalled=True all along: only the message moved
    assert "attempt 4," in conditions(kube)["Stalled"]["message"]
    del kube.refusals["apply RayCluster/demo"]
    outcome = await reconcile(reconciler, body(kube), VIEW)
    assert (outcome.write_failure, outcome.retry_after) == (None, None)
    assert conditions(kube)["Stalled"]["status"] == "False"
    assert reconciler.write_retries.backoff.attempts("team-nlp/demo") == 0


async def test_a_failed_delete_of_a_stale_child_is_reported_too(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    kube.objects["MLWorkload", "team-nlp", "demo"]["spec"]["expose"] = {"dashboard": {"enabled": True}}
    await reconcile(reconciler, body(kube), VIEW)
    kube.objects["MLWorkload", "team-nlp", "demo"]["spec"]["expose"] = {}
    kube.refusals["delete Ingress/demo-dashboard"] = FORBIDDEN
    outcome = await reconcile(reconciler, body(kube), VIEW)
    assert outcome.write_failure is not None
    assert outcome.write_failure.message.startswith("delete Ingress/demo-dashboard: 403 Forbidden")
    assert ("Ingress", "team-nlp", "demo-dashboard") in kube.objects


def test_a_new_generation_may_try_at_once(clock: ManualClock) -> None:
    retries = WriteRetries(Backoff(2.0, 300.0, clock))
    assert retries.wait("ns/w", 1) == 0.0
    attempt, delay = retries.failed("ns/w", 1)
    assert (attempt, delay, retries.wait("ns/w", 1)) == (1, 2.0, 2.0)
    clock.advance(1.5)
    assert retries.wait("ns/w", 1) == 0.5
    assert retries.wait("ns/w", 2) == 0.0  # the spec changed: the failure may be what it fixes
    clock.advance(0.5)
    assert retries.wait("ns/w", 1) == 0.0


def test_the_default_retries_are_jittered() -> None:
    delays = {WriteRetries().failed(f"ns/w{index}", 1)[1] for index in range(20)}
    assert len(delays) > 1
    assert all(1.6 <= delay <= 2.4 for delay in delays)
