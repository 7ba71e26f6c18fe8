"""What the operator reported on a stored MLWorkload, read back from the in-memory API server."""

from typing import Any

from tests.support.kube import KubeEmulatorServer

MLW = "mlworkload.io/v1alpha1"


def workload_status(server: KubeEmulatorServer, namespace: str, name: str) -> dict[str, Any]:
    """The workload's status; empty when it has none yet or is gone."""
    found = server.get_object(MLW, "MLWorkload", name, namespace) or {}
    status: dict[str, Any] = found.get("status") or {}
    return status


def workload_condition(server: KubeEmulatorServer, namespace: str, name: str, kind: str) -> dict[str, Any]:
    """One condition of the workload's status; empty when it is not there."""
    conditions = workload_status(server, namespace, name).get("conditions", [])
    return next((condition for condition in conditions if condition["type"] == kind), {})


def workload_events(server: KubeEmulatorServer, namespace: str, name: str, reason: str) -> list[dict[str, Any]]:
    """The Events with this reason about the workload (the operator posts them on the MLWorkload)."""
    return [
        event
        for event in server.list_objects("v1", "Event", namespace)
        if event.get("reason") == reason and (event.get("involvedObject") or {}).get("name") == name
    ]
