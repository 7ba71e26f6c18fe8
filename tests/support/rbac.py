"""What the RBAC tests share: requests mapped to the permissions they need, the chart's rules as grants, and the
scenarios that make the operator's two roles call everything they ever call (tests/integration/test_rbac.py,
all namespaces; tests/integration/test_rbac_namespaced.py, a list of watched namespaces).
"""

import base64
import datetime
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from mlworkload.webhook.certificates import issue_serving, read_tls, service_hosts
from tests.support.documents import permissive_policy, policy, workload
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.kube.server import RequestRecord

MLW = "mlworkload.io/v1alpha1"
WAIT = 30.0
APPLY = "application/apply-patch+yaml"
SYSTEM = "mlworkload-system"  # the release namespace (the webhook's Secret)
WEBHOOK_SECRET = "mlworkload-webhook-ca"
WEBHOOK_CONFIGURATION = "mlworkload"

Permission = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)
# (namespace or "" for cluster-scoped, apiGroup, resource, verb, object name or "" for none); in a grant, "*"
# for the namespace is a ClusterRole's (every namespace) and "*" for the name is a rule without resourceNames.
NamedPermission = tuple[str, str, str, str, str]
# The operator, running until the block ends, from its kubeconfig and MLW_* settings.
OperatorRun = Callable[[Path, Mapping[str, str]], AbstractContextManager[Any]]


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


def grants_of(role: Mapping[str, Any]) -> set[NamedPermission]:
    """A ClusterRole's (namespace "*") or Role's (its namespace) rules, one tuple per name granted."""
    namespace = role["metadata"]["namespace"] if role["kind"] == "Role" else "*"
    return {
        (namespace, group, resource, verb, name)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or ["*"]
    }


def allows(grant: NamedPermission, call: NamedPermission) -> bool:
    namespace, group, resource, verb, name = grant
    return (group, resource, verb) == call[1:4] and namespace in ("*", call[0]) and name in ("*", call[4])


# --- the scenarios -------------------------------------------------------------------------------------


def _status_reason(server: KubeEmulatorServer, namespace: str, name: str, kind: str) -> str:
    found = server.get_object(MLW, "MLWorkload", name, namespace) or {}
    conditions = (found.get("status") or {}).get("conditions") or []
    return next((c["reason"] for c in conditions if c["type"] == kind), "")


def _ingress_names(server: KubeEmulatorServer, namespace: str) -> list[str]:
    ingresses = server.list_objects("networking.k8s.io/v1", "Ingress", namespace)
    return sorted(item["metadata"]["name"] for item in ingresses)


def run_controller_scenario(
    server: KubeEmulatorServer, kubeconfig: Path, namespaces: Sequence[str], operator: OperatorRun
) -> list[RequestRecord]:
    """The controller role through every code path that talks to Kubernetes, in each of `namespaces`: all three
    workload types, exposure added and removed (apply and prune of every child kind), a SpotWithFallback GPU
    group (ComputeClass; the pending-pod check), each type changed, a policy change, a deletion and a policy the
    operator cannot read."""
    gpu = {"capacity": "SpotWithFallback"}
    for ns in namespaces:
        server.put_object(workload("cluster", ns).gpu_group(**gpu).expose("dashboard").expose("serve").doc)
        server.put_object(workload("job", ns, "Job").job().doc)
        external = {"visibility": "External", "host": f"llm.{ns}.example.com"}
        server.put_object(workload("serve", ns, "Service").service().expose("serve", **external).doc)
    with operator(kubeconfig, {"MLW_ROLE": "controller"}):
        for ns in namespaces:
            wait_until(lambda ns=ns: len(_ingress_names(server, ns)) == 3, timeout=WAIT,
                       what=f"the cluster's two Ingresses and the service's in {ns}")  # fmt: skip
            for name in ("job", "serve"):
                wait_until(lambda ns=ns, name=name: _status_reason(server, ns, name, "PolicyAdmitted") == "Allowed",
                           timeout=WAIT, what=f"{ns}/{name} admitted")  # fmt: skip
        # A pod the autoscaler has not placed yet: the operator reads its events.
        labels = {"app.kubernetes.io/managed-by": "mlworkload", "mlworkload.io/workload": "cluster"}
        for ns in namespaces:
            pod = {"name": "cluster-gpu-worker-abcde", "namespace": ns, "labels": labels}
            server.put_object({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Pending"}, "metadata": pod})
        for ns in namespaces:
            wait_until(lambda ns=ns: any(r.path.endswith(f"/namespaces/{ns}/events") and r.method == "GET"
                                         for r in server.requests()),
                       timeout=WAIT, what=f"pending pods' events read in {ns}")  # fmt: skip
        # Exposure and the GPU group removed: Services, BackendConfigs, Ingresses and a NetworkPolicy pruned.
        for ns in namespaces:
            server.put_object(workload("cluster", ns).doc)
        for ns in namespaces:
            wait_until(lambda ns=ns: _ingress_names(server, ns) == ["serve-serve"], timeout=WAIT,
                       what=f"the cluster's Ingresses pruned in {ns}")  # fmt: skip
        # Each type changed: the Ray object of the old type is pruned.
        for ns in namespaces:
            for doc in (workload("serve", ns), workload("job", ns, "Service").service(),
                        workload("cluster", ns, "Job").job()):  # fmt: skip
                server.put_object(doc.doc)
        for ns in namespaces:
            wait_until(lambda ns=ns: _ingress_names(server, ns) == [], timeout=WAIT,
                       what=f"the service's Ingress pruned in {ns}")  # fmt: skip
            for kind in ("RayCluster", "RayJob", "RayService"):
                wait_until(lambda ns=ns, kind=kind: len(server.list_objects("ray.io/v1", kind, ns)) == 1,
                           timeout=WAIT, what=f"one {kind} left in {ns} after the type changes")  # fmt: skip
        server.put_object(permissive_policy("all").set("labels", {"required": []}).doc)  # a policy change
        for ns in namespaces:
            server.delete_object(MLW, "MLWorkload", "job", ns)
        for ns in namespaces:
            wait_until(lambda ns=ns: server.get_object(MLW, "MLWorkload", "job", ns) is None, timeout=WAIT,
                       what=f"the job's finalizer released in {ns}")  # fmt: skip
        # A stored policy the operator cannot read: a warning Event on it, cluster-scoped, so kopf posts it in
        # its context's namespace (in a pod, its own).
        server.put_object(policy("broken").set("priority", 90).set("ray.allowedVersions", ["2.41"]).doc)
        wait_until(lambda: any(event.get("reason") == "InvalidPolicy" for event in server.list_objects("v1", "Event")),
                   timeout=WAIT, what="an InvalidPolicy Event")  # fmt: skip
        server.delete_object(MLW, "MLWorkloadPolicy", "broken")
    return server.requests()


def run_webhook_scenario(
    server: KubeEmulatorServer, directory: Path, namespace: str, operator: OperatorRun
) -> list[RequestRecord]:
    """The webhook role owning its certificate (the server holds the chart's webhook configuration): it creates
    its Secret in SYSTEM, sets the caBundle, renews an expiring certificate and restores a reset caBundle,
    while its indexes read a workload in `namespace`."""
    settings = {"MLW_ROLE": "webhook", "MLW_WEBHOOK_CERTIFICATES": "operator", "POD_NAMESPACE": SYSTEM,
                "MLW_WEBHOOK_SECRET": WEBHOOK_SECRET, "MLW_WEBHOOK_CONFIGURATION": WEBHOOK_CONFIGURATION,
                "MLW_WEBHOOK_CERT_DIR": str(directory / "served"),
                "MLW_WEBHOOK_CERTIFICATE_CHECK_SECONDS": "0.5"}  # fmt: skip
    server.put_object(workload("judged", namespace).doc)
    admission = "admissionregistration.k8s.io/v1"

    def secret() -> dict[str, Any]:
        return server.get_object("v1", "Secret", WEBHOOK_SECRET, SYSTEM) or {}

    def bundles() -> list[str | None]:
        found = server.get_object(admission, "ValidatingWebhookConfiguration", WEBHOOK_CONFIGURATION)
        return [hook["clientConfig"].get("caBundle") for hook in (found or {}).get("webhooks") or []]

    with operator(server.kubeconfig(directory / "kubeconfig"), settings):
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
        configuration = server.get_object(admission, "ValidatingWebhookConfiguration", WEBHOOK_CONFIGURATION)
        assert configuration is not None
        kept = bundles()
        configuration["webhooks"][0]["clientConfig"].pop("caBundle")
        server.put_object(configuration)
        wait_until(lambda: bundles() == kept, timeout=WAIT, what="the caBundle restored")
    return server.requests()


def named_calls(requests: Iterable[RequestRecord]) -> set[NamedPermission]:
    return {permission for request in requests for permission in named_permissions_of(request)}
