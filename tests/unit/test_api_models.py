"""Parsing MLWorkloads and policies: what is accepted, and how refusals name the field."""

from typing import Any

import pytest

from mlworkload.api.load import parse_documents, parse_workload
from mlworkload.api.workload import MLWorkload, image_tag, tag_agrees_with_version
from mlworkload.problems import Refused
from tests.support.documents import workload


def refusal_lines(document: dict[str, Any]) -> list[str]:
    with pytest.raises(Refused) as caught:
        parse_workload(document)
    return [str(problem) for problem in caught.value.problems]


def test_the_api_md_example_parses_and_round_trips() -> None:
    doc = (
        workload("llm-serve")
        .service()
        .set("spec.ray.image", "rayproject/ray:2.41.0-py311-gpu")
        .set("spec.ray.env", [{"name": "HF_HOME", "value": "/tmp/hf"}])
        .set("spec.head", {"resources": {"cpu": "4", "memory": "16Gi"}, "schedulable": False})
        .gpu_group("gpu", replicas=2, minReplicas=0, maxReplicas=8, resources={"cpu": 8, "memory": "32Gi"},
                   capacity="Spot", machineType="g2-standard-8")
        .set("spec.autoscaling", {"enabled": True, "idleTimeoutSeconds": 60})
        .set("spec.storage", {"bucket": "gs://team-nlp-ckpt", "access": "ReadWrite"})
        .set("spec.network", {"isolation": "Strict", "allowFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}]})
        .expose("dashboard", visibility="Internal", iap=True, host="ray-nlp.internal.example.com")
        .expose("serve", visibility="External", iap=False, host="llm.example.com")
    )  # fmt: skip
    parsed = doc.obj()
    assert parsed.spec.worker_groups[0].resources.cpu == "8"  # numbers kept as quantities
    assert parsed.spec.gpus_at_max_scale == 8
    again = parse_workload(parsed.to_dict())
    assert again == parsed


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("spec.bogus", 1, "spec.bogus: unknown field"),
        ("spec.workerGroups", [{"name": "g", "replicaz": 1}], "spec.workerGroups[0].replicaz: unknown field"),
        ("spec.type", "Notebook", "spec.type: 'Notebook' is not one of the allowed values"),
        ("spec.ray.version", "latest", "spec.ray.version: 'latest' does not match"),
        ("spec.ray", {}, "spec.ray.version: required field is missing"),
        ("spec.workerGroups", [{"name": "g", "replicas": -1}], "spec.workerGroups[0].replicas"),
        ("spec.workerGroups", [{"name": "G_1"}], "spec.workerGroups[0].name: 'G_1' does not match"),
        ("spec.workerGroups", [{"name": "g", "accelerator": {"type": "nvidia-l4", "count": 3}}],
         "spec.workerGroups[0].accelerator.count: 3 is not one of the allowed values"),
        ("spec.workerGroups", [{"name": "g", "resources": {"cpu": "1", "memory": "16GB"}}],
         "spec.workerGroups[0].resources.memory: '16GB' is not a Kubernetes quantity"),
        ("spec.workerGroups", [{"name": "g", "replicas": 2, "minReplicas": 3}],
         "minReplicas (3) must not exceed replicas (2)"),
        ("spec.workerGroups", [{"name": "g", "replicas": 5, "maxReplicas": 3}],
         "replicas (5) must not exceed maxReplicas (3)"),
        ("spec.workerGroups", [{"name": "g"}, {"name": "g"}], "spec: workerGroups names must be unique; repeated: g"),
        ("spec.job", {"entrypoint": "python x.py"}, "spec: job is required for type Job and forbidden"),
        ("spec.suspend", "yes", "spec.suspend"),
        ("spec.storage", {"bucket": "team-nlp"}, "spec.storage.bucket: 'team-nlp' does not match"),
        ("spec.storage", {"bucket": "gs://team-nlp/some/path"}, "spec.storage.bucket"),
        ("spec.identity", {"gcpServiceAccount": "not-an-email"}, "spec.identity.gcpServiceAccount"),
        ("spec.network", {"isolation": "Loose"}, "spec.network.isolation: 'Loose'"),
        ("spec.expose", {"serve": {"enabled": True, "visibility": "Public"}}, "spec.expose.serve.visibility"),
        ("spec.ray.image", "rayproject/ray:2.40.0-gpu", "spec.ray: image 'rayproject/ray:2.40.0-gpu': the tag must"),
        ("spec.ray.image", "rayproject/ray", "the tag must be the Ray version"),
        ("spec.ray.env", [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
         "spec.ray.env[0]: value and valueFrom are exclusive"),
        ("spec.ray.env", [{"name": "A", "valueFrom": {}}], "exactly one of secretKeyRef and configMapKeyRef"),
        ("spec.ray.env", [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
         "spec.ray.env: env names must be unique; repeated: A"),
        ("metadata.name", "Train_Job", "metadata.name 'Train_Job' must be a DNS-1035 label"),
        ("metadata.name", "1train", "must be a DNS-1035 label"),
        ("metadata.name", "c" * 51, "type Cluster allows at most 50"),
        # What the API server, the kubelet or GKE would refuse later is refused at admission.
        ("spec.head.resources", {"cpu": "1e999999999", "memory": "1Gi"},
         "spec.head.resources.cpu: '1e999999999' is out of range for a Kubernetes quantity"),
        ("spec.head.resources", {"cpu": "-4", "memory": "1Gi"}, "spec.head.resources.cpu: '-4' is negative"),
        ("spec.head.resources", {"cpu": "1", "memory": "-1Gi"}, "spec.head.resources.memory: '-1Gi' is negative"),
        ("spec.head.resources", {"cpu": "1", "memory": "0"}, "spec.head.resources.memory: '0': memory must be more"),
        ("spec.head.resources", {"cpu": "99999999999999999", "memory": "1Gi"}, "is out of range"),
        ("spec.network.allowFrom", [{}], "spec.network.allowFrom[0]: a peer needs podSelector, namespaceSelector"),
        ("spec.network.allowFrom", [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}],
         "spec.network.allowFrom[0]: ipBlock cannot be combined with podSelector"),
        ("spec.network.allowFrom", [{"ipBlock": {"cidr": "not-a-cidr"}}],
         "spec.network.allowFrom[0].ipBlock: 'not-a-cidr' is not a CIDR"),
        ("spec.network.allowFrom", [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}],
         "except: '11.0.0.0/16' must lie strictly inside '10.0.0.0/8'"),
        ("spec.network.allowFrom", [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}],
         "operator In needs at least one value"),
        ("spec.network.allowFrom", [{"podSelector": {"matchExpressions": [
            {"key": "app", "operator": "Exists", "values": ["x"]}]}}], "operator Exists takes no values"),
        ("spec.network.allowFrom", [{"podSelector": {"matchLabels": {"bad key!": "x"}}}], "label key 'bad key!'"),
        ("spec.network.allowFrom", [{"podSelector": {}, "ports": [{"port": 70000}]}],
         "spec.network.allowFrom[0].ports[0].port"),
        ("spec.expose", {"dashboard": {"enabled": True, "host": "10.0.0.1"}},
         "spec.expose.dashboard.host: '10.0.0.1' is an IP address"),
        ("spec.ray.image", "rayproject/ray x:2.41.0", "spec.ray.image: 'rayproject/ray x:2.41.0' is not an image"),
        ("spec.ray.image", "rayproject/ray:2.41.0-gpu\u00e9", "is not an image reference"),  # the CRD's RE2 \w is ASCII
        ("spec.network.allowFrom", [{"ipBlock": {"cidr": "172.16.0.2/255.255.255.255"}}], "is not a CIDR"),
        ("spec.network.allowFrom", [{"ipBlock": {"cidr": "10.0.0.0/08"}}], "is not a CIDR"),
        ("spec.network.allowFrom", [{"ipBlock": {"cidr": "fe80::%eth0/64"}}], "is not a CIDR"),
        ("spec.workerGroups", [{"name": "head"}], "spec.workerGroups[0].name: 'head' is reserved"),
        ("spec.workerGroups", [{"name": "submitter"}], "'submitter' is reserved"),
    ],
)  # fmt: skip
def test_invalid_workloads_are_refused_naming_the_field(path: str, value: Any, expected: str) -> None:
    lines = refusal_lines(workload().set(path, value).doc)
    assert any(expected in line for line in lines), lines
    assert all("\n" not in line for line in lines)


def test_every_problem_is_reported_at_once() -> None:
    doc = (
        workload()
        .set("spec.bogus", 1)
        .set("spec.ray.version", "x")
        .set("spec.head.resources", {"cpu": "lots", "memory": "1Gi"})
        .doc
    )
    lines = refusal_lines(doc)
    assert len(lines) == 3, lines


@pytest.mark.parametrize(("type_", "limit"), [("Cluster", 50), ("Job", 47), ("Service", 47)])
def test_name_length_limits_follow_kuberay_per_type(type_: str, limit: int) -> None:
    def named(name: str) -> dict[str, Any]:
        doc = workload(name)
        if type_ == "Job":
            doc.job()
        elif type_ == "Service":
            doc.service()
        return doc.doc

    assert parse_workload(named("a" * limit)).name == "a" * limit
    assert any(f"allows at most {limit}" in line for line in refusal_lines(named("a" * (limit + 1))))


def test_job_and_serve_sections_follow_the_type() -> None:
    assert any("serve is required for type Service" in line for line in refusal_lines(
        workload(type_="Service").doc))  # fmt: skip
    assert any("job is required for type Job" in line for line in refusal_lines(workload(type_="Job").doc))
    assert any("suspend applies to types Cluster and Job" in line for line in refusal_lines(
        workload().service().set("spec.suspend", True).doc))  # fmt: skip


def test_serve_config_needs_applications_with_import_paths() -> None:
    doc = workload().service().set("spec.serve.config", {"applications": [{"name": "x"}]}).doc
    assert any("applications[0] needs an import_path" in line for line in refusal_lines(doc))


@pytest.mark.parametrize(
    ("image", "tag", "agrees"),
    [
        ("rayproject/ray:2.41.0", "2.41.0", True),
        ("rayproject/ray:2.41.0-py311-gpu", "2.41.0-py311-gpu", True),
        ("registry.local:5000/ray/ray:2.41.0-gpu", "2.41.0-gpu", True),
        ("rayproject/ray:2.41.0@sha256:abc", "2.41.0", True),
        ("rayproject/ray:2.41.01", "2.41.01", False),
        ("rayproject/ray:nightly", "nightly", False),
        ("registry.local:5000/ray", None, False),
    ],
)
def test_image_tags_must_carry_the_ray_version(image: str, tag: str | None, agrees: bool) -> None:
    assert image_tag(image) == tag
    assert tag_agrees_with_version(image, "2.41.0") is agrees


def test_documents_of_other_kinds_and_non_objects_are_named() -> None:
    with pytest.raises(Refused) as caught:
        parse_documents([{"apiVersion": "v1", "kind": "Pod"}, "text", workload().set("spec.x", 1).doc], "in.yaml")
    lines = caught.value.lines()
    assert lines[0].startswith("in.yaml, document 1: apiVersion 'v1' kind 'Pod' is not")
    assert lines[1] == "in.yaml, document 2: expected a Kubernetes object (a mapping with apiVersion and kind)"
    assert (
        lines[2] == "in.yaml, document 3 (MLWorkload team-nlp/demo): spec.x: unknown field; remove it"
        " (check the spelling against `kubectl explain`)"
    )


def test_defaults_are_applied_by_the_model_not_stored() -> None:
    parsed = workload().group("cpu").obj()
    group = parsed.spec.worker_groups[0]
    assert (group.replicas, group.effective_min_replicas, group.effective_max_replicas) == (1, 1, 1)
    assert group.capacity is None  # decided by policy
    assert parsed.to_dict()["spec"]["workerGroups"][0] == {
        "name": "cpu", "replicas": 1, "resources": {"cpu": "1", "memory": "4Gi"}
    }  # fmt: skip


def test_server_fields_in_metadata_are_ignored() -> None:
    doc = workload().doc
    doc["metadata"] |= {
        "uid": "u-1",
        "generation": 3,
        "managedFields": [{}],
        "creationTimestamp": "2026-01-01T00:00:00Z",
    }
    parsed = MLWorkload.model_validate(doc)
    assert (parsed.metadata.uid, parsed.metadata.generation) == ("u-1", 3)
