"""One reconcile of one MLWorkload, as an ordered list of steps (as KubeRay's reconciler does):

admit -> provision GCP -> apply children -> prune stale children -> compute and write status.

Level-triggered and idempotent: it reads the world, compares with the desired state and writes
only differences, so running it twice in a row writes nothing the second time.
"""

import contextlib
import dataclasses
import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import kopf

from mlworkload.api.load import parse_policy, parse_workload
from mlworkload.api.workload import GpuStatus, IamBindingStatus, Isolation, MLWorkload, MLWorkloadStatus, WorkloadType
from mlworkload.builders import build_gcp_plan, build_objects
from mlworkload.builders.iam import WORKLOAD_IDENTITY_USER, could_have_granted, is_identity_of
from mlworkload.constants import (
    CONDITION_NETWORK_POLICIES_ENFORCED,
    REASON_GCP_NOT_CONFIGURED,
    REASON_INVALID_SPEC,
    REASON_NETWORK_POLICIES_ENFORCED,
    REASON_NETWORK_POLICIES_NOT_ENFORCED,
    REASON_POLICY_VIOLATION,
)
from mlworkload.controller.apply import ApplyResult, apply_children, delete_stale
from mlworkload.controller.exposure import observe_exposure
from mlworkload.controller.freshness import WorkloadVersions
from mlworkload.controller.idle import IdleDecision, decide, describe, floor_of, is_idle, runtime_limit
from mlworkload.controller.kube import RESOURCES, WORKLOADS, KubeApi, KubeError, Resource
from mlworkload.controller.observe import OWNED_KINDS, AppliedMemory, ChildSource, ListedChildren
from mlworkload.controller.raystatus import RayState, observe_ray
from mlworkload.controller.scaleup import observe_disruptions, observe_scale_up, report_preemptions
from mlworkload.controller.status import Observation, compute_status
from mlworkload.controller.timestamps import parse_rfc3339
from mlworkload.gcp.clusters import ClusterInspector
from mlworkload.gcp.errors import GcpError
from mlworkload.gcp.plan import IamBinding
from mlworkload.gcp.provisioner import GcpProvisioner, GcpState, Readiness, Recorded
from mlworkload.gcp.retry import Backoff
from mlworkload.policy import ClusterView, PlatformDefaults, ResolvedWorkload, admit_in
from mlworkload.policy.admission import UNREADABLE_POLICY_RULE
from mlworkload.problems import Problem, Refused

logger = logging.getLogger(__name__)

POLICIES = RESOURCES["mlworkload.io/v1alpha1", "MLWorkloadPolicy"]
# The namespaced kinds a workload may own; stale ones are pruned by label (observe.OWNED_KINDS).
PRUNED_KINDS: tuple[Resource, ...] = OWNED_KINDS


# Refused Kubernetes writes are retried after 2 s, 4 s, ... up to 5 min, each +-20 %: a 409 storm or an API
# server restart is not hammered, and many workloads failing together do not retry in lock-step.
WRITE_RETRY_BASE_SECONDS: Final = 2.0
WRITE_RETRY_MAX_SECONDS: Final = 300.0
WRITE_RETRY_JITTER: Final = 0.2


@dataclass
class WriteRetries:
    """When a workload whose Kubernetes writes failed may try again: exponential backoff with jitter per
    workload, in memory (after a restart the first attempt comes at once). A new generation (the spec
    changed) may try at once: the failure may be what the change fixes."""

    backoff: Backoff = field(
        default_factory=lambda: Backoff(
            WRITE_RETRY_BASE_SECONDS, WRITE_RETRY_MAX_SECONDS, time.monotonic, jitter=WRITE_RETRY_JITTER
        )
    )
    _generations: dict[str, int] = field(default_factory=dict)

    def failed(self, owner: str, generation: int) -> tuple[int, float]:
        """Record a failure: the attempt it was, and the seconds until the next one."""
        delay = self.backoff.failed(owner)
        self._generations[owner] = generation
        return self.backoff.attempts(owner), delay

    def succeeded(self, owner: str) -> None:
        self.backoff.succeeded(owner)
        self._generations.pop(owner, None)

    def wait(self, owner: str, generation: int) -> float:
        """Seconds before `owner` may try again; 0 when due, or when its spec changed since the failure."""
        next_attempt = self.backoff.next_attempt(owner)
        if next_attempt is None or self._generations.get(owner) != generation:
            return 0.0
        return max(0.0, next_attempt - self.backoff.clock())


def wall_clock() -> datetime.datetime:
    """The operator's clock (condition times, idle windows). Looked up at each call: an in-process test replaces
    this module attribute to move the running operator's time by hand (tests/integration/test_idle_suspend.py)."""
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Reconciler:
    kube: KubeApi
    gcp: GcpProvisioner
    defaults: PlatformDefaults = field(default_factory=PlatformDefaults)
    clusters: ClusterInspector | None = None  # live GCP only: can tell whether NetworkPolicies are enforced
    clock: Callable[[], datetime.datetime] = lambda: wall_clock()  # noqa: PLW0108 (looked up late, for tests)
    write_retries: WriteRetries = field(default_factory=WriteRetries)
    # What this process applied, so children seen through the watch cache are judged without a read.
    applied: AppliedMemory = field(default_factory=AppliedMemory)
    # Which copies of a workload include this process's own last change, so a steady reconcile reads nothing.
    versions: WorkloadVersions = field(default_factory=WorkloadVersions)


@dataclass
class Outcome:
    """What one reconcile did, for events, metrics and tests."""

    result: str  # "applied", "unchanged", "refused", "error"
    apply: ApplyResult = field(default_factory=ApplyResult)
    status_written: bool = False
    status: MLWorkloadStatus | None = None
    resolved: ResolvedWorkload | None = None
    problems: list[Problem] = field(default_factory=list)  # why it was refused
    forged: list[IamBindingStatus] = field(default_factory=list)  # status entries it could not have made
    write_failure: Readiness | None = None  # a child write the API refused (in the status as well)
    retry_after: float | None = None  # seconds until the refused write is tried again
    version: str | None = None  # the workload's resourceVersion after the status write, if one was made


def owner_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


_STATUS_KEYS = {field.alias or name for name, field in MLWorkloadStatus.model_fields.items()}


def _previous_status(body: Mapping[str, Any]) -> MLWorkloadStatus | None:
    """The status last written; keys others put there (kubectl, older versions) are ignored."""
    status = body.get("status")
    if not isinstance(status, Mapping) or not status:
        return None
    try:
        return MLWorkloadStatus.model_validate({key: value for key, value in status.items() if key in _STATUS_KEYS})
    except ValueError:
        return None  # a status we cannot read is rewritten from scratch


def _recorded(body: Mapping[str, Any], previous: MLWorkloadStatus | None) -> Recorded:
    releasing = bool(body["metadata"].get("deletionTimestamp"))
    if previous is None:
        return Recorded(releasing=releasing)
    return Recorded(pools=tuple(previous.node_pools), bindings=tuple(previous.iam_bindings), releasing=releasing)


def recorded_of(body: Mapping[str, Any]) -> Recorded:
    """The pools and IAM bindings a workload's status says it holds (releasing: it is being deleted)."""
    return _recorded(body, _previous_status(body))


async def list_workloads(kube: KubeApi, namespaces: Sequence[str]) -> list[Mapping[str, Any]]:
    """Every workload in the watched namespaces (all of them when none are named)."""
    workloads: list[Mapping[str, Any]] = []
    scopes: Sequence[str | None] = namespaces or [None]
    for namespace in scopes:
        workloads += await kube.list(WORKLOADS, namespace, {})
    return workloads


async def live_claims(kube: KubeApi, namespaces: Sequence[str]) -> dict[str, Recorded]:
    """What every workload holds, from its status: who still uses which pool and binding."""
    workloads = await list_workloads(kube, namespaces)
    return {owner_key(item["metadata"]["namespace"], item["metadata"]["name"]): _claims_of(item) for item in workloads}


def _claims_of(body: Mapping[str, Any]) -> Recorded:
    """A workload's record as a claim on shared bindings: a Workload Identity entry counts only when it is the
    workload's own identity, so a forged entry cannot keep another workload's binding from being revoked."""
    meta = body["metadata"]
    claims, _ = recorded_of(body).partition(
        lambda status: (
            status.role != WORKLOAD_IDENTITY_USER or is_identity_of(meta["namespace"], meta["name"], status.member)
        )
    )
    return claims


def trusted_record(
    body: Mapping[str, Any], view: ClusterView, defaults: PlatformDefaults
) -> tuple[Recorded, list[IamBindingStatus]]:
    """What the workload's status says it holds, less what the operator could not have added for it (and those
    left out). A spec that does not parse gives nothing to derive from: none of its claims is trusted."""
    record = recorded_of(body)
    try:
        workload = parse_workload(dict(body))
    except Refused:
        return record.partition(lambda status: not status.added_by_operator)
    return trusted(admit_in(view, workload, defaults).resolved, record)


def trusted(resolved: ResolvedWorkload, recorded: Recorded) -> tuple[Recorded, list[IamBindingStatus]]:
    """The record without bindings "added by the operator" that it could not have added for this workload
    (status is writable by others: a forged entry must not make the operator revoke someone else's access);
    and those left out, to report."""
    return recorded.partition(
        lambda status: (
            not status.added_by_operator
            or could_have_granted(
                resolved, IamBinding(resource=status.resource, role=status.role, member=status.member)
            )
        )
    )


async def _still_refused(reconciler: Reconciler, view: ClusterView, workload: MLWorkload) -> bool:
    """Whether the policies as stored now refuse the workload too. The view comes from watches, which may be a
    moment behind a policy just fixed; revoking an identity is not undone by re-granting it (running pods lose
    their tokens meanwhile), so a refusal is confirmed against a fresh read first. Anything unreadable there
    confirms nothing: the revocation waits for the next reconcile."""
    try:
        stored = await reconciler.kube.list(POLICIES, None, {})
        policies = [parse_policy(document) for document in stored]
    except (KubeError, Refused):
        return False
    return not admit_in(dataclasses.replace(view, policies=policies, broken=()), workload, reconciler.defaults).allowed


async def _release_refused(reconciler: Reconciler, owner: str, recorded: Recorded) -> Recorded:
    """A workload its policy now refuses loses its GCP identity at once; what could not be revoked stays recorded,
    and so does what passes to another workload until that one's status records it.

    Its node pools stay claimed: its Ray pods may still run there, and a pool is cost, not access.
    """
    if not recorded.bindings:
        return recorded
    try:
        held = await reconciler.gcp.release(owner, recorded, keep_pools=True)
    except GcpError as error:
        logger.warning("revoking the GCP identity of refused workload %s failed, will retry: %s", owner, error)
        return recorded
    return Recorded(pools=recorded.pools, bindings=tuple(held), releasing=recorded.releasing)


def _gpus(workload: MLWorkload) -> GpuStatus:
    accelerators = sorted({g.accelerator.type for g in workload.spec.worker_groups if g.accelerator})
    return GpuStatus(requested=workload.spec.gpus_at_max_scale, accelerator=",".join(accelerators))


async def _write_status(
    reconciler: Reconciler,
    body: Mapping[str, Any],
    previous: MLWorkloadStatus | None,
    seen: Observation,
    outcome: Outcome,
) -> Outcome:
    status = compute_status(seen, previous, reconciler.clock())
    outcome.status = status
    if status != previous:
        meta = body["metadata"]
        patch = status.to_dict()
        # A merge patch keeps keys it does not mention: fields that no longer apply are nulled.
        patch |= {key: None for key in (body.get("status") or {}) if key in _STATUS_KEYS and key not in patch}
        # Within status.idle too: a resume drops suspendedAt, a busy cluster the window's since (controller/idle.py).
        if isinstance(patch.get("idle"), dict) and isinstance(was := (body.get("status") or {}).get("idle"), dict):
            patch["idle"] = dict.fromkeys(was) | patch["idle"]
        written = await reconciler.kube.patch_status(WORKLOADS, meta["namespace"], meta["name"], patch)
        outcome.status_written = True
        outcome.version = (written.get("metadata") or {}).get("resourceVersion")
    return outcome


def _base_observation(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    meta = body["metadata"]
    return {"generation": int(meta.get("generation") or 0), "ray_kind": kind, "ray_name": meta["name"],
            "deleting": bool(meta.get("deletionTimestamp"))}  # fmt: skip


async def reconcile(
    reconciler: Reconciler, body: Mapping[str, Any], view: ClusterView, children: ChildSource | None = None
) -> Outcome:
    """Bring one MLWorkload's children and GCP resources to their desired state; report it in status.

    `children`: where the workload's children are seen (the watch cache in the operator); without it they
    are listed from the API server.
    """
    try:
        kind = WorkloadType(str((body.get("spec") or {}).get("type"))).ray_kind
    except ValueError:  # an invalid type is reported below, as InvalidSpec
        kind = WorkloadType.CLUSTER.ray_kind
    base = _base_observation(body, kind)
    previous = _previous_status(body)
    try:
        workload = parse_workload(dict(body))  # metadata carries the uid and generation along
    except Refused as refused:
        seen = Observation(**base, refusal=refused.problems, refusal_reason=REASON_INVALID_SPEC)
        return await _write_status(reconciler, body, previous, seen, Outcome("refused", problems=refused.problems))

    recorded = _recorded(body, previous)
    if base["deleting"]:
        # Owner references take the children; applying now could recreate what the GC removes. The
        # GCP record stays until the delete handler has released it.
        seen = Observation(**base, pools=recorded.pools, bindings=recorded.bindings)
        return await _write_status(reconciler, body, previous, seen, Outcome("unchanged"))

    admission = admit_in(view, workload, reconciler.defaults)
    recorded, forged = trusted(admission.resolved, recorded)
    for status in forged:
        logger.warning("%s/%s: ignoring a status entry the operator could not have added: %s on %s for %s",
                       workload.namespace, workload.name, status.role, status.resource, status.member)  # fmt: skip
    if not admission.allowed:
        # Slipped past admission (the policy changed since): apply nothing, revoke GCP access, say why.
        # An unreadable policy refuses new workloads but takes nothing from running ones: it may be a typo.
        unreadable = any(problem.rule == UNREADABLE_POLICY_RULE for problem in admission.problems)
        owner = owner_key(workload.namespace, workload.name)
        # Only a revocation needs the fresh read: a refused workload holding no binding costs no read.
        confirmed = bool(recorded.bindings) and not unreadable and await _still_refused(reconciler, view, workload)
        kept = await _release_refused(reconciler, owner, recorded) if confirmed else recorded
        seen = Observation(**base, refusal=admission.problems, refusal_reason=REASON_POLICY_VIOLATION,
                           gpus=_gpus(workload), pools=kept.pools, bindings=kept.bindings)  # fmt: skip
        outcome_refused = Outcome("refused", problems=admission.problems, forged=forged)
        return await _write_status(reconciler, body, previous, seen, outcome_refused)
    resolved = admission.resolved

    source = children if children is not None else ListedChildren(reconciler.kube)
    scope = (workload.namespace, workload.name)
    observed = await source.children(*scope)
    # The idle window (and runtime limit) is judged on the Ray cluster as last seen, before applying: an expired
    # one suspends it in this very pass (the builders read `idle_suspended`).
    resolved, idle = _decide_idle(reconciler, resolved, observed.get((kind, workload.name)), previous, body)
    exposure = observe_exposure(resolved, observed)
    gcp = await _provision(reconciler, resolved, recorded, exposure.backends)
    # Children are applied while node pools provision: their pods simply wait for the nodes.
    outcome = Outcome("applied", resolved=resolved, forged=forged)
    desired = build_objects(resolved)
    outcome.apply = await apply_children(
        reconciler.kube, scope, desired, observed, memory=reconciler.applied, shared=source.shared
    )
    if outcome.apply.failure is None:
        keep = {(manifest["kind"], manifest["metadata"]["name"]) for manifest in desired}
        await delete_stale(
            reconciler.kube, scope, observed, keep,
            owner_uid=workload.metadata.uid or "", result=outcome.apply, memory=reconciler.applied,
        )  # fmt: skip
    _note_write_failure(reconciler, owner_key(workload.namespace, workload.name), base["generation"], outcome)
    if not outcome.apply.applied and not outcome.apply.deleted:
        outcome.result = "unchanged"
    # Applying may have stopped before the Ray object (a refused write): then it is as last listed. A Service's
    # RayService deleted at the runtime limit is gone, whatever the cache still shows (status.py reports why).
    ray = observe_ray(kind, ray_object := None if kind == WorkloadType.SERVICE.ray_kind and idle.suspend else (
        outcome.apply.live.get((kind, workload.name)) or observed.get((kind, workload.name))))  # fmt: skip
    # Worker pods preempted since the last status (its pods are read only when Ray is short of workers).
    disruption = await observe_disruptions(reconciler.kube, workload.namespace, workload.name, ray, previous)
    node_pools = gcp.node_pools
    if gcp.pools and node_pools.ready and ray.state is RayState.PROVISIONING:
        # The pools exist, but the autoscaler may fail to add nodes to them (quota, stockout).
        node_pools = (
            await observe_scale_up(
                reconciler.kube, workload.namespace, workload.name, reconciler.clock(), disruption.pods
            )
            or node_pools
        )
    conflicts = outcome.apply.conflicts
    enforcement = await _network_policy_enforcement(reconciler, resolved, previous)
    seen = Observation(
        **base,
        conflicts=conflicts,
        write_failure=outcome.write_failure,
        ray=ray,
        node_pools=node_pools,
        pools=gcp.pools,
        identity=gcp.identity,
        bindings=gcp.bindings,
        suspended=workload.spec.suspend or idle.suspend,
        suspended_by_user=workload.spec.suspend,
        idle=idle.record,
        idle_known=True,
        gpus=_gpus(workload),
        # A failed IAP grant shows on the endpoints it concerns; the Ray workload itself is unaffected.
        endpoints=exposure.readiness if gcp.access is None or gcp.access.ready else gcp.access,
        network_policies=enforcement,
        degraded=gcp.degraded,
        dashboard_url=exposure.urls.get("dashboard"),
        serve_url=exposure.urls.get("serve"),
        disruptions=disruption.status,
        recovering=disruption.recovering,
        queue=resolved.queue,
        # Kueue's hold, from the Ray object itself (its sketch keeps spec.suspend): no Workload to watch.
        queue_held=ray_object is not None and (ray_object.get("spec") or {}).get("suspend") is True,
    )
    outcome = await _write_status(reconciler, body, previous, seen, outcome)
    _report(outcome, body, resolved, disruption.new, idle)
    return outcome


def _report(
    outcome: Outcome, body: Mapping[str, Any], resolved: ResolvedWorkload, new: Sequence[Any], idle: IdleDecision
) -> None:
    """Once the status records them (so once each): the preemptions' metric and Events, the idle suspension's Event."""
    if not outcome.status_written:
        return
    report_preemptions(body, resolved, new)
    # Not while the user's spec.suspend holds it too (a runtime limit passing then): the user's, not ours.
    if idle.newly_suspended and idle.record is not None and not resolved.workload.spec.suspend:
        _post_event(
            body, idle.reason, describe(idle.record, service=resolved.workload.spec.type is WorkloadType.SERVICE)
        )


def _decide_idle(
    reconciler: Reconciler,
    resolved: ResolvedWorkload,
    ray_object: Mapping[str, Any] | None,
    previous: MLWorkloadStatus | None,
    body: Mapping[str, Any],
) -> tuple[ResolvedWorkload, IdleDecision]:
    """The idle record after this pass, and the workload as the builders see it (suspended if idle too long, or
    past the policy's runtime limit)."""
    window = resolved.idle_seconds
    seen_idle = window is not None and is_idle(dict(ray_object) if ray_object else None, floor_of(resolved.workload))
    before = previous.idle if previous is not None else None
    meta = body["metadata"]
    idle = decide(
        before, window=window, idle=seen_idle, generation=int(meta.get("generation") or 0), now=reconciler.clock(),
        runtime=runtime_limit(resolved), created=parse_rfc3339(meta.get("creationTimestamp")),
    )  # fmt: skip
    return (dataclasses.replace(resolved, idle_suspended=True) if idle.suspend else resolved), idle


def _post_event(body: Mapping[str, Any], reason: str, message: str) -> None:
    """An Event on the workload (kopf's poster: only inside the operator; unit tests and tools post nothing)."""
    target = body if isinstance(body, kopf.Body) else kopf.Body(cast(kopf.RawBody, body))
    with contextlib.suppress(LookupError):
        kopf.info(target, reason=reason, message=message)


def _note_write_failure(reconciler: Reconciler, owner: str, generation: int, outcome: Outcome) -> None:
    """A refused child write becomes a condition with its attempt and next attempt time (one reason across
    retries: only the message moves), and a retry delay for the handler; a clean pass resets the count."""
    failure = outcome.apply.failure
    if failure is None:
        reconciler.write_retries.succeeded(owner)
        return
    attempt, delay = reconciler.write_retries.failed(owner, generation)
    next_at = (reconciler.clock() + datetime.timedelta(seconds=delay)).astimezone(datetime.UTC)
    retry = f"attempt {attempt}, next at {next_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    message = f"{failure.describe()} ({'needs a fix; ' if failure.permanent else ''}{retry})"
    outcome.write_failure = Readiness(False, failure.reason, message, permanent=failure.permanent)
    outcome.retry_after = delay
    outcome.result = "error"
    logger.warning("%s: %s", owner, message)


async def _provision(
    reconciler: Reconciler, resolved: ResolvedWorkload, recorded: Recorded, backends: Mapping[str, Sequence[str]]
) -> GcpState:
    owner = owner_key(resolved.namespace, resolved.name)
    try:
        plan = build_gcp_plan(resolved, backends)
    except Refused as refused:
        problem = "; ".join(map(str, refused.problems))
        unknown = Readiness(False, REASON_GCP_NOT_CONFIGURED, problem, permanent=True)
        return GcpState(node_pools=unknown, identity=unknown)
    return await reconciler.gcp.ensure(owner, plan, recorded)


async def _network_policy_enforcement(
    reconciler: Reconciler, resolved: ResolvedWorkload, previous: MLWorkloadStatus | None
) -> Readiness | None:
    """Whether the cluster enforces the workload's NetworkPolicies; None when there are none or nobody can tell.
    When GKE does not answer, what was last reported stays (a condition must not come and go with a 503)."""
    if reconciler.clusters is None or resolved.gcp is None or resolved.isolation is Isolation.NONE:
        return None
    try:
        enforced = await reconciler.clusters.network_policies_enforced(resolved.gcp.cluster_path)
    except GcpError as error:
        logger.info("cannot tell whether %s enforces NetworkPolicies: %s", resolved.gcp.cluster, error)
        last = (
            next((c for c in previous.conditions if c.type == CONDITION_NETWORK_POLICIES_ENFORCED), None)
            if (previous)
            else None
        )
        return Readiness(last.status == "True", last.reason, last.message) if last else None
    if enforced:
        return Readiness(True, REASON_NETWORK_POLICIES_ENFORCED, "the cluster enforces NetworkPolicies")
    return Readiness(
        False,
        REASON_NETWORK_POLICIES_NOT_ENFORCED,
        f"GKE cluster {resolved.gcp.cluster} has neither Dataplane V2 nor Calico network policy: the workload's"
        f" {resolved.isolation.value} isolation is written but not enforced; every pod can reach its Ray pods",
    )
