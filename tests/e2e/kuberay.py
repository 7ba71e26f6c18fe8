"""Who moves the Ray objects: a real KubeRay operator, or the simulator writing KubeRay's status values.

A cluster cannot be assumed to run KubeRay (the in-memory one never does, a fresh kind cluster only
has its CRDs), so by default :class:`~tests.support.kuberay.KubeRaySimulator` writes the status
values real KubeRay v1.7 writes, through the cluster's ``/status`` subresource. With
``MLW_E2E_REAL_KUBERAY=1`` the same calls instead wait for a real KubeRay to get there; the
scenarios' workloads are then small CPU-only ones that a kind cluster can run. Do not run the
simulator against a cluster that has KubeRay: both would write the same status.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final, Protocol

from tests.e2e.cluster import Cluster
from tests.support.kuberay import KubeRaySimulator

RAY: Final = "ray.io/v1"
REAL_KUBERAY_ENV: Final = "MLW_E2E_REAL_KUBERAY"
# Image pulls (several GB for rayproject/ray) and pod start-up dominate on a real cluster.
REAL_KUBERAY_TIMEOUT: Final = float(os.environ.get("MLW_E2E_REAL_KUBERAY_TIMEOUT", "900"))


class RayDriver(Protocol):
    """The moves of KubeRay the scenarios need; KubeRaySimulator and RealKubeRay both provide them."""

    def cluster_ready(self, namespace: str, name: str) -> None: ...

    def job_running(self, namespace: str, name: str) -> None: ...

    def job_succeeded(self, namespace: str, name: str) -> None: ...

    def job_failed(self, namespace: str, name: str, message: str) -> None: ...

    def service_running(self, namespace: str, name: str) -> None: ...


def uses_real_kuberay() -> bool:
    return os.environ.get(REAL_KUBERAY_ENV) == "1"


class RealKubeRay:
    """Waits until a real KubeRay has moved a Ray object where the simulator would have put it."""

    def __init__(self, cluster: Cluster, timeout: float = REAL_KUBERAY_TIMEOUT) -> None:
        self.cluster = cluster
        self.timeout = timeout

    def _status(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return (self.cluster.get(RAY, kind, name, namespace) or {}).get("status") or {}

    def _job(self, namespace: str, name: str) -> tuple[str, str]:
        status = self._status("RayJob", namespace, name)
        return str(status.get("jobDeploymentStatus", "")), str(status.get("jobStatus", ""))

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        self.cluster.wait_until(condition, f"KubeRay: {what}", timeout=self.timeout)

    def cluster_ready(self, namespace: str, name: str) -> None:
        self._wait(
            lambda: self._status("RayCluster", namespace, name).get("state") == "ready", f"RayCluster {name} ready"
        )

    def job_running(self, namespace: str, name: str) -> None:
        self._wait(lambda: self._job(namespace, name) == ("Running", "RUNNING"), f"RayJob {name} running")

    def job_succeeded(self, namespace: str, name: str) -> None:
        self._wait(lambda: self._job(namespace, name) == ("Complete", "SUCCEEDED"), f"RayJob {name} succeeded")

    def job_failed(self, namespace: str, name: str, message: str) -> None:
        """``message`` is what the simulator would write; real KubeRay writes Ray's own message."""
        self._wait(lambda: self._job(namespace, name)[0] == "Failed", f"RayJob {name} failed")

    def service_running(self, namespace: str, name: str) -> None:
        def ready() -> bool:
            conditions = self._status("RayService", namespace, name).get("conditions") or []
            return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

        self._wait(ready, f"RayService {name} ready")


def ray_driver_for(cluster: Cluster) -> RayDriver:
    return RealKubeRay(cluster) if uses_real_kuberay() else KubeRaySimulator(cluster)
