"""kopf handlers: decorators and orchestration only; the work is in reconcile, policy and builders.

Every entry point (create, update, resume, the resync timer, a change of a Ray child) runs the
same reconcile under a per-object lock, because kopf runs timers and change handlers of one
object as separate tasks that may overlap.
"""

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import kubernetes.client
import kubernetes.config

from mlworkload.api.load import parse_policy, parse_workload
from mlworkload.api.meta import LabelSelector
from mlworkload.api.policy import MLWorkloadPolicy
from mlworkload.api.workload import IamBindingStatus
from mlworkload.constants import (
    CONDITION_IDENTITY_READY,
    CONDITION_NODE_POOLS_READY,
    CONDITION_POLICY_ADMITTED,
    FINALIZER,
    GROUP,
    LABEL_MANAGED_BY,
    LABEL_WORKLOAD,
    MANAGED_BY,
    POLICY_PLURAL,
    REASON_GCP_NOT_CONFIGURED,
    REASON_INVALID_POLICY,
    REASON_UNTRUSTED_STATUS,
    VERSION,
    WORKLOAD_PLURAL,
)
from mlworkload.controller.certificates import write_self_signed
from mlworkload.controller.kube import WORKLOADS, ClientKubeApi, KubeError
from mlworkload.controller.reconcile import (
    Outcome,
    Reconciler,
    live_claims,
    owner_key,
    reconcile,
    recorded_of,
    trusted,
)
from mlworkload.gcp.clusters import connect_inspector
from mlworkload.gcp.errors import GcpError
from mlworkload.gcp.live import LiveProvisioner, connect
from mlworkload.gcp.provisioner import DryRunProvisioner, GcpProvisioner, Recorded
from mlworkload.metrics import ADMISSION_REFUSALS, INVALID_POLICIES, INVENTORY, RECONCILE_SECONDS, RECONCILES
from mlworkload.policy import BrokenPolicy, ClusterView, WorkloadGpus, admit_in
from mlworkload.problems import Refused
from mlworkload.settings import GcpMode, OperatorSettings

logger = logging.getLogger(__name__)

# The operator's own registry, not kopf's process-wide default: handlers registered elsewhere in the
# same process (tests, plugins) can never run as part of this operator.
REGISTRY = kopf.OperatorRegistry()
WORKLOAD = (GROUP, VERSION, WORKLOAD_PLURAL)
OWNED = {LABEL_MANAGED_BY: MANAGED_BY}
RETRY_DELAY_SECONDS = 10.0
# kopf fixes a timer's interval when the decorator runs, before settings exist: read it from the
# environment here (the same MLW_RESYNC_SECONDS that `mlworkload run --resync-seconds` sets).
RESYNC_SECONDS = float(os.environ.get("MLW_RESYNC_SECONDS") or 300)
GCP_POLL_SECONDS = float(os.environ.get("MLW_GCP_POLL_SECONDS") or 10)


# --- start-up -------------------------------------------------------------------------------------


def _api_client() -> kubernetes.client.ApiClient:
    """In-cluster credentials, else the kubeconfig ($KUBECONFIG read now, not at import as the client does)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    return kubernetes.client.ApiClient(configuration)


@kopf.on.login(registry=REGISTRY)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own readers of the service account or $KUBECONFIG, the same sources as `_api_client`."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


def _gcp_provisioner(config: OperatorSettings, kube: ClientKubeApi) -> GcpProvisioner:
    """Live when a GCP project is configured (or MLW_GCP_MODE=live), dry-run otherwise."""
    if config.effective_gcp_mode is GcpMode.DRY_RUN:
        logger.info("GCP mode dry-run: node pools and IAM bindings are planned and reported, never made")
        return DryRunProvisioner()
    assert config.gcp is not None  # live mode without a cluster is refused when settings load
    logger.info("GCP mode live: provisioning in %s", config.gcp.cluster_path)
    return connect(config, lambda: live_claims(kube, config.namespaces))


def _webhook_server(config: OperatorSettings) -> kopf.WebhookServer:
    """TLS from the mounted certificate (cert-manager), else a self-signed one made at start-up."""
    if config.webhook_cert_dir:
        certfile, keyfile = Path(config.webhook_cert_dir) / "tls.crt", Path(config.webhook_cert_dir) / "tls.key"
    else:
        service, namespace = config.webhook_service, config.operator_namespace
        hosts = [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local", "localhost", "127.0.0.1"]
        certfile, keyfile = write_self_signed(Path(tempfile.mkdtemp(prefix="mlworkload-webhook-")), hosts)
    # Port 0: any free port (tests); the Service in front of the pod fixes what clients use.
    return kopf.WebhookServer(
        addr="0.0.0.0", port=config.webhook_port or None, certfile=str(certfile), pkeyfile=str(keyfile)
    )


@kopf.on.startup(registry=REGISTRY)
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config: OperatorSettings = getattr(memo, "config", None) or OperatorSettings.load()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # One replica with a Recreate strategy: no peering needed (kopf has no leader election).
    settings.peering.standalone = True
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    # A delete that arrives while the resync timer runs would otherwise wait up to 60 s for kopf to
    # notice that the timer task is gone.
    settings.background.cancellation_polling = 1
    settings.admission.server = _webhook_server(config)
    memo.config = config
    kube = ClientKubeApi(_api_client())
    gcp = _gcp_provisioner(config, kube)
    clusters = connect_inspector(config) if isinstance(gcp, LiveProvisioner) else None
    memo.reconciler = Reconciler(kube=kube, gcp=gcp, defaults=config.platform_defaults, clusters=clusters)
    memo.locks = defaultdict(asyncio.Lock)
    # Shared by every handler: kopf hands each object a shallow copy of the memo, so state lives in objects.
    memo.view = ViewState()
    if isinstance(gcp, LiveProvisioner):
        interval = min(max(config.pool_release_grace_seconds / 4, config.gcp_poll_seconds), 60.0)
        memo.collector = asyncio.create_task(gcp.run_collector(interval), name="node pool collector")


@kopf.on.cleanup(registry=REGISTRY)
async def stop_collector(memo: kopf.Memo, **_: Any) -> None:
    collector: asyncio.Task[None] | None = getattr(memo, "collector", None)
    if collector is not None:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector


@dataclass
class ViewState:
    """What the handlers learn about the cluster view beyond kopf's indexes."""

    ready: bool = False  # every index has had its initial listing
    invalid_policies: set[str] = field(default_factory=set)  # stored policies that cannot be read


# --- indexes: the cluster view admission needs, kept in memory by kopf's watches ----------------------


@kopf.index(GROUP, VERSION, POLICY_PLURAL, registry=REGISTRY)
def policy_index(name: str, body: kopf.Body, **_: Any) -> dict[str, Mapping[str, Any]]:
    return {name: dict(body)}


@kopf.index("", "v1", "namespaces", registry=REGISTRY)
def namespace_index(name: str, labels: kopf.Labels, **_: Any) -> dict[str, Mapping[str, str]]:
    return {name: dict(labels)}


@kopf.index(*WORKLOAD, registry=REGISTRY)
def gpu_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[tuple[str, str], int]:
    """GPUs at max scale per workload, for the namespace quota. A workload being deleted, unreadable,
    or refused by its policy holds none: a refused newcomer must not push admitted ones out."""
    key = (namespace or "", name)
    conditions = (body.get("status") or {}).get("conditions") or []
    refused = any(c.get("type") == CONDITION_POLICY_ADMITTED and c.get("status") == "False" for c in conditions)
    if body.get("metadata", {}).get("deletionTimestamp") or refused:
        return {key: 0}
    try:
        return {key: parse_workload(dict(body)).spec.gpus_at_max_scale}
    except Refused:
        return {key: 0}


def _single(store: kopf.Store[Any]) -> Any:
    return next(iter(store))


PolicyIndex = kopf.Index[str, Mapping[str, Any]]
NamespaceIndex = kopf.Index[str, Mapping[str, str]]
GpuIndex = kopf.Index[tuple[str, str], int]


def cluster_view(indexes: Mapping[str, Any]) -> ClusterView:
    """The view from the handler's index keyword arguments (kopf passes each index by its name)."""
    policy_index: PolicyIndex = indexes["policy_index"]
    namespace_index: NamespaceIndex = indexes["namespace_index"]
    gpu_index: GpuIndex = indexes["gpu_index"]
    policies: list[MLWorkloadPolicy] = []
    broken: list[BrokenPolicy] = []
    for name, store in policy_index.items():
        try:
            policies.append(parse_policy(_single(store)))
        except Refused as refused:
            broken.append(broken_policy(name, _single(store), refused))
    labels = {name: _single(store) for name, store in namespace_index.items()}
    usage = [WorkloadGpus(ns, name, _single(store)) for (ns, name), store in gpu_index.items()]
    return ClusterView(policies=policies, namespace_labels=labels, default_labels={}, usage=usage, broken=broken)


def broken_policy(name: str, body: Mapping[str, Any], refused: Refused) -> BrokenPolicy:
    selector_doc = (body.get("spec") or {}).get("namespaceSelector") if isinstance(body.get("spec"), dict) else None
    try:
        selector = LabelSelector.model_validate(selector_doc or {}, by_alias=True, by_name=False)
    except ValueError:
        selector = None  # cannot tell which namespaces it governs: it may govern any
    priority = (body.get("spec") or {}).get("priority", 0) if isinstance(body.get("spec"), dict) else None
    readable_priority = priority if type(priority) is int else None  # bool is an int, and no priority
    problem = str(refused.problems[0]) if refused.problems else "unreadable"
    return BrokenPolicy(name, problem, selector, readable_priority)


# --- reconcile --------------------------------------------------------------------------------------


def _post_events(body: kopf.Body, outcome: Outcome) -> None:
    if outcome.apply.applied:
        kopf.info(body, reason="Applied", message="applied " + ", ".join(outcome.apply.applied))
    if outcome.apply.deleted:
        kopf.info(body, reason="Pruned", message="deleted " + ", ".join(outcome.apply.deleted))
    if outcome.forged and outcome.status_written:  # once: the rewritten status no longer carries them
        _warn_forged(body, outcome.forged)
    if outcome.status_written and outcome.status is not None:
        stalled = next((c for c in outcome.status.conditions if c.type == "Stalled" and c.status == "True"), None)
        if stalled is not None:
            kopf.warn(body, reason=stalled.reason, message=stalled.message)
        if outcome.result == "refused" and outcome.status_written:  # once, when the refusal is first reported
            rules = {problem.rule or "schema" for problem in outcome.problems} or {"policy"}
            for rule in sorted(rules):
                ADMISSION_REFUSALS.labels(reason=rule).inc()


async def run_reconcile(body: Mapping[str, Any], memo: kopf.Memo, indexes: Mapping[str, Any]) -> Outcome:
    """One serialised reconcile of one object; Kubernetes errors are retried by kopf with a delay."""
    meta = body["metadata"]
    started = time.perf_counter()
    async with memo.locks[owner_key(meta["namespace"], meta["name"])]:
        # Re-read the object and the policies under the lock: another entry point may have just
        # reconciled it against a newer policy, which a view taken before waiting would undo.
        fresh = await memo.reconciler.kube.get(WORKLOADS, meta["namespace"], meta["name"])
        if fresh is None:
            return Outcome("gone")
        try:
            outcome = await reconcile(memo.reconciler, fresh, cluster_view(indexes))
        except KubeError as error:
            if (
                error.status == 404
                and await memo.reconciler.kube.get(WORKLOADS, meta["namespace"], meta["name"]) is None
            ):
                return Outcome("gone")  # deleted while we worked: nothing left to reconcile
            RECONCILES.labels(result="error").inc()
            raise kopf.TemporaryError(f"Kubernetes API: {error}", delay=RETRY_DELAY_SECONDS) from error
    RECONCILES.labels(result=outcome.result).inc()
    RECONCILE_SECONDS.observe(time.perf_counter() - started)
    _post_events(kopf.Body(fresh), outcome)
    if outcome.resolved is not None and outcome.status is not None and outcome.status.phase is not None:
        INVENTORY.record(outcome.resolved, outcome.status.phase.value)
    elif outcome.result == "refused":
        INVENTORY.forget(meta["namespace"], meta["name"])
    return outcome


@kopf.on.resume(*WORKLOAD, registry=REGISTRY)
@kopf.on.create(*WORKLOAD, registry=REGISTRY)
@kopf.on.update(*WORKLOAD, registry=REGISTRY)
async def workload_changed(
    body: kopf.Body,
    memo: kopf.Memo,
    **indexes: Any,
) -> None:
    await run_reconcile(body, memo, indexes)


@kopf.timer(*WORKLOAD, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS, registry=REGISTRY)
async def resync(
    body: kopf.Body,
    memo: kopf.Memo,
    **indexes: Any,
) -> None:
    """Drift correction and status refresh, and re-admission after a policy change."""
    await run_reconcile(body, memo, indexes)


def _gcp_pending(status: kopf.Status, meta: kopf.Meta, **_: Any) -> bool:
    """Node pools or identity not ready yet (an operation runs, or a retry is due): worth polling soon."""
    if meta.get("deletionTimestamp"):
        return False
    waiting = {CONDITION_NODE_POOLS_READY, CONDITION_IDENTITY_READY}
    not_ready = any(
        c.get("type") in waiting and c.get("status") == "False" and c.get("reason") != REASON_GCP_NOT_CONFIGURED
        for c in status.get("conditions") or []
    )
    return not_ready or any(pool.get("operation") for pool in status.get("nodePools") or [])


@kopf.timer(*WORKLOAD, interval=GCP_POLL_SECONDS, initial_delay=GCP_POLL_SECONDS, when=_gcp_pending,
            registry=REGISTRY)  # fmt: skip
async def gcp_progress(
    body: kopf.Body,
    memo: kopf.Memo,
    **indexes: Any,
) -> None:
    """While GKE operations run or GCP failures wait for a retry, reconcile every poll interval, not every resync."""
    await run_reconcile(body, memo, indexes)


@kopf.on.event("ray.io", "v1", "rayclusters", labels=OWNED, registry=REGISTRY)
@kopf.on.event("ray.io", "v1", "rayjobs", labels=OWNED, registry=REGISTRY)
@kopf.on.event("ray.io", "v1", "rayservices", labels=OWNED, registry=REGISTRY)
async def ray_child_changed(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **indexes: Any) -> None:
    """KubeRay moved a Ray object: bring its MLWorkload's status along at once, not at the next resync."""
    name = labels.get(LABEL_WORKLOAD)
    if not name or not namespace or not hasattr(memo, "reconciler"):
        return
    await run_reconcile({"metadata": {"namespace": namespace, "name": name}}, memo, indexes)


@kopf.on.event("networking.k8s.io", "v1", "ingresses", labels=OWNED, registry=REGISTRY)
@kopf.on.event("networking.gke.io", "v1", "managedcertificates", labels=OWNED, registry=REGISTRY)
async def endpoint_changed(
    event: kopf.RawEvent, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **indexes: Any
) -> None:
    """GKE gave a load balancer its address or named its backend service, or activated a certificate: report
    the URL and grant IAP access now; one was deleted: make it again. The initial listing and our own creates
    say nothing new."""
    name = labels.get(LABEL_WORKLOAD)
    if event.get("type") not in {"MODIFIED", "DELETED"} or not name or not namespace or not hasattr(memo, "reconciler"):
        return
    await run_reconcile({"metadata": {"namespace": namespace, "name": name}}, memo, indexes)


def _report_if_unreadable(change: object, body: kopf.Body, memo: kopf.Memo) -> None:
    """A stored policy the operator cannot read (written before validation, or past the webhook): an Event on
    it and the mlworkload_invalid_policies gauge; admission refuses the workloads it may govern meanwhile."""
    name = str(body.get("metadata", {}).get("name", ""))
    if not hasattr(memo, "view"):
        return
    invalid = memo.view.invalid_policies
    invalid.discard(name)
    if change != "DELETED":
        try:
            parse_policy(dict(body))
        except Refused as refused:
            invalid.add(name)
            kopf.warn(body, reason=REASON_INVALID_POLICY, message="cannot be read, so the workloads it may govern"
                      " are refused: " + "; ".join(map(str, refused.problems)))  # fmt: skip
    INVALID_POLICIES.set(len(invalid))


@kopf.on.event(GROUP, VERSION, POLICY_PLURAL, registry=REGISTRY)
async def policy_changed(event: kopf.RawEvent, body: kopf.Body, name: str, memo: kopf.Memo, **indexes: Any) -> None:
    """A policy was added, changed or removed: re-admit every workload now rather than at the next resync.

    The initial listing (type None) is skipped: workloads are reconciled on resume anyway.
    """
    change = event.get("type")
    _report_if_unreadable(change, body, memo)
    if change is None or not hasattr(memo, "reconciler"):
        return
    logger.info("MLWorkloadPolicy %s %s: re-admitting all workloads", name, str(change).lower())
    gpu_index: GpuIndex = indexes["gpu_index"]
    for namespace, workload in list(gpu_index):
        try:
            await run_reconcile({"metadata": {"namespace": namespace, "name": workload}}, memo, indexes)
        except kopf.TemporaryError as error:  # event handlers are not retried: the resync will be
            logger.warning("re-admitting %s/%s after a policy change failed: %s", namespace, workload, error)


def _trusted_record(body: kopf.Body, memo: kopf.Memo, indexes: Mapping[str, Any]) -> Recorded:
    """What the workload's status says it holds, less what the operator could not have added for it."""
    record = recorded_of(body)
    try:
        workload = parse_workload(dict(body))
    except Refused:  # nothing can be derived from a spec that does not parse: trust none of its claims
        record, forged = record.partition(lambda status: not status.added_by_operator)
    else:
        resolved = admit_in(cluster_view(indexes), workload, memo.reconciler.defaults).resolved
        record, forged = trusted(resolved, record)
    _warn_forged(body, forged)
    return record


def _warn_forged(body: kopf.Body, forged: Sequence[IamBindingStatus]) -> None:
    for status in forged:
        kopf.warn(body, reason=REASON_UNTRUSTED_STATUS, message=f"ignored status.iamBindings entry {status.role} on"
                  f" {status.resource} for {status.member}: the operator could not have added it for this workload,"
                  " so it never revokes it")  # fmt: skip


@kopf.on.delete(*WORKLOAD, registry=REGISTRY)
async def workload_deleted(body: kopf.Body, namespace: str | None, name: str, memo: kopf.Memo, **indexes: Any) -> None:
    """Children go with their owner references; GCP resources are released here, behind the finalizer."""
    owner = owner_key(namespace or "", name)
    fresh = await memo.reconciler.kube.get(WORKLOADS, namespace, name)
    try:
        await memo.reconciler.gcp.release(owner, _trusted_record(kopf.Body(fresh) if fresh else body, memo, indexes))
    except GcpError as error:  # the finalizer stays until GCP has been told
        kopf.warn(body, reason=error.kind.value, message=f"releasing GCP resources failed, will retry: {error.message}")
        raise kopf.TemporaryError(f"GCP release: {error}", delay=RETRY_DELAY_SECONDS) from error
    kopf.info(body, reason="GcpReleased", message=f"released the GCP resources of {owner}")
    INVENTORY.forget(namespace or "", name)


# --- admission --------------------------------------------------------------------------------------


@kopf.on.event("", "v1", "namespaces", registry=REGISTRY)
def view_filled(memo: kopf.Memo, **_: Any) -> None:
    """kopf runs no handler before every index has its initial listing, and a cluster always has
    namespaces: the first namespace event means policies, namespaces and GPU usage are all known."""
    if hasattr(memo, "view"):
        memo.view.ready = True


@kopf.on.probe(id="view", registry=REGISTRY)
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


@kopf.on.validate(*WORKLOAD, id="policy", operations=["CREATE", "UPDATE"], registry=REGISTRY)
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


@kopf.on.validate(GROUP, VERSION, POLICY_PLURAL, id="policy-spec", operations=["CREATE", "UPDATE"], registry=REGISTRY)
def validate_policy(body: kopf.Body, **_: Any) -> None:
    """A policy the operator could not read would govern nothing: refused, field by field."""
    try:
        parse_policy(dict(body))
    except Refused as refused:
        ADMISSION_REFUSALS.labels(reason="policy-schema").inc()
        raise kopf.AdmissionError("\n".join(map(str, refused.problems)), code=422) from None
