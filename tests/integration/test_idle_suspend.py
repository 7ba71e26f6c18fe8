"""Idle Clusters are suspended (controller/idle.py), in the loop: the real operator, the in-memory API server, the
KubeRay stand-in, and the operator's clock moved by hand (reconcile.wall_clock, looked up at every call)."""

import datetime
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mlworkload.controller import reconcile as reconcile_module
from tests.support.clock import NOW
from tests.support.documents import WorkloadDoc, permissive_policy, workload
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.kuberay import KubeRaySimulator
from tests.support.observed import workload_condition, workload_events, workload_status
from tests.support.operator import running_operator

NS = "team-idle"
RUNTIME_NS = "team-runtime"
RUNTIME = 7200
MLW = "mlworkload.io/v1alpha1"
WAIT = 30.0
WINDOW = 600


class MovableClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def clock() -> Iterator[MovableClock]:
    moved = MovableClock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reconcile_module, "wall_clock", moved)
        yield moved


@pytest.fixture(scope="module")
def server() -> Iterator[KubeEmulatorServer]:
    with KubeEmulatorServer() as emulator:
        emulator.put_object(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": "idle"}}}
        )
        rules = permissive_policy("idle").set("namespaceSelector", {"matchLabels": {"team": "idle"}})
        emulator.put_object(rules.set("lifecycle.maxClusterIdleSeconds", WINDOW).doc)
        emulator.put_object(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RUNTIME_NS, "labels": {"team": "runtime"}}}
        )
        capped = permissive_policy("runtime").set("namespaceSelector", {"matchLabels": {"team": "runtime"}})
        emulator.put_object(capped.set("lifecycle.maxClusterRuntimeSeconds", RUNTIME).doc)
        yield emulator


@pytest.fixture(scope="module", autouse=True)
def operator(
    server: KubeEmulatorServer, clock: MovableClock, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    kubeconfig = server.kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    with running_operator(kubeconfig):
        yield


def status(server: KubeEmulatorServer, name: str, ns: str = NS) -> dict[str, Any]:
    return workload_status(server, ns, name)


def ready_reason(server: KubeEmulatorServer, name: str, ns: str = NS) -> str:
    return str(workload_condition(server, ns, name, "Ready").get("reason", ""))


def ray_suspend(server: KubeEmulatorServer, name: str, ns: str = NS) -> object:
    return (server.get_object("ray.io/v1", "RayCluster", name, ns) or {}).get("spec", {}).get("suspend")


def test_an_idle_cluster_is_suspended_after_the_window_and_a_spec_change_resumes_it(
    server: KubeEmulatorServer, clock: MovableClock, create: Callable[[WorkloadDoc], str]
) -> None:
    kuberay = KubeRaySimulator(server)
    name = create(workload("notebook", NS).group(replicas=1, minReplicas=0, maxReplicas=4)
                  .set("spec.autoscaling", {"enabled": True}))  # fmt: skip
    wait_until(lambda: server.get_object("ray.io/v1", "RayCluster", name, NS), timeout=WAIT, what="the RayCluster")
    kuberay.cluster_ready(NS, name, workers=1)  # a worker above minReplicas: busy
    wait_until(lambda: status(server, name).get("phase") == "Running", timeout=WAIT, what="phase Running")
    assert "idle" not in status(server, name)
    kuberay.cluster_workers(NS, name, ready=0, desired=0)  # the autoscaler scaled it down: idle from now
    wait_until(lambda: status(server, name).get("idle"), timeout=WAIT, what="the idle window in status")
    window = status(server, name)["idle"]
    clock.advance(WINDOW - 60)  # not yet: the operator's resyncs (every 2 s) change nothing
    wait_until(lambda: status(server, name).get("idle") == window and ray_suspend(server, name) is False,
               timeout=WAIT, what="the window still open")  # fmt: skip
    clock.advance(61)
    wait_until(lambda: ray_suspend(server, name) is True, timeout=WAIT, what="the RayCluster suspended")
    kuberay.cluster_suspended(NS, name)
    wait_until(lambda: status(server, name).get("phase") == "Suspended", timeout=WAIT, what="phase Suspended")
    assert ready_reason(server, name) == "IdleTimeout"
    assert status(server, name)["idle"]["suspendedAt"]
    assert len(workload_events(server, NS, name, "IdleTimeout")) == 1
    workload_spec = (server.get_object(MLW, "MLWorkload", name, NS) or {})["spec"]
    assert workload_spec.get("suspend") in (None, False)  # the user's spec is untouched
    # The resume gesture: spec.suspend true, then false (any spec change would do).
    server.patch_object(MLW, "MLWorkload", name, {"spec": {"suspend": True}}, NS)
    wait_until(lambda: ready_reason(server, name) == "Suspended", timeout=WAIT, what="suspended by the user")
    server.patch_object(MLW, "MLWorkload", name, {"spec": {"suspend": False}}, NS)
    wait_until(lambda: ray_suspend(server, name) is False, timeout=WAIT, what="the RayCluster resumed")
    assert "idle" not in status(server, name)
    kuberay.cluster_ready(NS, name, workers=1)
    wait_until(lambda: status(server, name).get("phase") == "Running", timeout=WAIT, what="phase Running again")


def test_a_cluster_is_suspended_at_the_policys_runtime_limit(
    server: KubeEmulatorServer, clock: MovableClock, create: Callable[[WorkloadDoc], str]
) -> None:
    """No autoscaler (never idle), busy all along: the policy's lifecycle.maxClusterRuntimeSeconds suspends it."""
    kuberay = KubeRaySimulator(server)
    name = create(workload("capped", RUNTIME_NS).group(replicas=1))
    wait_until(lambda: server.get_object("ray.io/v1", "RayCluster", name, RUNTIME_NS), timeout=WAIT,
               what="the RayCluster")  # fmt: skip
    kuberay.cluster_ready(RUNTIME_NS, name, workers=1)
    wait_until(lambda: status(server, name, RUNTIME_NS).get("phase") == "Running", timeout=WAIT, what="Running")
    wait_until(lambda: (status(server, name, RUNTIME_NS).get("idle") or {}).get("reason") == "RuntimeLimit",
               timeout=WAIT, what="the runtime deadline in status")  # fmt: skip
    record = status(server, name, RUNTIME_NS)["idle"]
    created = (server.get_object(MLW, "MLWorkload", name, RUNTIME_NS) or {})["metadata"]["creationTimestamp"]
    deadline = datetime.datetime.fromisoformat(record["deadline"].replace("Z", "+00:00"))
    assert deadline - datetime.datetime.fromisoformat(created.replace("Z", "+00:00")) == datetime.timedelta(
        seconds=RUNTIME
    )
    clock.now = deadline - datetime.timedelta(seconds=60)  # not yet: nothing changes
    wait_until(lambda: status(server, name, RUNTIME_NS).get("idle") == record
               and ray_suspend(server, name, RUNTIME_NS) is False, timeout=WAIT, what="still running")  # fmt: skip
    clock.advance(61)
    wait_until(lambda: ray_suspend(server, name, RUNTIME_NS) is True, timeout=WAIT, what="the RayCluster suspended")
    kuberay.cluster_suspended(RUNTIME_NS, name)
    wait_until(lambda: status(server, name, RUNTIME_NS).get("phase") == "Suspended", timeout=WAIT,
               what="phase Suspended")  # fmt: skip
    assert ready_reason(server, name, RUNTIME_NS) == "RuntimeLimit"
    assert len(workload_events(server, RUNTIME_NS, name, "RuntimeLimit")) == 1


def test_a_service_loses_its_rayservice_at_the_policys_runtime_limit(
    server: KubeEmulatorServer, clock: MovableClock, create: Callable[[WorkloadDoc], str]
) -> None:
    """A RayService cannot be suspended: at the policy's lifecycle.maxClusterRuntimeSeconds it is deleted."""
    kuberay = KubeRaySimulator(server)
    name = create(workload("served", RUNTIME_NS).service())
    wait_until(lambda: server.get_object("ray.io/v1", "RayService", name, RUNTIME_NS), timeout=WAIT,
               what="the RayService")  # fmt: skip
    kuberay.service_running(RUNTIME_NS, name)
    wait_until(lambda: (status(server, name, RUNTIME_NS).get("idle") or {}).get("reason") == "RuntimeLimit",
               timeout=WAIT, what="the runtime deadline in status")  # fmt: skip
    deadline = datetime.datetime.fromisoformat(
        status(server, name, RUNTIME_NS)["idle"]["deadline"].replace("Z", "+00:00")
    )
    clock.now = deadline + datetime.timedelta(seconds=1)
    wait_until(lambda: server.get_object("ray.io/v1", "RayService", name, RUNTIME_NS) is None, timeout=WAIT,
               what="the RayService deleted")  # fmt: skip
    wait_until(lambda: status(server, name, RUNTIME_NS).get("phase") == "Suspended", timeout=WAIT,
               what="phase Suspended")  # fmt: skip
    assert ready_reason(server, name, RUNTIME_NS) == "RuntimeLimit"
    assert len(workload_events(server, RUNTIME_NS, name, "RuntimeLimit")) == 1
