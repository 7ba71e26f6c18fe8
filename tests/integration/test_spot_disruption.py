"""Spot disruption in the loop: the real operator (kopf, in its own thread), the in-memory API server and the KubeRay
stand-in. A spot worker pod is marked by the kubelet as a graceful node shutdown marks it; the workload's status
counts the preemption and reports the recovery until the replacement is ready. Disruption budgets are children like
any other: applied with the Ray object, pruned when no longer wanted."""

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.support.documents import WorkloadDoc, permissive_policy, workload
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.kuberay import NODE_SHUTDOWN_MESSAGE, KubeRaySimulator, preempted, worker_pod
from tests.support.observed import workload_condition, workload_events, workload_status
from tests.support.operator import running_operator

NS = "team-spot"
MLW = "mlworkload.io/v1alpha1"
WAIT = 30.0
PREEMPTED_AT = "2026-11-23T11:58:00Z"


@pytest.fixture(scope="module")
def server() -> Iterator[KubeEmulatorServer]:
    with KubeEmulatorServer() as emulator:
        emulator.put_object({"apiVersion": "v1", "kind": "Namespace",
                             "metadata": {"name": NS, "labels": {"team": "spot"}}})  # fmt: skip
        emulator.put_object(permissive_policy("spot").set("namespaceSelector", {"matchLabels": {"team": "spot"}}).doc)
        yield emulator


@pytest.fixture(scope="module", autouse=True)
def operator(server: KubeEmulatorServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with running_operator(server.kubeconfig(tmp_path_factory.mktemp("kube") / "config")):
        yield


def status(server: KubeEmulatorServer, name: str) -> dict[str, Any]:
    return workload_status(server, NS, name)


def condition(server: KubeEmulatorServer, name: str, kind: str) -> dict[str, Any]:
    return workload_condition(server, NS, name, kind)


def budgets(server: KubeEmulatorServer, name: str) -> list[str]:
    found = server.list_objects("policy/v1", "PodDisruptionBudget", NS, f"mlworkload.io/workload={name}")
    return sorted(item["metadata"]["name"] for item in found)


def preemptions_counted() -> float:
    labels = {"namespace": NS, "accelerator": "none", "capacity": "Spot"}
    return REGISTRY.get_sample_value("mlworkload_preemptions_total", labels) or 0.0


def test_preemption_of_a_spot_worker_is_observed_in_status(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(workload("sweep", NS).group("spot", capacity="Spot", replicas=2))
    wait_until(lambda: server.get_object("ray.io/v1", "RayCluster", name, NS), timeout=WAIT, what="the RayCluster")
    cluster = server.get_object("ray.io/v1", "RayCluster", name, NS)
    assert cluster is not None
    spot = cluster["spec"]["workerGroupSpecs"][0]["template"]
    assert spot["spec"]["terminationGracePeriodSeconds"] == 25
    assert "ray drain-node" in spot["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][2]
    wait_until(lambda: budgets(server, name) == ["sweep-head"], timeout=WAIT, what="the head's disruption budget")

    # KubeRay made two workers on two spot nodes, and the cluster is ready.
    for pod in ("a", "b"):
        server.put_object(worker_pod(NS, name, "spot", f"sweep-spot-worker-{pod}", node=f"gke-spot-{pod}"))
    kuberay.cluster_ready(NS, name, workers=2)
    wait_until(lambda: condition(server, name, "Ready").get("status") == "True", timeout=WAIT, what="Ready")
    assert "disruptions" not in status(server, name)
    counted = preemptions_counted()

    # GCE reclaims the node of worker a: the kubelet's graceful node shutdown marks the pod, KubeRay counts 1/2.
    victim = server.get_object("v1", "Pod", "sweep-spot-worker-a", NS)
    assert victim is not None
    server.put_object(preempted(victim, at=PREEMPTED_AT))
    kuberay.cluster_workers(NS, name, ready=1, desired=2)
    wait_until(lambda: status(server, name).get("disruptions", {}).get("count") == 1, timeout=WAIT,
               what="the preemption counted")  # fmt: skip
    last = status(server, name)["disruptions"]["lastPreemption"]
    assert last == {"time": PREEMPTED_AT, "pod": "sweep-spot-worker-a", "node": "gke-spot-a", "group": "spot",
                    "reason": "NodeShutdown", "message": NODE_SHUTDOWN_MESSAGE}  # fmt: skip
    reconciling = condition(server, name, "Reconciling")
    assert (reconciling["status"], reconciling["reason"]) == ("True", "RecoveringFromPreemption")
    assert reconciling["message"].endswith("1/2 workers ready")
    assert condition(server, name, "Ready")["status"] == "True"  # the workload runs on while Ray recovers
    wait_until(lambda: workload_events(server, NS, name, "Preempted"), timeout=WAIT, what="a Preempted Event")
    assert preemptions_counted() == counted + 1

    # Resyncs come and go (every 2 s here), each reading the pods while Ray is short: the same pod counts once.
    writes, reads = status_writes(server, name), pod_reads(server, name)
    wait_until(lambda: pod_reads(server, name) >= reads + 2, timeout=WAIT, what="two more passes that read the pods")
    assert status_writes(server, name) == writes
    assert status(server, name)["disruptions"]["count"] == 1
    assert preemptions_counted() == counted + 1

    # KubeRay deletes the failed pod and makes another, which becomes ready: recovered.
    server.delete_object("v1", "Pod", "sweep-spot-worker-a", NS)
    server.put_object(worker_pod(NS, name, "spot", "sweep-spot-worker-c", node="gke-spot-c"))
    kuberay.cluster_workers(NS, name, ready=2, desired=2)
    wait_until(lambda: condition(server, name, "Reconciling").get("reason") == "UpToDate", timeout=WAIT,
               what="Reconciling cleared once the replacement is ready")  # fmt: skip
    assert condition(server, name, "Reconciling")["status"] == "False"
    assert status(server, name)["disruptions"]["count"] == 1


def pod_reads(server: KubeEmulatorServer, name: str) -> int:
    """The operator's listings of the workload's pods so far."""
    return sum(1 for r in server.requests() if r.method == "GET" and r.path == f"/api/v1/namespaces/{NS}/pods"
               and f"mlworkload.io/workload={name}" in (r.query.get("labelSelector") or ""))  # fmt: skip


def status_writes(server: KubeEmulatorServer, name: str) -> int:
    path = f"/apis/{MLW}/namespaces/{NS}/mlworkloads/{name}/status"
    return sum(1 for r in server.requests() if r.method == "PATCH" and r.path == path)


def test_a_services_worker_budget_goes_when_it_is_no_longer_a_service(
    server: KubeEmulatorServer, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(workload("chat", NS).service().group("spot", capacity="Spot"))
    wait_until(lambda: budgets(server, name) == ["chat-head", "chat-serve-workers"], timeout=WAIT,
               what="the head's and the Serve workers' budgets")  # fmt: skip
    serve = server.get_object("policy/v1", "PodDisruptionBudget", "chat-serve-workers", NS)
    assert serve is not None
    assert serve["spec"]["minAvailable"] == 1
    assert serve["metadata"]["ownerReferences"][0]["kind"] == "MLWorkload"
    server.put_object(workload("chat", NS).group("spot", capacity="Spot").doc)  # now a Cluster
    wait_until(lambda: budgets(server, name) == ["chat-head"], timeout=WAIT, what="the Serve budget pruned")
