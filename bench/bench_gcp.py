"""GCP API calls and time per reconcile pass, for N workloads of one shape, against the local fake GCP.

    python bench/bench_gcp.py [--workloads 20 100]

The live provisioner (the production adapters and real Google client libraries) ensures N workloads
that all need the same GPU pool and the same bucket binding, concurrently, in three passes:
  create   first sight: the pool is created; each binding is read, and the absent ones are recorded in
           status as the operator's (the intent) without being granted yet
  running  after the operation finished: every workload sees the pool Running; the recorded bindings
           are granted (N workloads of one GSA: about two read-modify-writes of its policy)
  steady   the next pass (as a resync would): what an unchanged workload costs GCP
Each row prints the wall time of the pass, the calls by RPC, and calls per workload; the last line the
IAM calls (getIamPolicy and setIamPolicy, all APIs) of the three passes. The fake answers on loopback,
so times are the operator's and the client libraries' overhead, not GCP's. Nothing is asserted; the test
suite checks the counts that matter (one create per shape, a few writes per shared policy).
"""

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.gcp import FakeGcp

from mlworkload.gcp import clients
from mlworkload.gcp.iam import BindingManager, BucketPolicies, RoutedPolicies, ServiceAccountPolicies
from mlworkload.gcp.iap import IapPolicies
from mlworkload.gcp.live import IAM_VERIFY_SECONDS, LiveProvisioner
from mlworkload.gcp.nodepools import GkeNodePools
from mlworkload.gcp.plan import AcceleratorPlan, GcpPlan, IamBinding, NodePoolPlan
from mlworkload.gcp.pools import PoolCoordinator
from mlworkload.gcp.provisioner import GcpState, Recorded
from mlworkload.gcp.retry import Backoff

PROJECT, LOCATION, CLUSTER = "my-proj", "us-central1", "ml"
GSA = f"ray@{PROJECT}.iam.gserviceaccount.com"
POLL_SECONDS = 5.0  # as a deployment might set MLW_GCP_POLL_SECONDS


def plan(owner: int) -> GcpPlan:
    pool = NodePoolPlan(name="mlw-l4x1-spot", project=PROJECT, location=LOCATION, cluster=CLUSTER,
                        machine_type="g2-standard-8", accelerator=AcceleratorPlan(type="nvidia-l4", count=1),
                        spot=True, max_nodes=10, labels={"managed-by": "mlworkload"})  # fmt: skip
    member = f"serviceAccount:{PROJECT}.svc.id.goog[team/w{owner}]"
    return GcpPlan(
        node_pools=[pool],
        iam_bindings=[
            IamBinding(
                resource=f"projects/{PROJECT}/serviceAccounts/{GSA}",
                role="roles/iam.workloadIdentityUser",
                member=member,
            ),
            IamBinding(
                resource="projects/_/buckets/ckpt", role="roles/storage.objectUser", member=f"serviceAccount:{GSA}"
            ),
        ],
    )


def provisioner(fake: FakeGcp, clock: list[float]) -> LiveProvisioner:
    backoff = Backoff(POLL_SECONDS, 600, lambda: clock[0])
    pools = PoolCoordinator(GkeNodePools(clients.gke_client(fake.endpoint)), backoff=backoff,
                            poll_seconds=POLL_SECONDS, installation="bench")  # fmt: skip
    policies = RoutedPolicies(ServiceAccountPolicies(clients.iam_client(f"http://{fake.grpc_target}")),
                              BucketPolicies(clients.storage_client(fake.endpoint, PROJECT)),
                              IapPolicies(clients.iap_client(fake.endpoint)))  # fmt: skip

    async def no_claims() -> dict[str, Recorded]:
        return {}

    return LiveProvisioner(pools, BindingManager(policies, backoff=backoff, verify_seconds=IAM_VERIFY_SECONDS),
                           no_claims, grace_seconds=600)  # fmt: skip


async def one_pass(live: LiveProvisioner, workloads: int, recorded: list[Recorded]) -> list[GcpState]:
    return list(await asyncio.gather(*(live.ensure(f"team/w{i}", plan(i), recorded[i]) for i in range(workloads))))


IAM_RPCS = ("GetIamPolicy", "SetIamPolicy")


def report(label: str, fake: FakeGcp, mark: int, seconds: float, workloads: int) -> None:
    calls = Counter(call.rpc for call in fake.calls(since=mark) if call.rpc != "GetBucket")
    total = sum(calls.values())
    listing = ", ".join(f"{rpc} {count}" for rpc, count in sorted(calls.items())) or "none"
    print(f"  {label:<8} {seconds * 1000:8.1f} ms   {total / workloads:5.2f} calls/workload   {listing}")


def iam_calls(fake: FakeGcp, since: int) -> str:
    calls = Counter(f"{call.service}.{call.rpc}" for call in fake.calls(None, list(IAM_RPCS), since))
    return f"{sum(calls.values())} ({', '.join(f'{rpc} {count}' for rpc, count in sorted(calls.items()))})"


async def run(workloads: int) -> None:
    with FakeGcp() as fake:
        fake.gke.add_cluster(PROJECT, LOCATION, CLUSTER)
        fake.iam.add_service_account(GSA)
        fake.storage.add_bucket("ckpt", PROJECT)
        clock = [0.0]  # the provisioner's clock: a pass "later" without waiting for it
        live = provisioner(fake, clock)
        recorded = [Recorded()] * workloads
        print(f"{workloads} workloads of one shape, one bucket:")
        first = fake.mark()
        for label in ("create", "running", "steady"):
            mark, started = fake.mark(), time.perf_counter()
            states = await one_pass(live, workloads, recorded)
            report(label, fake, mark, time.perf_counter() - started, workloads)
            recorded = [Recorded(tuple(s.pools), tuple(s.bindings)) for s in states]
            fake.gke.complete_operations()
            clock[0] += POLL_SECONDS  # the next pass comes one poll interval later, as the timer runs it
        states_seen = {pool.state for state in states for pool in state.pools}
        print(f"  pool states after the last pass: {sorted(states_seen)}")
        print(f"  identity after the last pass: {sorted({state.identity.reason for state in states})}")
        print(f"  IAM calls over the three passes: {iam_calls(fake, first)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", type=int, nargs="+", default=[20, 100])
    for workloads in parser.parse_args().workloads:
        asyncio.run(run(workloads))


if __name__ == "__main__":
    main()
