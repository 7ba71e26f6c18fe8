"""With operator.namespaces set, the chart grants namespaced access only in the watched namespaces.

The operator runs as such a deployment does (kopf's `--namespace` for each watched namespace, MLW_NAMESPACES),
through the same scenarios as tests/integration/test_rbac.py in two watched namespaces, next to a third one it
must leave alone. Every recorded call is checked against the chart rendered with those namespaces: a call in a
namespace against the Roles of that very namespace, a call without one (a cluster-scoped object, or a listing
across all namespaces) against the ClusterRole; every rule of each is used; the ClusterRoles grant nothing on a
namespaced kind; and the workload webhook is asked only about the watched namespaces.
"""

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner

from tests.support.documents import workload
from tests.support.helm import render
from tests.support.kube import KubeEmulatorServer
from tests.support.kube.resources import (
    BUILTIN_RESOURCES,
    ResourceRegistry,
    default_crd_paths,
    load_crds,
    spec_from_crd,
)
from tests.support.operator import emulated_cluster, free_port, running_operator
from tests.support.rbac import (
    SYSTEM,
    WEBHOOK_CONFIGURATION,
    NamedPermission,
    allows,
    grants_of,
    named_calls,
    run_controller_scenario,
    run_webhook_scenario,
)

WATCHED = ("team-a", "team-b")
UNWATCHED = "team-c"  # holds a workload too: nothing may reach it
CONTROLLER, WEBHOOK = "mlworkload", "mlworkload-webhook"
# kopf posts the Events of cluster-scoped objects in its own namespace, the release namespace (not a watched one).
CONTROLLER_ROLES = {CONTROLLER, "mlworkload-events"}
# The webhook's Roles: MLWorkloads in each watched namespace, its certificate Secret in the release namespace.
WEBHOOK_ROLES = {"mlworkload-webhook-workloads", "mlworkload-webhook"}


def chart() -> list[dict[str, Any]]:
    return render("--set", "operator.namespaces={" + ",".join(WATCHED) + "}", namespace=SYSTEM)


def roles(manifests: list[dict[str, Any]], cluster_role: str, role_names: set[str]) -> list[dict[str, Any]]:
    """One role's ClusterRole and its Roles, each bound to that role's ServiceAccount."""
    found = [m for m in manifests if m["kind"] == "ClusterRole" and m["metadata"]["name"] == cluster_role]
    found += [m for m in manifests if m["kind"] == "Role" and m["metadata"]["name"] in role_names]
    return found


def operator(kubeconfig: Path, settings: Mapping[str, str]) -> AbstractContextManager[KopfRunner]:
    return running_operator(kubeconfig, settings=settings, namespaces=WATCHED)


def webhook_operator(kubeconfig: Path, settings: Mapping[str, str]) -> AbstractContextManager[KopfRunner]:
    return running_operator(kubeconfig, webhook_port=free_port(), settings=settings, namespaces=WATCHED)


def bystander(server: KubeEmulatorServer) -> dict[str, Any]:
    found = server.get_object("mlworkload.io/v1alpha1", "MLWorkload", "bystander", UNWATCHED)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def controller_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[set[NamedPermission], dict[str, Any]]]:
    """(the controller's calls, the unwatched namespace's workload after the run)."""
    with emulated_cluster(*WATCHED, UNWATCHED, SYSTEM) as server:
        server.put_object(workload("bystander", UNWATCHED).doc)
        # The context's namespace is kopf's own, as a pod's service account namespace is in a cluster.
        config = server.kubeconfig_dict()
        config["contexts"][0]["context"]["namespace"] = SYSTEM
        kubeconfig = tmp_path_factory.mktemp("kube") / "config"
        kubeconfig.write_text(yaml.safe_dump(config), encoding="utf-8")
        requests = run_controller_scenario(server, kubeconfig, WATCHED, operator)
        yield named_calls(requests), bystander(server)


@pytest.fixture(scope="module")
def controller_calls(controller_run: tuple[set[NamedPermission], dict[str, Any]]) -> set[NamedPermission]:
    return controller_run[0]


@pytest.fixture(scope="module")
def webhook_calls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[NamedPermission]]:
    with emulated_cluster(*WATCHED, UNWATCHED, SYSTEM) as server:
        server.put_object(workload("bystander", UNWATCHED).doc)
        (configuration,) = [m for m in chart() if m["kind"] == "ValidatingWebhookConfiguration"]
        server.put_object(configuration)
        requests = run_webhook_scenario(server, tmp_path_factory.mktemp("webhook"), WATCHED[0], webhook_operator)
        yield named_calls(requests)


ROLES = {
    "controller": (CONTROLLER, CONTROLLER_ROLES),
    "webhook": (WEBHOOK, WEBHOOK_ROLES),
}


@pytest.fixture(params=list(ROLES))
def role(request: pytest.FixtureRequest) -> tuple[set[NamedPermission], list[dict[str, Any]]]:
    """(the role's recorded calls, its ClusterRole and Roles as rendered)."""
    calls = request.getfixturevalue(f"{request.param}_calls")
    cluster_role, role_names = ROLES[request.param]
    return calls, roles(chart(), cluster_role, role_names)


def test_every_call_in_a_namespace_is_allowed_by_a_role_of_that_namespace(
    role: tuple[set[NamedPermission], list[dict[str, Any]]],
) -> None:
    calls, manifests = role
    grants = {grant for m in manifests if m["kind"] == "Role" for grant in grants_of(m)}
    assert all(grant[0] != "*" for grant in grants)
    missing = sorted(call for call in calls if call[0] and not any(allows(grant, call) for grant in grants))
    assert missing == [], "\n".join(map(str, missing))


def test_every_call_without_a_namespace_is_allowed_by_the_cluster_role(
    role: tuple[set[NamedPermission], list[dict[str, Any]]],
) -> None:
    """A listing across all namespaces of a namespaced kind would show here: the operator must not make one."""
    calls, manifests = role
    grants = {grant for m in manifests if m["kind"] == "ClusterRole" for grant in grants_of(m)}
    missing = sorted(call for call in calls if not call[0] and not any(allows(grant, call) for grant in grants))
    assert missing == [], "\n".join(map(str, missing))


def test_every_rule_of_each_role_is_used_by_some_call(role: tuple[set[NamedPermission], list[dict[str, Any]]]) -> None:
    calls, manifests = role
    grants = {grant for m in manifests for grant in grants_of(m)}
    unused = sorted(grant for grant in grants if not any(allows(grant, call) for call in calls))
    assert unused == [], "\n".join(map(str, unused))


def test_nothing_reaches_an_unwatched_namespace(role: tuple[set[NamedPermission], list[dict[str, Any]]]) -> None:
    calls, _ = role
    assert {call[0] for call in calls} <= {"", *WATCHED, SYSTEM}


def test_the_unwatched_namespace_workload_is_never_reconciled(
    controller_run: tuple[set[NamedPermission], dict[str, Any]],
) -> None:
    _, found = controller_run
    assert "finalizers" not in found["metadata"]
    assert "status" not in found


def test_roles_are_bound_in_each_watched_namespace_only_and_the_cluster_roles_to_their_service_accounts() -> None:
    manifests = chart()
    bindings = {(m["metadata"]["namespace"], m["roleRef"]["name"]): m for m in manifests if m["kind"] == "RoleBinding"}
    assert set(bindings) == {
        *((namespace, name) for namespace in WATCHED for name in (CONTROLLER, "mlworkload-webhook-workloads")),
        (SYSTEM, "mlworkload-events"),  # Events on policies
        (SYSTEM, "mlworkload-webhook"),  # the certificate Secret
    }
    accounts = {CONTROLLER: "mlworkload-operator", "mlworkload-events": "mlworkload-operator",
                "mlworkload-webhook-workloads": "mlworkload-operator-webhook",
                "mlworkload-webhook": "mlworkload-operator-webhook"}  # fmt: skip
    for (_, name), binding in bindings.items():
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": accounts[name], "namespace": SYSTEM}]
    cluster_bindings = {m["roleRef"]["name"]: m for m in manifests if m["kind"] == "ClusterRoleBinding"}
    assert cluster_bindings[CONTROLLER]["subjects"][0]["name"] == "mlworkload-operator"
    assert cluster_bindings[WEBHOOK]["subjects"][0]["name"] == "mlworkload-operator-webhook"


def test_a_watched_release_namespace_gets_its_events_from_the_watched_namespaces_role() -> None:
    manifests = render("--set", "operator.namespaces={team-a,team-b}", namespace="team-a")
    found = {(m["metadata"]["namespace"], m["metadata"]["name"]): m for m in manifests if m["kind"] == "Role"}
    assert ("team-a", "mlworkload-events") not in found
    assert ("team-a", "", "events", "create", "*") in grants_of(found["team-a", CONTROLLER])


def namespaced_kinds() -> set[tuple[str, str]]:
    """(apiGroup, plural) of every namespaced kind the emulated API server serves (built-in and CRDs)."""
    registry = ResourceRegistry(BUILTIN_RESOURCES)
    for crd in load_crds(default_crd_paths()):
        registry.add(spec_from_crd(crd))
    return {(spec.group, spec.plural) for spec in registry if spec.namespaced}


@pytest.mark.parametrize("name", [CONTROLLER, WEBHOOK])
def test_the_cluster_roles_grant_nothing_on_a_namespaced_kind(name: str) -> None:
    (cluster_role,) = [m for m in chart() if m["kind"] == "ClusterRole" and m["metadata"]["name"] == name]
    namespaced = namespaced_kinds()
    assert ("mlworkload.io", "mlworkloads") in namespaced  # the registry knows the operator's kinds
    on_namespaced = sorted(
        grant for grant in grants_of(cluster_role) if (grant[1], grant[2].partition("/")[0]) in namespaced
    )
    assert on_namespaced == [], "\n".join(map(str, on_namespaced))


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions, ANDed) applied to a label set."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present = key in labels
        matched = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not matched:
            return False
    return True


def test_the_workload_webhook_is_asked_only_about_the_watched_namespaces() -> None:
    (configuration,) = [m for m in chart() if m["kind"] == "ValidatingWebhookConfiguration"]
    hooks = {hook["name"]: hook for hook in configuration["webhooks"]}
    selector = hooks["policy.mlworkload.io"]["namespaceSelector"]
    candidates = [*WATCHED, UNWATCHED, "kube-system", SYSTEM, "default"]
    selected = [ns for ns in candidates if selects(selector, {"kubernetes.io/metadata.name": ns, "team": "x"})]
    assert selected == list(WATCHED)
    # Policies are cluster-scoped: no namespaceSelector applies to them.
    assert "namespaceSelector" not in hooks["policy-spec.mlworkload.io"]
    assert configuration["metadata"]["name"] == WEBHOOK_CONFIGURATION


def test_all_namespaces_keep_the_exclusions_only() -> None:
    (configuration,) = [m for m in render(namespace=SYSTEM) if m["kind"] == "ValidatingWebhookConfiguration"]
    selector = next(h for h in configuration["webhooks"] if h["name"] == "policy.mlworkload.io")["namespaceSelector"]
    candidates = [*WATCHED, UNWATCHED, "kube-system", SYSTEM, "default"]
    selected = [ns for ns in candidates if selects(selector, {"kubernetes.io/metadata.name": ns})]
    assert selected == [*WATCHED, UNWATCHED, "default"]
