"""The Helm chart, rendered by a real helm binary: lint, schema-valid manifests, settings and values wired through.

helm comes from PATH, $MLW_HELM, or the PyPI wheel that ships it (tests/support/helm.py).
"""

import base64
import json
import ssl
import subprocess
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
VALUE_SETS = {"default": [], "full": FULL}


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(manifests, kind)
    return found


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
        "Certificate", "MLWorkloadPolicy", "PodMonitoring", "ServiceMonitor",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("nope=1", "additional properties 'nope' not allowed"),
        ("operator.gcp.mode=sometimes", "/operator/gcp/mode"),
        ("serviceAccount.gcpServiceAccount=not-an-email", "/serviceAccount/gcpServiceAccount"),
        ("webhook.failurePolicy=Maybe", "/webhook/failurePolicy"),
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


def test_every_operator_variable_the_deployment_sets_is_a_setting() -> None:
    container = one(render(*FULL), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    names = {env["name"] for env in container["env"]} - {"HTTPS_PROXY"}  # extraEnv in the full values
    assert names <= set(SETTINGS_VARIABLES.values()) | set(GCP_VARIABLES.values())
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["MLW_GCP_PROJECT"] == "ml-platform"
    assert env["MLW_GKE_CLUSTER"] == "ml-prod"
    assert env["MLW_NAMESPACES"] == "team-nlp,team-vision"
    assert env["MLW_WEBHOOK_CERT_DIR"] == "/etc/mlworkload/webhook-tls"


def test_the_deployment_is_one_hardened_replica() -> None:
    deployment = one(render(), "Deployment")
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


def test_the_service_account_carries_the_operators_gcp_identity_only_when_given() -> None:
    assert "annotations" not in one(render(), "ServiceAccount")["metadata"]
    annotated = one(render(*FULL), "ServiceAccount")["metadata"]["annotations"]
    assert annotated["iam.gke.io/gcp-service-account"] == "mlworkload-operator@ml-platform.iam.gserviceaccount.com"


def test_the_chart_made_webhook_certificate_is_trusted_through_the_ca_bundle(tmp_path: Path) -> None:
    manifests = render()
    secret = one(manifests, "Secret")
    webhook = one(manifests, "ValidatingWebhookConfiguration")["webhooks"][0]
    ca = base64.b64decode(webhook["clientConfig"]["caBundle"])
    assert ca == base64.b64decode(secret["data"]["ca.crt"])
    certificate = tmp_path / "tls.crt"
    certificate.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    (tmp_path / "ca.crt").write_bytes(ca)
    # The serving certificate verifies against the bundle and names the webhook Service.
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(certificate)],
                              capture_output=True, text=True, check=False)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    names = ssl._ssl._test_decode_cert(str(certificate))["subjectAltName"]  # type: ignore[attr-defined]
    assert ("DNS", "mlworkload-webhook.mlworkload-system.svc") in names
    assert webhook["clientConfig"]["service"] == {
        "name": "mlworkload-webhook", "namespace": "mlworkload-system", "path": "/policy", "port": 443,
    }  # fmt: skip
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["rules"][0]["resources"] == ["mlworkloads"]


def test_with_cert_manager_the_ca_is_injected_and_no_secret_is_rendered() -> None:
    manifests = render(*FULL)
    assert by_kind(manifests, "Secret") == []
    webhook = one(manifests, "ValidatingWebhookConfiguration")
    assert (
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == "mlworkload-system/mlworkload-webhook"
    )
    assert "caBundle" not in webhook["webhooks"][0]["clientConfig"]
    certificate = one(manifests, "Certificate")
    assert certificate["spec"]["issuerRef"] == {
        "name": "platform-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert certificate["spec"]["secretName"] == "mlworkload-webhook-tls"
    self_signed = render("--set", "webhook.certManager.enabled=true")
    assert one(self_signed, "Issuer")["spec"] == {"selfSigned": {}}


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
