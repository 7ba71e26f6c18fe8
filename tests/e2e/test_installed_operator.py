"""The pieces of MLW_E2E_OPERATOR=in-cluster that need no installed operator: when a Deployment counts as rolled
out, the server-side dry run the webhook is probed with, and waiting for a streak of acceptances (against the
in-memory server, which serves no Deployments)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlworkload.controller.kube import KubeError
from tests.e2e.cluster import BackendUnavailable, Cluster, rolled_out
from tests.support.kube import KubeEmulatorServer


def deployment(generation: int = 2, wanted: int = 1, **status: int) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": wanted}, "status": status}


@pytest.mark.parametrize(
    ("obj", "done"),
    [
        (deployment(observedGeneration=2, updatedReplicas=1, availableReplicas=1, replicas=1), True),
        (deployment(3, 2, observedGeneration=3, updatedReplicas=2, availableReplicas=2, replicas=2), True),
        (deployment(observedGeneration=1, updatedReplicas=1, availableReplicas=1, replicas=1), False),  # old spec
        (deployment(observedGeneration=2, updatedReplicas=1, availableReplicas=0, replicas=1), False),  # not ready
        (deployment(observedGeneration=2, updatedReplicas=1, availableReplicas=1, replicas=2), False),  # old pod left
        (deployment(), False),
        (None, False),
    ],
)
def test_a_deployment_is_rolled_out_as_kubectl_judges_it(obj: dict[str, Any] | None, done: bool) -> None:
    assert rolled_out(obj) is done


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with KubeEmulatorServer(crd_paths=[]) as server:
        connected = Cluster("in-memory", server.kubeconfig(tmp_path / "kubeconfig"), "abc123")
        connected.timeout = 2.0
        yield connected
        connected.api_client.close()  # type: ignore[no-untyped-call]


def test_a_dry_run_apply_is_judged_and_not_stored(cluster: Cluster) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "probe"}}
    assert cluster.apply(namespace, dry_run=True)["metadata"]["name"] == "probe"
    assert cluster.get("v1", "Namespace", "probe") is None
    cluster.apply(namespace)
    assert cluster.get("v1", "Namespace", "probe") is not None


def test_acceptance_is_awaited_for_a_streak(cluster: Cluster) -> None:
    answers = iter([True, False, True, True, False, True, True, True])
    calls = 0

    def action() -> None:
        nonlocal calls
        calls += 1
        if not next(answers):
            raise KubeError(500, "InternalError", 'failed calling webhook "policy.mlworkload.io"')

    cluster.until_accepted(action, "three in a row", times=3)
    assert calls == 8


def test_a_refusal_that_lasts_is_reported_with_the_last_message(cluster: Cluster) -> None:
    def refused() -> None:
        raise KubeError(403, "Forbidden", "no MLWorkloadPolicy governs namespace x")

    with pytest.raises(AssertionError, match="no MLWorkloadPolicy governs namespace x"):
        cluster.until_accepted(refused, "the webhook admitting workloads")


def test_the_in_memory_server_runs_no_kuberay(cluster: Cluster) -> None:
    cluster.check_operators("in-process", real_kuberay=False)  # nothing to check: it runs what the tier starts
    with pytest.raises(BackendUnavailable, match="MLW_E2E_REAL_KUBERAY=1 needs a real cluster running KubeRay"):
        cluster.check_operators("in-process", real_kuberay=True)
