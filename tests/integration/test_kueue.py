"""Kueue as a partner, in the loop: the real operator, the in-memory API server, the KubeRay stand-in and a Kueue
stand-in (tests/support/kueue.py) that suspends queued Ray objects at creation and admits them as Kueue does.

Done when the stand-in holds and releases a workload without a single write fight: the operator never writes
spec.suspend nor what Kueue's admission injects, and does not write the Ray object again once Kueue changed it.
"""

from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
import pytest

from mlworkload.constants import FIELD_MANAGER
from tests.support.documents import WorkloadDoc, permissive_policy, workload
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.kube.ssa import decode_fields
from tests.support.kuberay import KubeRaySimulator
from tests.support.kueue import FLAVOR_NODE_LABELS, FLAVOR_TOLERATIONS, KueueStandIn
from tests.support.observed import workload_condition, workload_status
from tests.support.operator import running_operator

NS = "team-queued"
RAY = "ray.io/v1"
WAIT = 30.0


@pytest.fixture(scope="module")
def server() -> Iterator[KubeEmulatorServer]:
    with KubeEmulatorServer() as emulator:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": "queued"}}}
        emulator.put_object(namespace)
        rules = permissive_policy("queued").set("namespaceSelector", {"matchLabels": {"team": "queued"}})
        emulator.put_object(rules.set("queues", {"default": "team-queue", "allowed": ["team-queue", "urgent"]}).doc)
        yield emulator


@pytest.fixture(scope="module")
def kueue(server: KubeEmulatorServer) -> Iterator[KueueStandIn]:
    stand_in = KueueStandIn(server)
    stand_in.install()
    yield stand_in
    stand_in.uninstall()


@pytest.fixture(scope="module", autouse=True)
def operator(
    server: KubeEmulatorServer, kueue: KueueStandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    with running_operator(server.kubeconfig(tmp_path_factory.mktemp("kube") / "config")):
        yield


def condition(server: KubeEmulatorServer, name: str, kind: str) -> dict[str, Any]:
    return workload_condition(server, NS, name, kind)


def owned(obj: dict[str, Any], manager: str) -> set[tuple[str, ...]]:
    """The field paths a manager applied (the emulator's managedFields)."""
    entries = [e for e in obj["metadata"].get("managedFields") or [] if e["manager"] == manager]
    return set().union(*(decode_fields(e["fieldsV1"]) for e in entries))


def operator_writes(
    server: KubeEmulatorServer, since: int, name: str, plural: str = "rayjobs"
) -> list[tuple[str, str]]:
    """Writes of the Ray object since a mark (the stand-in writes to the store, never over HTTP)."""
    path = f"/apis/ray.io/v1/namespaces/{NS}/{plural}/{name}"
    return [(r.method, r.query.get("fieldManager", "")) for r in server.writes(since) if r.path == path]


def unchanged_reconciles() -> float:  # the operator runs in this process: its metrics are here
    return prometheus_client.REGISTRY.get_sample_value("mlworkload_reconciles_total", {"result": "unchanged"}) or 0


def test_a_queued_job_is_held_then_admitted_without_a_write_fight(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator, kueue: KueueStandIn, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(workload("queued-train", NS).job().gpu_group().set("spec.queue", {
        "name": "urgent", "priorityClass": "high-priority"}))  # fmt: skip
    wait_until(lambda: server.get_object(RAY, "RayJob", name, NS), timeout=WAIT, what="the RayJob")
    job = server.get_object(RAY, "RayJob", name, NS)
    assert job is not None
    labels = job["metadata"]["labels"]
    assert (labels["kueue.x-k8s.io/queue-name"], labels["kueue.x-k8s.io/priority-class"]) == ("urgent", "high-priority")
    # Kueue's webhook suspended it; the operator sent no suspend, so it owns none: the field is Kueue's alone.
    assert job["spec"]["suspend"] is True
    assert ("spec", "suspend") in owned(job, "kueue")
    assert ("spec", "suspend") not in owned(job, FIELD_MANAGER)

    # KubeRay reports a RayJob created suspended as Suspended (no Ray cluster is made for it).
    kuberay.job(NS, name, "Suspended")
    wait_until(lambda: condition(server, name, "QueueAdmitted").get("reason") == "WaitingForQuota", timeout=WAIT,
               what="QueueAdmitted=False WaitingForQuota")  # fmt: skip
    admitted = condition(server, name, "QueueAdmitted")
    assert admitted["status"] == "False"
    assert "'urgent'" in admitted["message"]
    assert workload_status(server, NS, name)["phase"] == "Pending"
    # Argo CD: Progressing (kstatus Reconciling) with a reason that says why, not Suspended nor Degraded.
    reconciling = condition(server, name, "Reconciling")
    assert (reconciling["status"], reconciling["reason"]) == ("True", "WaitingForQuota")
    assert condition(server, name, "Stalled")["status"] == "False"
    assert condition(server, name, "Ready")["reason"] == "WaitingForQuota"
    assert server.list_objects(RAY, "RayCluster", NS) == []

    # Held across resyncs: the operator leaves the suspended RayJob alone.
    mark, reconciled = server.request_count, unchanged_reconciles()
    wait_until(lambda: unchanged_reconciles() >= reconciled + 2, timeout=WAIT, what="two periodic reconciles")
    assert operator_writes(server, mark, name) == []

    # Admission: Kueue unsuspends and injects its flavor into the pod templates; KubeRay starts the job.
    mark = server.request_count
    kueue.admit("RayJob", name, NS)
    kuberay.job_running(NS, name)
    wait_until(lambda: condition(server, name, "QueueAdmitted").get("status") == "True", timeout=WAIT,
               what="QueueAdmitted=True")  # fmt: skip
    wait_until(lambda: workload_status(server, NS, name).get("phase") == "Running", timeout=WAIT, what="Running")
    assert condition(server, name, "QueueAdmitted")["reason"] == "Admitted"
    assert condition(server, name, "Reconciling")["status"] == "False"

    reconciled = unchanged_reconciles()
    wait_until(lambda: unchanged_reconciles() >= reconciled + 3, timeout=WAIT, what="three periodic reconciles")
    # Not a single write of the RayJob by the operator since Kueue changed it: no fight.
    assert operator_writes(server, mark, name) == []
    job = server.get_object(RAY, "RayJob", name, NS)
    assert job is not None
    assert job["spec"]["suspend"] is False
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    for template in [job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"], *(w["template"] for w in workers),
                     job["spec"]["submitterPodTemplate"]]:  # fmt: skip
        assert FLAVOR_NODE_LABELS.items() <= template["spec"]["nodeSelector"].items()
        assert template["spec"]["tolerations"][-len(FLAVOR_TOLERATIONS) :] == FLAVOR_TOLERATIONS


def test_a_queued_cluster_is_held_then_admitted_without_a_write_fight(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator, kueue: KueueStandIn, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(workload("queued-notebook", NS).gpu_group())  # the policy's default queue
    wait_until(lambda: server.get_object(RAY, "RayCluster", name, NS), timeout=WAIT, what="the RayCluster")
    cluster = server.get_object(RAY, "RayCluster", name, NS)
    assert cluster is not None
    assert cluster["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"
    assert cluster["spec"]["suspend"] is True
    kuberay.cluster_suspended(NS, name)
    wait_until(lambda: condition(server, name, "QueueAdmitted").get("reason") == "WaitingForQuota", timeout=WAIT,
               what="QueueAdmitted=False WaitingForQuota")  # fmt: skip
    assert workload_status(server, NS, name)["phase"] == "Pending"
    assert "'team-queue'" in condition(server, name, "QueueAdmitted")["message"]

    mark = server.request_count
    kueue.admit("RayCluster", name, NS)
    kuberay.cluster_ready(NS, name)
    wait_until(lambda: workload_status(server, NS, name).get("phase") == "Running", timeout=WAIT, what="Running")
    assert condition(server, name, "QueueAdmitted")["status"] == "True"
    reconciled = unchanged_reconciles()
    wait_until(lambda: unchanged_reconciles() >= reconciled + 2, timeout=WAIT, what="two periodic reconciles")
    assert operator_writes(server, mark, name, "rayclusters") == []
    cluster = server.get_object(RAY, "RayCluster", name, NS)
    assert cluster is not None
    assert cluster["spec"]["suspend"] is False
    assert (
        FLAVOR_NODE_LABELS.items() <= cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["nodeSelector"].items()
    )


def test_a_change_while_admitted_keeps_what_kueue_injected(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator, kueue: KueueStandIn, create: Callable[[WorkloadDoc], str]
) -> None:
    """The policy's default queue; then a spec change the operator must apply: its apply replaces the atomic list
    of worker groups, and carries Kueue's node selector and tolerations over instead of stripping them."""
    name = create(workload("queued-change", NS).job().gpu_group())
    wait_until(lambda: server.get_object(RAY, "RayJob", name, NS), timeout=WAIT, what="the RayJob")
    job = server.get_object(RAY, "RayJob", name, NS)
    assert job is not None
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"  # the policy's default
    kueue.admit("RayJob", name, NS)
    kuberay.job_running(NS, name)
    wait_until(lambda: condition(server, name, "QueueAdmitted").get("status") == "True", timeout=WAIT,
               what="QueueAdmitted=True")  # fmt: skip

    change = {"spec": {"job": {"entrypoint": "python train.py", "ttlSecondsAfterFinished": 600}}}
    server.patch_object("mlworkload.io/v1alpha1", "MLWorkload", name, change, NS)
    wait_until(lambda: (server.get_object(RAY, "RayJob", name, NS) or {}).get("spec", {})
               .get("ttlSecondsAfterFinished") == 600, timeout=WAIT, what="the change applied")  # fmt: skip
    job = server.get_object(RAY, "RayJob", name, NS)
    assert job is not None
    assert job["spec"]["suspend"] is False
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert FLAVOR_NODE_LABELS.items() <= worker["nodeSelector"].items()
    assert worker["tolerations"][-len(FLAVOR_TOLERATIONS) :] == FLAVOR_TOLERATIONS


def test_a_queue_the_policy_does_not_allow_is_refused(
    server: KubeEmulatorServer, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(workload("queued-elsewhere", NS).job().set("spec.queue", {"name": "other-team"}))
    wait_until(lambda: condition(server, name, "PolicyAdmitted").get("status") == "False", timeout=WAIT,
               what="PolicyAdmitted=False")  # fmt: skip
    message = condition(server, name, "PolicyAdmitted")["message"]
    assert "spec.queue.name" in message
    assert "queues.allowed" in message
    assert server.get_object(RAY, "RayJob", name, NS) is None
