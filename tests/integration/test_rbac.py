"""The chart's RBAC grants exactly the API calls each role makes: no call without a rule, no rule unused.

The controller role (kopf and the mlworkload handlers, in dry-run GCP mode) runs a scenario that
reaches every code path that talks to Kubernetes (tests/support/rbac.py): all three workload types,
exposure added and removed (apply and prune of every child kind), a SpotWithFallback GPU group
(ComputeClass; the pending-pod check), a policy change, a deletion and a policy it cannot read. The
in-memory API server records each request; each is mapped to the RBAC (apiGroup, resource, verb) it
needs and compared with the rendered rules.

The webhook role (certificates owned by the operator) creates its Secret, sets the caBundle, renews an
expiring certificate and restores a reset caBundle; its calls are compared with its own ClusterRole and
Role down to the namespace and the object names (resourceNames), since it may touch one Secret and one
webhook configuration only.
"""

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from kopf.testing import KopfRunner

from tests.support.helm import render
from tests.support.kube.server import RequestRecord
from tests.support.operator import emulated_cluster, free_port, running_operator
from tests.support.rbac import (
    APPLY,
    SYSTEM,
    NamedPermission,
    Permission,
    allows,
    grants_of,
    named_calls,
    permissions_of,
    run_controller_scenario,
    run_webhook_scenario,
)

NS = "rbac"


def operator(kubeconfig: Path, settings: Mapping[str, str]) -> AbstractContextManager[KopfRunner]:
    """The operator watching all namespaces, as the chart runs it by default."""
    return running_operator(kubeconfig, settings=settings)


def webhook_operator(kubeconfig: Path, settings: Mapping[str, str]) -> AbstractContextManager[KopfRunner]:
    return running_operator(kubeconfig, webhook_port=free_port(), settings=settings)


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
        kubeconfig = server.kubeconfig(tmp_path_factory.mktemp("kube") / "config")
        requests = run_controller_scenario(server, kubeconfig, [NS], operator)
        yield {permission for request in requests for permission in permissions_of(request)}


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
    roles = [m for m in manifests if m["kind"] == "ClusterRole" and m["metadata"]["name"] == "mlworkload-webhook"]
    roles += [m for m in manifests if m["kind"] == "Role"]
    return {grant for role in roles for grant in grants_of(role)}


@pytest.fixture(scope="module")
def webhook_recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[NamedPermission]]:
    with emulated_cluster(NS, SYSTEM) as server:
        (configuration,) = [m for m in render() if m["kind"] == "ValidatingWebhookConfiguration"]
        server.put_object(configuration)
        requests = run_webhook_scenario(server, tmp_path_factory.mktemp("webhook"), NS, webhook_operator)
        yield named_calls(requests)


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
