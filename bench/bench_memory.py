"""Memory the operator keeps per workload, measured with tracemalloc for N synthetic workloads.

    python bench/bench_memory.py [--workloads 1000] [--top 5]

Three long-lived consumers are filled the way the running operator fills them, one workload at a
time, dropping everything else (bodies, parsed models) before measuring what each keeps:

  indexes      kopf's three indexes (policies, namespaces, GPUs per workload), filled by the
               operator's own indexing functions through kopf's Index, plus whatever the
               cluster view keeps beside them (per-namespace GPU sums)
  inventory    metrics.WorkloadInventory after one `record` per workload
  dry-run      the dry-run GCP provisioner after one `ensure` per workload

For each it prints the bytes retained in total and per workload, and tracemalloc's top allocators
(by line) of what is retained. The mix is the scale benchmark's (60 % Cluster, 30 % Job, 10 %
Service, over 10 namespaces). Nothing is asserted: the figures depend on the Python build.
"""

import argparse
import asyncio
import gc
import inspect
import platform
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.support.documents (the package itself is installed)

from kopf._core.engines.indexing import Index  # noqa: E402
from tests.support.documents import WorkloadDoc, permissive_policy, workload  # noqa: E402

from mlworkload.builders import build_gcp_plan  # noqa: E402
from mlworkload.gcp.provisioner import NOTHING_RECORDED, DryRunProvisioner  # noqa: E402
from mlworkload.metrics import WorkloadInventory  # noqa: E402
from mlworkload.policy import admit  # noqa: E402

NAMESPACES = 10
PHASES = ("Provisioning", "Running", "Running", "Ready")


def synthetic(index: int) -> WorkloadDoc:
    """The index-th workload of the mix: 60 % Cluster, 30 % Job, 10 % Service; GPUs on every other one."""
    namespace = f"team-{index % NAMESPACES}"
    kind = index % 10
    doc = workload(f"w{index:05d}", namespace)
    if 6 <= kind < 9:
        doc = workload(f"w{index:05d}", namespace).job()
    elif kind == 9:
        doc = workload(f"w{index:05d}", namespace).service()
    doc.group("cpu", replicas=1, maxReplicas=4)
    if index % 2 == 0:
        doc.gpu_group("gpu", count=(1, 2, 4)[index % 3], replicas=0, maxReplicas=2, capacity="Spot")
    return doc


def body_of(doc: WorkloadDoc, index: int) -> dict[str, Any]:
    """The body kopf would hand the indexing function, with server-set metadata and a status."""
    body = dict(doc.doc)
    body["metadata"] = {**doc.doc["metadata"], "uid": f"uid-{index}", "resourceVersion": str(1000 + index)}
    body["status"] = {
        "phase": PHASES[index % len(PHASES)],
        "conditions": [{"type": "PolicyAdmitted", "status": "True"}],
    }
    return body


def call(function: Callable[..., Any], **kwargs: Any) -> Any:
    """An indexing function, sync or async, as kopf invokes either."""
    result = function(**kwargs)
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def fill_indexes(count: int) -> object:
    from mlworkload.controller import handlers  # noqa: PLC0415 (not at import: see the suite's note)

    indexes = {"policy_index": Index[Any, Any](), "namespace_index": Index[Any, Any](), "gpu_index": Index[Any, Any]()}
    policy_body = {**permissive_policy().doc, "metadata": {"name": "permissive", "uid": "p", "resourceVersion": "1"}}
    indexes["policy_index"]._replace(
        (None, "permissive", "p"), call(handlers.policy_index, name="permissive", body=policy_body, **indexes)
    )
    for number in range(NAMESPACES):
        name = f"team-{number}"
        labels = {"kubernetes.io/metadata.name": name, "team": name}
        indexes["namespace_index"]._replace((None, name, name), call(handlers.namespace_index, name=name,
                                                                      labels=labels, **indexes))  # fmt: skip
    for index in range(count):
        body = body_of(synthetic(index), index)
        meta = body["metadata"]
        value = call(handlers.gpu_index, namespace=meta["namespace"], name=meta["name"], body=body, **indexes)
        indexes["gpu_index"]._replace((meta["namespace"], meta["name"], meta["uid"]), value)
    # What a reconcile builds from them; whatever the view keeps beside kopf's indexes is measured too.
    handlers.cluster_view(indexes)
    return indexes


def fill_inventory(count: int) -> object:
    inventory = WorkloadInventory()
    policies = [permissive_policy().obj()]
    for index in range(count):
        verdict = admit(synthetic(index).obj(), policies, None)
        inventory.record(verdict.resolved, PHASES[index % len(PHASES)])
    return inventory


def fill_dry_run(count: int) -> object:
    provisioner = DryRunProvisioner()
    policies = [permissive_policy().obj()]

    async def ensure_all() -> None:
        for index in range(count):
            resolved = admit(synthetic(index).obj(), policies, None).resolved
            await provisioner.ensure(
                f"{resolved.namespace}/{resolved.name}", build_gcp_plan(resolved), NOTHING_RECORDED
            )

    asyncio.run(ensure_all())
    return provisioner


def retained(fill: Callable[[int], object], count: int, top: int) -> tuple[int, list[str]]:
    """Bytes still allocated once `fill` returned (what the consumer keeps), and the top allocators of them."""
    fill(20)  # warm-up: imports, pydantic's and the machine catalogue's caches are not per-workload costs
    gc.collect()
    tracemalloc.start(10)
    try:
        before = tracemalloc.take_snapshot()
        kept = fill(count)
        gc.collect()
        after = tracemalloc.take_snapshot()
        size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        lines = [
            f"      {stat.size_diff / 1024:9.1f} KiB  {stat.count_diff:7d} blocks  {stat.traceback[0]}"
            for stat in after.compare_to(before, "lineno")[:top]
        ]
    finally:
        tracemalloc.stop()
    del kept
    return size, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", type=int, default=1000)
    parser.add_argument("--top", type=int, default=5, help="top allocators to show per consumer")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}; {args.workloads} workloads")
    for label, fill in (("indexes", fill_indexes), ("inventory", fill_inventory), ("dry-run", fill_dry_run)):
        size, lines = retained(fill, args.workloads, args.top)
        print(f"{label:10} {size / 1024:9.1f} KiB retained, {size / args.workloads:8.0f} B per workload")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
