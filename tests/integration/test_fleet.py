"""A GKE node-pool fleet nobody can corrupt, in the loop: the real operator (kopf, live GCP mode) against the
in-memory API server and FakeGcp, over what real clusters do over weeks.

- two installations of the operator sharing one GKE cluster (each watching its own namespace);
- a restart during a stockout;
- a policy change after the pool exists (maxNodesPerPool 6 -> 2);
- a pool deleted by hand.

Two operators run in one process: each is a kopf operator in its own thread with its own settings, read
when it starts (`configure`), so the second starts only once the first has visibly reconciled. GKE operations
finish only when a test says so (`fake.gke.complete_operations()`); pool names come from the workloads' status,
never written out here (the builder names them).
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kopf.testing import KopfRunner

from mlworkload.constants import ANNOTATION_RECHECK
from mlworkload.gcp.nodepools import claim_label
from tests.support.documents import GSA, permissive_policy, workload
from tests.support.gcp import FakeGcp, stockout
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.operator import OPERATOR_ENV, RESYNC_SECONDS, emulated_cluster, environment, live_gcp_settings

MLW = "mlworkload.io/v1alpha1"
PROJECT, LOCATION, CLUSTER = "my-proj", "us-central1", "ml-cluster"  # what the emulated policy "all" names
CLUSTER_PATH = f"projects/{PROJECT}/locations/{LOCATION}/clusters/{CLUSTER}"
WAIT = 30.0


@pytest.fixture(autouse=True)
def world(fake: FakeGcp) -> Iterator[None]:
    fake.reset()
    fake.gke.add_cluster(PROJECT, LOCATION, CLUSTER)
    fake.iam.add_service_account(GSA)
    yield
    assert fake.unrouted == []
    assert fake.internal_errors == []


@contextmanager
def installation(kubeconfig: Path, fake: FakeGcp, name: str, namespace: str) -> Iterator[KopfRunner]:
    """One installation of the operator: live GCP mode, watching `namespace` only, identified as `name`."""
    env = {
        **OPERATOR_ENV,
        "KUBECONFIG": str(kubeconfig),
        "MLW_RESYNC_SECONDS": str(RESYNC_SECONDS),
        "MLW_WEBHOOK_PORT": "0",
        **live_gcp_settings(fake, PROJECT, LOCATION, CLUSTER),
        "MLW_NAMESPACES": namespace,
        "MLW_INSTALLATION": name,
    }
    with environment(env):
        from mlworkload.controller.handlers import REGISTRY  # noqa: PLC0415  (never at collection time)

        runner = KopfRunner(["run", "--standalone", "--namespace", namespace], timeout=60, registry=REGISTRY)
    with environment(env), runner:
        yield runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output


def status(server: KubeEmulatorServer, name: str, namespace: str) -> dict[str, Any]:
    found = server.get_object(MLW, "MLWorkload", name, namespace) or {}
    result: dict[str, Any] = found.get("status") or {}
    return result


def condition(server: KubeEmulatorServer, name: str, namespace: str, kind: str) -> dict[str, Any]:
    return next((c for c in status(server, name, namespace).get("conditions", []) if c["type"] == kind), {})


def pool_of(server: KubeEmulatorServer, name: str, namespace: str) -> str:
    """The workload's one node pool, by the name the operator recorded."""

    def recorded() -> list[dict[str, Any]]:
        return list(status(server, name, namespace).get("nodePools") or [])

    [pool] = wait_until(recorded, timeout=WAIT, what=f"{namespace}/{name}: node pools in status")
    return str(pool["name"])


def completing(fake: FakeGcp, predicate: Callable[[], Any]) -> Callable[[], Any]:
    """`predicate`, after finishing whatever GKE operations run: for flows of several operations in a row."""

    def check() -> Any:
        fake.gke.complete_operations()
        return predicate()

    return check


def pools_ready(server: KubeEmulatorServer, name: str, namespace: str) -> bool:
    return condition(server, name, namespace, "NodePoolsReady").get("status") == "True"


def wait_pools_ready(fake: FakeGcp, server: KubeEmulatorServer, name: str, namespace: str) -> None:
    wait_until(completing(fake, functools.partial(pools_ready, server, name, namespace)), timeout=WAIT,
               what=f"{namespace}/{name}: NodePoolsReady=True")  # fmt: skip


def gke_pool(fake: FakeGcp, pool: str) -> dict[str, Any]:
    return fake.gke.node_pool(CLUSTER_PATH, pool) or {}


def labels_of(fake: FakeGcp, pool: str) -> dict[str, str]:
    labels: dict[str, str] = gke_pool(fake, pool).get("config", {}).get("resourceLabels", {})
    return labels


def creates(fake: FakeGcp, pool: str) -> int:
    return sum(1 for call in fake.calls("container", "CreateNodePool") if call.body["nodePool"]["name"] == pool)


def deletes(fake: FakeGcp, pool: str) -> int:
    return sum(1 for call in fake.calls("container", "DeleteNodePool") if call.path.endswith(f"/nodePools/{pool}"))


def collector_passes(fake: FakeGcp, since: int, count: int) -> None:
    """At least `count` ListNodePools calls (collector passes of the running installations) since `since`."""
    wait_until(lambda: len(fake.calls("container", "ListNodePools", since=since)) >= count, timeout=WAIT,
               what=f"{count} collector passes")  # fmt: skip


def delete_workload(server: KubeEmulatorServer, name: str, namespace: str) -> None:
    server.delete_object(MLW, "MLWorkload", name, namespace)
    wait_until(lambda: server.get_object(MLW, "MLWorkload", name, namespace) is None, timeout=WAIT,
               what=f"{namespace}/{name} gone (finalizer released)")  # fmt: skip


def test_two_installations_share_a_pool_and_it_is_deleted_once_after_the_last_user_of_both(
    fake: FakeGcp, tmp_path: Path
) -> None:
    """Each installation watches its own namespace and sees only its own workloads; the pool's labels in GKE
    carry who created it and who else uses it, so neither deletes it under the other's workloads."""
    with emulated_cluster("fleet-a", "fleet-b") as server:
        kubeconfig = server.kubeconfig(tmp_path / "config")
        with installation(kubeconfig, fake, "inst-a", "fleet-a"):
            server.put_object(workload("train-a", "fleet-a").gpu_group(capacity="Spot").doc)
            wait_pools_ready(fake, server, "train-a", "fleet-a")  # installation a is up (its settings are read)
            pool = pool_of(server, "train-a", "fleet-a")
            assert labels_of(fake, pool)["mlworkload-installation"] == "inst-a"

            with installation(kubeconfig, fake, "inst-b", "fleet-b"):
                server.put_object(workload("train-b", "fleet-b").gpu_group(capacity="Spot").doc)
                wait_pools_ready(fake, server, "train-b", "fleet-b")
                assert pool_of(server, "train-b", "fleet-b") == pool  # one pool for both
                wait_until(completing(fake, lambda: claim_label("inst-b") in labels_of(fake, pool)), timeout=WAIT,
                           what="installation b's claim on the pool")  # fmt: skip
                assert labels_of(fake, pool)["mlworkload-installation"] == "inst-a"

                # a's last user goes; b's workload still runs there: many collector passes past a's grace.
                delete_workload(server, "train-a", "fleet-a")
                collector_passes(fake, fake.mark(), 20)  # two installations polling: ~3 s, past the 1 s grace
                assert deletes(fake, pool) == 0
                assert gke_pool(fake, pool).get("status") == "RUNNING"

                delete_workload(server, "train-b", "fleet-b")
                wait_until(completing(fake, lambda: not gke_pool(fake, pool)), timeout=WAIT,
                           what="the pool deleted after the last user of both installations")  # fmt: skip
                collector_passes(fake, fake.mark(), 6)
            assert deletes(fake, pool) == 1
            assert creates(fake, pool) == 1


@pytest.mark.parametrize("gke_keeps_the_pool", [False, True], ids=["pool-removed", "pool-degraded"])
def test_a_restart_during_a_stockout_recovers_when_capacity_returns(
    gke_keeps_the_pool: bool, fake: FakeGcp, tmp_path: Path
) -> None:
    """pool-removed: the failed create is remembered in status (attempts, last failure, next attempt) and the
    restarted operator carries the series on; pool-degraded: GKE keeps the pool RUNNING_WITH_ERROR, which is
    ready (not Stalled) before and after the restart and is never deleted to retry."""
    failure = stockout() if gke_keeps_the_pool else dataclasses.replace(stockout(), keep_pool=False)
    fake.gke.fail_operations(failure, times=1000)  # every create fails until capacity returns
    with emulated_cluster("fleet-r") as server:
        kubeconfig = server.kubeconfig(tmp_path / "config")
        with installation(kubeconfig, fake, "inst-r", "fleet-r"):
            server.put_object(workload("stocked", "fleet-r").gpu_group(count=4, capacity="Spot").doc)
            pool = pool_of(server, "stocked", "fleet-r")
            if gke_keeps_the_pool:
                wait_pools_ready(fake, server, "stocked", "fleet-r")
                assert gke_pool(fake, pool)["status"] == "RUNNING_WITH_ERROR"
            else:
                stalled = wait_until(completing(fake, lambda: (c := condition(server, "stocked", "fleet-r", "Stalled"))
                                                .get("reason") == "Stockout" and c),
                                     timeout=WAIT, what="Stalled=True (Stockout)")  # fmt: skip
                assert stalled["status"] == "True"
                recorded = wait_until(lambda: status(server, "stocked", "fleet-r")["nodePools"][0].get("attempts"),
                                      timeout=WAIT, what="the failed attempts in status")  # fmt: skip
                assert recorded >= 1
        # The operator is down; capacity comes back meanwhile.
        fake.gke.clear_queued_failures()
        if gke_keeps_the_pool:
            fake.gke.capacity_returned(CLUSTER_PATH, pool)
        with installation(kubeconfig, fake, "inst-r", "fleet-r"):
            wait_until(completing(fake, lambda: pools_ready(server, "stocked", "fleet-r")
                                  and condition(server, "stocked", "fleet-r", "Stalled").get("status") == "False"
                                  and "degraded" not in condition(server, "stocked", "fleet-r", "NodePoolsReady")
                                  ["message"] and gke_pool(fake, pool).get("status") == "RUNNING"),
                       timeout=WAIT, what="recovered after the restart")  # fmt: skip
            recovered = status(server, "stocked", "fleet-r")["nodePools"][0]
            assert "attempts" not in recovered  # the series is over
    assert deletes(fake, pool) == 0  # never deleted to retry a stockout
    if gke_keeps_the_pool:
        assert creates(fake, pool) == 1
    else:
        assert creates(fake, pool) >= 2  # failed before the restart, succeeded after it
    assert len([p for p in fake.gke.node_pools(CLUSTER_PATH) if p["name"] == pool]) == 1


def test_a_policy_change_after_the_pool_exists_makes_exactly_one_update(fake: FakeGcp, tmp_path: Path) -> None:
    with emulated_cluster("fleet-p") as server:
        server.put_object(permissive_policy("all").set("nodePools.maxNodesPerPool", 6).doc)
        kubeconfig = server.kubeconfig(tmp_path / "config")
        with installation(kubeconfig, fake, "inst-p", "fleet-p"):
            server.put_object(workload("sized", "fleet-p").gpu_group(capacity="Spot").doc)
            wait_pools_ready(fake, server, "sized", "fleet-p")
            pool = pool_of(server, "sized", "fleet-p")
            assert gke_pool(fake, pool)["autoscaling"]["totalMaxNodeCount"] == 6

            mark = fake.mark()
            server.put_object(permissive_policy("all").set("nodePools.maxNodesPerPool", 2).doc)
            wait_until(completing(fake, lambda: gke_pool(fake, pool)["autoscaling"]["totalMaxNodeCount"] == 2),
                       timeout=WAIT, what="the pool at 2 nodes at most")  # fmt: skip
            # Several reconciles later (resyncs every 2 s, GKE polls): still the one update.
            collector_passes(fake, fake.mark(), 15)  # past a resync (2 s) at a pass every 0.3 s
            calls = fake.calls("container", ["SetNodePoolAutoscaling", "UpdateNodePool"], since=mark)
            assert [(call.rpc, call.body["autoscaling"]["totalMaxNodeCount"]) for call in calls] == [
                ("SetNodePoolAutoscaling", 2)
            ]
            assert pools_ready(server, "sized", "fleet-p")
            assert creates(fake, pool) == 1


def test_a_pool_deleted_by_hand_is_noticed_and_comes_back(fake: FakeGcp, tmp_path: Path) -> None:
    with emulated_cluster("fleet-d") as server:
        kubeconfig = server.kubeconfig(tmp_path / "config")
        with installation(kubeconfig, fake, "inst-d", "fleet-d"):
            server.put_object(workload("kept", "fleet-d").gpu_group(capacity="Spot").doc)
            wait_pools_ready(fake, server, "kept", "fleet-d")
            pool = pool_of(server, "kept", "fleet-d")

            fake.gke.delete_node_pool_by_hand(CLUSTER_PATH, pool)  # gcloud container node-pools delete
            fake.gke.complete_operations()
            assert not gke_pool(fake, pool)
            wait_until(completing(fake, lambda: gke_pool(fake, pool).get("status") == "RUNNING"
                                  and pools_ready(server, "kept", "fleet-d")),
                       timeout=WAIT, what="the pool created again")  # fmt: skip
            workload_now = server.get_object(MLW, "MLWorkload", "kept", "fleet-d") or {}
            assert ANNOTATION_RECHECK in workload_now["metadata"].get("annotations", {})  # the collector asked
            assert creates(fake, pool) == 2
            assert deletes(fake, pool) == 0  # the operator deleted nothing itself
