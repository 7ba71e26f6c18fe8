"""The live provisioner: node pools on GKE and IAM bindings, shared between workloads and released exactly.

Who uses what is read from Kubernetes (each live MLWorkload's status records its pools and bindings)
plus what this process handed out since it started, so it survives restarts and is never ahead of
reality: a pool is deleted only when no workload claims it for the whole grace period, and a
binding is removed only when the operator added it and no other workload still needs it.

A binding is granted only once status records it as the operator's (`addedByOperator: true`): the first
reconcile that finds the member absent reports that intent and grants nothing, the next one (the poll runs
while the grant waits, `due`) grants. A process killed between the grant and a status write therefore never
leaves a member it added looking like someone else's: the record was there before the grant. A crash before
the grant leaves only the intent, and revoking an absent member is a read that writes nothing.
"""

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

from mlworkload.api.workload import IamBindingStatus, NodePoolStatus
from mlworkload.gcp import clients
from mlworkload.gcp.errors import GcpError
from mlworkload.gcp.iam import IAP_WEB, BindingManager, BucketPolicies, RoutedPolicies, ServiceAccountPolicies
from mlworkload.gcp.iap import IapPolicies
from mlworkload.gcp.labels import policy_labels
from mlworkload.gcp.nodepools import GkeNodePools
from mlworkload.gcp.plan import GcpPlan, IamBinding, NodePoolPlan
from mlworkload.gcp.pools import PoolCoordinator, PoolReport, PoolTarget
from mlworkload.gcp.provisioner import NO_IDENTITY, NO_NODE_POOLS, GcpState, Readiness, Recorded, pool_capacity
from mlworkload.gcp.retry import Backoff
from mlworkload.settings import OperatorSettings

logger = logging.getLogger(__name__)
_V = TypeVar("_V")

# owner (namespace/name) -> what its status records, for every workload (`releasing` when being deleted).
ClaimSource = Callable[[], Awaitable[Mapping[str, Recorded]]]

REASON_PROVISIONED: Final = "Provisioned"
REASON_PROVISIONING: Final = "Provisioning"
REASON_BOUND: Final = "Bound"
# The member is absent and status now records that the operator will add it; the next reconcile grants.
REASON_RECORDING_GRANT: Final = "RecordingGrant"


def _binding(status: IamBindingStatus) -> IamBinding:
    return IamBinding(resource=status.resource, role=status.role, member=status.member)


def _status(binding: IamBinding, *, added: bool) -> IamBindingStatus:
    """The status entry of a binding (the inverse of `_binding`)."""
    return IamBindingStatus(
        resource=binding.resource, role=binding.role, member=binding.member, added_by_operator=added
    )


def _order(binding: IamBinding) -> tuple[str, str, str]:
    return binding.resource, binding.role, binding.member


def _failed(binding: IamBinding, error: GcpError) -> str:
    return f"{binding.role} for {binding.member} on {binding.resource}: {error.message}"


def _added(recorded: Recorded) -> set[IamBinding]:
    return {_binding(status) for status in recorded.bindings if status.added_by_operator}


# A failed binding: (what to tell the user, why, which binding).
Failure = tuple[str, GcpError, IamBinding]


def _bindings_readiness(
    wanted: Sequence[IamBinding], failures: Sequence[Failure], intents: Sequence[IamBinding] = ()
) -> Readiness | None:
    """Bound, failing (the most urgent failure), waiting for the status to record grants about to be made, or
    None when nothing of the kind is wanted or held."""
    if failures:
        return most_urgent([(message, error) for message, error, _ in failures])
    if intents:
        return Readiness(False, REASON_RECORDING_GRANT, f"recording the grant before making it: {len(intents)} of"
                         f" {len(wanted)} IAM binding(s) are granted at the next reconcile")  # fmt: skip
    if not wanted:
        return None
    return Readiness(True, REASON_BOUND, f"{len(wanted)} IAM binding(s) in place")


def most_urgent(failures: Sequence[tuple[str, GcpError]]) -> Readiness:
    """The failure to report, as (message, error) pairs: what needs a person (quota, stockout) comes before
    what retrying fixes (a 503)."""
    message, error = next(((message, error) for message, error in failures if error.stalls), failures[0])
    return Readiness(False, error.kind.value, message, error.stalls)


def pools_readiness(reports: Iterable[PoolReport]) -> Readiness:
    """Provisioned, Provisioning, or the most urgent failure. A degraded pool (RUNNING_WITH_ERROR) is ready: its
    nodes serve, and a real scale-up failure shows in the autoscaler's events (controller/scaleup.py)."""
    reports = list(reports)
    if not reports:
        return NO_NODE_POOLS
    failures = [(f"node pool {r.name}: {r.message}", r.failure) for r in reports if r.failure is not None]
    if failures:
        return most_urgent(failures)
    if all(report.ready for report in reports):
        degraded = [report.name for report in reports if report.degraded]
        note = f" ({', '.join(degraded)} degraded)" if degraded else ""
        notes = "".join(f"; {report.name}: {report.note}" for report in reports if report.note)
        return Readiness(True, REASON_PROVISIONED, f"{len(reports)} node pool(s) running{note}{notes}")
    waiting = "; ".join(f"{report.name}: {report.message}" for report in reports if not report.ready)
    return Readiness(False, REASON_PROVISIONING, waiting)


def _series(report: PoolReport) -> dict[str, Any]:
    """A failed-create series for status (left out when there is none, so the status keeps its old shape)."""
    if not report.attempts or report.failure is None:
        return {}
    return {"attempts": report.attempts, "last_failure": str(report.failure), "next_attempt_time": report.next_attempt}


def degradation(reports: Iterable[PoolReport]) -> str | None:
    """The degraded pools and GKE's word on each, for a status condition; None when all is well."""
    degraded = [f"node pool {report.name}: {report.degraded}" for report in reports if report.degraded]
    return "; ".join(degraded) or None


def _agreed(values: Iterable[_V | None], what: str, notes: list[str]) -> _V | None:
    """The one value the plans that set it agree on; None (keep the pool's) when none sets it or they differ."""
    distinct = {value for value in values if value is not None}
    if len(distinct) > 1:
        notes.append(f"its workloads' policies want different {what}s, so its {what} is kept")
    return distinct.pop() if len(distinct) == 1 else None


def strictest(plans: Sequence[NodePoolPlan]) -> PoolTarget:
    """One pool wanted by several workloads with different limits: the fewest nodes, the zones all allow.

    Zones that do not intersect, or different location policies, keep what the pool has, and say so; so do
    node settings and GCP labels the workloads' policies (`sharing: Cluster`) disagree on.
    """
    notes = []
    zone_sets = [set(plan.locations) for plan in plans if plan.locations]
    locations: tuple[str, ...] | None = None
    if zone_sets:
        common = set.intersection(*zone_sets)
        if common:
            locations = tuple(sorted(common))
        else:
            notes.append("its workloads allow no zone in common, so its zones are kept")
    policies = {plan.location_policy for plan in plans}
    if len(policies) > 1:
        notes.append("its workloads want different location policies, so its policy is kept")
    policy = policies.pop() if len(policies) == 1 else None
    wanted = [policy_labels(plan.labels) for plan in plans]
    disputed = frozenset(
        key for key in {key for labels in wanted for key in labels} if len({labels.get(key) for labels in wanted}) > 1
    )
    if disputed:
        notes.append(f"its workloads' policies disagree on GCP labels {', '.join(sorted(disputed))}, so those are"
                     " kept")  # fmt: skip
    return PoolTarget(
        min(plan.max_nodes for plan in plans),
        policy,
        locations,
        labels={key: value for key, value in wanted[0].items() if key not in disputed},
        kept_labels=disputed,
        image_type=_agreed((plan.image_type for plan in plans), "image type", notes),
        image_streaming=_agreed((plan.image_streaming for plan in plans), "image streaming setting", notes),
        disk_type=_agreed((plan.disk_type for plan in plans), "disk type", notes),
        disk_size_gb=_agreed((plan.disk_size_gb for plan in plans), "disk size", notes),
        service_account=_agreed((plan.service_account for plan in plans), "service account", notes),
        secure_boot=_agreed((plan.secure_boot for plan in plans), "Secure Boot setting", notes),
        note="; ".join(notes),
    )


class LiveProvisioner:
    def __init__(
        self,
        pools: PoolCoordinator,
        bindings: BindingManager,
        claims: ClaimSource,
        *,
        grace_seconds: float,
        clusters: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pools = pools
        self._bindings = bindings
        self._claims = claims
        self._grace_seconds = grace_seconds
        self._clock = clock
        self._started = clock()
        self._clusters = set(clusters)
        self._pools_in_use: dict[str, dict[str, NodePoolPlan]] = {}  # by owner, by pool name
        self._due: set[str] = set()  # owners to reconcile now: a pool they use vanished, or a binding is theirs
        self.lost_users: set[str] = set()  # the same, not yet announced (run_collector's on_lost)
        self._bindings_in_use: dict[str, set[IamBinding]] = {}
        self._added: dict[str, set[IamBinding]] = {}  # by owner: bindings the operator added for it
        self._preexisting: dict[str, set[IamBinding]] = {}  # by owner: present before the operator looked
        self._handed_over: set[IamBinding] = set()  # added for a workload since released, kept for others
        # By owner: bindings it gave up here (revoked, or handed over) that its status may still list until its
        # next status write; no claim on them is counted meanwhile (cleared when it is ensured again).
        self._given_up: dict[str, set[IamBinding]] = {}
        self._granting: set[str] = set()  # owners with a grant recorded in status but not made yet: poll them

    # --- ensure -------------------------------------------------------------------------------

    async def ensure(self, owner: str, plan: GcpPlan, recorded: Recorded) -> GcpState:
        self._pools_in_use[owner] = {pool.name: pool for pool in plan.node_pools}
        self._bindings_in_use[owner] = set(plan.iam_bindings)
        self._due.discard(owner)
        self._given_up.pop(owner, None)
        statuses = {pool.name: pool for pool in recorded.pools}
        reports = await asyncio.gather(
            *(
                self._pools.ensure(
                    pool,
                    statuses.get(pool.name),
                    target=strictest(self._wanted(pool)),
                    replaceable=functools.partial(self._never_ran, owner, pool.name),
                )
                for pool in plan.node_pools
            )
        )
        pools = [
            NodePoolStatus(name=pool.name, capacity=pool_capacity(pool.spot), state=report.state,
                           operation=report.operation, **_series(report))
            for pool, report in zip(plan.node_pools, reports, strict=True)
        ]  # fmt: skip
        failures, intents, bindings = await self._ensure_bindings(owner, plan.iam_bindings, recorded)
        if intents:
            self._granting.add(owner)
        else:
            self._granting.discard(owner)

        # Who may pass IAP is reported apart from the workload's own identity: it never holds Ready back.
        def of_kind(iap: bool) -> Readiness | None:
            wanted = [b for b in plan.iam_bindings if (IAP_WEB in b.resource) is iap]
            return _bindings_readiness(
                wanted,
                [f for f in failures if (IAP_WEB in f[2].resource) is iap],
                [b for b in intents if (IAP_WEB in b.resource) is iap],
            )

        identity, access = of_kind(iap=False) or NO_IDENTITY, of_kind(iap=True)
        return GcpState(
            pools_readiness(reports), identity, pools, bindings, access=access, degraded=degradation(reports)
        )

    def _wanted(self, pool: NodePoolPlan) -> list[NodePoolPlan]:
        """The plans of every workload of this installation (this process knows of) for one pool."""
        return [
            wanted
            for plans in self._pools_in_use.values()
            if (wanted := plans.get(pool.name)) is not None and wanted.cluster_path == pool.cluster_path
        ] or [pool]

    async def _never_ran(self, owner: str, pool: str) -> bool:
        """Whether a pool in ERROR, whose failed create only status records, may be deleted to be created again.

        Status is writable by users: a forged failure record alone must not delete a pool others use. So no
        other workload may record it as ever Running (a pool that once ran may hold their pods).
        """
        claims = await self._claims()
        return not any(
            status.name == pool and status.state == "Running" and not status.attempts
            for other, record in claims.items()
            if other != owner
            for status in record.pools
        )

    def due(self, owner: str) -> bool:
        """Reconcile `owner` soon: a pool it uses vanished or is being deleted by someone else, or a binding
        another workload gave up waits for its status to record it (both cleared by ensure), or a grant its
        status now records waits for the next reconcile (an IAP accessor too, which holds no
        condition the poll timer watches)."""
        return owner in self._due or owner in self._granting

    async def _ensure_bindings(
        self, owner: str, wanted: list[IamBinding], recorded: Recorded
    ) -> tuple[list[Failure], list[IamBinding], list[IamBindingStatus]]:
        """Make the wanted bindings present and revoke the dropped ones; the failures, the grants recorded but not
        made yet (intents), and what is held.

        Only a binding status already records as the operator's is granted. Any other is read first: present,
        it is someone else's (or another workload's, `_adopt_or_leave`); absent, it is reported as the
        operator's and granted by the next reconcile, once that record is durable.
        """
        durable = _added(recorded)
        ours = self._added.setdefault(owner, set())
        ours |= durable
        failures: list[Failure] = []
        intents: list[IamBinding] = []
        for binding in wanted:
            if binding in durable:
                _, failure = await self._bindings.ensure(binding)
            else:
                present, failure = await self._bindings.check(binding)
                if failure is None and present:
                    if binding not in ours and binding not in self._preexisting.get(owner, set()):
                        await self._adopt_or_leave(owner, binding)
                elif failure is None:
                    # Absent now, whoever held it before (a pre-existing member someone removed included): the
                    # operator will add it, so it is the operator's to revoke from here on.
                    self._preexisting.get(owner, set()).discard(binding)
                    ours.add(binding)
                    intents.append(binding)
            if failure is not None:
                failures.append((_failed(binding, failure), failure, binding))
        # Bindings the workload no longer wants (it dropped its bucket) go as on release.
        dropped = ours - set(wanted)
        if dropped:
            try:
                await self._revoke(owner, dropped)
            except GcpError as error:
                first = min(dropped, key=_order)
                failures.append((_failed(first, error), error, first))
        held = [*wanted, *sorted(ours - set(wanted), key=_order)]  # what could not be revoked stays recorded
        statuses = [_status(b, added=b in ours) for b in held]
        return failures, intents, statuses

    async def _adopt_or_leave(self, owner: str, binding: IamBinding) -> None:
        """A member already present: the operator's (added for another workload), or someone else's to keep.

        Workloads being deleted count here: the one that added the member may be releasing right now.
        """
        others_added = binding in self._handed_over or any(
            binding in added for other, added in self._added.items() if other != owner
        )
        if not others_added:
            claims = await self._claims()
            others_added = any(binding in _added(rec) for other, rec in claims.items() if other != owner)
        if others_added:
            self._added[owner].add(binding)
        else:
            self._preexisting.setdefault(owner, set()).add(binding)

    async def _revoke(self, owner: str, bindings: set[IamBinding]) -> set[IamBinding]:
        """Remove the members `owner` had the operator add, unless another live workload still needs them.

        A kept one passes to the workloads that need it, so the last of them removes it. `owner` keeps the
        binding as its own, in its status (and, being deleted, its finalizer), until one of them records it as
        the operator's there: a hand-over in this process's memory alone is lost with the process, and the
        member would then look like someone else's and never be revoked (two chaos trials caught that, one
        for a workload dropping its bucket, one for a workload deleted). Those receivers are reconciled soon.
        Returns the bindings `owner` keeps so.
        """
        claims = await self._claims()
        # What this process ensured counts for workloads that still exist and are not being deleted: one deleted
        # before its release ever ran here would otherwise be waited for, or handed the member, forever.
        live = {other for other, rec in claims.items() if other != owner and not rec.releasing}
        needers: dict[IamBinding, set[str]] = {}
        for other, wanted in self._bindings_in_use.items():
            for binding in wanted if other in live else ():
                needers.setdefault(binding, set()).add(other)
        recorded_by_others: set[IamBinding] = set()
        for other, rec in claims.items():
            if other == owner or rec.releasing:
                continue
            # Two workloads refused at once each see the other's status still listing a shared member: without
            # this, each would leave it to the other and nobody would revoke it (chaos seed 644608).
            given_up = self._given_up.get(other, set())
            for status in rec.bindings:
                if (binding := _binding(status)) not in given_up:
                    needers.setdefault(binding, set()).add(other)
                    if status.added_by_operator:
                        recorded_by_others.add(binding)
        ours = self._added.setdefault(owner, set())
        given_up = self._given_up.setdefault(owner, set())
        kept: set[IamBinding] = set()
        for binding in sorted(bindings, key=_order):
            receivers = needers.get(binding)
            if receivers:
                self._handed_over.add(binding)
                for other, wanted in self._bindings_in_use.items():
                    if other in live and binding in wanted:
                        self._added.setdefault(other, set()).add(binding)
                        self._preexisting.get(other, set()).discard(binding)
                if binding not in recorded_by_others:
                    self._due |= receivers  # their next status makes the hand-over durable
                    kept.add(binding)
                    continue
            else:
                await self._bindings.remove(binding)  # a GcpError leaves the rest recorded for the retry
                self._handed_over.discard(binding)
            ours.discard(binding)
            given_up.add(binding)
        return kept

    # --- release ------------------------------------------------------------------------------

    async def release(self, owner: str, recorded: Recorded, *, keep_pools: bool = False) -> list[IamBindingStatus]:
        if not keep_pools:
            self._pools_in_use.pop(owner, None)
        self._bindings_in_use.pop(owner, None)
        self._preexisting.pop(owner, None)
        self._granting.discard(owner)
        ours = self._added.get(owner, set()) | _added(recorded)
        held = await self._revoke(owner, ours) if ours else set()
        self._added.pop(owner, None)
        if not keep_pools and not held:  # deleted: its claims go with it (a same-named newcomer starts afresh)
            self._given_up.pop(owner, None)
        return [_status(b, added=True) for b in sorted(held, key=_order)]

    # --- unused pools -------------------------------------------------------------------------

    async def collect(self) -> list[str]:
        """One pass over every cluster the operator provisions in (one ListNodePools each): delete pools
        unclaimed for the grace period, drop claims on others' pools, note claimed pools that vanished."""
        claims = await self._claims()
        claimed = {pool.name for rec in claims.values() if not rec.releasing for pool in rec.pools}
        claimed |= {name for plans in self._pools_in_use.values() for name in plans}
        # After a start, a workload not reconciled yet may use a pool its status never recorded (the process
        # that created it died before the status write): nothing is deleted until every workload has been
        # heard from, or for STARTUP_SETTLE_SECONDS at most (one that never reaches GCP must not block it).
        unheard = [owner for owner, rec in claims.items() if not rec.releasing and owner not in self._pools_in_use]
        settling = bool(unheard) and self._clock() - self._started < STARTUP_SETTLE_SECONDS
        grace = math.inf if settling else self._grace_seconds
        deleted: list[str] = []
        for cluster in sorted(self._clusters | self._pools.clusters):
            try:
                deleted += await self._pools.collect(cluster, claimed, grace)
            except GcpError as error:
                logger.warning("could not check node pools of %s for release: %s", cluster, error)
        lost = {name for _, name in self._pools.take_lost()}
        if lost:
            users = {owner for owner, plans in self._pools_in_use.items() if lost & set(plans)}
            users |= {owner for owner, rec in claims.items()
                      if not rec.releasing and lost & {pool.name for pool in rec.pools}}  # fmt: skip
            self._due |= users
            self.lost_users.update(users)
        return deleted

    async def run_collector(
        self, interval_seconds: float, on_lost: Callable[[set[str]], Awaitable[None]] | None = None
    ) -> None:
        """Collect forever, every `interval_seconds` (a background task of the operator); `on_lost` hears of the
        workloads whose pool vanished, to have them reconciled at once."""
        while True:
            try:
                await self.collect()
                users, self.lost_users = self.lost_users, set()
                if users and on_lost is not None:
                    await on_lost(users)
            except Exception:  # the collector must outlive any one failure; the next pass retries
                logger.exception("node pool collection failed")
            await asyncio.sleep(interval_seconds)


STARTUP_SETTLE_SECONDS: Final = 120.0
# A verified binding is re-read at most this often: drift is repaired within a minute, and a
# workload waiting for its pools does not cost an IAM read on every poll.
IAM_VERIFY_SECONDS: Final = 60.0
GCP_RETRY_MAX_SECONDS: Final = 600.0
RETRY_JITTER: Final = 0.2  # +-20 %: installations and workloads failing together do not retry together


def connect(config: OperatorSettings, claims: ClaimSource) -> LiveProvisioner:
    """The live provisioner on real clients, configured from the operator's settings."""
    retry_max = max(GCP_RETRY_MAX_SECONDS, config.gcp_poll_seconds)
    backoff = Backoff(config.gcp_poll_seconds, retry_max, time.monotonic, jitter=RETRY_JITTER)
    coordinator = PoolCoordinator(
        GkeNodePools(clients.gke_client(config.gke_endpoint)),
        backoff=backoff,
        poll_seconds=config.gcp_poll_seconds,
        installation=config.installation,
    )
    policies = RoutedPolicies(
        ServiceAccountPolicies(clients.iam_client(config.iam_endpoint)),
        BucketPolicies(clients.storage_client(config.storage_endpoint, config.gcp.project if config.gcp else None)),
        IapPolicies(clients.iap_client(config.iap_endpoint)),
    )
    bindings = BindingManager(policies, backoff=backoff, verify_seconds=IAM_VERIFY_SECONDS)
    return LiveProvisioner(
        coordinator,
        bindings,
        claims,
        grace_seconds=config.pool_release_grace_seconds,
        clusters=[config.gcp.cluster_path] if config.gcp else [],
    )
