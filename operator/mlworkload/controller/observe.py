"""The observe step: a workload's children as the operator's watches last saw them, without a round trip.

kopf watches every kind a workload owns (filtered server-side by the operator's ownership label) and keeps
one index per kind, keyed by (namespace, workload), of *sketches*: each child shaped like the object but
holding only what reconcile reads (identity, ownership, the applied-hash annotation, owner references,
the autoscaler's worker replicas, a Ray object's spec.suspend (Kueue's hold), and the status fields
raystatus.py and exposure.py read), plus a digest of everything else. kopf fills every index before any
handler runs, so a reconcile never sees a half-listed cache; a steady reconcile of an unchanged workload
reads nothing from the API server.

A sketch cannot be compared field by field with the desired object, so drift is judged by the process's
`AppliedMemory` (what it applied or verified, by uid, resourceVersion and digest):

- the applied-hash annotation differs from the desired hash: the desired state changed, apply it;
- the digest is the one this process last applied or verified: unchanged, no read;
- the digest moved (someone else edited the object): re-read it and compare in full, as without a cache;
- the cache shows an older resourceVersion of an object this process just applied: the watch has not
  caught up yet, and the memory decides (no apply storm of identical objects while the cache lags);
- first sight in this process (a restart): the hash annotation is trusted and the digest becomes the
  baseline. An edit made while no operator ran is thus not noticed until the object changes again: the
  price of a restart that reads nothing per child (a full re-read would be one GET per child).

Without watches (unit tests, tools), `ListedChildren` lists by ownership labels, and full objects are
compared field by field as before.
"""

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, Protocol

import kopf

from mlworkload.builders.ingress import BACKENDS_ANNOTATION
from mlworkload.constants import ANNOTATION_PREFIX, LABEL_MANAGED_BY, LABEL_WORKLOAD, MANAGED_BY
from mlworkload.controller.kube import RESOURCES, KubeApi, Manifest, Resource

HASH_ANNOTATION: Final = f"{ANNOTATION_PREFIX}/applied-hash"
DIGEST_KEY: Final = "_digest"  # a sketch's precomputed digest; never a key of a real object

ChildKey = tuple[str, str]  # (kind, name)
WorkloadKey = tuple[str, str]  # (namespace, workload)

# The namespaced kinds a workload may own, in the order they are listed and pruned. ComputeClasses are
# cluster-scoped and shared by shape: cached by name (SHARED_KINDS), never pruned by a workload.
OWNED_KINDS: Final[tuple[Resource, ...]] = tuple(
    RESOURCES[key]
    for key in [
        ("v1", "ServiceAccount"),
        ("networking.k8s.io/v1", "NetworkPolicy"),
        ("policy/v1", "PodDisruptionBudget"),
        ("ray.io/v1", "RayCluster"),
        ("ray.io/v1", "RayJob"),
        ("ray.io/v1", "RayService"),
        ("v1", "Service"),
        ("cloud.google.com/v1", "BackendConfig"),
        ("networking.gke.io/v1", "ManagedCertificate"),
        ("networking.k8s.io/v1", "Ingress"),
    ]
)
SHARED_KINDS: Final[tuple[Resource, ...]] = (RESOURCES["cloud.google.com/v1", "ComputeClass"],)
OWNED_SELECTOR: Final = f"{LABEL_MANAGED_BY}={MANAGED_BY}"


def index_name(resource: Resource) -> str:
    """The kopf index (and handler keyword argument) that caches one kind."""
    return f"cached_{resource.plural}"


# --- sketches ---------------------------------------------------------------------------------------------

# Server bookkeeping that changes without anyone changing the object (or that is compared on its own).
_VOLATILE_METADATA: Final = frozenset({"resourceVersion", "managedFields", "generation", "creationTimestamp", "uid",
                                       "selfLink"})  # fmt: skip
# Where a Ray kind keeps its worker groups (apply.with_autoscaled_replicas keeps the autoscaler's replicas).
RAY_CLUSTER_SPEC: Final[dict[str, tuple[str, ...]]] = {
    "RayCluster": (),
    "RayJob": ("rayClusterSpec",),
    "RayService": ("rayClusterConfig",),
}
# The status fields raystatus.py reads, per Ray kind.
_RAY_STATUS: Final = {
    "RayCluster": ("state", "conditions", "readyWorkerReplicas", "desiredWorkerReplicas"),
    "RayJob": ("jobDeploymentStatus", "jobStatus", "reason", "message", "jobId", "succeeded", "failed",
               "startTime", "endTime", "rayClusterStatus"),
    "RayService": ("serviceStatus", "conditions", "activeServiceStatus"),
}  # fmt: skip
# Of the status of a RayJob's or RayService's cluster, only its worker counts (status.ray.workers).
_WORKER_COUNTS: Final = ("readyWorkerReplicas", "desiredWorkerReplicas")
_KEPT_LABELS: Final = (LABEL_MANAGED_BY, LABEL_WORKLOAD)
_KEPT_ANNOTATIONS: Final = (HASH_ANNOTATION, BACKENDS_ANNOTATION)


def digest(obj: Mapping[str, Any]) -> str:
    """What the object is, less its status and the server's bookkeeping: a change of it means someone edited
    the object. A sketch carries the digest of the object it was made from."""
    precomputed = obj.get(DIGEST_KEY)
    if isinstance(precomputed, str):
        return precomputed
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _VOLATILE_METADATA}
    essence = {k: v for k, v in obj.items() if k not in ("metadata", "status")} | {"metadata": meta}
    return hashlib.sha256(json.dumps(essence, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_sketch(obj: Mapping[str, Any]) -> bool:
    return DIGEST_KEY in obj


def applied_hash(obj: Mapping[str, Any]) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(HASH_ANNOTATION)
    return value if isinstance(value, str) else None


def _ray_status(kind: str, status: Mapping[str, Any]) -> dict[str, Any]:
    kept = {key: status[key] for key in _RAY_STATUS[kind] if key in status}
    if isinstance(kept.get("rayClusterStatus"), dict):
        kept["rayClusterStatus"] = _worker_counts(kept["rayClusterStatus"])
    if isinstance(kept.get("activeServiceStatus"), dict):  # only the applications' verdicts, not their deployments
        active = kept["activeServiceStatus"]
        apps = active.get("applicationStatuses") or {}
        kept["activeServiceStatus"] = {"applicationStatuses": {
            name: {k: app[k] for k in ("status", "message") if k in app} for name, app in apps.items()
            if isinstance(app, dict)}}  # fmt: skip
        if isinstance(active.get("rayClusterStatus"), dict):
            kept["activeServiceStatus"]["rayClusterStatus"] = _worker_counts(active["rayClusterStatus"])
    return kept


def _worker_counts(cluster_status: Mapping[str, Any]) -> dict[str, Any]:
    return {key: cluster_status[key] for key in _WORKER_COUNTS if key in cluster_status}


def _worker_replicas(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    path = RAY_CLUSTER_SPEC[kind]
    current: Any = spec
    for key in path:
        current = (current or {}).get(key) if isinstance(current, dict) else None
    groups = (current or {}).get("workerGroupSpecs") if isinstance(current, dict) else None
    kept: dict[str, Any] = {"workerGroupSpecs": [{"groupName": g.get("groupName"), "replicas": g.get("replicas")}
                                                 for g in groups or [] if isinstance(g, dict)]}  # fmt: skip
    for key in reversed(path):
        kept = {key: kept}
    return kept


def sketch(obj: Mapping[str, Any]) -> Manifest:
    """The fields of a child reconcile reads, shaped like the object (so status and exposure read it as
    they read the object), and the digest of the rest."""
    meta = obj.get("metadata") or {}
    kind = str(obj.get("kind"))
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    kept_meta: dict[str, Any] = {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
        "labels": {k: labels[k] for k in _KEPT_LABELS if k in labels},
        "annotations": {k: annotations[k] for k in _KEPT_ANNOTATIONS if k in annotations},
        "ownerReferences": [{"uid": ref.get("uid"), "controller": ref.get("controller", False)}
                            for ref in meta.get("ownerReferences") or []],
    }  # fmt: skip
    for key in ("namespace", "deletionTimestamp"):
        if meta.get(key):
            kept_meta[key] = meta[key]
    kept: Manifest = {"apiVersion": obj.get("apiVersion"), "kind": kind, "metadata": kept_meta, DIGEST_KEY: digest(obj)}
    status = obj.get("status") or {}
    if kind in _RAY_STATUS:
        spec = obj.get("spec") or {}
        kept["spec"] = _worker_replicas(kind, spec)
        if isinstance(spec.get("suspend"), bool):  # a queued one's is Kueue's: held or admitted (status.py)
            kept["spec"]["suspend"] = spec["suspend"]
        kept["status"] = _ray_status(kind, status)
    elif kind == "Ingress" and status.get("loadBalancer"):
        kept["status"] = {"loadBalancer": status["loadBalancer"]}
    elif kind == "ManagedCertificate" and "certificateStatus" in status:
        kept["status"] = {"certificateStatus": status["certificateStatus"]}
    return kept


# --- kopf indexes -------------------------------------------------------------------------------------------


def child_index(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> dict[WorkloadKey, Manifest]:
    """One owned child, under the workload its label names (KubeRay's clusters of a RayJob carry the same
    labels: they are listed too, and left alone by pruning, which follows controller references)."""
    workload = labels.get(LABEL_WORKLOAD)
    if not workload or not namespace:
        return {}
    return {(namespace, workload): sketch(body)}


def shared_index(body: kopf.Body, name: str, **_: Any) -> dict[str, Manifest]:
    return {name: sketch(body)}


# --- where reconcile finds children ---------------------------------------------------------------------------


class ChildSource(Protocol):
    async def children(self, namespace: str, workload: str) -> dict[ChildKey, Manifest]: ...

    def shared(self, resource: Resource, name: str) -> Manifest | None: ...


@dataclass(frozen=True)
class ListedChildren:
    """Without watches: one LIST per kind by ownership labels; shared children are read by name when applied."""

    kube: KubeApi
    kinds: Sequence[Resource] = OWNED_KINDS

    async def children(self, namespace: str, workload: str) -> dict[ChildKey, Manifest]:
        selector = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_WORKLOAD: workload}
        observed: dict[ChildKey, Manifest] = {}
        for resource in self.kinds:
            for live in await self.kube.list(resource, namespace, selector):
                observed[resource.kind, live["metadata"]["name"]] = live
        return observed

    def shared(self, resource: Resource, name: str) -> Manifest | None:
        return None


@dataclass(frozen=True)
class IndexedChildren:
    """From kopf's indexes (the handler's index keyword arguments): no API call."""

    indexes: Mapping[str, Any]

    async def children(self, namespace: str, workload: str) -> dict[ChildKey, Manifest]:
        observed: dict[ChildKey, Manifest] = {}
        for resource in OWNED_KINDS:
            index: kopf.Index[WorkloadKey, Manifest] = self.indexes[index_name(resource)]
            for found in index.get((namespace, workload), ()):
                observed[resource.kind, found["metadata"]["name"]] = found
        return observed

    def shared(self, resource: Resource, name: str) -> Manifest | None:
        index: kopf.Index[str, Manifest] = self.indexes[index_name(resource)]
        return next(iter(index.get(name, ())), None)


# --- what this process applied ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    """A child as this process last applied or verified it."""

    uid: str
    resource_version: str
    applied_hash: str | None
    digest: str


class Verdict(Enum):
    UNCHANGED = "unchanged"  # as desired: no read, no write
    CHANGED = "changed"  # the desired state moved on: apply
    REREAD = "reread"  # someone edited it: read it whole and compare


def _older(version: str | None, than: str) -> bool:
    """resourceVersions are opaque by the API conventions, but etcd-backed servers give increasing integers;
    an unparsable one is taken as current (at worst one extra read)."""
    try:
        return int(version or "") < int(than)
    except ValueError:
        return False


SHARED_SCOPE: Final[WorkloadKey] = ("", "")  # cluster-scoped children shared by workloads


@dataclass
class AppliedMemory:
    """Per workload and child: what this process last applied or verified; uids it deleted (until the cache
    drops them); a lock per shared child, so many workloads of one shape apply it once."""

    _seen: dict[WorkloadKey, dict[ChildKey, Seen]] = field(default_factory=dict)
    _deleted: dict[WorkloadKey, set[str]] = field(default_factory=dict)
    _locks: dict[ChildKey, asyncio.Lock] = field(default_factory=dict)

    def judge(self, scope: WorkloadKey, key: ChildKey, cached: Manifest, desired_hash: str) -> Verdict:
        """Whether a cached sketch is as desired, without reading the object."""
        meta = cached["metadata"]
        seen = self._seen.get(scope, {}).get(key)
        if (
            seen is not None
            and seen.uid == meta.get("uid")
            and _older(meta.get("resourceVersion"), seen.resource_version)
        ):
            # The watch has not caught up with this process's own write yet: the write is the truth.
            return Verdict.UNCHANGED if seen.applied_hash == desired_hash else Verdict.CHANGED
        if applied_hash(cached) != desired_hash:
            return Verdict.CHANGED
        if seen is None or seen.uid != meta.get("uid"):
            self.remember(scope, key, cached)  # first sight (a restart): the hash is trusted, see the module doc
            return Verdict.UNCHANGED
        if seen.digest == digest(cached):
            return Verdict.UNCHANGED
        return Verdict.REREAD

    def remember(self, scope: WorkloadKey, key: ChildKey, obj: Manifest) -> None:
        meta = obj.get("metadata") or {}
        seen = Seen(str(meta.get("uid") or ""), str(meta.get("resourceVersion") or ""), applied_hash(obj), digest(obj))
        self._seen.setdefault(scope, {})[key] = seen

    def deleted(self, scope: WorkloadKey, key: ChildKey, uid: str) -> None:
        self._seen.get(scope, {}).pop(key, None)
        self._deleted.setdefault(scope, set()).add(uid)

    def was_deleted(self, scope: WorkloadKey, uid: str) -> bool:
        return uid in self._deleted.get(scope, ())

    def still_cached(self, scope: WorkloadKey, uids: set[str]) -> None:
        """Forget deletions the cache no longer shows (it has caught up)."""
        if scope in self._deleted:
            self._deleted[scope] &= uids
            if not self._deleted[scope]:
                del self._deleted[scope]

    def lock(self, key: ChildKey) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def forget(self, scope: WorkloadKey) -> None:
        """The workload is gone: its children go with it."""
        self._seen.pop(scope, None)
        self._deleted.pop(scope, None)

    def __len__(self) -> int:
        return sum(map(len, self._seen.values()))


def ray_fingerprint(obj: Mapping[str, Any]) -> str:
    """What a Ray object's event may change that the workload's reconcile cares about: the status fields
    raystatus.py reads, and anything anyone edited (the digest). KubeRay's other status updates (endpoints,
    timestamps, replica counts) change neither."""
    kept = sketch(obj)
    relevant = [kept.get("status"), kept[DIGEST_KEY], kept["metadata"].get("deletionTimestamp")]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]
