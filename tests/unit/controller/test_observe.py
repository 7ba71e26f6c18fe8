"""Reconciling from the watch caches: no reads in a steady state, no writes while the cache lags behind."""

import asyncio
from collections import defaultdict
from typing import Any

from mlworkload.controller.kube import Manifest
from mlworkload.controller.observe import (
    OWNED_KINDS,
    SHARED_KINDS,
    IndexedChildren,
    child_index,
    index_name,
    ray_fingerprint,
    shared_index,
    sketch,
)
from mlworkload.controller.reconcile import Reconciler, reconcile
from mlworkload.gcp.provisioner import DryRunProvisioner
from mlworkload.policy import ClusterView
from tests.support.clock import NOW
from tests.support.documents import permissive_policy, workload
from tests.support.fake_kube import FakeKubeApi

NS = "team-nlp"
VIEW = ClusterView(policies=[permissive_policy().obj()], default_labels={})
READY = {"state": "ready", "conditions": [{"type": "HeadPodReady", "status": "True"},
                                          {"type": "RayClusterProvisioned", "status": "True"}]}  # fmt: skip


class Cache:
    """kopf's indexes as the watches would fill them, refreshed from the fake API on demand (so a test
    decides when the watch has caught up)."""

    def __init__(self, kube: FakeKubeApi) -> None:
        self.kube = kube
        self.indexes: dict[str, dict[Any, list[Manifest]]] = {}
        self.refresh()

    def refresh(self) -> None:
        indexes: dict[str, dict[Any, list[Manifest]]] = {index_name(r): defaultdict(list) for r in OWNED_KINDS}
        indexes |= {index_name(r): defaultdict(list) for r in SHARED_KINDS}
        for (kind, namespace, name), obj in self.kube.objects.items():
            labels = obj["metadata"].get("labels") or {}
            resource = next((r for r in (*OWNED_KINDS, *SHARED_KINDS) if r.kind == kind), None)
            if resource is None or labels.get("app.kubernetes.io/managed-by") != "mlworkload":
                continue
            found = (
                child_index(obj, namespace, labels) if resource.namespaced else shared_index(obj, name)  # type: ignore[arg-type]
            )
            for key, value in found.items():
                indexes[index_name(resource)][key].append(value)
        self.indexes = indexes

    def source(self) -> IndexedChildren:
        return IndexedChildren(self.indexes)


def create(kube: FakeKubeApi, name: str = "demo") -> dict[str, Any]:
    doc = workload(name, NS).gpu_group(capacity="SpotWithFallback").expose("dashboard")
    return kube.put(doc.set("metadata.generation", 1).doc)


def body_of(kube: FakeKubeApi, name: str = "demo") -> dict[str, Any]:
    return kube.objects["MLWorkload", NS, name]


async def test_a_steady_reconcile_from_the_cache_makes_no_round_trip(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    create(kube)
    cache = Cache(kube)
    first = await reconcile(reconciler, body_of(kube), VIEW, cache.source())
    assert first.result == "applied"
    kube.objects["RayCluster", NS, "demo"]["status"] = READY  # KubeRay: while it provisions, pending pods are read
    cache.refresh()  # the watch events of the creates arrive
    running = await reconcile(reconciler, body_of(kube), VIEW, cache.source())
    assert running.status is not None
    assert running.status.phase == "Running"
    reads, writes = len(kube.reads), len(kube.writes)
    outcome = await reconcile(reconciler, body_of(kube), VIEW, cache.source())
    assert (outcome.result, outcome.status_written) == ("unchanged", False)
    assert (kube.reads[reads:], kube.writes[writes:]) == ([], [])


async def test_a_restarted_operator_trusts_the_applied_hash_and_reads_nothing(kube: FakeKubeApi) -> None:
    create(kube)
    before = Reconciler(kube=kube, gcp=DryRunProvisioner(), clock=lambda: NOW)
    await reconcile(before, body_of(kube), VIEW)
    kube.objects["RayCluster", NS, "demo"]["status"] = READY
    await reconcile(before, body_of(kube), VIEW)
    cache = Cache(kube)
    restarted = Reconciler(kube=kube, gcp=DryRunProvisioner(), clock=lambda: NOW)  # remembers nothing
    reads, writes = len(kube.reads), len(kube.writes)
    outcome = await reconcile(restarted, body_of(kube), VIEW, cache.source())
    assert outcome.result == "unchanged"
    assert (kube.reads[reads:], kube.writes[writes:]) == ([], [])


async def reconciled_and_watched(kube: FakeKubeApi, reconciler: Reconciler) -> Cache:
    """The demo workload created and reconciled once, with the watches caught up on what that applied."""
    create(kube)
    cache = Cache(kube)
    await reconcile(reconciler, body_of(kube), VIEW, cache.source())
    cache.refresh()
    return cache


async def test_a_cache_that_lags_behind_the_operators_own_apply_causes_no_second_apply(
    kube: FakeKubeApi, reconciler: Reconciler
) -> None:
    cache = await reconciled_and_watched(kube, reconciler)
    body_of(kube)["spec"]["workerGroups"][0]["maxReplicas"] = 3  # the user scales the group up
    changed = await reconcile(reconciler, body_of(kube), VIEW, cache.source())
    assert "RayCluster/demo" in changed.apply.applied
    writes = len(kube.writes)
    # The watch event of that apply has not arrived: the cache still shows the old RayCluster.
    again = await reconcile(reconciler, body_of(kube), VIEW, cache.source())
    assert again.apply.applied == []
    assert kube.writes[writes:] == []


async def test_an_edit_someone_made_is_read_back_and_corrected(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    cache = await reconciled_and_watched(kube, reconciler)
    kube.objects["NetworkPolicy", NS, "demo-head"]["spec"]["ingress"] = [{}]  # opened to everyone by hand
    kube.put(kube.objects["NetworkPolicy", NS, "demo-head"])  # a new resourceVersion, as the server gives
    cache.refresh()
    reads = len(kube.reads)
    outcome = await reconcile(reconciler, body_of(kube), VIEW, cache.source())
    assert outcome.apply.applied == ["NetworkPolicy/demo-head"]
    # The cache said it moved; the whole object says how (the pending pods are listed while Ray provisions).
    assert [read for read in kube.reads[reads:] if read != "list Pod"] == ["get NetworkPolicy/demo-head"]
    assert kube.objects["NetworkPolicy", NS, "demo-head"]["spec"].get("ingress") != [{}]


async def test_the_shared_compute_class_is_applied_once_for_many_workloads_of_its_shape(
    kube: FakeKubeApi, reconciler: Reconciler
) -> None:
    names = [f"w{i}" for i in range(20)]
    for name in names:
        create(kube, name)
    cache = Cache(kube)
    outcomes = await asyncio.gather(*(reconcile(reconciler, body_of(kube, n), VIEW, cache.source()) for n in names))
    assert all(o.result == "applied" for o in outcomes)
    assert [w for w in kube.writes if w.startswith("apply ComputeClass/")] == [
        "apply ComputeClass/mlw-permissive-l4x1-swf"
    ]
    cache.refresh()
    writes = len(kube.writes)
    await asyncio.gather(*(reconcile(reconciler, body_of(kube, n), VIEW, cache.source()) for n in names))
    assert kube.writes[writes:] == []


async def test_a_pruned_child_the_cache_still_shows_is_not_deleted_twice(
    kube: FakeKubeApi, reconciler: Reconciler
) -> None:
    cache = await reconciled_and_watched(kube, reconciler)
    body_of(kube)["spec"].pop("expose")
    first = await reconcile(reconciler, body_of(kube), VIEW, cache.source())
    assert sorted(first.apply.deleted) == ["BackendConfig/demo-dashboard", "Ingress/demo-dashboard",
                                           "Service/demo-dashboard"]  # fmt: skip
    writes = len(kube.writes)
    await reconcile(reconciler, body_of(kube), VIEW, cache.source())  # the deletions' events are still on their way
    assert kube.writes[writes:] == []


def ray_cluster(status: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "spec": {"workerGroupSpecs": []}, "status": status,
            "metadata": {"name": "demo", "namespace": NS, "uid": "u1", "resourceVersion": "7", **metadata}}  # fmt: skip


def test_a_sketch_keeps_what_status_reads_and_its_fingerprint_ignores_kuberays_chatter() -> None:
    ready = {"state": "ready", "conditions": [{"type": "HeadPodReady", "status": "True"}]}
    chatter = {**ready, "endpoints": {"dashboard": "8265"}, "lastUpdateTime": "2026-11-23T12:00:00Z"}
    assert sketch(ray_cluster(chatter))["status"] == ready
    assert ray_fingerprint(ray_cluster(ready)) == ray_fingerprint(ray_cluster(chatter, resourceVersion="8"))
    assert ray_fingerprint(ray_cluster(ready)) != ray_fingerprint(ray_cluster({"state": "suspended"}))
