"""The real operator against API refusals injected by the in-memory API server: a refused child write reaches the
workload's status and Events with backoff, and the workload converges once the API lets it through."""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.documents import WorkloadDoc, created_workloads, workload
from tests.support.kube import KubeCall, KubeEmulatorServer, KubeFault, wait_until
from tests.support.operator import emulated_cluster, running_operator

NS = "api-errors"
MLW = "mlworkload.io/v1alpha1"
WAIT = 30.0


@pytest.fixture(scope="module")
def server() -> Iterator[KubeEmulatorServer]:
    with emulated_cluster(NS) as emulator:
        yield emulator


@pytest.fixture(scope="module", autouse=True)
def operator(server: KubeEmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    kubeconfig: Path = server.kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    with running_operator(kubeconfig):
        yield


@pytest.fixture
def create(server: KubeEmulatorServer) -> Iterator[Callable[[WorkloadDoc], str]]:
    server.clear_faults()
    yield from created_workloads(server.put_object, lambda name: server.delete_object(MLW, "MLWorkload", name, NS))
    server.clear_faults()


def condition(server: KubeEmulatorServer, name: str, kind: str) -> dict[str, Any]:
    found = server.get_object(MLW, "MLWorkload", name, NS) or {}
    return next((c for c in (found.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def warnings(server: KubeEmulatorServer, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        event for event in server.list_objects("v1", "Event", NS)
        if event.get("type") == "Warning" and event.get("reason") == reason
        and event.get("involvedObject", {}).get("name") == name
    ]  # fmt: skip


def test_an_invalid_child_stalls_the_workload_until_the_api_accepts_it(
    server: KubeEmulatorServer, create: Callable[[WorkloadDoc], str]
) -> None:
    refusal = server.inject(KubeFault(status=422, methods={"PATCH"}, resource="rayclusters", times=None,
                                      message="spec.workerGroupSpecs[0].replicas: Invalid value: -1"))  # fmt: skip
    create(workload("invalid", NS).gpu_group())
    stalled = wait_until(
        lambda: (c := condition(server, "invalid", "Stalled")).get("reason") == "Invalid" and c,
        timeout=WAIT, what="Stalled=Invalid",
    )  # fmt: skip
    assert stalled["status"] == "True"
    assert stalled["message"].startswith('apply RayCluster/invalid: 422 Invalid: RayCluster.ray.io "invalid" is')
    assert "spec.workerGroupSpecs[0].replicas: Invalid value: -1" in stalled["message"]
    assert "(needs a fix; attempt " in stalled["message"]
    wait_until(lambda: warnings(server, "invalid", "Invalid"), timeout=WAIT, what="a Warning Event")
    assert server.get_object("ray.io/v1", "RayCluster", "invalid", NS) is None
    # Backoff, not a retry every 10 s: within the first few seconds only a handful of attempts.
    attempts = refusal.hits
    assert 1 <= attempts <= 4, attempts
    refusal.remove()
    wait_until(lambda: condition(server, "invalid", "Stalled").get("status") == "False", timeout=WAIT,
               what="Stalled cleared after the API accepts the RayCluster")  # fmt: skip
    assert server.get_object("ray.io/v1", "RayCluster", "invalid", NS) is not None


def test_transient_conflicts_and_server_errors_retry_and_converge(
    server: KubeEmulatorServer, create: Callable[[WorkloadDoc], str]
) -> None:
    conflict = server.inject(KubeFault(status=409, methods={"PATCH"}, resource="networkpolicies", times=2))
    failure = server.inject(KubeFault(status=500, methods={"PATCH"}, resource="services", times=1))
    create(workload("flaky", NS).gpu_group().expose("dashboard"))
    wait_until(lambda: server.get_object("networking.k8s.io/v1", "Ingress", "flaky-dashboard", NS), timeout=WAIT,
               what="the last child applied after the refusals")  # fmt: skip
    assert (conflict.hits, failure.hits) == (2, 1)
    assert condition(server, "flaky", "Stalled").get("status") == "False"
    wait_until(lambda: warnings(server, "flaky", "ApplyFailed"), timeout=WAIT, what="ApplyFailed Warning Events")


def _releases_the_finalizer(call: KubeCall) -> bool:
    """kopf's PATCH that removes the operator's finalizer from a deleted workload (a JSON patch that tests the
    resourceVersion first, then removes the finalizers)."""
    ops = call.request.data if call.request is not None else None
    return isinstance(ops, list) and any(
        op.get("op") == "remove" and str(op.get("path", "")).startswith("/metadata/finalizers") for op in ops
    )


def test_a_deletion_whose_finalizer_patch_is_refused_still_completes(
    server: KubeEmulatorServer, create: Callable[[WorkloadDoc], str]
) -> None:
    """kopf does not retry a 409 on its own PATCH and waits for the object's next event, which a deleted
    workload never gets by itself: the deletion watchdog gives it one (controller/watchdog.py)."""
    create(workload("stuck", NS).gpu_group())
    wait_until(lambda: server.get_object("ray.io/v1", "RayCluster", "stuck", NS), timeout=WAIT, what="reconciled")
    refusal = server.inject(
        KubeFault(status=409, methods={"PATCH"}, resource="mlworkloads", when=_releases_the_finalizer, times=1)
    )
    server.delete_object(MLW, "MLWorkload", "stuck", NS)
    wait_until(lambda: refusal.hits == 1, timeout=WAIT, what="the finalizer's removal refused once")
    wait_until(lambda: server.get_object(MLW, "MLWorkload", "stuck", NS) is None, timeout=WAIT,
               what="the deletion completed after the refusal")  # fmt: skip
    assert server.get_object("ray.io/v1", "RayCluster", "stuck", NS) is None  # its children went with it
