"""Fluent builders of MLWorkload and MLWorkloadPolicy documents for tests (as Kueue's MakeWorkload).

workload("train").job().gpu_group("a100", accelerator="nvidia-tesla-a100", count=4).doc
"""

import copy
from collections.abc import Callable, Iterator
from typing import Any, Final, Self

from mlworkload.api.load import parse_policy, parse_workload
from mlworkload.api.policy import MLWorkloadPolicy
from mlworkload.api.workload import MLWorkload
from mlworkload.policy import ResolvedWorkload, admit
from mlworkload.problems import Refused
from tests.support.schemas import validate_object

RAY_VERSION = "2.41.0"
GSA = "ray-nlp@my-proj.iam.gserviceaccount.com"


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path (`spec.expose.dashboard`), creating mappings on the way; None deletes."""
    *parents, last = path.split(".")
    node = document
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value


class WorkloadDoc:
    def __init__(self, name: str, namespace: str, type_: str) -> None:
        self.doc: dict[str, Any] = {
            "apiVersion": "mlworkload.io/v1alpha1",
            "kind": "MLWorkload",
            "metadata": {"name": name, "namespace": namespace, "labels": {"cost-center": "nlp"}},
            "spec": {"type": type_, "ray": {"version": RAY_VERSION}},
        }

    def set(self, path: str, value: Any) -> Self:
        set_path(self.doc, path, copy.deepcopy(value))
        return self

    def job(self, entrypoint: str = "python train.py", **fields: Any) -> Self:
        self.doc["spec"]["type"] = "Job"
        return self.set("spec.job", {"entrypoint": entrypoint, **fields})

    def service(self, applications: list[dict[str, Any]] | None = None) -> Self:
        self.doc["spec"]["type"] = "Service"
        apps = applications or [{"name": "app", "import_path": "serve_app:app", "route_prefix": "/"}]
        return self.set("spec.serve", {"config": {"applications": apps}})

    def group(self, name: str = "cpu", **fields: Any) -> Self:
        self.doc["spec"].setdefault("workerGroups", []).append({"name": name, **fields})
        return self

    def gpu_group(self, name: str = "gpu", accelerator: str = "nvidia-l4", count: int = 1, **fields: Any) -> Self:
        return self.group(name, accelerator={"type": accelerator, "count": count}, **fields)

    def expose(self, which: str, **fields: Any) -> Self:
        return self.set(f"spec.expose.{which}", {"enabled": True, **fields})

    def obj(self) -> MLWorkload:
        return parse_workload(self.doc)


def workload(name: str = "demo", namespace: str = "team-nlp", type_: str = "Cluster") -> WorkloadDoc:
    return WorkloadDoc(name, namespace, type_)


class PolicyDoc:
    def __init__(self, name: str) -> None:
        self.doc: dict[str, Any] = {
            "apiVersion": "mlworkload.io/v1alpha1",
            "kind": "MLWorkloadPolicy",
            "metadata": {"name": name},
            "spec": {"gcp": {"project": "my-proj", "location": "us-central1", "cluster": "ml-cluster"}},
        }

    def set(self, path: str, value: Any) -> Self:
        set_path(self.doc, f"spec.{path}", copy.deepcopy(value))
        return self

    def obj(self) -> MLWorkloadPolicy:
        return parse_policy(self.doc)


def policy(name: str = "team-nlp") -> PolicyDoc:
    return PolicyDoc(name)


# Every node setting a policy may set (spec.nodePools), each different from GKE's default.
NODE_SETTINGS: Final[dict[str, Any]] = {
    "serviceAccount": "gke-nodes@my-proj.iam.gserviceaccount.com",
    "diskType": "pd-ssd",
    "diskSizeGb": 200,
    "imageType": "COS_CONTAINERD",
    "secureBoot": True,
    "imageStreaming": True,
    "resourceLabels": {"cost-center": "cc-1234", "team": "nlp"},
}


def verdicts(doc: "WorkloadDoc | PolicyDoc") -> tuple[list[str], bool]:
    """What the API server says of the document (the CRD's schema and CEL: what `kubectl apply` refuses while
    the webhook is down), and whether the operator's models accept it."""
    try:
        doc.obj()
    except Refused:
        return validate_object(doc.doc), False
    return validate_object(doc.doc), True


API_SERVER_CIDR = "172.16.0.2/32"
INTERNAL_CERTIFICATE = "internal-cert"


def permissive_policy(name: str = "permissive") -> PolicyDoc:
    """A policy that admits anything reasonable, with a GKE cluster, a GSA and every bucket, the control
    plane's address (for the autoscaler) and a certificate for Internal endpoints."""
    return (
        policy(name)
        .set("identity", {"gcpServiceAccount": GSA, "allowedBuckets": ["gs://*"]})
        .set("expose", {"allowExternal": True, "preSharedCertificates": [INTERNAL_CERTIFICATE]})
        .set("network.apiServerCIDRs", [API_SERVER_CIDR])
    )


def resolved(doc: WorkloadDoc, with_policy: PolicyDoc | None = None, *, admitted: bool = True) -> ResolvedWorkload:
    """The resolved workload; asserts the admission verdict matches `admitted`."""
    policies = [with_policy.obj()] if with_policy is not None else []
    verdict = admit(doc.obj(), policies, None)
    assert verdict.allowed is admitted, [str(problem) for problem in verdict.problems]
    return verdict.resolved


def created_workloads(
    put: Callable[[dict[str, Any]], object], delete: Callable[[str], object]
) -> Iterator[Callable[[WorkloadDoc], str]]:
    """For a per-test `create` fixture: a function that creates a workload and returns its name; after the
    test, every workload it created is deleted, so later tests share a quiet cluster."""
    names: list[str] = []

    def create(doc: WorkloadDoc) -> str:
        put(doc.doc)
        names.append(str(doc.doc["metadata"]["name"]))
        return names[-1]

    yield create
    for name in names:
        delete(name)
