"""Operator restarts: a restart in the middle of a reconcile converges, and creates nothing twice."""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.documents import workload
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.operator import emulated_cluster, running_operator

NS = "restart"
MLW = "mlworkload.io/v1alpha1"


@pytest.fixture
def server() -> Iterator[KubeEmulatorServer]:
    with emulated_cluster(NS) as emulator:
        yield emulator


def test_a_restart_mid_reconcile_converges_without_duplicates(server: KubeEmulatorServer, tmp_path: Path) -> None:
    kubeconfig = server.kubeconfig(tmp_path / "config")
    server.put_object(workload("again", NS).gpu_group().group("cpu").expose("dashboard").expose("serve").doc)
    applies = f"/namespaces/{NS}/"
    with running_operator(kubeconfig):
        # Stop as soon as the first child has been applied: the reconcile is cut half way.
        wait_until(lambda: any(w.method == "PATCH" and applies in w.path for w in server.writes()), timeout=30,
                   what="the first child applied")  # fmt: skip
    first_run = server.request_count
    partial = server.list_objects("ray.io/v1", "RayCluster", NS)
    with running_operator(kubeconfig):
        wait_until(lambda: (server.get_object(MLW, "MLWorkload", "again", NS) or {}).get("status", {}).get("phase"),
                   timeout=30, what="a status after the restart")  # fmt: skip
        wait_until(lambda: len(server.list_objects("networking.k8s.io/v1", "Ingress", NS)) == 2, timeout=30,
                   what="both Ingresses, the last children applied")  # fmt: skip
    kinds = [("v1", "ServiceAccount"), ("v1", "Service"), ("networking.k8s.io/v1", "NetworkPolicy"),
             ("networking.k8s.io/v1", "Ingress"), ("cloud.google.com/v1", "BackendConfig"),
             ("ray.io/v1", "RayCluster")]  # fmt: skip
    names = Counter(
        f"{o['kind']}/{o['metadata']['name']}" for av, kind in kinds for o in server.list_objects(av, kind, NS)
    )
    assert names == Counter({
        "ServiceAccount/again": 1, "NetworkPolicy/again-head": 1, "NetworkPolicy/again-workers-gpu": 1,
        "NetworkPolicy/again-workers-cpu": 1, "RayCluster/again": 1, "Service/again-dashboard": 1,
        "Service/again-serve": 1, "BackendConfig/again-dashboard": 1, "BackendConfig/again-serve": 1,
        "Ingress/again-dashboard": 1, "Ingress/again-serve": 1,
    })  # fmt: skip
    # Nothing was created twice: every child was created (POST or apply-create) at most once.
    creations = [r for r in server.requests() if r.method == "POST" and "/events" not in r.path]
    assert creations == []  # children are written by server-side apply only, never by a blind create
    workload_uid = server.get_object(MLW, "MLWorkload", "again", NS)["metadata"]["uid"]  # type: ignore[index]
    cluster = server.get_object("ray.io/v1", "RayCluster", "again", NS)
    assert cluster is not None
    assert cluster["metadata"]["ownerReferences"][0]["uid"] == workload_uid
    assert len(partial) <= 1
    assert server.request_count > first_run
