"""Whether a GKE cluster enforces Kubernetes NetworkPolicies, read from the cluster itself.

A NetworkPolicy on a cluster that does not enforce it is accepted by the API server and does
nothing, so the operator asks GKE instead of trusting that the object exists. GKE enforces them in
two ways, both visible in `projects.locations.clusters.get`:

- GKE Dataplane V2: `networkConfig.datapathProvider` is `ADVANCED_DATAPATH` ("Use the eBPF based GKE
  Dataplane V2", https://cloud.google.com/kubernetes-engine/docs/reference/rest/v1/DatapathProvider), and
  "Network policy enforcement is built into GKE Dataplane V2. You do not need to enable network policy
  enforcement in clusters that use GKE Dataplane V2." (GKE docs, quoted in bridgecrewio/checkov#6357). Such
  a cluster has `networkPolicy.enabled` false: Terraform modules pass `enabled = false` with
  `ADVANCED_DATAPATH` because `true` conflicts with it (terraform-google-kubernetes-engine#1085,
  GoogleCloudPlatform/cloud-foundation-fabric#256).
- The legacy datapath with Calico: `networkPolicy.enabled` ("Whether network policy is enabled on the
  cluster", provider `CALICO`) *and* the NetworkPolicy add-on, `addonsConfig.networkPolicyConfig.disabled`
  false. The add-on "only tracks whether the addon is enabled or not on the Master, it does not track
  whether network policy is enabled for the nodes" (NetworkPolicyConfig reference), and enabling
  enforcement on an existing cluster is two steps, add-on first (CIS GKE benchmark: "needs to be added
  prior to enabling Network Policy"), so a cluster between the two steps does not enforce yet. The same
  two conditions are google/gke-policy-automation's rule for Dataplane V1 (#39).

A cluster migrating between datapaths (`MIGRATE_TO_*` in the REST reference, not yet in google-cloud-container
2.67's enum) has nodes of both kinds, so it counts as enforcing only through Calico. The answer is cached per
cluster: a cluster's datapath is chosen at creation and Calico takes a rolling update of every node to turn
on, so an hour-old answer is as good as a fresh one.
"""

import asyncio
import time
from collections.abc import Callable
from typing import Final, Protocol

from google.cloud import container_v1

from mlworkload.gcp import clients
from mlworkload.gcp.errors import classify
from mlworkload.metrics import GCP_API_ERRORS
from mlworkload.settings import OperatorSettings

NETWORK_POLICY_TTL_SECONDS: Final = 3600.0


class ClusterInspector(Protocol):
    async def network_policies_enforced(self, cluster_path: str) -> bool:
        """True when the cluster (projects/P/locations/L/clusters/C) enforces NetworkPolicies; raises GcpError."""
        ...


def enforces_network_policies(cluster: container_v1.Cluster) -> bool:
    """Dataplane V2, or Calico switched on for the nodes with its add-on enabled."""
    if cluster.network_config.datapath_provider == container_v1.DatapathProvider.ADVANCED_DATAPATH:
        return True
    return cluster.network_policy.enabled and not cluster.addons_config.network_policy_config.disabled


class GkeClusterInspector:
    """`ClusterInspector` over google-cloud-container (REST), one GetCluster per cluster per `ttl_seconds`.

    Concurrent callers for one cluster share one read: every workload asks at start-up, and a cold cache
    must not cost a GetCluster each.
    """

    def __init__(
        self, client: container_v1.ClusterManagerClient, *, ttl_seconds: float, clock: Callable[[], float]
    ) -> None:
        self._client = client
        self._ttl_seconds = ttl_seconds
        self._clock = clock
        self._known: dict[str, tuple[float, bool]] = {}  # cluster path -> (read at, enforced)
        self._locks: dict[str, asyncio.Lock] = {}

    def _cached(self, cluster_path: str) -> bool | None:
        read_at, enforced = self._known.get(cluster_path, (float("-inf"), False))
        return enforced if self._clock() - read_at < self._ttl_seconds else None

    def _get_cluster(self, cluster_path: str) -> container_v1.Cluster:
        try:
            return self._client.get_cluster(name=cluster_path)
        except Exception as error:  # every client failure leaves as a classified GcpError
            failure = classify(error)
            GCP_API_ERRORS.labels(api="container", reason=failure.kind.value).inc()
            raise failure from error

    async def network_policies_enforced(self, cluster_path: str) -> bool:
        async with self._locks.setdefault(cluster_path, asyncio.Lock()):
            cached = self._cached(cluster_path)
            if cached is not None:
                return cached
            cluster = await asyncio.to_thread(self._get_cluster, cluster_path)  # a failure is not cached
            enforced = enforces_network_policies(cluster)
            self._known[cluster_path] = (self._clock(), enforced)
            return enforced


def connect_inspector(config: OperatorSettings) -> GkeClusterInspector:
    """The inspector on the same GKE client settings as the node pools (`MLW_GKE_ENDPOINT`)."""
    return GkeClusterInspector(
        clients.gke_client(config.gke_endpoint), ttl_seconds=NETWORK_POLICY_TTL_SECONDS, clock=time.monotonic
    )
