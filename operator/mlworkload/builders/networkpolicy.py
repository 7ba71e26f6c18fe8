"""NetworkPolicies that isolate a workload's Ray pods: one for the head, one per worker group,
one for a job's submitter (so a stale policy for a removed group can be deleted by name).

Ingress: the workload's own pods (Strict) or the namespace (Namespace), the user's allowFrom
peers, and load balancer ranges on exposed ports. Egress: the same peers, DNS, the GKE metadata
server (Workload Identity), Google API VIPs, and the policy's allowedEgress.
"""

from typing import Any

from mlworkload.api.workload import Isolation, WorkloadType
from mlworkload.builders.metadata import Manifest, object_meta, selector_labels
from mlworkload.builders.names import (
    head_network_policy_name,
    submitter_network_policy_name,
    worker_network_policy_name,
)
from mlworkload.constants import LABEL_GROUP, LABEL_ROLE, PORT_DASHBOARD, PORT_SERVE
from mlworkload.policy.resolve import ResolvedWorkload

# The GKE metadata server answers on 169.254.169.254:80 with Dataplane V2 and on
# 169.254.169.252:988 otherwise; Workload Identity tokens come from it.
_METADATA_SERVER = (("169.254.169.254/32", 80), ("169.254.169.252/32", 988))
# private.googleapis.com and restricted.googleapis.com (Private Google Access VIPs).
GOOGLE_API_RANGES = ("199.36.153.8/30", "199.36.153.4/30")

Rule = dict[str, Any]


def _tcp(port: int) -> dict[str, Any]:
    return {"protocol": "TCP", "port": port}


def _own_peers(resolved: ResolvedWorkload) -> list[dict[str, Any]]:
    if resolved.isolation is Isolation.NAMESPACE:
        return [{"podSelector": {}}]
    return [{"podSelector": {"matchLabels": selector_labels(resolved)}}]


def _ingress_rules(resolved: ResolvedWorkload, exposed_ports: list[int]) -> list[Rule]:
    peers = _own_peers(resolved) + [peer.to_dict() for peer in resolved.workload.spec.network.allow_from]
    rules: list[Rule] = [{"from": peers}]
    if exposed_ports:
        ranges = resolved.policy.network.load_balancer_source_ranges
        rules.append(
            {
                "from": [{"ipBlock": {"cidr": cidr}} for cidr in ranges],
                "ports": [_tcp(p) for p in exposed_ports],
            }
        )
    return rules


def _egress_rules(resolved: ResolvedWorkload, reaches_kubernetes_api: bool) -> list[Rule]:
    rules: list[Rule] = [
        {"to": _own_peers(resolved)},
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        *({"to": [{"ipBlock": {"cidr": cidr}}], "ports": [_tcp(port)]} for cidr, port in _METADATA_SERVER),
        {"to": [{"ipBlock": {"cidr": cidr}} for cidr in GOOGLE_API_RANGES], "ports": [_tcp(443)]},
    ]
    allowed = [peer.to_dict() for peer in resolved.policy.network.allowed_egress]
    if allowed:
        rules.append({"to": allowed})
    if reaches_kubernetes_api:
        # The autoscaler talks to the control plane, whose address a policy cannot know in advance.
        rules.append({"ports": [_tcp(443)]})
    return rules


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
            _ingress_rules(resolved, head_ports),
            _egress_rules(resolved, reaches_kubernetes_api=autoscaler),
        )
    ]
    for group in resolved.groups:
        policies.append(
            _network_policy(
                resolved,
                worker_network_policy_name(resolved, group.name),
                {LABEL_ROLE: "worker", LABEL_GROUP: group.name},
                _ingress_rules(resolved, [PORT_SERVE] if serve_on_workers else []),
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
