"""The generated CRDs: in sync with the models, structural, and carrying the API's rules."""

import re
from pathlib import Path
from typing import Any

import pytest

from mlworkload.api.crd import build_crds, crd_files
from tests.support.documents import WorkloadDoc, verdicts, workload

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        nodes += walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        nodes += walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += walk(schema["additionalProperties"], f"{path}{{}}")
    return nodes


def schemas() -> dict[str, dict[str, Any]]:
    return {
        crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for crd in build_crds()
    }


def test_crd_files_match_the_models() -> None:
    expected = crd_files()
    actual = {path.name: path.read_text() for path in CRDS_DIR.glob("*.yaml")}
    assert actual == expected, "crds/ drifted from the models: run `mlworkload crds --output-dir crds`"


@pytest.mark.parametrize("kind", ["MLWorkload", "MLWorkloadPolicy"])
def test_schemas_are_structural(kind: str) -> None:
    for path, node in walk(schemas()[kind]):
        assert not {"$ref", "$defs", "title", "default"} & node.keys(), path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
            assert "type" not in node, path
        else:
            assert "anyOf" not in node, path
            assert node.get("type") in {"object", "array", "string", "integer", "boolean", "number"}, path
        if node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
            has_fields = "properties" in node or "additionalProperties" in node
            assert has_fields or path == ".metadata", path
        assert node.get("additionalProperties") is not False, path


def needs_description(path: str, node: dict[str, Any]) -> bool:
    """Objects and fields do; scalar list items and map values are described by their field."""
    if path in {"", ".metadata"}:
        return False
    return "properties" in node or not path.endswith(("[]", "{}"))


@pytest.mark.parametrize("kind", ["MLWorkload", "MLWorkloadPolicy"])
def test_every_field_is_described_for_kubectl_explain(kind: str) -> None:
    undocumented = [
        path for path, node in walk(schemas()[kind]) if needs_description(path, node) and not node.get("description")
    ]
    assert undocumented == []


def test_names_scope_columns_and_status() -> None:
    workload, policy = build_crds()
    assert workload["spec"]["names"]["shortNames"] == ["mlw"]
    assert policy["spec"]["names"]["shortNames"] == ["mlwp"]
    assert (workload["spec"]["scope"], policy["spec"]["scope"]) == ("Namespaced", "Cluster")
    version = workload["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    shown = [c["name"] for c in columns if not c.get("priority")]
    assert shown == ["Type", "Phase", "Ready", "Reason", "GPUs", "Age"]
    wide = [c["name"] for c in columns if c.get("priority") == 1]
    assert wide == ["Dashboard", "Serve", "Ray", "Ray State", "Workers", "Queue"]
    assert columns[2]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    policy_version = policy["spec"]["versions"][0]
    assert policy_version["subresources"] == {"status": {}}
    assert [c["name"] for c in policy_version["additionalPrinterColumns"]] == [
        "Priority", "Ready", "Namespaces", "Workloads", "GPUs", "Quota", "Age",
    ]  # fmt: skip
    # Every column reads a field the schema has (a typo shows an empty column, never an error).
    for crd_version in (version, policy_version):
        schema = crd_version["schema"]["openAPIV3Schema"]
        for column in crd_version["additionalPrinterColumns"]:
            if column["jsonPath"].startswith(".metadata."):  # the API's own
                continue
            node = schema
            for part in re.sub(r"\[\?\(.*?\)\]", "", column["jsonPath"]).strip(".").split("."):
                node = node.get("items", node)["properties"][part]


def rules_at(schema: dict[str, Any], path: str) -> list[str]:
    node = dict(walk(schema))[path]
    return [rule["rule"] for rule in node.get("x-kubernetes-validations", [])]


def test_the_api_rules_are_cel_in_the_crd() -> None:
    schema = schemas()["MLWorkload"]
    assert len(rules_at(schema, "")) == 2  # name pattern and length per type
    spec_rules = rules_at(schema, ".spec")
    assert "self.type == 'Job' ? has(self.job) : !has(self.job)" in spec_rules
    assert "self.type == 'Service' ? has(self.serve) : !has(self.serve)" in spec_rules
    assert len(rules_at(schema, ".spec.workerGroups[]")) == 3  # reserved names; minReplicas <= replicas <= max
    assert len(rules_at(schema, ".spec.ray")) == 1  # image tag agrees with the version
    groups = dict(walk(schema))[".spec.workerGroups"]
    assert (groups["x-kubernetes-list-type"], groups["x-kubernetes-list-map-keys"]) == ("map", ["name"])
    count = dict(walk(schema))[".spec.workerGroups[].accelerator.count"]
    assert count["enum"] == [1, 2, 4, 8, 16]
    # What the API server's own NetworkPolicy validation would refuse later, refused at kubectl apply.
    peer = ".spec.network.allowFrom[]"
    assert "has(self.podSelector) || has(self.namespaceSelector) || has(self.ipBlock)" in rules_at(schema, peer)
    assert "isCIDR(self.cidr)" in rules_at(schema, f"{peer}.ipBlock")
    assert "!has(self.host) || !isIP(self.host)" in rules_at(schema, ".spec.expose.dashboard")


def test_free_form_sections_keep_unknown_fields() -> None:
    nodes = dict(walk(schemas()["MLWorkload"]))
    assert nodes[".spec.serve.config"]["x-kubernetes-preserve-unknown-fields"] is True
    assert nodes[".spec.job.runtimeEnv"]["x-kubernetes-preserve-unknown-fields"] is True
    assert nodes[".spec.workerGroups[].resources.memory"]["x-kubernetes-int-or-string"] is True


# The CRD's schema and CEL rules, evaluated as the API server would, agree with the models: what the
# cluster refuses even while the webhook is down is what `mlworkload validate` refuses.
IN_WITHOUT_VALUES = {"matchExpressions": [{"key": "a", "operator": "In"}]}
CEL_CASES = {
    "valid cluster": (workload().gpu_group(replicas=2, minReplicas=1, maxReplicas=4), True),
    "valid job": (workload().job(), True),
    "valid service": (workload().service(), True),
    "job section on a cluster": (workload().set("spec.job", {"entrypoint": "x"}), False),
    "job without its section": (workload(type_="Job"), False),
    "service without serve": (workload(type_="Service"), False),
    "suspended service": (workload().service().set("spec.suspend", True), False),
    "minReplicas above replicas": (workload().group(replicas=1, minReplicas=2), False),
    "replicas above maxReplicas": (workload().group(replicas=3, maxReplicas=2), False),
    "defaulted replicas above maxReplicas": (workload().group(maxReplicas=0), False),
    "bad accelerator count": (workload().gpu_group(count=3), False),
    "image tag without the version": (workload().set("spec.ray.image", "rayproject/ray:2.40.0-gpu"), False),
    "image tag with the version": (workload().set("spec.ray.image", "rayproject/ray:2.41.0-py311-gpu"), True),
    "name too long for a job": (workload("j" * 48).job(), False),
    "name fine for a cluster": (workload("c" * 50), True),
    "name too long for a cluster": (workload("c" * 51), False),
    "a group named head": (workload().group("head"), False),
    "an empty allowFrom peer": (workload().set("spec.network.allowFrom", [{}]), False),
    "ipBlock with a selector": (
        workload().set("spec.network.allowFrom", [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]),
        False,
    ),
    "a peer that is not a CIDR": (workload().set("spec.network.allowFrom", [{"ipBlock": {"cidr": "10.0.0.0"}}]), False),
    "a peer with a CIDR": (workload().set("spec.network.allowFrom", [{"ipBlock": {"cidr": "10.0.0.0/8"}}]), True),
    "In without values": (workload().set("spec.network.allowFrom", [{"podSelector": IN_WITHOUT_VALUES}]), False),
    "an IP as host": (workload().expose("dashboard", host="10.0.0.1"), False),
    "an image with a space": (workload().set("spec.ray.image", "rayproject/ray x:2.41.0"), False),
    "name not DNS-1035": (workload("9lives"), False),
    "duplicate group names": (workload().group("a").group("a"), False),
    "unknown field": (workload().set("spec.colour", "blue"), False),
    "duplicate env names": (workload().set("spec.ray.env", [{"name": "A", "value": "1"}, {"name": "A"}]), False),
    "env with value and valueFrom": (
        workload().set("spec.ray.env", [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s",
                                                                                                   "key": "k"}}}]),
        False,
    ),
}  # fmt: skip


@pytest.mark.parametrize(("doc", "valid"), CEL_CASES.values(), ids=CEL_CASES.keys())
def test_crd_schema_and_cel_agree_with_the_models(doc: WorkloadDoc, valid: bool) -> None:
    api_server_errors, model_valid = verdicts(doc)
    assert (not api_server_errors, model_valid) == (valid, valid), api_server_errors


def test_no_category_shadows_a_resource_name() -> None:
    """kubectl resolves a category before a resource name: a category `mlworkload` made `kubectl get
    mlworkload NAME` ask for both kinds and fail. Categories must differ from every name kubectl accepts."""
    crds = build_crds()
    names = {
        name
        for crd in crds
        for name in (crd["spec"]["names"]["plural"], crd["spec"]["names"]["singular"],
                     *crd["spec"]["names"]["shortNames"])
    }  # fmt: skip
    categories = {category for crd in crds for category in crd["spec"]["names"]["categories"]}
    assert categories == {"mlworkload-all"}  # `kubectl get mlworkload-all` lists both kinds
    assert not categories & names
