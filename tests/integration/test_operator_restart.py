"""Operator restarts: a restart in the middle of a reconcile converges, and creates nothing twice.

The cut is made with an injected fault, not by timing: the first operator may apply one child, every
later child apply is answered 500 until that operator has stopped. So the partial state is known
exactly, and the second operator has work only it can do (the refused children) to wait for.
"""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.documents import workload
from tests.support.kube import APPLY_PATCH, KubeCall, KubeEmulatorServer, KubeFault, RequestRecord, wait_until
from tests.support.operator import emulated_cluster, running_operator

NS = "restart"
MLW = "mlworkload.io/v1alpha1"
KINDS = [("v1", "ServiceAccount"), ("v1", "Service"), ("networking.k8s.io/v1", "NetworkPolicy"),
         ("networking.k8s.io/v1", "Ingress"), ("cloud.google.com/v1", "BackendConfig"),
         ("ray.io/v1", "RayCluster")]  # fmt: skip
FIRST_CHILD = f"/api/v1/namespaces/{NS}/serviceaccounts/again"  # children are applied identity first
STATUS = f"/apis/{MLW}/namespaces/{NS}/mlworkloads/again/status"


@pytest.fixture
def server() -> Iterator[KubeEmulatorServer]:
    with emulated_cluster(NS) as emulator:
        yield emulator


def is_child(call: KubeCall) -> bool:
    return call.resource != "mlworkloads"  # the workload itself (kopf's annotations, its status) is never cut


def child_applies(server: KubeEmulatorServer, since: int = 0) -> list[RequestRecord]:
    """Server-side applies of the workload's children, answered or refused."""
    return [
        r for r in server.requests(since)
        if r.method == "PATCH" and (r.content_type or "").startswith(APPLY_PATCH) and "/mlworkloads/" not in r.path
    ]  # fmt: skip


def children(server: KubeEmulatorServer) -> Counter[str]:
    return Counter(
        f"{o['kind']}/{o['metadata']['name']}" for av, kind in KINDS for o in server.list_objects(av, kind, NS)
    )


def test_a_restart_mid_reconcile_converges_without_duplicates(server: KubeEmulatorServer, tmp_path: Path) -> None:
    kubeconfig = server.kubeconfig(tmp_path / "config")
    server.put_object(workload("again", NS).gpu_group().group("cpu").expose("dashboard").expose("serve").doc)
    cut = server.inject(
        KubeFault(status=500, methods={"PATCH"}, content_type=APPLY_PATCH, when=is_child, after=1, times=None)
    )
    with running_operator(kubeconfig):
        # A refused apply means the first child was applied and the reconcile stopped right after it.
        wait_until(lambda: cut.hits >= 1, timeout=30, what="a child apply refused after the first")
    cut.remove()
    first_run = child_applies(server)
    assert [r.path for r in first_run if r.injected is None] == [FIRST_CHILD]
    assert {r.injected for r in first_run if r.path != FIRST_CHILD} == {500}
    assert children(server) == Counter({"ServiceAccount/again": 1})  # exactly the cut's partial state
    refused = {r.path for r in first_run if r.injected is not None}

    mark = server.request_count
    with running_operator(kubeconfig):
        # Only the second run can apply the refused children and then write the status that follows them.
        wait_until(lambda: any(r.path == STATUS and r.method == "PATCH" for r in server.writes(since=mark)),
                   timeout=30, what="a status written after the restart")  # fmt: skip
        wait_until(lambda: len(server.list_objects("networking.k8s.io/v1", "Ingress", NS)) == 2, timeout=30,
                   what="both Ingresses, the last children applied")  # fmt: skip
    assert server.faulted(since=mark) == []
    second_run = {r.path for r in child_applies(server, since=mark)}
    assert refused <= second_run  # the second run did the work the first could not
    assert FIRST_CHILD not in second_run  # and did not redo what the first had done
    assert children(server) == Counter({
        "ServiceAccount/again": 1, "NetworkPolicy/again-head": 1, "NetworkPolicy/again-workers-gpu": 1,
        "NetworkPolicy/again-workers-cpu": 1, "RayCluster/again": 1, "Service/again-dashboard": 1,
        "Service/again-serve": 1, "BackendConfig/again-dashboard": 1, "BackendConfig/again-serve": 1,
        "Ingress/again-dashboard": 1, "Ingress/again-serve": 1,
    })  # fmt: skip
    # Nothing was written twice: every child was applied successfully exactly once over both runs.
    applied = Counter(r.path for r in child_applies(server) if r.injected is None)
    assert set(applied.values()) == {1}
    creations = [r for r in server.requests() if r.method == "POST" and "/events" not in r.path]
    assert creations == []  # children are written by server-side apply only, never by a blind create
    workload_uid = server.get_object(MLW, "MLWorkload", "again", NS)["metadata"]["uid"]  # type: ignore[index]
    cluster = server.get_object("ray.io/v1", "RayCluster", "again", NS)
    assert cluster is not None
    assert cluster["metadata"]["ownerReferences"][0]["uid"] == workload_uid
