"""The chart's ClusterRole grants exactly the API calls the operator makes: no call without a rule, no rule unused.

The operator (kopf and the mlworkload handlers, in dry-run GCP mode) runs a scenario that reaches
every code path that talks to Kubernetes: all three workload types, exposure added and removed
(apply and prune of every child kind), a SpotWithFallback GPU group (ComputeClass; the pending-pod
check), a policy change and a deletion. The in-memory API server records each request; each is
mapped to the RBAC (apiGroup, resource, verb) it needs and compared with the rendered rules.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.documents import permissive_policy, workload
from tests.support.helm import render
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.kube.server import RequestRecord
from tests.support.operator import emulated_cluster, running_operator

NS = "rbac"
MLW = "mlworkload.io/v1alpha1"
WAIT = 30.0
APPLY = "application/apply-patch+yaml"

Permission = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def permissions_of(request: RequestRecord) -> set[Permission]:
    """The RBAC permissions one request needs; none for discovery (non-resource URLs everyone may read)."""
    parts = request.path.strip("/").split("/")
    if parts[0] == "api" and len(parts) > 2:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        return set()
    if not rest:
        return set()
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]  # namespaced: namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    resource = f"{resource}/{sub}" if sub else resource
    watching = request.query.get("watch") in ("true", "1")
    verb = {
        "GET": "get" if name else "watch" if watching else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[request.method]
    needed = {(group, resource, verb)}
    if verb == "patch" and request.content_type == APPLY:
        needed.add((group, resource, "create"))  # server-side apply creates what does not exist yet
    return needed


def granted() -> set[Permission]:
    (role,) = [m for m in render() if m["kind"] == "ClusterRole"]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[Permission]]:
    with emulated_cluster(NS) as server:
        yield run_scenario(server, server.kubeconfig(tmp_path_factory.mktemp("kube") / "config"))


def status_reason(server: KubeEmulatorServer, name: str, kind: str) -> str:
    found = server.get_object(MLW, "MLWorkload", name, NS) or {}
    conditions = (found.get("status") or {}).get("conditions") or []
    return next((c["reason"] for c in conditions if c["type"] == kind), "")


def ingress_names(server: KubeEmulatorServer) -> list[str]:
    return sorted(item["metadata"]["name"] for item in server.list_objects("networking.k8s.io/v1", "Ingress", NS))


def run_scenario(server: KubeEmulatorServer, kubeconfig: Path) -> set[Permission]:
    gpu = {"capacity": "SpotWithFallback"}
    server.put_object(workload("cluster", NS).gpu_group(**gpu).expose("dashboard").expose("serve").doc)
    server.put_object(workload("job", NS, "Job").job().doc)
    server.put_object(
        workload("serve", NS, "Service").service().expose("serve", visibility="External", host="llm.example.com").doc
    )
    with running_operator(kubeconfig):
        wait_until(lambda: len(server.list_objects("networking.k8s.io/v1", "Ingress", NS)) == 3, timeout=WAIT,
                   what="the cluster's two Ingresses and the service's")  # fmt: skip
        for name in ("job", "serve"):
            wait_until(lambda name=name: status_reason(server, name, "PolicyAdmitted") == "Allowed", timeout=WAIT,
                       what=f"{name} admitted")  # fmt: skip
        # A pod the autoscaler has not placed yet: the operator reads its events.
        labels = {"app.kubernetes.io/managed-by": "mlworkload", "mlworkload.io/workload": "cluster"}
        pod = {"name": "cluster-gpu-worker-abcde", "namespace": NS, "labels": labels}
        server.put_object({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Pending"}, "metadata": pod})
        wait_until(lambda: any(r.path.endswith(f"/namespaces/{NS}/events") and r.method == "GET"
                               for r in server.requests()), timeout=WAIT, what="pending pods' events read")  # fmt: skip
        # Exposure and the GPU group removed: Services, BackendConfigs, Ingresses and a NetworkPolicy pruned.
        server.put_object(workload("cluster", NS).doc)
        wait_until(lambda: ingress_names(server) == ["serve-serve"], timeout=WAIT,
                   what="the cluster's Ingresses pruned")  # fmt: skip
        # Each type changed: the Ray object of the old type is pruned.
        retyped = [
            workload("serve", NS),
            workload("job", NS, "Service").service(),
            workload("cluster", NS, "Job").job(),
        ]
        for doc in retyped:
            server.put_object(doc.doc)
        wait_until(lambda: ingress_names(server) == [], timeout=WAIT, what="the service's Ingress pruned")
        for kind in ("RayCluster", "RayJob", "RayService"):
            wait_until(lambda kind=kind: len(server.list_objects("ray.io/v1", kind, NS)) == 1, timeout=WAIT,
                       what=f"one {kind} left after the type changes")  # fmt: skip
        server.put_object(permissive_policy("all").set("labels", {"required": []}).doc)  # a policy change
        server.delete_object(MLW, "MLWorkload", "job", NS)
        wait_until(lambda: server.get_object(MLW, "MLWorkload", "job", NS) is None, timeout=WAIT,
                   what="the job's finalizer released")  # fmt: skip
    return {permission for request in server.requests() for permission in permissions_of(request)}


def test_every_call_the_operator_makes_has_a_rule(recorded: set[Permission]) -> None:
    missing = sorted(recorded - granted())
    assert missing == [], "\n".join(map(str, missing))


def test_every_rule_is_used_by_some_call(recorded: set[Permission]) -> None:
    unused = sorted(granted() - recorded)
    assert unused == [], "\n".join(map(str, unused))


def test_the_role_grants_no_secrets_and_no_wildcards() -> None:
    permissions = granted()
    assert not any("*" in permission for permission in permissions)
    assert not any(resource == "secrets" for _, resource, _ in permissions)


@pytest.mark.parametrize(
    ("method", "path", "query", "content_type", "expected"),
    [
        ("GET", "/apis/ray.io/v1/namespaces/a/rayclusters", {"watch": "true"}, None,
         {("ray.io", "rayclusters", "watch")}),
        ("GET", "/api/v1/namespaces", {}, None, {("", "namespaces", "list")}),
        ("GET", "/api/v1/namespaces/a", {}, None, {("", "namespaces", "get")}),
        ("PATCH", "/apis/mlworkload.io/v1alpha1/namespaces/a/mlworkloads/w/status", {}, "application/merge-patch+json",
         {("mlworkload.io", "mlworkloads/status", "patch")}),
        ("PATCH", "/api/v1/namespaces/a/services/s", {}, APPLY,
         {("", "services", "patch"), ("", "services", "create")}),
        ("PATCH", "/apis/cloud.google.com/v1/computeclasses/c", {}, APPLY,
         {("cloud.google.com", "computeclasses", "patch"), ("cloud.google.com", "computeclasses", "create")}),
        ("POST", "/api/v1/namespaces/a/events", {}, "application/json", {("", "events", "create")}),
        ("GET", "/apis", {}, None, set()),
        ("GET", "/apis/ray.io/v1", {}, None, set()),
    ],
)  # fmt: skip
def test_requests_map_to_the_permissions_they_need(
    method: str, path: str, query: dict[str, str], content_type: str | None, expected: set[Permission]
) -> None:
    request = RequestRecord(index=0, method=method, path=path, query=query, content_type=content_type)
    assert permissions_of(request) == expected
