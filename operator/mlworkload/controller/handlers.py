"""kopf handlers: decorators and orchestration only; the work is in reconcile, policy and builders.

Every entry point (create, update, resume, the resync timer, a change of a Ray child) runs the
same reconcile under a per-object lock, because kopf runs timers and change handlers of one
object as separate tasks that may overlap.
"""

import asyncio
import contextlib
import functools
import logging
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import kopf
import kubernetes.client
import kubernetes.config

from mlworkload.api.load import parse_policy, parse_workload
from mlworkload.api.workload import IamBindingStatus
from mlworkload.constants import (
    CONDITION_IDENTITY_READY,
    CONDITION_NODE_POOLS_READY,
    CONDITION_POLICY_ADMITTED,
    CONDITION_RECONCILING,
    CONDITION_STALLED,
    FINALIZER,
    GROUP,
    LABEL_MANAGED_BY,
    LABEL_WORKLOAD,
    MANAGED_BY,
    POLICY_PLURAL,
    REASON_GCP_NOT_CONFIGURED,
    REASON_HANDING_OVER,
    REASON_INVALID_POLICY,
    REASON_READ_FAILED,
    REASON_UNTRUSTED_STATUS,
    VERSION,
    WORKLOAD_PLURAL,
    WRITE_FAILURE_REASONS,
)
from mlworkload.controller import watchdog
from mlworkload.controller.freshness import WorkloadVersions
from mlworkload.controller.idle import seconds_until
from mlworkload.controller.kube import (
    CLIENT_THREADS,
    POLICIES,
    WORKLOADS,
    ClientKubeApi,
    KubeApi,
    KubeError,
    Resource,
    merge_patch,
)
from mlworkload.controller.observe import (
    OWNED_KINDS,
    OWNED_SELECTOR,
    SHARED_KINDS,
    IndexedChildren,
    child_index,
    index_name,
    ray_fingerprint,
    shared_index,
)
from mlworkload.controller.persistence import MemoryDiffBaseStorage, ProgressAnnotations
from mlworkload.controller.policy_status import policy_status
from mlworkload.controller.reconcile import (
    Outcome,
    Reconciler,
    WriteRetries,
    live_claims,
    owner_key,
    reconcile,
    trusted_record,
)
from mlworkload.controller.view import (
    Governance,
    PolicyEntry,
    governance,
    kept_for,
    policy_entry,
    readmission_scope,
    spec_version,
)
from mlworkload.controller.view import cluster_view as indexed_view
from mlworkload.gcp.clusters import connect_inspector
from mlworkload.gcp.errors import GcpError
from mlworkload.gcp.live import LiveProvisioner, connect
from mlworkload.gcp.provisioner import DryRunProvisioner, GcpProvisioner, Recorded
from mlworkload.metrics import (
    ADMISSION_REFUSALS,
    INVALID_POLICIES,
    INVENTORY,
    RECONCILE_API_FAILURES,
    RECONCILE_SECONDS,
    RECONCILES,
    forget_policy_metrics,
    record_policy_metrics,
)
from mlworkload.policy import ClusterView, admit_in
from mlworkload.problems import Problem, Refused
from mlworkload.settings import GcpMode, OperatorSettings, Role, WebhookCertificates
from mlworkload.webhook.certificates import service_hosts, write_self_signed
from mlworkload.webhook.keeper import (
    CertificateKeeper,
    KubeSecretStore,
    KubeWebhookConfigurations,
    served_directory,
)

logger = logging.getLogger(__name__)

WORKLOAD = (GROUP, VERSION, WORKLOAD_PLURAL)
OWNED = {LABEL_MANAGED_BY: MANAGED_BY}
RETRY_DELAY_SECONDS = 10.0
WEBHOOK_CONFIGURATIONS = ("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations")
# How often kopf's webhook server rereads its certificate files (it restarts its listener when they
# change): a renewal, or cert-manager's renewal of a mounted Secret, is served within this time.
CERT_FILE_CHECK_SECONDS = 10.0
# kopf fixes a timer's interval when the decorator runs, before settings exist: read it from the
# environment here (the same MLW_RESYNC_SECONDS that `mlworkload run --resync-seconds` sets).
RESYNC_SECONDS = float(os.environ.get("MLW_RESYNC_SECONDS") or 300)
GCP_POLL_SECONDS = float(os.environ.get("MLW_GCP_POLL_SECONDS") or 10)
# While a Cluster's idle window is open (status.idle.deadline), how often its deadline is looked at: the
# suspension comes at most this long after the deadline (the resync would be up to RESYNC_SECONDS late).
IDLE_POLL_SECONDS = float(os.environ.get("MLW_IDLE_POLL_SECONDS") or 30)
# Reconciles running at once: one per thread of the Kubernetes client, so calls never queue behind each
# other inside a started reconcile and workloads finish roughly in the order they arrived. kopf's own
# `settings.queueing.worker_limit` cannot do it: it deadlocks the initial indexing when a kind has more
# objects than the limit (nolar/kopf#1243), and the workloads are indexed (gpu_index).
RECONCILE_SLOTS = CLIENT_THREADS


# --- start-up -------------------------------------------------------------------------------------


def api_client() -> kubernetes.client.ApiClient:
    """In-cluster credentials, else the kubeconfig ($KUBECONFIG read now, not at import as the client does)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    configuration.connection_pool_maxsize = CLIENT_THREADS  # one connection per thread of the client
    # The loaders' token-refresh hook sets the host again before every request, and the client then re-reads
    # the proxy from the environment, scanning all of it (a tenth of the operator's CPU at scale, more in a pod
    # with many service variables). The proxy the environment names now is pinned instead.
    configuration.proxy = configuration.proxy
    return kubernetes.client.ApiClient(configuration)


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own readers of the service account or $KUBECONFIG, the same sources as `api_client`."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def gcp_provisioner(config: OperatorSettings, kube: ClientKubeApi) -> GcpProvisioner:
    """Live when a GCP project is configured (or MLW_GCP_MODE=live), dry-run otherwise."""
    if config.effective_gcp_mode is GcpMode.DRY_RUN:
        logger.info("GCP mode dry-run: node pools and IAM bindings are planned and reported, never made")
        return DryRunProvisioner()
    assert config.gcp is not None  # live mode without a cluster is refused when settings load
    logger.info("GCP mode live: provisioning in %s", config.gcp.cluster_path)
    return connect(config, lambda: live_claims(kube, config.namespaces))


async def _webhook_server(config: OperatorSettings, kube: ClientKubeApi, memo: kopf.Memo) -> kopf.WebhookServer:
    """The TLS server for the validators, with its certificate (settings.WebhookCertificates):

    - operator: the certificate Secret and the caBundle are made right before serving, then kept
      (renewed, restored) by a background task and on every change of the webhook configuration;
    - files: the mounted tls.crt/tls.key (cert-manager); its renewals change the files;
    - self-signed: made at start-up, never renewed (a laptop, the tests).

    Whenever the files change, kopf's server restarts its listener with them: no pod restart.
    """
    hosts = service_hosts(config.webhook_service, config.operator_namespace)
    mode = config.effective_webhook_certificates
    if mode is WebhookCertificates.OPERATOR:
        keeper = CertificateKeeper(
            KubeSecretStore(kube, config.operator_namespace, config.webhook_secret),
            KubeWebhookConfigurations(kube, config.webhook_configuration),
            served_directory(config.webhook_cert_dir),
            hosts,
        )
        try:
            await keeper.ensure()  # before serving: the server cannot start without its files
        except KubeError as error:
            raise kopf.TemporaryError(f"the webhook certificate: {error}", delay=RETRY_DELAY_SECONDS) from error
        memo.keeper = keeper
        memo.keeping = asyncio.create_task(
            keeper.run(config.webhook_certificate_check_seconds), name="webhook certificate keeper"
        )
        certfile, keyfile = keeper.certfile, keeper.keyfile
    elif mode is WebhookCertificates.FILES:
        assert config.webhook_cert_dir is not None  # refused when settings load
        certfile, keyfile = Path(config.webhook_cert_dir) / "tls.crt", Path(config.webhook_cert_dir) / "tls.key"
    else:
        directory = Path(tempfile.mkdtemp(prefix="mlworkload-webhook-"))
        certfile, keyfile = write_self_signed(directory, [*hosts, "localhost", "127.0.0.1"])
    # Port 0: any free port (tests); the Service in front of the pod fixes what clients use.
    return kopf.WebhookServer(
        addr="0.0.0.0", port=config.webhook_port or None, certfile=str(certfile), pkeyfile=str(keyfile),
        file_check_interval=min(CERT_FILE_CHECK_SECONDS, config.webhook_certificate_check_seconds),
    )  # fmt: skip


async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorSettings = getattr(memo, "config", None) or OperatorSettings.load()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = ProgressAnnotations(prefix=GROUP)
    # Level-triggered reconciles only need to know whether the spec changed since this process handled it:
    # kept in memory, not as an annotation patched onto every workload (controller/persistence.py).
    settings.persistence.diffbase_storage = MemoryDiffBaseStorage()
    # The controller is one replica with a Recreate strategy, and webhook replicas write nothing but their
    # certificate: no peering needed (kopf has no leader election, and a paused peer stops its indexes).
    settings.peering.standalone = True
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    # A delete that arrives while the resync timer runs would otherwise wait up to 60 s for kopf to
    # notice that the timer task is gone.
    settings.background.cancellation_polling = 1
    # Only the one webhook configuration is watched (its caBundle is kept): RBAC grants it by name.
    settings.watching.field_selectors[WEBHOOK_CONFIGURATIONS] = f"metadata.name={config.webhook_configuration}"
    # Children are watched for the cache (controller/observe.py): only the operator's, filtered by the server.
    for resource in (*OWNED_KINDS, *SHARED_KINDS):
        settings.watching.label_selectors[_selector(resource)] = OWNED_SELECTOR
    memo.config = config
    kube = ClientKubeApi(api_client())
    # Shared by every handler: kopf hands each object a shallow copy of the memo, so state lives in objects.
    memo.view = ViewState()
    if config.role is not Role.CONTROLLER:
        settings.admission.server = await _webhook_server(config, kube, memo)
    if config.role is Role.WEBHOOK:
        logger.info("role webhook: admission only, no reconciling")
        return
    gcp = gcp_provisioner(config, kube)
    clusters = connect_inspector(config) if isinstance(gcp, LiveProvisioner) else None
    memo.reconciler = Reconciler(kube=kube, gcp=gcp, defaults=config.platform_defaults, clusters=clusters)
    memo.locks = defaultdict(asyncio.Lock)
    memo.slots = asyncio.Semaphore(RECONCILE_SLOTS)  # FIFO: waiting reconciles start in arrival order
    memo.ray_fingerprints = {}  # Ray object uid -> ray_fingerprint as last seen (ray_child_changed)
    memo.diffbase = settings.persistence.diffbase_storage
    if isinstance(gcp, LiveProvisioner):
        # Every GCP poll (one ListNodePools per cluster): a pool deleted by hand is noticed within seconds.
        lost = functools.partial(watchdog.recheck, kube, why="its node pool vanished")
        memo.collector = asyncio.create_task(
            gcp.run_collector(config.gcp_poll_seconds, on_lost=lost), name="node pool collector"
        )
    memo.deletions = asyncio.create_task(
        watchdog.watch_deletions(kube, config.namespaces, config.resync_seconds), name="deletion watchdog"
    )
    memo.reporter = asyncio.create_task(_report_policies_every(config.policy_status_seconds, memo),
                                        name="policy status")  # fmt: skip


async def stop_background(memo: kopf.Memo, **_: Any) -> None:
    """The node pool collector, the deletion watchdog, the policy status reporter and the certificate keeper,
    whichever this role started."""
    for name in ("collector", "deletions", "reporter", "keeping"):
        task: asyncio.Task[None] | None = getattr(memo, name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _group_version(resource: Resource) -> tuple[str, str]:
    group, _, version = resource.api_version.rpartition("/")
    return group, version


def _selector(resource: Resource) -> Callable[[kopf.Resource], bool]:
    """kopf's selector of exactly one kind (group and plural; "" is the core group)."""
    group = _group_version(resource)[0]
    return lambda candidate: candidate.group == group and candidate.plural == resource.plural


@dataclass
class ViewState:
    """What the handlers learn about the cluster view beyond kopf's indexes."""

    ready: bool = False  # every index has had its initial listing
    invalid_policies: set[str] = field(default_factory=set)  # stored policies that cannot be read
    governed: Governance | None = None  # which policy governed each namespace at the last policy event
    spec_versions: dict[str, str] = field(default_factory=dict)  # policy -> the spec version last acted on
    # What the policy status reporter needs that kopf passes to handlers only: each policy's stored status, and
    # kopf's indexes (live objects: the ones the policy handler was given stay current).
    policies: dict[str, "StoredPolicy"] = field(default_factory=dict)
    indexes: Mapping[str, Any] | None = None
    # The workloads reconciled since this process started, until every stored one has been: policy status
    # counts only what was reconciled, so it waits for all (a restart would otherwise write partial counts
    # as the resume pass goes). None from then on.
    heard: set[tuple[str, str]] | None = field(default_factory=set)


@dataclass
class StoredPolicy:
    """One policy as its last event showed it, for its status report."""

    generation: int | None
    status: Mapping[str, Any]
    problems: Sequence[Problem] = ()  # why it cannot be read, from its last spec change


# --- indexes: the cluster view admission needs, kept in memory by kopf's watches ----------------------


async def policy_index(name: str, body: kopf.Body, **indexes: Any) -> dict[str, PolicyEntry]:
    """The parsed policy, or why it cannot be read: parsed once per resourceVersion (the value kopf holds is
    reused while the version is unchanged), never its body. Async, as the other indexing functions: kopf
    runs them on the event loop instead of handing every watch event to its thread pool."""
    held: PolicyIndex | None = indexes.get("policy_index")
    return {name: policy_entry(name, body, held.get(name, ()) if held is not None else ())}


async def namespace_index(name: str, labels: kopf.Labels, **_: Any) -> dict[str, Mapping[str, str]]:
    return {name: dict(labels)}


async def gpu_index(namespace: str | None, name: str, body: kopf.Body, **indexes: Any) -> dict[tuple[str, str], int]:
    """GPUs at max scale per workload, for the namespace quota. A workload being deleted, unreadable,
    or refused by its policy holds none: a refused newcomer must not push admitted ones out.

    The value is also added to its namespace's sum (controller/view.py), last: nothing after it may fail,
    or kopf would drop the workload from its index while the sum counts it."""
    key = (namespace or "", name)
    conditions = (body.get("status") or {}).get("conditions") or []
    refused = any(c.get("type") == CONDITION_POLICY_ADMITTED and c.get("status") == "False" for c in conditions)
    gpus = 0
    if not body.get("metadata", {}).get("deletionTimestamp") and not refused:
        with contextlib.suppress(Refused):
            gpus = parse_workload(dict(body)).spec.gpus_at_max_scale
    kept_for(indexes["gpu_index"]).gpus.put(key, gpus)
    return {key: gpus}


PolicyIndex = kopf.Index[str, PolicyEntry]
NamespaceIndex = kopf.Index[str, Mapping[str, str]]
GpuIndex = kopf.Index[tuple[str, str], int]


def cluster_view(indexes: Mapping[str, Any]) -> ClusterView:
    """The view from the handler's index keyword arguments (kopf passes each index by its name): O(policies)
    to build, and O(1) in the number of workloads to judge one (controller/view.py)."""
    return indexed_view(indexes["policy_index"], indexes["namespace_index"], indexes["gpu_index"])


# --- reconcile --------------------------------------------------------------------------------------


async def _add_finalizer(kube: KubeApi, workload: Mapping[str, Any]) -> None:
    """The operator's finalizer, unless the object moved on since it was read (its next event is coming)."""
    meta = workload["metadata"]
    finalizers = [*(meta.get("finalizers") or []), FINALIZER]
    patch = {"finalizers": finalizers, "resourceVersion": meta.get("resourceVersion")}
    with contextlib.suppress(KubeError):  # 409: it moved on; 404: it is gone; anything else: the next pass
        await kube.patch_metadata(WORKLOADS, meta["namespace"], meta["name"], patch)


def _as_body(obj: Mapping[str, Any]) -> kopf.Body:
    """kopf's copy as it is, or an object read from the API in kopf's wrapper (for events)."""
    return obj if isinstance(obj, kopf.Body) else kopf.Body(cast(kopf.RawBody, obj))


def _post_events(body: kopf.Body, outcome: Outcome) -> None:
    if outcome.apply.applied:
        kopf.info(body, reason="Applied", message="applied " + ", ".join(outcome.apply.applied))
    if outcome.apply.deleted:
        kopf.info(body, reason="Pruned", message="deleted " + ", ".join(outcome.apply.deleted))
    if outcome.forged and outcome.status_written:  # once: the rewritten status no longer carries them
        _warn_forged(body, outcome.forged)
    if outcome.write_failure is not None:  # each attempt: they come with backoff, never in a tight loop
        RECONCILE_API_FAILURES.labels(reason=outcome.write_failure.reason).inc()
        kopf.warn(body, reason=outcome.write_failure.reason, message=outcome.write_failure.message)
    elif outcome.status_written and outcome.status is not None:
        stalled = next((c for c in outcome.status.conditions if c.type == "Stalled" and c.status == "True"), None)
        if stalled is not None:
            kopf.warn(body, reason=stalled.reason, message=stalled.message)
    if outcome.result == "refused" and outcome.status_written:  # once, when the refusal is first reported
        rules = {problem.rule or "schema" for problem in outcome.problems} or {"policy"}
        for rule in sorted(rules):
            ADMISSION_REFUSALS.labels(reason=rule).inc()


async def run_reconcile(body: Mapping[str, Any], memo: kopf.Memo, indexes: Mapping[str, Any]) -> Outcome:
    """`_reconcile_serialised`, noting that this process has now heard from the workload, whatever came of it."""
    try:
        return await _reconcile_serialised(body, memo, indexes)
    finally:
        heard = memo.view.heard if hasattr(memo, "view") else None
        if heard is not None:
            heard.add((body["metadata"]["namespace"], body["metadata"]["name"]))


async def _reconcile_serialised(body: Mapping[str, Any], memo: kopf.Memo, indexes: Mapping[str, Any]) -> Outcome:
    """One serialised reconcile of one object.

    A Kubernetes call the API refuses is reported (a condition when the status can still be written, a
    Warning Event, a metric) and raises TemporaryError with the workload's backoff delay: kopf runs change
    handlers and timers again after it; event handlers leave the retry to them (`_retrying_soon`). Until
    then, other entry points defer.
    """
    meta = body["metadata"]
    owner = owner_key(meta["namespace"], meta["name"])
    retries: WriteRetries = memo.reconciler.write_retries
    versions: WorkloadVersions = memo.reconciler.versions
    async with memo.locks[owner], memo.slots:
        started = time.perf_counter()
        # The policies come from the indexes as they are now, under the lock. The object is kopf's copy when it
        # includes this process's own last change to it (controller/freshness.py), else it is read again: a
        # steady reconcile reads nothing (its children come from the watch caches too). kopf swaps the content
        # of a timer's or handler's body with each new event, so reconcile gets one consistent copy of it.
        copy = dict(body)
        fresh = copy if versions.usable(copy) else await memo.reconciler.kube.get(WORKLOADS, *owner.split("/", 1))
        if fresh is None:
            return Outcome("gone")
        uid, fresh_meta = str(fresh["metadata"].get("uid")), fresh["metadata"]
        if FINALIZER not in (fresh_meta.get("finalizers") or []) and not fresh_meta.get("deletionTimestamp"):
            # Nothing is provisioned before the finalizer is there: a workload deleted meanwhile would vanish
            # without its release (a policy change reconciles by listing). kopf adds it before its creation
            # handler, but after a 409 on that patch it waits for the object's next event, which may never
            # come (chaos seed 668912): adding it here is that event.
            await _add_finalizer(memo.reconciler.kube, fresh)
            return Outcome("deferred")
        generation = int(fresh_meta.get("generation") or 0)
        if retries.wait(owner, generation) > 0:
            # A refused write waits for its backoff: the entry point that saw it fail runs again then (kopf
            # retries it), and the poll timer looks again while the status reports it.
            return Outcome("deferred")
        try:
            outcome = await reconcile(memo.reconciler, fresh, cluster_view(indexes), IndexedChildren(indexes))
        except BaseException as error:
            versions.unsure(uid)
            if not isinstance(error, KubeError):
                raise
            if error.status == 404 and not await memo.reconciler.kube.get(WORKLOADS, *owner.split("/", 1)):
                return Outcome("gone")  # deleted while we worked: nothing left to reconcile
            RECONCILES.labels(result="error").inc()
            RECONCILE_API_FAILURES.labels(reason=REASON_READ_FAILED).inc()
            attempt, delay = retries.failed(owner, generation)
            kopf.warn(_as_body(fresh), reason=REASON_READ_FAILED,
                      message=f"Kubernetes API: {error} (attempt {attempt}, retrying in {delay:.0f}s)")  # fmt: skip
            raise kopf.TemporaryError(f"Kubernetes API: {error}", delay=delay) from error
        versions.reconciled(uid, outcome.version if outcome.status_written else fresh_meta.get("resourceVersion"))
    RECONCILES.labels(result=outcome.result).inc()
    RECONCILE_SECONDS.observe(time.perf_counter() - started)
    _post_events(_as_body(fresh), outcome)
    if outcome.resolved is not None and outcome.status is not None and outcome.status.phase is not None:
        INVENTORY.record(outcome.resolved, outcome.status.phase.value)
    elif outcome.result == "refused":
        INVENTORY.forget(meta["namespace"], meta["name"])
    if outcome.write_failure is not None and outcome.retry_after is not None:
        raise kopf.TemporaryError(outcome.write_failure.message, delay=outcome.retry_after)
    return outcome


async def _retrying_soon(body: Mapping[str, Any], memo: kopf.Memo, indexes: Mapping[str, Any]) -> None:
    """For event handlers, which kopf never retries: a refused write is retried by the workload's timers
    (`_gcp_pending` wakes the poll while a write failure is reported)."""
    with contextlib.suppress(kopf.TemporaryError):
        await run_reconcile(body, memo, indexes)


async def workload_changed(
    body: kopf.Body,
    memo: kopf.Memo,
    **indexes: Any,
) -> None:
    await run_reconcile(body, memo, indexes)


async def resync(
    body: kopf.Body,
    memo: kopf.Memo,
    **indexes: Any,
) -> None:
    """Drift correction and status refresh, and re-admission after a policy change."""
    await run_reconcile(body, memo, indexes)


def _gcp_pending(status: kopf.Status, meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> bool:
    """Node pools or identity not ready yet (an operation runs, or a retry is due), or a pool it uses vanished:
    worth polling soon."""
    if meta.get("deletionTimestamp"):
        return False
    gcp = getattr(getattr(memo, "reconciler", None), "gcp", None)
    if isinstance(gcp, LiveProvisioner) and gcp.due(owner_key(meta.get("namespace") or "", meta.get("name") or "")):
        return True
    waiting = {CONDITION_NODE_POOLS_READY, CONDITION_IDENTITY_READY}
    conditions = status.get("conditions") or []
    not_ready = any(
        c.get("type") in waiting and c.get("status") == "False" and c.get("reason") != REASON_GCP_NOT_CONFIGURED
        for c in conditions
    )
    # A refused Kubernetes write waits for its backoff, whichever entry point saw it fail.
    write_failed = any(
        c.get("type") in {CONDITION_RECONCILING, CONDITION_STALLED} and c.get("status") == "True"
        and c.get("reason") in WRITE_FAILURE_REASONS
        for c in conditions
    )  # fmt: skip
    return not_ready or write_failed or any(pool.get("operation") for pool in status.get("nodePools") or [])


async def gcp_progress(
    body: kopf.Body,
    memo: kopf.Memo,
    **indexes: Any,
) -> None:
    """While GKE operations run or GCP failures wait for a retry, reconcile every poll interval, not every resync."""
    await run_reconcile(body, memo, indexes)


def _idle_window_open(status: kopf.Status, meta: kopf.Meta, **_: Any) -> bool:
    """An idle window or a runtime limit runs (controller/idle.py; status.idle.deadline is the earlier of the two):
    its deadline needs a reconcile when it comes. kopf judges this on the workload's events (the status write that
    opens or closes the window is one), not on time."""
    idle = status.get("idle") or {}
    return bool(idle.get("deadline")) and not idle.get("suspendedAt") and not meta.get("deletionTimestamp")


async def idle_deadline(body: kopf.Body, status: kopf.Status, memo: kopf.Memo, **indexes: Any) -> None:
    """Reconcile once the deadline (idle window or runtime limit) has passed: the reconcile suspends the Ray cluster."""
    due = seconds_until((status.get("idle") or {}).get("deadline"), memo.reconciler.clock())
    if due is not None and due <= 0:
        await run_reconcile(body, memo, indexes)


async def ray_child_changed(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **indexes: Any
) -> None:
    """KubeRay moved a Ray object: bring its MLWorkload's status along at once, not at the next resync.

    Only the workload's own Ray object, and only when what its status reports moved, or someone edited it,
    or it was deleted: not the initial listing (a restart reconciles every workload on resume anyway), not
    the operator's own creates, not KubeRay's status chatter, not the clusters KubeRay makes for a RayJob."""
    name = labels.get(LABEL_WORKLOAD)
    if not name or not namespace or not hasattr(memo, "reconciler") or not _is_workloads_own(body, name):
        return
    change, uid = event.get("type"), str(body.get("metadata", {}).get("uid"))
    seen: dict[str, str] = memo.ray_fingerprints
    if change == "DELETED":
        seen.pop(uid, None)
    else:
        fingerprint, before = ray_fingerprint(body), seen.get(uid)
        seen[uid] = fingerprint
        if change in (None, "ADDED") or fingerprint == before:
            return
    await _retrying_soon({"metadata": {"namespace": namespace, "name": name}}, memo, indexes)


def _is_workloads_own(body: kopf.Body, workload: str) -> bool:
    """The Ray object the operator made for the workload: its name, and an MLWorkload as its controller."""
    meta = body.get("metadata", {})
    references = meta.get("ownerReferences") or []
    return meta.get("name") == workload and any(
        ref.get("controller") and ref.get("kind") == "MLWorkload" for ref in references
    )


async def endpoint_changed(
    event: kopf.RawEvent, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **indexes: Any
) -> None:
    """GKE gave a load balancer its address or named its backend service, or activated a certificate: report
    the URL and grant IAP access now; one was deleted: make it again. The initial listing and our own creates
    say nothing new."""
    name = labels.get(LABEL_WORKLOAD)
    if event.get("type") not in {"MODIFIED", "DELETED"} or not name or not namespace or not hasattr(memo, "reconciler"):
        return
    await _retrying_soon({"metadata": {"namespace": namespace, "name": name}}, memo, indexes)


def _report_if_unreadable(change: object, body: kopf.Body, memo: kopf.Memo) -> None:
    """A stored policy the operator cannot read (written before validation, or past the webhook): an Event on
    it and the mlworkload_invalid_policies gauge; admission refuses the workloads it may govern meanwhile."""
    name = str(body.get("metadata", {}).get("name", ""))
    if not hasattr(memo, "view"):
        return
    invalid = memo.view.invalid_policies
    invalid.discard(name)
    stored = memo.view.policies.get(name)
    if stored is not None:
        stored.problems = ()
    if change != "DELETED":
        try:
            parse_policy(dict(body))
        except Refused as refused:
            invalid.add(name)
            if stored is not None:
                stored.problems = refused.problems
            kopf.warn(body, reason=REASON_INVALID_POLICY, message="cannot be read, so the workloads it may govern"
                      " are refused: " + "; ".join(map(str, refused.problems)))  # fmt: skip
    INVALID_POLICIES.set(len(invalid))


async def policy_changed(event: kopf.RawEvent, body: kopf.Body, name: str, memo: kopf.Memo, **indexes: Any) -> None:
    """A policy was added, changed or removed: re-admit now, rather than at the next resync, the workloads in
    the namespaces it can affect (`view.readmission_scope`), not every workload of the installation.

    The initial listing (type None) is skipped: workloads are reconciled on resume anyway. So is a change that
    leaves the spec as it was (the operator's own status write, a label): nothing to re-admit or report.
    """
    change = event.get("type")
    _remember_stored(change, body, name, memo, indexes)
    if not _spec_changed(change, body, name, memo):
        return
    _report_if_unreadable(change, body, memo)
    if change == "DELETED":
        forget_policy_metrics(name)
    if change is None or not hasattr(memo, "reconciler"):
        return
    gpu_index: GpuIndex = indexes["gpu_index"]
    workloads = list(gpu_index)
    view = cluster_view(indexes)
    now = governance(view, {namespace for namespace, _ in workloads})
    before, memo.view.governed = memo.view.governed, now
    scope = readmission_scope(before, now, name, unreadable=bool(view.broken))
    chosen = [(ns, workload) for ns, workload in workloads if scope is None or ns in scope]
    logger.info("MLWorkloadPolicy %s %s: re-admitting %d of %d workload(s)", name, str(change).lower(),
                len(chosen), len(workloads))  # fmt: skip
    for namespace, workload in chosen:
        try:
            await run_reconcile({"metadata": {"namespace": namespace, "name": workload}}, memo, indexes)
        except kopf.TemporaryError as error:  # event handlers are not retried: the resync will be
            logger.warning("re-admitting %s/%s after a policy change failed: %s", namespace, workload, error)


def _spec_changed(change: object, body: kopf.Body, name: str, memo: kopf.Memo) -> bool:
    """Whether this event may carry a new spec: always, unless the spec version (its generation, which the API
    server moves on every spec change and never on a status or metadata one) is the one last acted on."""
    if not hasattr(memo, "view"):
        return True
    versions = memo.view.spec_versions
    if change == "DELETED":
        versions.pop(name, None)
        return True
    version = spec_version(body)
    if change == "MODIFIED" and version and versions.get(name) == version:
        return False
    versions[name] = version
    return True


def _remember_stored(change: object, body: kopf.Body, name: str, memo: kopf.Memo, indexes: Mapping[str, Any]) -> None:
    if not hasattr(memo, "view"):
        return
    view: ViewState = memo.view
    view.indexes = indexes
    if change == "DELETED":
        view.policies.pop(name, None)
        return
    held = view.policies.get(name)
    generation = body.get("metadata", {}).get("generation")
    view.policies[name] = StoredPolicy(generation, dict(body.get("status") or {}), held.problems if held else ())


async def report_policies(memo: kopf.Memo) -> int:
    """One pass of the policy status reporter (controller/policy_status.py): each policy's status from the
    cluster view, written only where it differs from what is stored. Returns the number of writes."""
    view_state: ViewState = memo.view
    indexes = view_state.indexes
    if indexes is None or not view_state.ready or not _heard_from_all(view_state, indexes["gpu_index"]):
        return 0
    view = cluster_view(indexes)
    namespaces, phases, now = list(indexes["namespace_index"]), INVENTORY.phases(), memo.reconciler.clock()
    writes = 0
    for name, stored in list(view_state.policies.items()):
        entry = next(iter(indexes["policy_index"].get(name, ())), None)
        if entry is None:
            continue
        status = policy_status(entry[1], generation=stored.generation, problems=stored.problems, view=view,
                               namespaces=namespaces, phases=phases, previous=stored.status, now=now)  # fmt: skip
        record_policy_metrics(name, status)
        if status == stored.status:
            continue
        try:
            await memo.reconciler.kube.patch_status(POLICIES, "", name, merge_patch(stored.status, status))
        except KubeError as error:  # the next pass tries again
            logger.warning("writing the status of MLWorkloadPolicy %s failed: %s", name, error)
            continue
        stored.status = status  # its event follows; until then, the next pass must not write it again
        writes += 1
    return writes


def _heard_from_all(view_state: ViewState, gpu_index: GpuIndex) -> bool:
    heard = view_state.heard
    if heard is not None:
        if any(key not in heard for key in gpu_index):
            return False
        view_state.heard = None
    return True


async def _report_policies_every(seconds: float, memo: kopf.Memo) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await report_policies(memo)
        except Exception:  # a bug in one pass must not end the reporting
            logger.exception("reporting MLWorkloadPolicy status failed")


def _trusted_record(body: kopf.Body, memo: kopf.Memo, indexes: Mapping[str, Any]) -> Recorded:
    """What the workload's status says it holds, less what the operator could not have added for it."""
    record, forged = trusted_record(body, cluster_view(indexes), memo.reconciler.defaults)
    _warn_forged(body, forged)
    return record


def _warn_forged(body: kopf.Body, forged: Sequence[IamBindingStatus]) -> None:
    for status in forged:
        kopf.warn(body, reason=REASON_UNTRUSTED_STATUS, message=f"ignored status.iamBindings entry {status.role} on"
                  f" {status.resource} for {status.member}: the operator could not have added it for this workload,"
                  " so it never revokes it")  # fmt: skip


async def workload_deleted(body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **indexes: Any) -> None:
    """Children go with their owner references; GCP resources are released here, behind the finalizer."""
    owner = owner_key(namespace or "", name)
    # Under the workload's lock: a reconcile that read the object just before the deletion would otherwise
    # grant again what the release revokes (a chaos trial caught exactly that).
    async with memo.locks[owner]:
        memo.reconciler.versions.released(str(body.get("metadata", {}).get("uid")))
        fresh = await memo.reconciler.kube.get(WORKLOADS, namespace, name)
        record = _trusted_record(kopf.Body(fresh) if fresh else body, memo, indexes)
        try:
            held = await memo.reconciler.gcp.release(owner, record)
        except GcpError as error:  # the finalizer stays until GCP has been told
            message = f"releasing GCP resources failed, will retry: {error.message}"
            kopf.warn(body, reason=error.kind.value, message=message)
            raise kopf.TemporaryError(f"GCP release: {error}", delay=RETRY_DELAY_SECONDS) from error
    if held:  # the finalizer stays until the workloads that keep these members record them as the operator's
        first = held[0]
        message = (f"handing {first.role} on {first.resource} for {first.member}"
                   f"{f' (and {len(held) - 1} more)' if len(held) > 1 else ''} over to the workloads that still"
                   " need it: waiting for their status to record it")  # fmt: skip
        kopf.info(body, reason=REASON_HANDING_OVER, message=message)
        raise kopf.TemporaryError(message, delay=memo.config.gcp_poll_seconds)
    kopf.info(body, reason="GcpReleased", message=f"released the GCP resources of {owner}")
    INVENTORY.forget(namespace or "", name)
    # What this process remembered of the workload goes with it (its children go with their owner).
    memo.reconciler.applied.forget((namespace or "", name))
    if isinstance(getattr(memo, "diffbase", None), MemoryDiffBaseStorage):
        memo.diffbase.forget(str(body.get("metadata", {}).get("uid")))


# --- admission --------------------------------------------------------------------------------------


def view_filled(memo: kopf.Memo, **_: Any) -> None:
    """kopf runs no handler before every index has its initial listing, and a cluster always has
    namespaces: the first namespace event means policies, namespaces and GPU usage are all known."""
    if hasattr(memo, "view"):
        memo.view.ready = True


def view_probe(memo: kopf.Memo, **_: Any) -> str:
    """Readiness: not ready (and the webhook refuses, asking to retry) until the view is filled."""
    if not _view_ready(memo):
        raise kopf.PermanentError("the policy, namespace and GPU indexes are still being filled")
    return "filled"


def _view_ready(memo: kopf.Memo) -> bool:
    return hasattr(memo, "view") and bool(memo.view.ready)


def _require_view(memo: kopf.Memo) -> None:
    if not _view_ready(memo):
        raise kopf.AdmissionError(
            "mlworkload is starting and has not read the policies, namespaces and GPU usage yet; retry in a few"
            " seconds", code=503,
        )  # fmt: skip


def _judged(body: kopf.Body, old: kopf.Body | None) -> bool:
    """What admission judges: every create, and updates that change the spec or the labels (cost labels,
    and what policies select). Finalizers, annotations and anything on an object being deleted pass, so a
    tightened policy never makes a workload impossible to delete."""
    if body.get("metadata", {}).get("deletionTimestamp"):
        return False
    if old is None:
        return True
    labels = (body.get("metadata") or {}).get("labels"), (old.get("metadata") or {}).get("labels")
    return old.get("spec") != body.get("spec") or labels[0] != labels[1]


def validate_workload(body: kopf.Body, memo: kopf.Memo, old: kopf.Body | None = None, **indexes: Any) -> None:
    """The same checks as `mlworkload validate`, plus the namespace quota across workloads."""
    if not _judged(body, old):
        return
    _require_view(memo)
    try:
        workload = parse_workload(dict(body))
    except Refused as refused:
        ADMISSION_REFUSALS.labels(reason="schema").inc()
        raise kopf.AdmissionError("\n".join(map(str, refused.problems)), code=422) from None
    try:
        verdict = admit_in(
            cluster_view(indexes), workload, getattr(memo, "config", OperatorSettings()).platform_defaults
        )
    except Exception as error:  # a refusal naming what failed, never an HTTP 500 without a word
        logger.exception("judging %s/%s failed", workload.namespace, workload.name)
        ADMISSION_REFUSALS.labels(reason="internal").inc()
        raise kopf.AdmissionError(
            f"spec: the operator could not judge this workload ({type(error).__name__}: {error}); it is refused"
            " until that is fixed: please report it", code=422,
        ) from None  # fmt: skip
    if not verdict.allowed:
        for problem in verdict.problems:
            ADMISSION_REFUSALS.labels(reason=problem.rule or "policy").inc()
        raise kopf.AdmissionError("\n".join(map(str, verdict.problems)), code=422)


def validate_policy(body: kopf.Body, **_: Any) -> None:
    """A policy the operator could not read would govern nothing: refused, field by field."""
    try:
        parse_policy(dict(body))
    except Refused as refused:
        ADMISSION_REFUSALS.labels(reason="policy-schema").inc()
        raise kopf.AdmissionError("\n".join(map(str, refused.problems)), code=422) from None


async def webhook_configuration_changed(name: str, memo: kopf.Memo, **_: Any) -> None:
    """Someone (Argo CD, helm, a person) wrote the webhook configuration: put the caBundle back at once,
    rather than at the next periodic check. Our own patch comes back here too and writes nothing."""
    keeper: CertificateKeeper | None = getattr(memo, "keeper", None)
    if keeper is None:
        return  # certificates from files or self-signed: the caBundle is not ours to keep
    try:
        await keeper.ensure()
    except KubeError as error:  # event handlers are not retried: the periodic check will be
        logger.warning("restoring the caBundle of %s failed: %s", name, error)


# --- registration -------------------------------------------------------------------------------------


def registry_for(role: Role, keep_certificates: bool = True) -> kopf.OperatorRegistry:
    """The handlers one role runs (settings.Role), in the operator's own registry rather than kopf's
    process-wide default: handlers registered elsewhere in the process (tests, plugins) never run here.

    `keep_certificates`: watch the webhook configuration to keep its caBundle (certificates owned by the
    operator); without it the webhook role needs no access to that object at all.
    """
    registry = kopf.OperatorRegistry()
    # Every role: start-up, and the cluster view (policies, namespaces, GPU usage) both sides read.
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(configure)
    kopf.on.cleanup(registry=registry)(stop_background)
    kopf.index(GROUP, VERSION, POLICY_PLURAL, registry=registry)(policy_index)
    kopf.index("", "v1", "namespaces", registry=registry)(namespace_index)
    kopf.index(*WORKLOAD, registry=registry)(gpu_index)
    kopf.on.event("", "v1", "namespaces", registry=registry)(view_filled)
    kopf.on.probe(id="view", registry=registry)(view_probe)
    if role is not Role.WEBHOOK:
        for on in (kopf.on.resume, kopf.on.create, kopf.on.update):
            on(*WORKLOAD, registry=registry)(workload_changed)
        kopf.timer(*WORKLOAD, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, registry=registry)(resync)
        kopf.timer(*WORKLOAD, interval=GCP_POLL_SECONDS, initial_delay=GCP_POLL_SECONDS, when=_gcp_pending,
                   registry=registry)(gcp_progress)  # fmt: skip
        kopf.timer(*WORKLOAD, interval=IDLE_POLL_SECONDS, when=_idle_window_open, registry=registry)(idle_deadline)
        # The children cache (controller/observe.py): kopf fills every index before any handler runs.
        for resource in OWNED_KINDS:
            kopf.index(*_group_version(resource), resource.plural, id=index_name(resource), labels=OWNED,
                       registry=registry)(child_index)  # fmt: skip
        for resource in SHARED_KINDS:
            kopf.index(*_group_version(resource), resource.plural, id=index_name(resource), labels=OWNED,
                       registry=registry)(shared_index)  # fmt: skip
        for plural in ("rayclusters", "rayjobs", "rayservices"):
            kopf.on.event("ray.io", "v1", plural, labels=OWNED, registry=registry)(ray_child_changed)
        kopf.on.event("networking.k8s.io", "v1", "ingresses", labels=OWNED, registry=registry)(endpoint_changed)
        kopf.on.event("networking.gke.io", "v1", "managedcertificates", labels=OWNED, registry=registry)(
            endpoint_changed
        )
        kopf.on.event(GROUP, VERSION, POLICY_PLURAL, registry=registry)(policy_changed)
        kopf.on.delete(*WORKLOAD, registry=registry)(workload_deleted)
    if role is not Role.CONTROLLER:
        kopf.on.validate(*WORKLOAD, id="policy", operations=["CREATE", "UPDATE"], registry=registry)(validate_workload)
        kopf.on.validate(
            GROUP, VERSION, POLICY_PLURAL, id="policy-spec", operations=["CREATE", "UPDATE"], registry=registry
        )(validate_policy)
        if keep_certificates:
            kopf.on.event(*WEBHOOK_CONFIGURATIONS, registry=registry)(webhook_configuration_changed)
    return registry


# Both roles in one process, as `mlworkload run` runs by default (and the tests).
REGISTRY = registry_for(Role.ALL)
