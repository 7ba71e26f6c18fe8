"""The chart's RBAC grants exactly the API calls each role makes: no call without a rule, no rule unused.

The controller role (kopf and the mlworkload handlers, in dry-run GCP mode) runs a scenario that
reaches every code path that talks to Kubernetes: all three workload types, exposure added and
removed (apply and prune of every child kind), a SpotWithFallback GPU group (ComputeClass; the
pending-pod check), a policy change and a deletion. The in-memory API server records each request;
each is mapped to the RBAC (apiGroup, resource, verb) it needs and compared with the rendered rules.

The webhook role (certificates owned by the operator) creates its Secret, sets the caBundle, renews an
expiring certificate and restores a reset caBundle; its calls are compared with its own ClusterRole and
Role down to the namespace and the object names (resourceNames), since it may touch one Secret and one
webhook configuration only.
"""

import base64
import datetime
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlworkload.webhook.certificates import issue_serving, read_tls, service_hosts
from tests.support.documents import permissive_policy, workload
from tests.support.helm import render
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.kube.server import RequestRecord
from tests.support.operator import emulated_cluster, free_port, running_operator

NS = "rbac"
MLW = "mlworkload.io/v1alpha1"
WAIT = 30.0
APPLY = "application/apply-patch+yaml"

SYSTEM = "mlworkload-system"
Permission = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)
# (namespace or "" for cluster-scoped, apiGroup, resource, verb, object name or "" for none)
NamedPermission = tuple[str, str, str, str, str]


def permissions_of(request: RequestRecord) -> set[Permission]:
    """The RBAC permissions one request needs; none for discovery (non-resource URLs everyone may read)."""
    return {(group, resource, verb) for _, group, resource, verb, _ in named_permissions_of(request)}


def named_permissions_of(request: RequestRecord) -> set[NamedPermission]:
    """`permissions_of` with the namespace and the object name RBAC authorizes against: the name in the path,
    or, for a list or watch, the one a `metadata.name=` field selector asks for (which resourceNames allow)."""
    parts = request.path.strip("/").split("/")
    if parts[0] == "api" and len(parts) > 2:
        group, rest = "", parts[2:]
    elif parts[0] == "apis" and len(parts) > 3:
        group, rest = parts[1], parts[3:]
    else:
        return set()
    if not rest:
        return set()
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]  # namespaced: namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]]
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
    selected = dict(
        term.split("=", 1) for term in (request.query.get("fieldSelector") or "").split(",") if "=" in term
    ).get("metadata.name")
    object_name = name or selected or ""
    needed = {(namespace, group, resource, verb, object_name)}
    if verb == "patch" and request.content_type == APPLY:
        needed.add((namespace, group, resource, "create", object_name))  # server-side apply creates what is missing
    return needed


def granted() -> set[Permission]:
    """The controller's ClusterRole."""
    (role,) = [m for m in render() if m["kind"] == "ClusterRole" and m["metadata"]["name"] == "mlworkload"]
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
    with running_operator(kubeconfig, settings={"MLW_ROLE": "controller"}):
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


# --- the webhook role ----------------------------------------------------------------------------------


def webhook_granted() -> set[NamedPermission]:
    """The webhook's ClusterRole (any namespace) and Role (the release namespace), one tuple per name granted."""
    manifests = render()
    webhook = [m for m in manifests if m["kind"] == "ClusterRole" and m["metadata"]["name"] == "mlworkload-webhook"]
    rules = [("*", rule) for m in webhook for rule in m["rules"]]
    rules += [(m["metadata"]["namespace"], rule) for m in manifests if m["kind"] == "Role" for rule in m["rules"]]
    return {
        (namespace, group, resource, verb, name)
        for namespace, rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or ["*"]
    }


def allows(grant: NamedPermission, call: NamedPermission) -> bool:
    namespace, group, resource, verb, name = grant
    return (group, resource, verb) == call[1:4] and namespace in ("*", call[0]) and name in ("*", call[4])


@pytest.fixture(scope="module")
def webhook_recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[NamedPermission]]:
    with emulated_cluster(NS, SYSTEM) as server:
        (configuration,) = [m for m in render() if m["kind"] == "ValidatingWebhookConfiguration"]
        server.put_object(configuration)
        yield run_webhook_scenario(server, tmp_path_factory.mktemp("webhook"))


def run_webhook_scenario(server: KubeEmulatorServer, directory: Path) -> set[NamedPermission]:
    settings = {"MLW_ROLE": "webhook", "MLW_WEBHOOK_CERTIFICATES": "operator", "POD_NAMESPACE": SYSTEM,
                "MLW_WEBHOOK_SECRET": "mlworkload-webhook-ca", "MLW_WEBHOOK_CONFIGURATION": "mlworkload",
                "MLW_WEBHOOK_CERT_DIR": str(directory / "served"),
                "MLW_WEBHOOK_CERTIFICATE_CHECK_SECONDS": "0.5"}  # fmt: skip
    server.put_object(workload("judged", NS).doc)

    def secret() -> dict[str, Any]:
        return server.get_object("v1", "Secret", "mlworkload-webhook-ca", SYSTEM) or {}

    def bundles() -> list[str | None]:
        found = server.get_object("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "mlworkload")
        return [hook["clientConfig"].get("caBundle") for hook in (found or {}).get("webhooks") or []]

    kubeconfig = server.kubeconfig(directory / "kubeconfig")
    with running_operator(kubeconfig, webhook_port=free_port(), settings=settings):
        wait_until(lambda: secret() and bundles() == [secret()["data"]["ca.crt"]] * 2, timeout=WAIT,
                   what="the Secret created and the caBundle set")  # fmt: skip
        # An expiring certificate: renewed in place (update).
        current = read_tls(secret()["data"])
        assert current is not None
        old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=350)
        expiring = issue_serving(current.ca, service_hosts("mlworkload-webhook", SYSTEM), old)
        stale = secret()
        stale["data"] = {**stale["data"], "tls.crt": base64.b64encode(expiring.cert).decode(),
                         "tls.key": base64.b64encode(expiring.key).decode()}  # fmt: skip
        server.put_object(stale)
        wait_until(lambda: secret()["data"]["tls.crt"] != stale["data"]["tls.crt"], timeout=WAIT, what="renewed")
        # A caBundle reset: put back (patch).
        configuration = server.get_object("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration",
                                          "mlworkload")  # fmt: skip
        assert configuration is not None
        kept = bundles()
        configuration["webhooks"][0]["clientConfig"].pop("caBundle")
        server.put_object(configuration)
        wait_until(lambda: bundles() == kept, timeout=WAIT, what="the caBundle restored")
    return {permission for request in server.requests() for permission in named_permissions_of(request)}


def test_every_call_the_webhook_role_makes_has_a_rule_for_that_object(webhook_recorded: set[NamedPermission]) -> None:
    grants = webhook_granted()
    missing = sorted(call for call in webhook_recorded if not any(allows(grant, call) for grant in grants))
    assert missing == [], "\n".join(map(str, missing))


def test_every_webhook_rule_is_used_by_some_call(webhook_recorded: set[NamedPermission]) -> None:
    unused = sorted(grant for grant in webhook_granted() if not any(allows(grant, call) for call in webhook_recorded))
    assert unused == [], "\n".join(map(str, unused))


def test_the_webhook_role_touches_one_secret_and_one_webhook_configuration_and_writes_nothing_else(
    webhook_recorded: set[NamedPermission],
) -> None:
    writes = {call for call in webhook_recorded if call[3] in {"create", "update", "patch", "delete"}}
    assert writes == {
        (SYSTEM, "", "secrets", "create", ""),
        (SYSTEM, "", "secrets", "update", "mlworkload-webhook-ca"),
        ("", "admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch", "mlworkload"),
    }
    watched = {call for call in webhook_recorded if call[2] == "validatingwebhookconfigurations"}
    assert all(call[4] == "mlworkload" for call in watched)  # never a listing of every webhook configuration


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
