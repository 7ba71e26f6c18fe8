"""`mlworkload release`: what the operator's delete handler does, for workloads whose deletion waits on an
operator that is gone (uninstalled first, or never coming back): their GCP resources are released and the
finalizer removed, so that neither the workloads nor their namespaces hang.

Only workloads already being deleted are touched, and only once their deletion is older than `min_age`: a
running operator handles a deletion within seconds, and the two must not release the same workload at once.
"""

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlworkload.api.policy import MLWorkloadPolicy
from mlworkload.api.workload import IamBindingStatus
from mlworkload.constants import FINALIZER
from mlworkload.controller.kube import POLICIES, RESOURCES, WORKLOADS, KubeApi, KubeError
from mlworkload.controller.reconcile import list_workloads, owner_key, trusted_record
from mlworkload.controller.view import policy_entry
from mlworkload.gcp.errors import GcpError
from mlworkload.gcp.provisioner import GcpProvisioner
from mlworkload.policy import BrokenPolicy, ClusterView, PlatformDefaults

NAMESPACES = RESOURCES["v1", "Namespace"]


@dataclass
class Released:
    """What became of one workload."""

    namespace: str
    name: str
    done: bool = False  # the finalizer is gone
    waiting: str = ""  # why it was left alone (too recent; dry run)
    error: str = ""  # why it failed; the finalizer stays, run again
    revoked: list[IamBindingStatus] = field(default_factory=list)
    kept: list[IamBindingStatus] = field(default_factory=list)  # still used by other workloads
    ignored: list[IamBindingStatus] = field(default_factory=list)  # status entries the operator never added

    def lines(self) -> list[str]:
        where = f"{self.namespace}/{self.name}"
        if self.error:
            return [f"{where}: failed, the finalizer stays (run again): {self.error}"]
        if self.waiting:
            return [f"{where}: left alone: {self.waiting}"]
        lines = [f"{where}: released, finalizer removed"]
        lines += [f"  revoked {b.role} on {b.resource} for {b.member}" for b in self.revoked]
        lines += [f"  kept {b.role} on {b.resource} for {b.member}: other workloads still use it; the operator"
                  " will not revoke it for them, remove it by hand when they are gone" for b in self.kept]  # fmt: skip
        lines += [f"  ignored status entry {b.role} on {b.resource} for {b.member}: the operator could not have"
                  " added it for this workload" for b in self.ignored]  # fmt: skip
        return lines


async def cluster_view_of(kube: KubeApi) -> ClusterView:
    """The policies and namespace labels as stored now (one LIST each), as admission would see them."""
    policies: list[MLWorkloadPolicy] = []
    broken: list[BrokenPolicy] = []
    for body in await kube.list(POLICIES, None, {}):
        _, policy = policy_entry(body["metadata"]["name"], body)
        if isinstance(policy, BrokenPolicy):
            broken.append(policy)
        else:
            policies.append(policy)
    stored = await kube.list(NAMESPACES, None, {})
    labels = {ns["metadata"]["name"]: ns["metadata"].get("labels") or {} for ns in stored}
    return ClusterView(policies=policies, namespace_labels=labels, default_labels={}, broken=broken)


async def release_deleted(
    kube: KubeApi,
    gcp: GcpProvisioner,
    defaults: PlatformDefaults,
    *,
    namespaces: Sequence[str] = (),
    min_age: datetime.timedelta,
    now: datetime.datetime,
    dry_run: bool = False,
) -> list[Released]:
    """Each workload being deleted that still carries the operator's finalizer, in namespace/name order."""
    releaser = _Releaser(kube, gcp, defaults, await cluster_view_of(kube), min_age, now, dry_run)
    waiting = [body for body in await list_workloads(kube, namespaces) if _awaits_release(body)]
    return [await releaser.release(body) for body in sorted(waiting, key=lambda b: _where(b["metadata"]))]


def _where(meta: Mapping[str, Any]) -> tuple[str, str]:
    return meta["namespace"], meta["name"]


def _awaits_release(body: Mapping[str, Any]) -> bool:
    meta = body["metadata"]
    return bool(meta.get("deletionTimestamp")) and FINALIZER in (meta.get("finalizers") or [])


@dataclass(frozen=True)
class _Releaser:
    kube: KubeApi
    gcp: GcpProvisioner
    defaults: PlatformDefaults
    view: ClusterView
    min_age: datetime.timedelta
    now: datetime.datetime
    dry_run: bool

    async def release(self, body: Mapping[str, Any]) -> Released:
        meta = body["metadata"]
        result = Released(*_where(meta))
        age = self.now - datetime.datetime.fromisoformat(str(meta["deletionTimestamp"]).replace("Z", "+00:00"))
        if age < self.min_age:
            result.waiting = (f"deleted {int(age.total_seconds())} s ago, under --min-age (a running operator may be"
                              " releasing it)")  # fmt: skip
            return result
        record, result.ignored = trusted_record(body, self.view, self.defaults)
        ours = [status for status in record.bindings if status.added_by_operator]
        if self.dry_run:
            would = ", ".join(f"{b.role} on {b.resource} for {b.member}" for b in ours) or "nothing"
            result.waiting = f"dry run; would revoke {would} and remove the finalizer"
            return result
        try:
            held = await self.gcp.release(owner_key(result.namespace, result.name), record)
        except GcpError as error:
            result.error = f"GCP: {error.message}"
            return result
        result.kept = held
        kept = {(b.resource, b.role, b.member) for b in held}
        result.revoked = [b for b in ours if (b.resource, b.role, b.member) not in kept]
        finalizers = [name for name in meta.get("finalizers") or [] if name != FINALIZER]
        unless_changed = {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}
        try:
            await self.kube.patch_metadata(WORKLOADS, result.namespace, result.name, unless_changed)
        except KubeError as error:  # 409: it changed since it was read (an operator came back?): run again
            result.error = f"removing the finalizer: {error.status} {error.reason}: {error.message}"
            return result
        result.done = True
        return result
