"""The Argo CD health check for MLWorkload, run for real in Lua against statuses the operator writes.

The statuses come from `compute_status`, so a change to phases, reasons or conditions that the Lua
does not follow fails here rather than in someone's Argo CD dashboard.
"""

import datetime
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lupa.lua51  # type: ignore[import-untyped]
import pytest
import yaml

from mlworkload.api.workload import (
    Capacity,
    GpuStatus,
    IamBindingStatus,
    MLWorkloadStatus,
    NodePoolStatus,
)
from mlworkload.constants import API_VERSION, GROUP, REASON_INVALID_SPEC, WORKLOAD_KIND
from mlworkload.controller.raystatus import RayObservation, observe_ray
from mlworkload.controller.status import Observation, compute_status
from mlworkload.gcp.errors import FailureKind
from mlworkload.gcp.provisioner import Readiness
from mlworkload.problems import Problem

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "deploy" / "argocd"
SCRIPT_PATH = ARGOCD / "mlworkload-health.lua"
# Bytes, not read_text(): universal newlines would hide a CRLF the ConfigMap copy does not have.
SCRIPT = SCRIPT_PATH.read_bytes().decode()
HEALTH_KEY = f"resource.customizations.health.{GROUP}_{WORKLOAD_KIND}"
HEALTH_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

# Argo CD runs argocd-cm scripts in gopher-lua (Lua 5.1) with only the base, table, package and a
# reduced os library: a script that calls string.* or ("x"):method() passes a stock Lua and then
# errors in Argo CD. So the test runtime is 5.1, stripped the same way (os goes entirely: stricter,
# and the script has no use for time).
SANDBOX = """
debug.setmetatable("", nil)
string, math, io, os, debug, coroutine = nil, nil, nil, nil, nil, nil
"""

NOW = datetime.datetime(2026, 11, 23, 12, 0, tzinfo=datetime.UTC)
GENERATION = 4
NAMESPACE = "team-nlp"


def to_lua(lua: Any, value: object) -> object:
    """Python data as Argo CD hands it to Lua: objects become tables, arrays 1-based tables."""
    if isinstance(value, Mapping):
        table = lua.table()
        for key, item in value.items():
            table[key] = to_lua(lua, item)
        return table
    if isinstance(value, list | tuple):
        table = lua.table()
        for index, item in enumerate(value, start=1):
            table[index] = to_lua(lua, item)
        return table
    return value


def health(body: Mapping[str, Any] | None) -> tuple[str, str]:
    """Run the script as Argo CD does: a fresh state, the object in the global `obj`, a returned table."""
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.execute(SANDBOX)
    lua.globals()["obj"] = to_lua(lua, body)
    hs = lua.execute(SCRIPT)
    result = dict(hs.items())
    assert set(result) == {"status", "message"}
    status, message = result["status"], result["message"]
    assert isinstance(status, str)
    assert isinstance(message, str)
    # Argo CD replaces any other status with Unknown, "Lua returned an invalid health status".
    assert status in HEALTH_STATUSES
    return status, message


def workload(
    name: str, ray_kind: str, status: MLWorkloadStatus | None, *, generation: int = GENERATION, deleting: bool = False
) -> dict[str, Any]:
    """An MLWorkload as the API server returns it, with the status the operator wrote."""
    workload_type = {"RayCluster": "Cluster", "RayJob": "Job", "RayService": "Service"}[ray_kind]
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "uid": "6f1c8f2e-3f4b-4a8e-9d55-0c1d2e3f4a5b",
        "generation": generation,
        "finalizers": [f"{GROUP}/cleanup"],
        "annotations": {"argocd.argoproj.io/sync-wave": "0"},
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-11-23T12:00:00Z"
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": WORKLOAD_KIND,
        "metadata": metadata,
        "spec": {
            "type": workload_type,
            "workerGroups": [{"name": "gpu", "replicas": 1, "accelerator": {"type": "nvidia-l4", "count": 1}}],
        },
    }
    if status is not None:
        body["status"] = status.to_dict()
    return body


def recorded(name: str, ray_kind: str, **seen: Any) -> MLWorkloadStatus:
    """The status the reconciler writes for one observation, at generation GENERATION."""
    observation = Observation(generation=GENERATION, ray_kind=ray_kind, ray_name=name, **seen)
    return compute_status(observation, None, NOW)


def kuberay(kind: str, status: dict[str, Any] | None) -> RayObservation:
    """What the operator makes of a KubeRay object's status (None: the object does not exist yet)."""
    return observe_ray(kind, None if status is None else {"status": status})


def _true(kind: str) -> dict[str, str]:
    return {"type": kind, "status": "True"}


CLUSTER_READY = kuberay(
    "RayCluster", {"state": "ready", "conditions": [_true("HeadPodReady"), _true("RayClusterProvisioned")]}
)
CLUSTER_STARTING = kuberay("RayCluster", {"conditions": [{"type": "HeadPodReady", "status": "False"}]})
POOLS_READY = Readiness(True, "Provisioned", "1 node pool(s) running")
POOLS_CREATING = Readiness(False, "Provisioning", "mlw-l4x1-spot: PROVISIONING")
IDENTITY_READY = Readiness(True, "Bound", "2 IAM binding(s) in place")
POOL = NodePoolStatus(name="mlw-l4x1-spot", capacity=Capacity.SPOT, state="RUNNING")
POOL_CREATING = NodePoolStatus(
    name="mlw-l4x1-spot", capacity=Capacity.SPOT, state="PROVISIONING", operation="operation-1732363200-abc"
)
BINDING = IamBindingStatus(
    resource="projects/_/buckets/team-nlp-datasets",
    role="roles/storage.objectViewer",
    member="principal://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p.svc.id.goog"
    "/subject/ns/team-nlp/sa/nlp-notebook",
    added_by_operator=True,
)
QUOTA_MESSAGE = "node pool mlw-a100x8: Quota 'NVIDIA_A100_GPUS' exceeded. Limit: 0.0 in region us-central1."
STOCKOUT_MESSAGE = (
    "pod nlp-notebook-gpu-worker-x7k2p cannot get a node: Node scale up in zones us-central1-a associated with"
    " this pod failed: GCE out of resources. Pod is at risk of not being scheduled."
)
POLICY_PROBLEM = Problem("spec.storage.bucket", "'gs://x' is not allowed: the policy allows gs://team-nlp-*")
SPEC_PROBLEM = Problem("spec.head.resources.cpu", "'four' is not a quantity")

READY_CLUSTER = recorded(
    "nlp-notebook",
    "RayCluster",
    ray=CLUSTER_READY,
    node_pools=POOLS_READY,
    pools=[POOL],
    identity=IDENTITY_READY,
    bindings=[BINDING],
    gpus=GpuStatus(requested=4, accelerator="nvidia-l4"),
    dashboard_url="https://ray-nlp.internal.example.com",
)
UPGRADING_SERVICE = recorded(
    "llm-serve",
    "RayService",
    ray=kuberay("RayService", {"serviceStatus": "Running", "conditions": [_true("Ready"), _true("UpgradeInProgress")]}),
)
RAY_STARTING = recorded("nlp-notebook", "RayCluster", ray=CLUSTER_STARTING, node_pools=POOLS_READY)
RAY_NOT_CREATED = recorded("nlp-notebook", "RayCluster", ray=kuberay("RayCluster", None))
POOLS_PROVISIONING = recorded(
    "nlp-notebook", "RayCluster", ray=CLUSTER_STARTING, node_pools=POOLS_CREATING, pools=[POOL_CREATING]
)
QUOTA_EXCEEDED = recorded(
    "train",
    "RayJob",
    ray=kuberay("RayJob", {}),
    node_pools=Readiness(False, FailureKind.QUOTA.value, QUOTA_MESSAGE, permanent=True),
)
STOCKOUT = recorded(
    "nlp-notebook",
    "RayCluster",
    ray=CLUSTER_STARTING,
    node_pools=Readiness(False, FailureKind.STOCKOUT.value, STOCKOUT_MESSAGE, permanent=True),
    pools=[POOL],
)
POLICY_VIOLATION = recorded("nlp-notebook", "RayCluster", refusal=[POLICY_PROBLEM])
INVALID_SPEC = recorded("nlp-notebook", "RayCluster", refusal=[SPEC_PROBLEM], refusal_reason=REASON_INVALID_SPEC)
JOB_SUCCEEDED = recorded(
    "train",
    "RayJob",
    ray=kuberay(
        "RayJob",
        {
            "jobDeploymentStatus": "Complete",
            "jobStatus": "SUCCEEDED",
            "jobId": "train-7xk2p",
            "succeeded": 1,
            "startTime": "2026-11-23T10:00:00Z",
            "endTime": "2026-11-23T11:40:00Z",
            "message": "Job finished successfully.",
        },
    ),
)
JOB_FAILED = recorded(
    "train",
    "RayJob",
    ray=kuberay(
        "RayJob",
        {
            "jobDeploymentStatus": "Failed",
            "jobStatus": "FAILED",
            "reason": "AppFailed",
            "jobId": "train-7xk2p",
            "failed": 3,
            "message": "Job entrypoint command failed with exit code 1",
        },
    ),
)
SUSPENDED = recorded("nlp-notebook", "RayCluster", suspended=True, ray=kuberay("RayCluster", {"state": "suspended"}))
# As the reconciler builds it for a deleted workload: no Ray observation, the GCP record kept.
DELETING = recorded("nlp-notebook", "RayCluster", deleting=True, pools=[POOL], bindings=[BINDING])
# An unparseable spec is refused before the deletion check, so a deleted one is also Stalled.
DELETING_INVALID = recorded(
    "nlp-notebook", "RayCluster", deleting=True, refusal=[SPEC_PROBLEM], refusal_reason=REASON_INVALID_SPEC
)

RECORDED = [
    pytest.param(
        workload("nlp-notebook", "RayCluster", READY_CLUSTER),
        "Healthy",
        "all Ray pods are ready",
        id="ready-raycluster",
    ),
    pytest.param(
        workload("llm-serve", "RayService", UPGRADING_SERVICE),
        "Healthy",
        "serving; an upgrade is in progress",
        id="ready-rayservice-upgrading",
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", RAY_STARTING),
        "Progressing",
        "the head pod is not ready",
        id="ray-provisioning",
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", RAY_NOT_CREATED),
        "Progressing",
        "the RayCluster has not been created yet",
        id="ray-object-not-created-yet",
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", POOLS_PROVISIONING),
        "Progressing",
        "mlw-l4x1-spot: PROVISIONING",
        id="node-pools-provisioning",
    ),
    pytest.param(
        workload("train", "RayJob", QUOTA_EXCEEDED),
        "Degraded",
        f"QuotaExceeded: {QUOTA_MESSAGE}",
        id="stalled-quota-exceeded",
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", STOCKOUT),
        "Degraded",
        f"Stockout: {STOCKOUT_MESSAGE}",
        id="stalled-stockout",
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", POLICY_VIOLATION),
        "Degraded",
        f"PolicyViolation: {POLICY_PROBLEM}",
        id="policy-violation",
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", INVALID_SPEC),
        "Degraded",
        f"InvalidSpec: {SPEC_PROBLEM}",
        id="invalid-spec",
    ),
    pytest.param(
        workload("train", "RayJob", JOB_SUCCEEDED), "Healthy", "Job finished successfully.", id="job-succeeded"
    ),
    pytest.param(
        workload("train", "RayJob", JOB_FAILED),
        "Degraded",
        "AppFailed: Job entrypoint command failed with exit code 1",
        id="job-failed",
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", SUSPENDED), "Suspended", "the workload is suspended", id="suspended"
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", DELETING, deleting=True),
        "Progressing",
        "the workload is being deleted",
        id="deleting",
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", DELETING_INVALID, deleting=True),
        "Progressing",
        "the workload is being deleted",
        id="deleting-an-invalid-spec",
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", READY_CLUSTER, generation=GENERATION + 1),
        "Progressing",
        "waiting for the operator to observe generation 5",
        id="stale-observed-generation",
    ),
    pytest.param(
        workload("train", "RayJob", JOB_FAILED, generation=GENERATION + 1),
        "Progressing",
        "waiting for the operator to observe generation 5",
        id="stale-after-a-failure",
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", MLWorkloadStatus()),
        "Progressing",
        "waiting for the operator to observe generation 4",
        id="empty-status",
    ),
    pytest.param(
        workload("nlp-notebook", "RayCluster", None),
        "Progressing",
        "waiting for the operator to observe generation 4",
        id="no-status",
    ),
]


@pytest.mark.parametrize(("body", "expected", "message"), RECORDED)
def test_recorded_status(body: dict[str, Any], expected: str, message: str) -> None:
    assert health(body) == (expected, message)


def _status(**fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": WORKLOAD_KIND,
        "metadata": {"name": "w", "generation": 4},
        "status": fields,
    }


def _at(generation: object, **fields: Any) -> dict[str, Any]:
    return _status(**fields) | {"metadata": {"name": "w", "generation": generation}}


READY = {"type": "Ready", "status": "True", "reason": "RayClusterReady", "message": "all Ray pods are ready"}
NOT_YET = "waiting for the operator to observe generation 4"

# Objects the operator does not write, but Argo CD may still be handed: older operator versions,
# hand-edited status, partially decoded objects.
HAND_WRITTEN = [
    pytest.param(None, "Progressing", "waiting for the operator to report status", id="no-object"),
    pytest.param(
        {"kind": WORKLOAD_KIND}, "Progressing", "waiting for the operator to report status", id="no-metadata-no-status"
    ),
    pytest.param(_status() | {"status": "Running"}, "Progressing", NOT_YET, id="status-not-an-object"),
    pytest.param(_status(phase="Running", conditions=[READY]), "Progressing", NOT_YET, id="no-observed-generation"),
    pytest.param(
        _status(observedGeneration=4, phase="Running"),
        "Progressing",
        "waiting for the workload to become ready",
        id="no-conditions-running",
    ),
    pytest.param(
        _status(observedGeneration=4, phase="Succeeded"), "Healthy", "the job succeeded", id="no-conditions-succeeded"
    ),
    pytest.param(
        _status(observedGeneration=4, phase="Failed", job={"message": "exit code 1"}),
        "Degraded",
        "exit code 1",
        id="no-conditions-failed",
    ),
    pytest.param(
        _status(observedGeneration=4, phase="Failed"),
        "Degraded",
        "the workload failed",
        id="no-conditions-failed-no-job",
    ),
    pytest.param(
        _status(observedGeneration=4, phase="Suspended"),
        "Suspended",
        "the workload is suspended",
        id="no-conditions-suspended",
    ),
    pytest.param(
        _status(observedGeneration=4, phase="Deleting"),
        "Progressing",
        "the workload is being deleted",
        id="no-conditions-deleting",
    ),
    pytest.param(
        _status(observedGeneration=4, phase="Running", conditions=[READY]),
        "Healthy",
        "all Ray pods are ready",
        id="conditions-without-observed-generation",
    ),
    pytest.param(
        _status(observedGeneration=4, phase="Running", conditions=[READY | {"observedGeneration": 3}]),
        "Progressing",
        NOT_YET,
        id="one-condition-stale",
    ),
    pytest.param(
        _status(phase="Running", conditions=[READY]) | {"metadata": {"name": "w"}},
        "Healthy",
        "all Ray pods are ready",
        id="no-generation-in-metadata",
    ),
    # Argo CD hands json.Number values to Lua as strings.
    pytest.param(
        _at("5", observedGeneration="4", phase="Running", conditions=[READY]),
        "Progressing",
        "waiting for the operator to observe generation 5",
        id="generations-as-strings",
    ),
    pytest.param(
        _at("5", observedGeneration="5", phase="Running", conditions=[READY]),
        "Healthy",
        "all Ray pods are ready",
        id="generations-as-strings-current",
    ),
    pytest.param(
        _at(True, observedGeneration=4, conditions=[READY]), "Healthy", "all Ray pods are ready", id="generation-junk"
    ),
    pytest.param(
        _status(observedGeneration=4, phase="Running", conditions={"Ready": READY}),
        "Progressing",
        "waiting for the workload to become ready",
        id="conditions-as-a-map",
    ),
    pytest.param(
        _status(observedGeneration=4, conditions=["Ready", 7, READY]),
        "Healthy",
        "all Ray pods are ready",
        id="junk-condition-entries",
    ),
    pytest.param(
        _status(observedGeneration=4, conditions=[READY | {"status": True}]),
        "Progressing",
        "all Ray pods are ready",
        id="ready-status-not-a-string",
    ),
    pytest.param(
        _status(observedGeneration=4, conditions=[{"type": "Stalled", "status": "True"}]),
        "Degraded",
        "the workload is stalled",
        id="stalled-without-reason",
    ),
    pytest.param(
        _status(
            observedGeneration=4,
            conditions=[
                READY,
                {"type": "Stalled", "status": "True", "reason": "Stockout", "message": "no L4 in us-central1-a"},
            ],
        ),
        "Degraded",
        "Stockout: no L4 in us-central1-a",
        id="stalled-beats-ready",
    ),
    pytest.param(
        _status(observedGeneration=4, conditions=[{"type": "Ready", "status": "False", "reason": "Suspended"}]),
        "Suspended",
        "the workload is suspended",
        id="ready-reason-suspended-without-phase",
    ),
    pytest.param(
        _status(
            observedGeneration=4,
            conditions=[
                {"type": "Ready", "status": "Unknown", "reason": "Probing"},
                {"type": "Reconciling", "status": "True", "reason": "Provisioning", "message": "creating pools"},
            ],
        ),
        "Progressing",
        "creating pools",
        id="unknown-ready-uses-reconciling",
    ),
]


@pytest.mark.parametrize(("body", "expected", "message"), HAND_WRITTEN)
def test_hand_written_status(body: dict[str, Any] | None, expected: str, message: str) -> None:
    assert health(body) == (expected, message)


def test_every_recorded_condition_carries_its_generation() -> None:
    # The staleness rule relies on it: a condition without observedGeneration is never called stale.
    for case in RECORDED:
        body = case.values[0]
        assert isinstance(body, dict)
        for condition in (body.get("status") or {}).get("conditions", []):
            assert condition["observedGeneration"] == GENERATION, condition


def test_the_sandbox_is_as_bare_as_argo_cds() -> None:
    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.execute(SANDBOX)
    with pytest.raises(lupa.lua51.LuaError):
        lua.execute('return ("Ready"):lower()')
    assert lua.execute("return string, math, io") == (None, None, None)


def _yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_bytes().decode())
    assert isinstance(document, dict)
    return document


def test_the_configmap_patch_inlines_the_script_byte_for_byte() -> None:
    patch = _yaml(ARGOCD / "argocd-cm-patch.yaml")
    assert (patch["apiVersion"], patch["kind"]) == ("v1", "ConfigMap")
    assert (patch["metadata"]["name"], patch["metadata"]["namespace"]) == ("argocd-cm", "argocd")
    assert list(patch["data"]) == [HEALTH_KEY]
    inlined = patch["data"][HEALTH_KEY]
    assert inlined.encode() == SCRIPT.encode(), (
        f"{HEALTH_KEY} in argocd-cm-patch.yaml differs from {SCRIPT_PATH.name}: re-inline the script"
    )


def test_the_application_deploys_the_operator_chart() -> None:
    app = _yaml(ARGOCD / "application.yaml")
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert app["metadata"]["namespace"] == "argocd"
    source, destination = app["spec"]["source"], app["spec"]["destination"]
    assert source["path"] == "deploy/helm/mlworkload-operator"
    assert source["repoURL"].startswith("https://")
    assert source["repoURL"].endswith(".git")
    assert source["targetRevision"]
    assert destination["namespace"] == "mlworkload-system"
    assert destination["server"] == "https://kubernetes.default.svc"
    assert {"CreateNamespace=true", "ServerSideApply=true"} <= set(app["spec"]["syncPolicy"]["syncOptions"])


def _snippets(text: str) -> Sequence[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)


def test_the_readme_snippets_are_valid_yaml() -> None:
    snippets = _snippets((ARGOCD / "README.md").read_text())
    assert len(snippets) >= 3
    for snippet in snippets:
        assert all(isinstance(document, dict) for document in yaml.safe_load_all(snippet)), snippet
