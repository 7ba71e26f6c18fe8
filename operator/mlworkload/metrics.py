"""Prometheus metrics, all prefixed `mlworkload_`, in one module (as Kueue keeps them)."""

import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # the type only: the inventory keeps labels and counts, never the resolved workload
    from mlworkload.policy import ResolvedWorkload

RECONCILES = Counter("mlworkload_reconciles_total", "Reconciles by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "mlworkload_reconcile_duration_seconds",
    "Time to reconcile one MLWorkload.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ADMISSION_REFUSALS = Counter(
    "mlworkload_admission_refusals_total", "Workloads refused at admission or reconcile, by rule.", ["reason"]
)
# The webhook failing to judge a workload is rare, and increase() cannot see the first count of a series that
# appears with it: exported at 0 from the start, for the chart's alert MLWorkloadWebhookErrors.
ADMISSION_REFUSALS.labels(reason="internal")
INVALID_POLICIES = Gauge(
    "mlworkload_invalid_policies", "Stored MLWorkloadPolicies the operator cannot read (their workloads are refused)."
)
KUBE_API_ERRORS = Counter("mlworkload_kubernetes_api_errors_total", "Failed Kubernetes API calls.", ["verb", "code"])
RECONCILE_API_FAILURES = Counter(
    "mlworkload_reconcile_api_failures_total",
    "Reconciles cut short by a Kubernetes API refusal, by reason (ApplyFailed, Forbidden, Invalid, ReadFailed).",
    ["reason"],
)
POLICY_GPUS_IN_USE = Gauge(
    "mlworkload_policy_gpus_in_use", "GPUs at max scale of the workloads each MLWorkloadPolicy governs.", ["policy"]
)
POLICY_GPU_QUOTA = Gauge(
    "mlworkload_policy_gpu_quota", "Each MLWorkloadPolicy's quota.maxGPUs (no series when it sets none).", ["policy"]
)
GCP_API_ERRORS = Counter(
    "mlworkload_gcp_api_errors_total", "Failed GCP API calls, by API and condition reason.", ["api", "reason"]
)
# Per team (namespace) and by the labels of mlworkload_gpus_requested, so a rate divides by what is asked for; never
# per workload or pod: a namespace has a handful of accelerator and capacity values, whatever it runs.
PREEMPTIONS = Counter(
    "mlworkload_preemptions_total",
    "Ray worker pods lost to preemptions (Spot reclaims, higher-priority pods, vanished nodes), by namespace,"
    " accelerator (none for CPU groups) and capacity.",
    ["namespace", "accelerator", "capacity"],
)


@dataclass(frozen=True, slots=True)
class _Counted:
    """What the inventory exports of one workload: its type and phase, and its GPUs at max scale by
    (accelerator, capacity). Label strings are interned: thousands of workloads share a handful of them."""

    type: str
    phase: str
    gpus: tuple[tuple[str, str, int], ...]


class WorkloadInventory(Collector):
    """Workloads by type and phase, and GPUs requested, from what the reconciler last saw."""

    def __init__(self) -> None:
        self._workloads: dict[tuple[str, str], _Counted] = {}

    def record(self, workload: "ResolvedWorkload", phase: str) -> None:
        gpus: dict[tuple[str, str], int] = {}
        for group in workload.groups:
            if group.spec.accelerator is not None:
                key = (sys.intern(group.spec.accelerator.type), sys.intern(group.capacity.value))
                gpus[key] = gpus.get(key, 0) + group.spec.gpus_at_max_scale
        counted = _Counted(
            sys.intern(workload.type.value),
            sys.intern(phase),
            tuple((accelerator, capacity, count) for (accelerator, capacity), count in gpus.items()),
        )
        self._workloads[sys.intern(workload.namespace), workload.name] = counted

    def forget(self, namespace: str, name: str) -> None:
        self._workloads.pop((namespace, name), None)

    def phases(self) -> dict[str, dict[str, int]]:
        """Namespace -> phase -> workloads (MLWorkloadPolicy status): one pass over the workloads."""
        counts: dict[str, dict[str, int]] = {}
        for (namespace, _), counted in list(self._workloads.items()):
            in_namespace = counts.setdefault(namespace, {})
            in_namespace[counted.phase] = in_namespace.get(counted.phase, 0) + 1
        return counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        by_phase = GaugeMetricFamily("mlworkload_workloads", "MLWorkloads by type and phase.", labels=["type", "phase"])
        counts: dict[tuple[str, str], int] = {}
        gpus: dict[tuple[str, str, str], int] = {}
        for (namespace, _), counted in list(self._workloads.items()):
            key = (counted.type, counted.phase)
            counts[key] = counts.get(key, 0) + 1
            for accelerator, capacity, count in counted.gpus:
                gpu_key = (namespace, accelerator, capacity)
                gpus[gpu_key] = gpus.get(gpu_key, 0) + count
        for (kind, phase), count in sorted(counts.items()):
            by_phase.add_metric([kind, phase], count)
        yield by_phase
        requested = GaugeMetricFamily(
            "mlworkload_gpus_requested",
            "GPUs at max scale, by namespace, accelerator and capacity.",
            labels=["namespace", "accelerator", "capacity"],
        )
        for labels, count in sorted(gpus.items()):
            requested.add_metric(list(labels), count)
        yield requested


INVENTORY = WorkloadInventory()


def record_policy_metrics(name: str, status: Mapping[str, Any]) -> None:
    """The policy gauges from the status the operator computed for it (controller/policy_status.py)."""
    gpus = status.get("gpus") or {}
    POLICY_GPUS_IN_USE.labels(name).set(gpus.get("inUse", 0))
    if gpus.get("quota") is None:
        POLICY_GPU_QUOTA.remove(name)  # absent or not: remove() tolerates both
    else:
        POLICY_GPU_QUOTA.labels(name).set(gpus["quota"])


def forget_policy_metrics(name: str) -> None:
    """A deleted policy leaves no series behind."""
    for gauge in (POLICY_GPUS_IN_USE, POLICY_GPU_QUOTA):
        gauge.remove(name)


def register_inventory(registry: CollectorRegistry = REGISTRY) -> None:
    """Idempotent: several operator runs in one process (tests) share the collector."""
    if INVENTORY not in getattr(registry, "_collector_to_names", {}):
        registry.register(INVENTORY)
