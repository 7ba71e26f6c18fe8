"""The integration tier's operator scenarios, against whichever cluster conftest provides.

Only the :class:`Cluster` verbs are used (no emulator internals), so the same assertions hold on a
real API server. The workloads are small and CPU-only so that a real KubeRay on a kind cluster can
run them (``MLW_E2E_REAL_KUBERAY=1``); the operator's translation is the same for GPU groups.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any, Final

import pytest

from tests.e2e.cluster import MLW, Cluster
from tests.e2e.kuberay import RayDriver
from tests.support.documents import WorkloadDoc, created_workloads, policy, workload

RAY: Final = "ray.io/v1"
SMALL: Final = {"cpu": "1", "memory": "2Gi"}
# KubeRay's own RayService sample app (its e2e tests use it): importable by a real Ray, 0.1 CPU each.
FRUIT_APP: Final = {
    "name": "fruit_app", "import_path": "fruit.deployment_graph", "route_prefix": "/fruit",
    "runtime_env": {"working_dir": "https://github.com/ray-project/test_dag/archive/"
                                   "78b4a5da38796123d9f9ffff59bab2792a043e95.zip"},
    "deployments": [
        {"name": "MangoStand", "num_replicas": 1, "user_config": {"price": 3}, "ray_actor_options": {"num_cpus": 0.1}},
        {"name": "OrangeStand", "num_replicas": 1, "user_config": {"price": 2}, "ray_actor_options": {"num_cpus": 0.1}},
        {"name": "FruitMarket", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1}},
    ],
}  # fmt: skip
CHILD_KINDS: Final = [("v1", "ServiceAccount"), ("v1", "Service"), ("networking.k8s.io/v1", "NetworkPolicy"),
                      ("networking.k8s.io/v1", "Ingress"), ("cloud.google.com/v1", "BackendConfig"),
                      ("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob"), ("ray.io/v1", "RayService")]  # fmt: skip


def unique(prefix: str) -> str:
    """A workload name no other test has used, so no test sees another's leftovers."""
    return f"{prefix}-{secrets.token_hex(3)}"


def small(name: str, namespace: str) -> WorkloadDoc:
    """A Ray cluster with one small CPU worker group: schedulable on any cluster, kind included."""
    return workload(name, namespace).set("spec.head.resources", SMALL).group("cpu", replicas=1, resources=SMALL)


def status(cluster: Cluster, name: str) -> dict[str, Any]:
    return (cluster.get(MLW, "MLWorkload", name, cluster.namespace) or {}).get("status") or {}


def condition(cluster: Cluster, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in status(cluster, name).get("conditions", []) if c["type"] == type_), {})


def children(cluster: Cluster, name: str) -> set[str]:
    """The workload's children as Kind/name; the kind comes from the request (a real API server leaves
    it out of the items of built-in lists)."""
    selector = f"mlworkload.io/workload={name}"
    return {f"{kind}/{o['metadata']['name']}" for av, kind in CHILD_KINDS
            for o in cluster.list(av, kind, cluster.namespace, selector)}  # fmt: skip


@pytest.fixture
def create(cluster: Cluster) -> Iterator[Callable[[WorkloadDoc], str]]:
    yield from created_workloads(cluster.apply, lambda name: cluster.delete(MLW, "MLWorkload", name, cluster.namespace))


def long_job(name: str, namespace: str) -> WorkloadDoc:
    """A job that keeps running (real KubeRay would otherwise complete it before Ready is checked)."""
    return small(name, namespace).job('python -c "import time; time.sleep(3600)"')


def fruit_service(name: str, namespace: str) -> WorkloadDoc:
    return small(name, namespace).service([FRUIT_APP])


TYPES: Final = {
    "cluster": (small, "RayCluster", "cluster_ready", "RayClusterReady"),
    "job": (long_job, "RayJob", "job_running", "RayJobRunning"),
    "service": (fruit_service, "RayService", "service_running", "RayServiceRunning"),
}


@pytest.mark.parametrize("case", TYPES.values(), ids=TYPES.keys())
def test_each_type_reaches_ready(
    cluster: Cluster, ray_driver: RayDriver, create: Callable[[WorkloadDoc], str], case: Any
) -> None:
    build, kind, move, ready_reason = case
    name = create(build(unique(kind.lower()), cluster.namespace))
    cluster.wait_until(lambda: cluster.get(RAY, kind, name, cluster.namespace), f"the {kind}")
    cluster.wait_until(lambda: status(cluster, name).get("phase") in {"Provisioning", "Pending"}, "a first status")
    assert condition(cluster, name, "Ready")["status"] == "False"
    getattr(ray_driver, move)(cluster.namespace, name)
    cluster.wait_until(lambda: condition(cluster, name, "Ready").get("status") == "True", "Ready=True")
    assert condition(cluster, name, "Ready")["reason"] == ready_reason
    assert status(cluster, name)["observedGeneration"] == 1
    owner = cluster.get(MLW, "MLWorkload", name, cluster.namespace)
    ray = cluster.get(RAY, kind, name, cluster.namespace)
    assert owner is not None
    assert ray is not None
    assert ray["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]


def test_a_spec_change_rolls_through_with_observed_generation(
    cluster: Cluster, create: Callable[[WorkloadDoc], str]
) -> None:
    doc = small(unique("roll"), cluster.namespace)
    name = create(doc)
    cluster.wait_until(lambda: status(cluster, name).get("observedGeneration") == 1, "observedGeneration 1")
    # The user's edit, re-applied as `kubectl apply --server-side` or Argo CD would.
    doc.doc["spec"]["workerGroups"][0]["replicas"] = 2
    doc.set("spec.ray.image", "rayproject/ray:2.41.0-py311-cpu")
    cluster.apply(doc.doc)
    cluster.wait_until(lambda: status(cluster, name).get("observedGeneration") == 2, "observedGeneration 2")
    ray = cluster.get(RAY, "RayCluster", name, cluster.namespace)
    assert ray is not None
    assert [g["replicas"] for g in ray["spec"]["workerGroupSpecs"]] == [2]
    images = [ray["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]] + [
        g["template"]["spec"]["containers"][0]["image"] for g in ray["spec"]["workerGroupSpecs"]
    ]
    assert images == ["rayproject/ray:2.41.0-py311-cpu"] * 2
    stale = [c["type"] for c in status(cluster, name)["conditions"] if c.get("observedGeneration", 2) != 2]
    assert stale == []


def test_an_ingress_removed_from_the_spec_is_deleted(cluster: Cluster, create: Callable[[WorkloadDoc], str]) -> None:
    doc = small(unique("expose"), cluster.namespace).expose("dashboard")
    name = create(doc)
    exposed = {f"Ingress/{name}-dashboard", f"Service/{name}-dashboard", f"BackendConfig/{name}-dashboard"}
    cluster.wait_until(lambda: exposed <= children(cluster, name), "the dashboard's Ingress")
    doc.set("spec.expose", None)  # left out of the applied document: server-side apply removes the field
    cluster.apply(doc.doc)
    cluster.wait_until(
        lambda: not exposed & children(cluster, name), "the dashboard's Ingress, Service, BackendConfig gone"
    )
    assert {f"RayCluster/{name}", f"ServiceAccount/{name}"} <= children(cluster, name)


def test_job_success_and_failure(cluster: Cluster, ray_driver: RayDriver, create: Callable[[WorkloadDoc], str]) -> None:
    ok = create(small(unique("ok"), cluster.namespace).job('python -c "print(42)"'))
    bad = create(small(unique("bad"), cluster.namespace).job('python -c "import sys; sys.exit(1)"', backoffLimit=0))
    cluster.wait_until(lambda: all(cluster.get(RAY, "RayJob", n, cluster.namespace) for n in (ok, bad)), "the RayJobs")
    ray_driver.job_succeeded(cluster.namespace, ok)
    ray_driver.job_failed(cluster.namespace, bad, "Job entrypoint command failed with exit code 1")
    cluster.wait_until(lambda: status(cluster, ok).get("phase") == "Succeeded", "ok Succeeded")
    cluster.wait_until(lambda: status(cluster, bad).get("phase") == "Failed", "bad Failed")
    assert status(cluster, ok)["job"]["status"] == "SUCCEEDED"
    assert condition(cluster, ok, "Ready")["reason"] == "RayJobSucceeded"
    stalled = condition(cluster, bad, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "AppFailed")
    ray_job = cluster.get(RAY, "RayJob", bad, cluster.namespace)
    assert ray_job is not None
    assert stalled["message"] == ray_job["status"]["message"]  # KubeRay's (Ray's) words, passed on as they are
    assert "exit code 1" in stalled["message"]
    assert status(cluster, bad)["job"]["status"] == "FAILED"


def test_a_policy_change_stalls_a_workload_it_no_longer_admits(
    cluster: Cluster, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(small(unique("later"), cluster.namespace).expose("serve", visibility="External"))
    cluster.wait_until(lambda: condition(cluster, name, "PolicyAdmitted").get("status") == "True", "admitted")
    strict = cluster.policy(policy(f"{cluster.policy_name}-strict").set("priority", 20_000))
    strict_name = strict.doc["metadata"]["name"]
    cluster.apply(strict.doc)
    try:
        cluster.wait_until(lambda: condition(cluster, name, "Stalled").get("reason") == "PolicyViolation",
                           "Stalled=PolicyViolation after the policy changed")  # fmt: skip
        stalled = condition(cluster, name, "Stalled")
        assert stalled["status"] == "True"
        assert f"External is not allowed by policy {strict_name}" in stalled["message"]
        assert condition(cluster, name, "PolicyAdmitted")["status"] == "False"
    finally:
        cluster.delete(MLW, "MLWorkloadPolicy", strict_name)
    cluster.wait_until(lambda: condition(cluster, name, "Stalled").get("status") == "False",
                       "re-admitted once the strict policy is gone")  # fmt: skip


def test_delete_removes_every_child(cluster: Cluster, create: Callable[[WorkloadDoc], str]) -> None:
    name = create(small(unique("gone"), cluster.namespace).expose("dashboard"))
    expected = {f"ServiceAccount/{name}", f"NetworkPolicy/{name}-head", f"NetworkPolicy/{name}-workers-cpu",
                f"RayCluster/{name}", f"Service/{name}-dashboard", f"BackendConfig/{name}-dashboard",
                f"Ingress/{name}-dashboard"}  # fmt: skip
    # At least these: a real KubeRay may label objects of its own (e.g. Services) with the workload too.
    cluster.wait_until(lambda: expected <= children(cluster, name), "all seven children")
    assert cluster.delete(MLW, "MLWorkload", name, cluster.namespace)
    cluster.wait_until(
        lambda: cluster.get(MLW, "MLWorkload", name, cluster.namespace) is None, "the finalizer released"
    )
    cluster.wait_until(lambda: not children(cluster, name), "garbage collection of the children")

    def gcp_released() -> bool:
        events = cluster.list("v1", "Event", cluster.namespace)
        return any(e.get("reason") == "GcpReleased" and e["involvedObject"]["name"] == name for e in events)

    cluster.wait_until(gcp_released, "the GcpReleased event")
