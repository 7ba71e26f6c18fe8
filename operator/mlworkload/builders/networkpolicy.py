"""NetworkPolicies that isolate a workload's Ray pods: one for the head, one per worker group,
one for a job's submitter (so a stale policy for a removed group can be deleted by name).

Each rule opens one flow Ray or the platform needs, and no more (tests/unit/test_network_flows.py
has an independent analyzer judge every flow):

Ingress
- the workload's own pods (Strict) or the namespace's (Namespace), on every port: Ray's head and
  workers talk on many ports (GCS, raylets, object manager, workers), chosen at run time;
- KubeRay's operator to the head's dashboard (8265: job and Serve APIs, `dashboardclient`) and, for
  a RayService, the head's Serve port (8000: `updateHeadPodServeLabel` health-checks the proxy);
- metrics scrapers to Ray's metrics port (8080) on every Ray pod;
- each `allowFrom` peer to its own ports (default: Serve's 8000; the GCS port is refused at admission);
- load balancer ranges to the exposed ports of the pods that serve them.

Egress
- the workload's own pods (or the namespace's);
- DNS (53) only to kube-dns, NodeLocal DNSCache (169.254.20.10) and the metadata server (Cloud DNS);
- the GKE metadata server (Workload Identity) and the Private Google Access VIPs on 443;
- the policy's `allowedEgress`; for the autoscaled head, the control plane's CIDRs on 443.
"""

from typing import Any

from mlworkload.api.meta import PeerPort, Protocol
from mlworkload.api.workload import AllowedPeer, Isolation, WorkloadType
from mlworkload.builders.metadata import Manifest, object_meta, selector_labels
from mlworkload.builders.names import (
    head_network_policy_name,
    submitter_network_policy_name,
    worker_network_policy_name,
)
from mlworkload.constants import LABEL_GROUP, LABEL_ROLE, PORT_DASHBOARD, PORT_METRICS, PORT_SERVE
from mlworkload.policy.resolve import ResolvedWorkload

# The GKE metadata server answers on 169.254.169.254:80 with Dataplane V2 and on
# 169.254.169.252:988 otherwise; Workload Identity tokens come from it.
METADATA_SERVER = (("169.254.169.254/32", 80), ("169.254.169.252/32", 988))
# private.googleapis.com and restricted.googleapis.com (Private Google Access VIPs).
GOOGLE_API_RANGES = ("199.36.153.8/30", "199.36.153.4/30")
# Where pods' DNS queries go on GKE: kube-dns, NodeLocal DNSCache's link-local address, and the
# metadata server when Cloud DNS for GKE answers instead of kube-dns.
KUBE_DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}
DNS_ADDRESSES = ("169.254.20.10/32", "169.254.169.254/32")
DNS_PORT = 53
API_SERVER_PORT = 443
DEFAULT_ALLOW_FROM_PORTS = (PeerPort(port=PORT_SERVE),)

Rule = dict[str, Any]


def _port(port: int, protocol: Protocol = Protocol.TCP) -> dict[str, Any]:
    return {"protocol": protocol.value, "port": port}


def _ip(cidr: str) -> dict[str, Any]:
    return {"ipBlock": {"cidr": cidr}}


def _own_peers(resolved: ResolvedWorkload) -> list[dict[str, Any]]:
    if resolved.isolation is Isolation.NAMESPACE:
        return [{"podSelector": {}}]
    return [{"podSelector": {"matchLabels": selector_labels(resolved)}}]


def allow_from_ports(peer: AllowedPeer) -> tuple[PeerPort, ...]:
    return tuple(peer.ports) or DEFAULT_ALLOW_FROM_PORTS


def _allow_from_rules(resolved: ResolvedWorkload) -> list[Rule]:
    rules = []
    for peer in resolved.workload.spec.network.allow_from:
        shape = peer.to_dict()
        shape.pop("ports", None)
        rules.append({"from": [shape], "ports": [_port(p.port, p.protocol) for p in allow_from_ports(peer)]})
    return rules


def _ingress_rules(resolved: ResolvedWorkload, exposed_ports: list[int], platform: list[Rule]) -> list[Rule]:
    rules: list[Rule] = [{"from": _own_peers(resolved)}, *platform, *_allow_from_rules(resolved)]
    scrapers = [peer.to_dict() for peer in resolved.policy.network.metrics_scrapers]
    if scrapers:
        rules.append({"from": scrapers, "ports": [_port(PORT_METRICS)]})
    ranges = resolved.policy.network.load_balancer_source_ranges
    if exposed_ports and ranges:  # a rule with no peers would let everyone in
        rules.append({"from": [_ip(cidr) for cidr in ranges], "ports": [_port(p) for p in exposed_ports]})
    return rules


def _dns_ports() -> list[dict[str, Any]]:
    return [_port(DNS_PORT, Protocol.UDP), _port(DNS_PORT, Protocol.TCP)]


def _egress_rules(resolved: ResolvedWorkload, reaches_kubernetes_api: bool) -> list[Rule]:
    rules: list[Rule] = [
        {"to": _own_peers(resolved)},
        {"to": [dict(KUBE_DNS_PEER), *(_ip(cidr) for cidr in DNS_ADDRESSES)], "ports": _dns_ports()},
        *({"to": [_ip(cidr)], "ports": [_port(port)]} for cidr, port in METADATA_SERVER),
        {"to": [_ip(cidr) for cidr in GOOGLE_API_RANGES], "ports": [_port(443)]},
    ]
    allowed = [peer.to_dict() for peer in resolved.policy.network.allowed_egress]
    if allowed:
        rules.append({"to": allowed})
    if reaches_kubernetes_api and resolved.api_server_cidrs:
        # The autoscaler reaches the API through the `kubernetes` Service; policies see the
        # control plane's own address after the Service's DNAT, so that is what is allowed.
        rules.append({"to": [_ip(cidr) for cidr in resolved.api_server_cidrs], "ports": [_port(API_SERVER_PORT)]})
    return rules


def _kuberay_rule(resolved: ResolvedWorkload) -> Rule:
    ports = [_port(PORT_DASHBOARD)]
    if resolved.type is WorkloadType.SERVICE:
        ports.append(_port(PORT_SERVE))
    return {"from": [resolved.kuberay_operator.to_dict()], "ports": ports}


def _network_policy(
    resolved: ResolvedWorkload, name: str, pod_labels: dict[str, str], ingress: list[Rule], egress: list[Rule]
) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(resolved, name),
        "spec": {
            "podSelector": {"matchLabels": {**selector_labels(resolved), **pod_labels}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": egress,
        },
    }


def build_network_policies(resolved: ResolvedWorkload) -> list[Manifest]:
    """The workload's NetworkPolicies; none when isolation is None."""
    if resolved.isolation is Isolation.NONE:
        return []
    serve_on_workers = resolved.serve is not None and resolved.type is WorkloadType.SERVICE
    head_ports = [port for port, endpoint in ((PORT_DASHBOARD, resolved.dashboard), (PORT_SERVE, resolved.serve))
                  if endpoint is not None]  # fmt: skip
    autoscaler = resolved.workload.spec.autoscaling.enabled
    policies = [
        _network_policy(
            resolved,
            head_network_policy_name(resolved),
            {LABEL_ROLE: "head"},
            _ingress_rules(resolved, head_ports, [_kuberay_rule(resolved)]),
            _egress_rules(resolved, reaches_kubernetes_api=autoscaler),
        )
    ]
    for group in resolved.groups:
        policies.append(
            _network_policy(
                resolved,
                worker_network_policy_name(resolved, group.name),
                {LABEL_ROLE: "worker", LABEL_GROUP: group.name},
                _ingress_rules(resolved, [PORT_SERVE] if serve_on_workers else [], []),
                _egress_rules(resolved, reaches_kubernetes_api=False),
            )
        )
    if resolved.type is WorkloadType.JOB:
        policies.append(
            _network_policy(
                resolved,
                submitter_network_policy_name(resolved),
                {LABEL_ROLE: "submitter"},
                [],  # nothing connects to the submitter
                _egress_rules(resolved, reaches_kubernetes_api=False),
            )
        )
    return policies
