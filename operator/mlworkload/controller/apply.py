"""Create-or-update children with server-side apply, skip what is already right, prune the rest.

Each child carries the hash of what the operator last applied. A child whose hash matches and
whose live state still contains every desired field is left alone, so an unchanged workload
causes no writes at all; anything else is applied with the operator's field manager, which also
removes fields the operator set before and no longer wants. Children seen through the watch
cache are sketches, judged without a read by what this process applied (observe.AppliedMemory).
"""

import contextlib
import copy
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from mlworkload.constants import (
    KUEUE_LABEL_QUEUE_NAME,
    LABEL_MANAGED_BY,
    LABEL_WORKLOAD,
    MANAGED_BY,
    REASON_APPLY_FAILED,
    REASON_FORBIDDEN,
    REASON_INVALID,
)
from mlworkload.controller.kube import KubeApi, KubeError, Manifest, Resource, resource_of
from mlworkload.controller.observe import (
    HASH_ANNOTATION,
    RAY_CLUSTER_SPEC,
    SHARED_SCOPE,
    AppliedMemory,
    ChildKey,
    Verdict,
    WorkloadKey,
    is_sketch,
)
from mlworkload.problems import Problem

__all__ = ["HASH_ANNOTATION", "ApplyResult", "ChildKey", "WriteFailure", "apply_children", "delete_stale"]


@dataclass
class ApplyResult:
    live: dict[tuple[str, str], Manifest] = field(default_factory=dict)  # (kind, name) -> object
    applied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    conflicts: list[Problem] = field(default_factory=list)
    failure: "WriteFailure | None" = None  # the API refused a child's write: the ones after it wait


@dataclass(frozen=True, slots=True)
class WriteFailure:
    """A child the API server would not let the operator write, and its answer."""

    child: str  # Kind/name
    verb: str  # apply, delete
    error: KubeError

    @property
    def permanent(self) -> bool:
        """Retrying the same request cannot help: the RBAC, the object or a missing kind must change first."""
        return self.error.status in _PERMANENT

    @property
    def reason(self) -> str:
        return _PERMANENT.get(self.error.status, REASON_APPLY_FAILED)

    def describe(self, limit: int = 1000) -> str:
        message = self.error.message if len(self.error.message) <= limit else self.error.message[:limit] + "..."
        return f"{self.verb} {self.child}: {self.error.status} {self.error.reason}: {message}"


# 400/422: the API refuses what the object says; 403: the operator's RBAC does not allow it; 404: the kind is not
# served (a CRD is missing). 409, 429, 5xx and timeouts pass with time.
_PERMANENT: Final = {400: REASON_INVALID, 403: REASON_FORBIDDEN, 404: REASON_APPLY_FAILED, 422: REASON_INVALID}


def desired_hash(manifest: Manifest) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def with_hash(manifest: Manifest) -> Manifest:
    annotations = {**manifest["metadata"].get("annotations", {}), HASH_ANNOTATION: desired_hash(manifest)}
    return {**manifest, "metadata": {**manifest["metadata"], "annotations": annotations}}


def with_autoscaled_replicas(desired: Manifest, live: Manifest | None) -> Manifest:
    """Once a Ray object exists and its autoscaler runs, worker replicas are the autoscaler's to set:
    the live counts are kept (within the groups' bounds) instead of being forced back."""
    path = RAY_CLUSTER_SPEC.get(desired["kind"])
    if live is None or path is None or not desired["apiVersion"].startswith("ray.io/"):
        return desired
    merged = copy.deepcopy(desired)
    wanted, current = merged["spec"], live.get("spec") or {}
    for key in path:
        wanted, current = wanted.get(key) or {}, current.get(key) or {}
    if not wanted.get("enableInTreeAutoscaling"):
        return desired
    live_replicas = {g.get("groupName"): g.get("replicas") for g in current.get("workerGroupSpecs") or []}
    for group in wanted.get("workerGroupSpecs") or []:
        replicas = live_replicas.get(group["groupName"])
        if isinstance(replicas, int):
            group["replicas"] = min(max(replicas, group["minReplicas"]), group["maxReplicas"])
    return merged


def is_queued(manifest: Manifest) -> bool:
    """A Ray object that waits in a Kueue queue: Kueue owns its suspend and what admission injects."""
    labels = manifest.get("metadata", {}).get("labels") or {}
    return manifest["apiVersion"].startswith("ray.io/") and KUEUE_LABEL_QUEUE_NAME in labels


# What Kueue's admission merges into each pod template of a Ray object (podset.Merge, called for the head, every
# worker group and the submitter by RunWithPodSetsInfo in pkg/controller/jobs/rayjob/rayjob_controller.go and
# .../raycluster/raycluster_controller.go): the ResourceFlavor's node labels and tolerations, and Kueue's own
# labels, annotations and scheduling gates. Maps gain keys (a key already set to another value is a conflict Kueue
# refuses: utilmaps.HaveConflict -> BadPodSetsUpdateError, pkg/podset/podset.go), lists gain entries at their end.
_KUEUE_MAPS: Final = (("metadata", "labels"), ("metadata", "annotations"), ("spec", "nodeSelector"))
_KUEUE_LISTS: Final = (("spec", "tolerations"), ("spec", "schedulingGates"))


def _pod_templates(spec: Manifest, kind: str) -> dict[str, Manifest]:
    """A Ray object's pod templates by Kueue's pod set: head, each worker group, the submitter."""
    cluster: Any = spec
    for key in RAY_CLUSTER_SPEC.get(kind, ()):
        cluster = cluster.get(key) if isinstance(cluster, dict) else None
    cluster = cluster if isinstance(cluster, dict) else {}
    templates = {"head": (cluster.get("headGroupSpec") or {}).get("template")}
    for group in cluster.get("workerGroupSpecs") or []:
        templates[f"worker:{group.get('groupName')}"] = group.get("template")
    templates["submitter"] = spec.get("submitterPodTemplate")
    return {name: template for name, template in templates.items() if isinstance(template, dict)}


def with_kueue_admission(desired: Manifest, live: Manifest | None) -> Manifest:
    """Once Kueue admitted a queued Ray object (unsuspended it), what it merged into the pod templates is Kueue's:
    kept as the live object has it, so that the operator neither sees it as drift nor strips it when it applies
    (worker groups are an atomic list: an apply replaces the whole list). The operator's own fields win where
    both set one; a held object (spec.suspend true) carries nothing, Kueue restored the templates on suspending."""
    if live is None or not is_queued(desired) or (live.get("spec") or {}).get("suspend") is not False:
        return desired
    merged = copy.deepcopy(desired)
    live_templates = _pod_templates(live.get("spec") or {}, desired["kind"])
    for name, template in _pod_templates(merged["spec"], desired["kind"]).items():
        current = live_templates.get(name) or {}
        for section, key in _KUEUE_MAPS:
            theirs = (current.get(section) or {}).get(key) or {}
            ours = (template.get(section) or {}).get(key) or {}
            if extra := {k: v for k, v in theirs.items() if k not in ours}:
                template.setdefault(section, {})[key] = {**ours, **extra}
        for section, key in _KUEUE_LISTS:
            their_entries = (current.get(section) or {}).get(key) or []
            our_entries = (template.get(section) or {}).get(key) or []
            if appended := [entry for entry in their_entries if entry not in our_entries]:
                template.setdefault(section, {})[key] = [*our_entries, *appended]
    return merged


def contains(live: Any, desired: Any) -> bool:
    """Whether every field of `desired` has the same value in `live` (which may hold more)."""
    if isinstance(desired, dict):
        # The API server drops empty lists and maps (omitempty): absent and empty are the same.
        return isinstance(live, dict) and all(
            contains(live[k], v) if k in live else v in ([], {}) for k, v in desired.items()
        )
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(contains, live, desired))
    return bool(live == desired)


def owned_by(live: Manifest, workload: str | None) -> bool:
    """Ownership is decided by labels, never by names: a same-named object of anyone else is left alone."""
    labels = live.get("metadata", {}).get("labels") or {}
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        return False
    return workload is None or labels.get(LABEL_WORKLOAD) in (None, workload)


def _describe(manifest: Manifest) -> str:
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


SharedLookup = Callable[[Resource, str], Manifest | None]


async def apply_children(
    api: KubeApi,
    workload: WorkloadKey,
    desired: Iterable[Manifest],
    observed: dict[ChildKey, Manifest],
    *,
    memory: AppliedMemory,
    shared: SharedLookup = lambda resource, name: None,
) -> ApplyResult:
    """Bring every desired child to its desired state, in order; report conflicts, never overwrite them.

    Children come in dependency order (no Ray pods without their identity and isolation): the first
    conflict or refused write stops the rest until the next attempt. A cluster-scoped child shared by
    workloads (a ComputeClass) is judged under its own lock: many workloads of one shape apply it once.
    """
    result = ApplyResult()
    for manifest in desired:
        stamped = with_hash(manifest)
        key = (stamped["kind"], stamped["metadata"]["name"])
        resource = resource_of(stamped)
        scope = workload if resource.namespaced else SHARED_SCOPE
        live = observed.get(key) if resource.namespaced else shared(resource, key[1])
        try:
            async with contextlib.nullcontext() if resource.namespaced else memory.lock(key):
                live, applied = await _apply_one(api, workload[1], stamped, live, memory=memory, scope=scope)
        except KubeError as error:
            result.failure = WriteFailure(_describe(stamped), "apply", error)
            break
        except _Conflict as conflict:
            result.conflicts.append(conflict.problem)
            break
        (result.applied if applied else result.unchanged).append(_describe(stamped))
        result.live[key] = live
    return result


class _Conflict(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


async def _apply_one(
    api: KubeApi, workload: str, stamped: Manifest, live: Manifest | None, *, memory: AppliedMemory, scope: WorkloadKey
) -> tuple[Manifest, bool]:
    """Apply one child unless it is already right: the live object (or its sketch), and whether it was written."""
    meta, resource = stamped["metadata"], resource_of(stamped)
    key = (stamped["kind"], meta["name"])
    if live is not None and is_sketch(live) and owned_by(live, _owner(resource, workload)):
        verdict = memory.judge(scope, key, live, meta["annotations"][HASH_ANNOTATION])
        if verdict is Verdict.UNCHANGED:
            return live, False
        if verdict is Verdict.REREAD:  # someone edited it since: compare the whole object
            live = await api.get(resource, meta.get("namespace"), meta["name"])
    elif live is None:  # not in the cache as ours: make sure nobody else's object has that name
        live = await api.get(resource, meta.get("namespace"), meta["name"])
    if live is not None and is_sketch(live) and is_queued(stamped):  # Kueue's admission is kept: see it whole
        live = await api.get(resource, meta.get("namespace"), meta["name"])
    stamped = with_kueue_admission(with_autoscaled_replicas(stamped, live), live)
    if live is not None and not owned_by(live, _owner(resource, workload)):
        raise _Conflict(Problem(_describe(stamped), "exists and is not managed by this workload; the operator leaves"
                                " it alone: delete or rename it"))  # fmt: skip
    if live is not None and not is_sketch(live) and contains(live, stamped):
        memory.remember(scope, key, live)
        return live, False
    applied = await api.apply(stamped)
    memory.remember(scope, key, applied)
    return applied, True


def _owner(resource: Resource, workload: str) -> str | None:
    """Cluster-scoped children (ComputeClass) are shared by workloads: any of the operator's is fine."""
    return workload if resource.namespaced else None


def controlled_by(live: Manifest, owner_uid: str) -> bool:
    """Whether the owner is this object's controller. KubeRay copies a RayJob's labels onto the
    RayCluster it creates, so labels alone would make KubeRay's clusters look like ours."""
    references = live.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == owner_uid for ref in references)


async def delete_stale(
    api: KubeApi,
    workload: WorkloadKey,
    observed: dict[ChildKey, Manifest],
    keep: set[ChildKey],
    *,
    owner_uid: str,
    result: ApplyResult,
    memory: AppliedMemory,
) -> None:
    """Delete the workload's children that are no longer desired (a removed Ingress, a group's policy):
    only objects this workload controls, never what KubeRay or anyone else made from them. A child this
    process deleted that the cache still shows is not deleted twice."""
    memory.still_cached(workload, {str(live["metadata"].get("uid")) for live in observed.values()})
    for (kind, name), live in observed.items():
        meta = live["metadata"]
        if (kind, name) in keep or not controlled_by(live, owner_uid) or meta.get("deletionTimestamp"):
            continue
        if memory.was_deleted(workload, meta["uid"]):
            continue
        try:
            await api.delete(resource_of(live), meta.get("namespace"), name, meta["uid"])
        except KubeError as error:
            result.failure = WriteFailure(f"{kind}/{name}", "delete", error)
            return
        memory.deleted(workload, (kind, name), meta["uid"])
        result.deleted.append(f"{kind}/{name}")
