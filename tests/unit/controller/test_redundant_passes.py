"""No redundant passes or writes: which Ray events reconcile, and kopf's last-handled state kept in memory.

controller.handlers is imported inside the test, with the integration tier's settings: its first import fixes
kopf's timer intervals for the whole process (tests/support/operator.py).
"""

import copy
from typing import Any, cast

import kopf
import pytest

from mlworkload.controller.persistence import MemoryDiffBaseStorage, ProgressAnnotations
from tests.support.operator import handlers_module

NS = "team-nlp"


def ray_event(change: str | None, status: dict[str, Any], *, name: str = "demo", owner: str = "MLWorkload",
              resource_version: str = "7") -> dict[str, Any]:  # fmt: skip
    return {"type": change, "object": {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "spec": {"workerGroupSpecs": []}, "status": status,
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": resource_version,
                     "labels": {"app.kubernetes.io/managed-by": "mlworkload", "mlworkload.io/workload": "demo"},
                     "ownerReferences": [{"kind": owner, "name": "demo", "uid": "w", "controller": True}]},
    }}  # fmt: skip


async def test_ray_events_reconcile_only_when_what_status_reads_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    handlers = handlers_module()  # imported now, with the integration tier's intervals

    reconciled: list[str] = []

    async def record(body: Any, memo: Any, indexes: Any) -> None:
        reconciled.append(body["metadata"]["name"])

    monkeypatch.setattr(handlers, "_retrying_soon", record)
    memo = kopf.Memo(reconciler=object(), ray_fingerprints={})

    async def deliver(event: dict[str, Any]) -> int:
        before = len(reconciled)
        body = kopf.Body(event["object"])
        await handlers.ray_child_changed(cast(kopf.RawEvent, event), body, NS, body.metadata.labels, memo)
        return len(reconciled) - before

    provisioning = {"state": "", "conditions": [{"type": "HeadPodReady", "status": "False"}]}
    ready = {"state": "ready", "conditions": [{"type": "HeadPodReady", "status": "True"},
                                              {"type": "RayClusterProvisioned", "status": "True"}]}  # fmt: skip
    assert await deliver(ray_event(None, provisioning)) == 0  # the initial listing: resume reconciles anyway
    assert (
        await deliver(ray_event("MODIFIED", {**provisioning, "endpoints": {"dashboard": "8265"}}, resource_version="8"))
        == 0
    )
    assert await deliver(ray_event("MODIFIED", ready, resource_version="9")) == 1  # it became ready
    assert await deliver(ray_event("DELETED", ready)) == 1  # it must be made again
    assert await deliver(ray_event("ADDED", provisioning)) == 0  # the operator's own create
    kuberays = ray_event("MODIFIED", ready, name="demo-x7k2p", owner="RayJob")  # what KubeRay made for a RayJob
    assert await deliver(kuberays) == 0
    assert reconciled == ["demo", "demo"]


def test_the_last_handled_state_is_kept_in_memory_not_on_the_object() -> None:
    storage = MemoryDiffBaseStorage()
    body = kopf.Body({"metadata": {"uid": "u1", "annotations": {}}, "spec": {"type": "Cluster"}})
    assert storage.fetch(body=body) is None  # never handled in this process: a creation
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert patch == {}  # nothing written to the object
    assert storage.fetch(body=body) == storage.build(body=body)  # nothing changed since
    stamped = kopf.Body({"metadata": {"uid": "u1", "annotations": {"mlworkload.io/recheck": "now"}},
                         "spec": {"type": "Cluster"}})  # fmt: skip
    assert storage.fetch(body=stamped) == storage.build(body=stamped)  # the operator's own annotations
    changed = kopf.Body({"metadata": {"uid": "u1"}, "spec": {"type": "Job"}})
    assert storage.fetch(body=changed) not in (None, storage.build(body=changed))  # an update
    storage.forget("u1")
    assert storage.fetch(body=changed) is None


def test_a_handler_done_at_once_leaves_no_progress_marker_to_write() -> None:
    storage = ProgressAnnotations(prefix="mlworkload.io")
    body = kopf.Body({"metadata": {"uid": "u1", "annotations": {}}})
    record: Any = {"started": "2026-11-23T12:00:00", "success": True}
    done = kopf.Patch()
    storage.store(key=kopf.HandlerId("workload_changed"), record=record, body=body, patch=done)
    storage.purge(key=kopf.HandlerId("workload_changed"), body=body, patch=done)
    assert done == {}
    retrying = kopf.Patch()
    storage.store(key=kopf.HandlerId("workload_changed"), record=cast(Any, {**record, "success": False}), body=body,
                  patch=retrying)  # fmt: skip
    assert "mlworkload.io/kopf-managed" in retrying["metadata"]["annotations"]  # progress stays: so does the marker


WORKLOAD_BODY: dict[str, Any] = {
    "apiVersion": "mlworkload.io/v1alpha1",
    "kind": "MLWorkload",
    "metadata": {
        "uid": "u1", "name": "demo", "namespace": "team-nlp", "resourceVersion": "42", "generation": 3,
        "labels": {"team": "nlp"}, "finalizers": ["mlworkload.io/cleanup"],
        "annotations": {"note": "kept", "kubectl.kubernetes.io/last-applied-configuration": '{"spec": {}}',
                        "mlworkload.io/recheck": "now", "mlworkload.io/kopf-managed": "yes",
                        "mlworkload.io/workload_changed": '{"retries": 1}'},
        "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
    },
    "spec": {"type": "Cluster", "workerGroups": [{"name": "gpu", "replicas": 1}]},
    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}] * 20},
}  # fmt: skip


@pytest.mark.parametrize("body", [WORKLOAD_BODY, {"metadata": {"uid": "u1"}, "spec": {}}, {"spec": {"a": 1}}])
def test_the_slim_essence_is_kopfs_own(body: dict[str, Any]) -> None:
    """The essence built without copying the body equals kopf's, built from a deep copy of all of it; what kopf
    edits (labels, annotations) is copied, so the body itself is left as it was."""
    before = copy.deepcopy(body)
    ours = MemoryDiffBaseStorage().build(body=kopf.Body(body))
    assert ours == kopf.AnnotationsDiffBaseStorage().build(body=kopf.Body(body))
    assert body == before


def test_clearing_progress_is_kopfs_own_and_leaves_the_essence_alone() -> None:
    storage = ProgressAnnotations(prefix="mlworkload.io")
    essence = MemoryDiffBaseStorage().build(body=kopf.Body(WORKLOAD_BODY))
    before = copy.deepcopy(essence)
    cleared = storage.clear(essence=essence)
    assert cleared == kopf.AnnotationsProgressStorage(prefix="mlworkload.io").clear(essence=copy.deepcopy(essence))
    assert "mlworkload.io/workload_changed" not in cleared["metadata"]["annotations"]
    assert essence == before  # the input is untouched
