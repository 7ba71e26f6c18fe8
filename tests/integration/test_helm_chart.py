"""The Helm chart, rendered by a real helm binary: lint, schema-valid manifests, settings and values wired through.

helm comes from PATH, $MLW_HELM, or the PyPI wheel that ships it (tests/support/helm.py).
"""

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlworkload.api.load import parse_policy
from mlworkload.settings import GCP_VARIABLES, SETTINGS_VARIABLES
from tests.support.helm import CHART, helm, render
from tests.support.schemas import validate_object

ROOT = Path(__file__).resolve().parents[2]
FULL = ["-f", str(CHART / "ci" / "full-values.yaml")]
# The defaults and every values file in ci/ (chart-testing's convention), each rendered by every test below.
VALUE_SETS = {"default": [], **{path.stem: ["-f", str(path)] for path in sorted((CHART / "ci").glob("*.yaml"))}}


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def one(manifests: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [m for m in by_kind(manifests, kind) if name is None or m["metadata"]["name"] == name]
    return found


def controller(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return one(manifests, "Deployment", "mlworkload")


def webhook(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return one(manifests, "Deployment", "mlworkload-webhook")


def env_of(deployment: dict[str, Any]) -> dict[str, str | None]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value") for item in container["env"]}


def selects(selector: dict[str, str], deployment: dict[str, Any]) -> bool:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.fixture(scope="module", params=list(VALUE_SETS), ids=list(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(*VALUE_SETS[request.param])


@pytest.mark.parametrize("values", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_helm_lint_passes(values: list[str]) -> None:
    result = helm("lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rendered_manifest_validates_against_its_schema(rendered: list[dict[str, Any]]) -> None:
    problems = {f"{m['kind']}/{m['metadata']['name']}": validate_object(m) for m in rendered}
    assert {name: errors for name, errors in problems.items() if errors} == {}


def test_the_full_values_render_every_optional_object() -> None:
    kinds = {m["kind"] for m in render(*FULL)}
    assert kinds == {
        "ServiceAccount", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment",
        "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
        "Certificate", "MLWorkloadPolicy", "PodMonitoring", "ServiceMonitor", "PodDisruptionBudget", "ConfigMap",
        "PrometheusRule", "Rules", "PodMonitor", "ClusterPodMonitoring", "Role", "RoleBinding",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("nope=1", "additional properties 'nope' not allowed"),
        ("operator.gcp.mode=sometimes", "/operator/gcp/mode"),
        ("serviceAccount.gcpServiceAccount=not-an-email", "/serviceAccount/gcpServiceAccount"),
        ("webhook.failurePolicy=Maybe", "/webhook/failurePolicy"),
        ("webhook.certificates=selfSigned", "/webhook/certificates"),
        ("webhook.replicas=0", "/webhook/replicas"),
    ],
)
def test_bad_values_are_refused_naming_the_field(setting: str, fragment: str) -> None:
    result = helm("template", "mlworkload", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert fragment in result.stderr


def test_the_chart_ships_the_repository_crds_and_keeps_them_on_uninstall() -> None:
    crds = {crd["metadata"]["name"]: crd for crd in by_kind(render(), "CustomResourceDefinition")}
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        expected = yaml.safe_load(path.read_text())
        shipped = crds.pop(expected["metadata"]["name"])
        assert shipped["spec"] == expected["spec"]
        assert shipped["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert crds == {}
    assert by_kind(render("--set", "crds.install=false"), "CustomResourceDefinition") == []


def test_every_operator_variable_the_deployments_set_is_a_setting() -> None:
    manifests = render(*FULL)
    for deployment in (controller(manifests), webhook(manifests)):
        names = set(env_of(deployment)) - {"HTTPS_PROXY"}  # extraEnv in the full values
        assert names <= set(SETTINGS_VARIABLES.values()) | set(GCP_VARIABLES.values())
        env = env_of(deployment)
        assert env["MLW_GCP_PROJECT"] == "ml-platform"  # admission resolves the same defaults as reconcile
        assert env["MLW_NAMESPACES"] == "team-nlp,team-vision"
        assert env["MLW_INSTALLATION"] == "ml-prod-platform"
    assert env_of(controller(manifests))["MLW_ROLE"] == "controller"
    assert env_of(controller(manifests))["MLW_GKE_CLUSTER"] == "ml-prod"
    assert env_of(webhook(manifests))["MLW_ROLE"] == "webhook"
    assert env_of(webhook(manifests))["MLW_WEBHOOK_CERT_DIR"] == "/etc/mlworkload/webhook-tls"  # cert-manager's
    assert env_of(webhook(manifests))["MLW_WEBHOOK_CERTIFICATES"] == "files"
    assert "MLW_INSTALLATION" not in env_of(controller(render()))  # passed only when set


def test_the_controller_is_one_hardened_replica_serving_no_webhook() -> None:
    deployment = controller(render())
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # kopf has no leader election
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }  # fmt: skip
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert container["args"] == ["run"]
    assert "webhook" not in {port["name"] for port in container["ports"]}
    assert not any(name.startswith("MLW_WEBHOOK") for name in env_of(deployment))
    assert all("secret" not in volume for volume in pod["volumes"])


@pytest.mark.parametrize("values", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_the_webhook_rolls_one_pod_at_a_time_spread_across_nodes_with_a_budget_when_it_has_several(
    values: list[str],
) -> None:
    manifests = render(*values)
    deployment = webhook(manifests)
    replicas = deployment["spec"]["replicas"]
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}  # fmt: skip
    pod = deployment["spec"]["template"]["spec"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    (anti,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": selector},
    }
    assert pod["topologySpreadConstraints"][0]["labelSelector"] == {"matchLabels": selector}
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"  # fails until the indexes are filled
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    budgets = by_kind(manifests, "PodDisruptionBudget")
    if replicas > 1:
        (budget,) = budgets
        assert budget["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    else:
        assert budgets == []  # minAvailable 1 of 1 would block every node drain


def test_replicas_come_from_values_and_user_affinity_is_kept() -> None:
    assert webhook(render())["spec"]["replicas"] == 2
    full = webhook(render(*FULL))["spec"]
    assert full["replicas"] == 3
    assert "nodeAffinity" in full["template"]["spec"]["affinity"]  # the full values' own, next to the spread
    assert "podAntiAffinity" in full["template"]["spec"]["affinity"]


def test_each_service_selects_its_own_pods() -> None:
    manifests = render()
    service = one(manifests, "Service", "mlworkload-webhook")["spec"]["selector"]
    assert selects(service, webhook(manifests))
    assert not selects(service, controller(manifests))
    assert not selects(controller(manifests)["spec"]["selector"]["matchLabels"], webhook(manifests))
    metrics = one(manifests, "Service", "mlworkload-metrics")["spec"]["selector"]
    assert selects(metrics, webhook(manifests))  # admission metrics live in the webhook pods
    assert selects(metrics, controller(manifests))


def test_the_service_accounts_are_separate_and_only_the_controller_carries_the_gcp_identity() -> None:
    accounts = {account["metadata"]["name"]: account for account in by_kind(render(*FULL), "ServiceAccount")}
    assert set(accounts) == {"mlworkload-operator", "mlworkload-operator-webhook"}
    annotated = accounts["mlworkload-operator"]["metadata"]["annotations"]
    assert annotated["iam.gke.io/gcp-service-account"] == "mlworkload-operator@ml-platform.iam.gserviceaccount.com"
    assert "annotations" not in accounts["mlworkload-operator-webhook"]["metadata"]
    assert "annotations" not in one(render(), "ServiceAccount", "mlworkload-operator")["metadata"]
    manifests = render()
    assert controller(manifests)["spec"]["template"]["spec"]["serviceAccountName"] == "mlworkload-operator"
    assert webhook(manifests)["spec"]["template"]["spec"]["serviceAccountName"] == "mlworkload-operator-webhook"


@pytest.mark.parametrize("values", list(VALUE_SETS.values()), ids=list(VALUE_SETS))
def test_helm_template_renders_byte_identical_output_every_time(values: list[str]) -> None:
    """No lookup, genCA, randAlpha or now: Argo CD (helm template) never sees a diff, never rolls anything."""
    first = helm("template", "mlworkload", str(CHART), "--namespace", "mlworkload-system", *values)
    second = helm("template", "mlworkload", str(CHART), "--namespace", "mlworkload-system", *values)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    manifests = [doc for doc in yaml.safe_load_all(first.stdout) if doc]
    assert by_kind(manifests, "Secret") == []  # no certificate material
    hooks = one(manifests, "ValidatingWebhookConfiguration")["webhooks"]
    assert [hook["clientConfig"].get("caBundle") for hook in hooks] == [None, None]


def test_templates_use_no_function_that_differs_between_renders() -> None:
    varying = re.compile(
        r"\b(lookup|genCA|genSignedCert|genSelfSignedCert|genPrivateKey|randAlpha\w*|randBytes|uuidv4|now)\b"
    )
    for template in sorted((CHART / "templates").glob("*")):
        actions = re.findall(r"\{\{(.*?)\}\}", re.sub(r"/\*.*?\*/", "", template.read_text(), flags=re.S), re.S)
        assert [varying.findall(action) for action in actions if varying.search(action)] == [], template.name


def test_by_default_the_webhook_pods_keep_the_certificate_they_alone_may_touch() -> None:
    manifests = render()
    configuration = one(manifests, "ValidatingWebhookConfiguration")
    env = env_of(webhook(manifests))
    assert env["MLW_WEBHOOK_CERTIFICATES"] == "operator"
    assert env["MLW_WEBHOOK_CONFIGURATION"] == configuration["metadata"]["name"]
    assert env["MLW_WEBHOOK_SERVICE"] == configuration["webhooks"][0]["clientConfig"]["service"]["name"]
    assert "annotations" not in configuration["metadata"]  # no cert-manager injection
    for hook in configuration["webhooks"]:
        assert "caBundle" not in hook["clientConfig"]  # set at run time by the webhook pods
        assert hook["failurePolicy"] == "Fail"
    assert configuration["webhooks"][0]["clientConfig"]["service"] == {
        "name": "mlworkload-webhook", "namespace": "mlworkload-system", "path": "/policy", "port": 443,
    }  # fmt: skip
    role = one(manifests, "Role", "mlworkload-webhook")
    named = [rule for rule in role["rules"] if rule.get("resourceNames")]
    assert named == [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [env["MLW_WEBHOOK_SECRET"]],
                      "verbs": ["get", "update"]}]  # fmt: skip
    cluster_role = one(manifests, "ClusterRole", "mlworkload-webhook")
    (vwc_rule,) = [rule for rule in cluster_role["rules"] if "validatingwebhookconfigurations" in rule["resources"]]
    assert vwc_rule["resourceNames"] == [configuration["metadata"]["name"]]
    volumes = {volume["name"]: volume for volume in webhook(manifests)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook-tls"]["emptyDir"]["medium"] == "Memory"  # written by the pod, never on the node's disk


@pytest.mark.parametrize("values", [FULL, ["--set", "webhook.certificates=certManager"],
                                    ["--set", "webhook.certManager.enabled=true"]],
                         ids=["full", "certificates", "deprecated-enabled"])  # fmt: skip
def test_with_cert_manager_the_ca_is_injected_and_the_webhook_touches_no_secret(values: list[str]) -> None:
    manifests = render(*values)
    assert by_kind(manifests, "Secret") == []
    # Roles there may be (operator.namespaces set: the watched namespaces'), but none on a Secret.
    assert not any("secrets" in rule["resources"] for role in by_kind(manifests, "Role") for rule in role["rules"])
    configuration = one(manifests, "ValidatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        "mlworkload-system/mlworkload-webhook"
    )
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    certificate = one(manifests, "Certificate")
    assert certificate["spec"]["secretName"] == "mlworkload-webhook-tls"
    assert certificate["spec"]["dnsNames"] == ["mlworkload-webhook.mlworkload-system.svc",
                                               "mlworkload-webhook.mlworkload-system.svc.cluster.local"]  # fmt: skip
    cluster_role = one(manifests, "ClusterRole", "mlworkload-webhook")
    assert not any("validatingwebhookconfigurations" in rule["resources"] for rule in cluster_role["rules"])
    volumes = {volume["name"]: volume for volume in webhook(manifests)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook-tls"]["secret"]["secretName"] == "mlworkload-webhook-tls"
    assert env_of(webhook(manifests))["MLW_WEBHOOK_CERTIFICATES"] == "files"


def test_cert_manager_uses_the_given_issuer_or_makes_a_self_signed_one() -> None:
    assert one(render(*FULL), "Certificate")["spec"]["issuerRef"] == {
        "name": "platform-ca", "kind": "ClusterIssuer", "group": "cert-manager.io",
    }  # fmt: skip
    assert one(render("--set", "webhook.certificates=certManager"), "Issuer")["spec"] == {"selfSigned": {}}


def test_the_workload_webhook_skips_kube_system_and_the_release_namespace() -> None:
    configuration = one(render(namespace="ml-ops"), "ValidatingWebhookConfiguration")
    workloads = next(w for w in configuration["webhooks"] if w["name"] == "policy.mlworkload.io")
    assert workloads["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "ml-ops"]}]}  # fmt: skip


def test_the_default_policy_from_values_is_a_valid_mlworkload_policy() -> None:
    policy = parse_policy(one(render(*FULL), "MLWorkloadPolicy"))
    assert policy.spec.priority == -1000
    assert policy.spec.quota.max_gpus == 8
    assert by_kind(render(), "MLWorkloadPolicy") == []


def test_values_schema_is_json_schema_with_no_unknown_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_every_value_has_a_description() -> None:
    """Every key of values.yaml, at every depth the schema describes, says what it does (`helm show values`
    readers and editors that read the schema see it)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def undescribed(value: Any, node: dict[str, Any], path: str) -> list[str]:
        missing = [] if node.get("description") else [path]
        if isinstance(value, dict) and "properties" in node:
            for key, item in value.items():
                missing += undescribed(item, node["properties"][key], f"{path}.{key}")
        return missing

    assert [p for key, value in values.items() for p in undescribed(value, schema["properties"][key], key)] == []


def _match(conditions: list[dict[str, Any]], operation: str, new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """Whether the API server would call the webhook: every matchCondition true (evaluated with cel-python)."""
    import celpy  # noqa: PLC0415
    from celpy.adapter import json_to_cel  # noqa: PLC0415

    env = celpy.Environment()
    activation = {"request": json_to_cel({"operation": operation}), "object": json_to_cel(new),
                  "oldObject": json_to_cel(old)}  # fmt: skip
    return all(bool(env.program(env.compile(c["expression"])).evaluate(activation)) for c in conditions)


def test_the_workload_webhook_is_not_asked_about_cleanup() -> None:
    """Finalizer removal, annotations and anything on a deleting object skip the webhook entirely."""
    config = next(m for m in render() if m["kind"] == "ValidatingWebhookConfiguration")
    conditions = next(w for w in config["webhooks"] if w["name"] == "policy.mlworkload.io")["matchConditions"]
    base = {"metadata": {"name": "w", "labels": {"cost-center": "nlp"}, "finalizers": ["mlworkload.io/cleanup"]},
            "spec": {"type": "Cluster"}}  # fmt: skip

    def edited(**metadata: Any) -> dict[str, Any]:
        return {**base, "metadata": {**base["metadata"], **metadata}}

    assert _match(conditions, "CREATE", base, None)
    assert not _match(conditions, "UPDATE", edited(finalizers=[]), base)
    assert not _match(conditions, "UPDATE", edited(annotations={"note": "x"}), base)
    assert not _match(conditions, "UPDATE", edited(deletionTimestamp="2026-12-06T12:00:00Z"), base)
    assert _match(conditions, "UPDATE", {**base, "spec": {"type": "Job"}}, base)
    assert _match(conditions, "UPDATE", edited(labels={}), base)  # a cost label removed is judged
    unlabelled = {"metadata": {"name": "w"}, "spec": {"type": "Cluster"}}
    assert not _match(conditions, "UPDATE", {**unlabelled, "metadata": {"name": "w", "finalizers": []}}, unlabelled)


def _aggregated(manifests: list[dict[str, Any]], role: str) -> set[tuple[str, str]]:
    """(resource, verb) pairs the chart adds to a built-in role (admin, edit, view) through aggregation."""
    label = f"rbac.authorization.k8s.io/aggregate-to-{role}"
    return {
        (resource, verb)
        for manifest in by_kind(manifests, "ClusterRole")
        if manifest["metadata"].get("labels", {}).get(label) == "true"
        for rule in manifest["rules"]
        if rule["apiGroups"] == ["mlworkload.io"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_people_with_the_built_in_roles_may_use_mlworkloads_but_never_write_their_status() -> None:
    """admin and edit create, change and delete MLWorkloads; view reads them and the policies; nobody but the
    operator writes status (it records which GCP members the operator added, and may therefore remove)."""
    manifests = render()
    writes = {"create", "update", "patch", "delete", "deletecollection"}
    for role in ("admin", "edit"):
        granted = _aggregated(manifests, role)
        assert {("mlworkloads", verb) for verb in writes | {"get", "list", "watch"}} <= granted
        assert not {verb for resource, verb in granted if resource == "mlworkloads/status"} & writes
        assert not {resource for resource, verb in granted if verb in writes} & {"mlworkloadpolicies"}
    viewer = _aggregated(manifests, "view")
    assert viewer == {(resource, verb) for resource in ("mlworkloads", "mlworkloads/status", "mlworkloadpolicies")
                      for verb in ("get", "list", "watch")}  # fmt: skip
    assert _aggregated(render("--set", "rbac.createAggregateClusterRoles=false"), "edit") == set()
