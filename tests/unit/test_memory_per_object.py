"""What long-lived consumers keep per workload (issue 12): labels and counts, digests, never models."""

import gc
import logging
from typing import Any

import pydantic
import pytest

from mlworkload.builders import build_gcp_plan
from mlworkload.gcp.provisioner import NOTHING_RECORDED, DryRunProvisioner
from mlworkload.metrics import WorkloadInventory
from mlworkload.policy import ResolvedWorkload
from tests.support.documents import WorkloadDoc, permissive_policy, resolved, workload


def models_reachable_from(root: object) -> list[str]:
    """Names of the pydantic models and resolved workloads reachable from `root` through containers and
    instances, not through classes, modules or functions (which reach everything)."""
    found: list[str] = []
    seen: set[int] = set()
    stack = [root]
    while stack:
        current = stack.pop()
        if id(current) in seen or isinstance(current, type | type(gc) | type(models_reachable_from)):
            continue
        seen.add(id(current))
        if isinstance(current, pydantic.BaseModel | ResolvedWorkload):
            found.append(type(current).__name__)
            continue
        stack.extend(gc.get_referents(current))
    return found


def resolved_doc(doc: WorkloadDoc) -> ResolvedWorkload:
    return resolved(doc, permissive_policy())


def samples(inventory: WorkloadInventory) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in inventory.collect()
        for sample in family.samples
    }


def test_the_inventory_exports_types_phases_and_gpus_and_keeps_no_model() -> None:
    inventory = WorkloadInventory()
    two_groups = (
        workload("a", "ns-1")
        .gpu_group("g1", count=2, replicas=0, maxReplicas=2, capacity="Spot")
        .gpu_group("g2", count=1, replicas=0, maxReplicas=3, capacity="Spot")
    )
    inventory.record(resolved_doc(two_groups), "Running")
    inventory.record(resolved_doc(workload("b", "ns-1").job().group("cpu")), "Running")
    inventory.record(resolved_doc(workload("c", "ns-2").gpu_group(count=4, capacity="OnDemand")), "Provisioning")
    inventory.record(resolved_doc(workload("d", "ns-2").gpu_group(count=4, capacity="OnDemand")), "Provisioning")
    inventory.forget("ns-2", "d")
    assert models_reachable_from(inventory) == []
    assert samples(inventory) == {
        ("mlworkload_workloads", (("phase", "Provisioning"), ("type", "Cluster"))): 1,
        ("mlworkload_workloads", (("phase", "Running"), ("type", "Cluster"))): 1,
        ("mlworkload_workloads", (("phase", "Running"), ("type", "Job"))): 1,
        (
            "mlworkload_gpus_requested",
            (("accelerator", "nvidia-l4"), ("capacity", "Spot"), ("namespace", "ns-1")),
        ): 2 * 2 + 1 * 3,
        (
            "mlworkload_gpus_requested",
            (("accelerator", "nvidia-l4"), ("capacity", "OnDemand"), ("namespace", "ns-2")),
        ): 4,
    }


def test_recording_again_replaces_the_workloads_entry() -> None:
    inventory = WorkloadInventory()
    inventory.record(resolved_doc(workload("a").gpu_group(count=1)), "Provisioning")
    inventory.record(resolved_doc(workload("a").gpu_group(count=2)), "Running")
    found = samples(inventory)
    assert found[("mlworkload_workloads", (("phase", "Running"), ("type", "Cluster")))] == 1
    assert ("mlworkload_workloads", (("phase", "Provisioning"), ("type", "Cluster"))) not in found
    assert [value for (name, _), value in found.items() if name == "mlworkload_gpus_requested"] == [2]


async def test_the_dry_run_logs_each_plan_once_per_change_and_keeps_no_plan(caplog: pytest.LogCaptureFixture) -> None:
    provisioner = DryRunProvisioner()
    small = build_gcp_plan(resolved_doc(workload("a").gpu_group(count=1, capacity="Spot")))
    large = build_gcp_plan(resolved_doc(workload("a").gpu_group(count=4, capacity="Spot")))
    caplog.set_level(logging.INFO, logger="mlworkload.gcp.provisioner")
    states: list[Any] = []
    for plan in (small, small, large, large, small):
        states.append(await provisioner.ensure("ns/a", plan, NOTHING_RECORDED))
    await provisioner.release("ns/a", NOTHING_RECORDED)
    await provisioner.release("ns/a", NOTHING_RECORDED)  # released already: nothing to say
    messages = [record.getMessage().split(":")[0] for record in caplog.records]
    assert messages == ["dry-run GCP plan for ns/a"] * 3 + ["dry-run GCP release for ns/a"]
    assert [[pool.name for pool in state.pools] for state in states[1:3]] == [
        [pool.name for pool in small.node_pools],
        [pool.name for pool in large.node_pools],
    ]
    await provisioner.ensure("ns/b", large, NOTHING_RECORDED)
    assert models_reachable_from(provisioner) == []
