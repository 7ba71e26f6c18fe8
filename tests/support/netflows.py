"""An independent judge of the operator's NetworkPolicies: a model of the cluster, a table of flows, and nca.

The unit tests of the builders check the NetworkPolicies field by field, which proves they are what the
author meant, not that they mean what the contract says. This harness asks a different question: in a
world of pods labelled as they really are at run time, which connections do the rendered policies let
through? The answer comes from IBM's network-config-analyzer (`nca`, PyPI `network-config-analyzer`), a
static analyser that implements NetworkPolicy semantics on its own, so that the operator's reading of the
API and the judge's reading can disagree.

What is modelled (`world`):

* The workload's Ray pods, with the labels of the pod templates the operator renders plus what KubeRay
  (v1.7, `labelPod` in ray-operator/controllers/ray/common) and the Job controller add when they create
  the pods: `ray.io/is-ray-node`, `ray.io/cluster` (`<job>-<random>` for a RayJob,
  `<service>-raycluster-<random>` for a RayService), `ray.io/node-type`, `ray.io/group` (`headgroup` for
  the head), `ray.io/identifier`, `app.kubernetes.io/name: kuberay`, `app.kubernetes.io/created-by`,
  `ray.io/serve: "true"` on a RayService's serving pods, `job-name` on the submitter. KubeRay adds the
  `metrics` container port (8080) too, so named ports resolve as on a cluster.
* Two CPU workers of one group (nca keeps at most two pods with the same labels) and one GPU worker, so
  worker-to-worker traffic is checked inside a group and across groups.
* The neighbour pod in the workload's namespace, KubeRay's operator, a metrics collector, another team's
  pod, kube-dns and a gateway, each in its own namespace with the `kubernetes.io/metadata.name` label the
  API server sets.
* Addresses outside the cluster as ipBlocks: Google's load balancer ranges, the internet, the GKE
  metadata server, NodeLocal DNSCache, the Private Google Access VIPs, the control plane's endpoint and
  the policy's allowedEgress range.

What is asked (`FLOWS`): one table, each row a source, a destination, ports, and whether the contract
(shared/design/api.md) requires the connection or forbids it, with a condition on the scenario. Pods are
named there by KubeRay's labels and all of their namespace's labels, never by the operator's own labels,
so a wrong operator label makes a required flow fail instead of silently matching. `flows` expands the table for
one scenario and checks, with the harness's own label-selector matcher, that each side selects exactly
the modelled pods it is meant to: a flow can never be vacuous by a typo in the table.

How nca is asked (`judge`): every flow becomes a NetworkPolicy of its own (the "spec"; an ingress policy
on the destination when it is in the workload's namespace, else an egress policy on the source) in a
network config of its own. `nca --scheme scheme-N.yaml` then runs once per CPU (at most 4, in parallel),
each process taking a share of the scenarios and answering, per flow:

* `permits: [rendered, spec]` for a required flow: every connection of the spec is allowed by the
  rendered policies (source egress and destination ingress both);
* `forbids: [rendered, spec]` for a forbidden flow: no connection of the spec is allowed;
* the same query against a control config, deny-all for a required flow and allow-all for a forbidden
  one, where the answer must be the opposite: this proves nca reads every spec as a non-empty set of
  connections, so no flow passes for a reason that has nothing to do with the operator.

Each query writes its answer as JSON (`outputConfiguration.outputPath`), read back into a `Verdict`.
(Picking one policy out of a shared config, `config/namespace/policy`, does not work for permits and
forbids in nca 2.1.0: they rebuild the picked config from an empty parse queue and report "no
NetworkPolicies". Hence one config per flow.)

What nca cannot show, and how it is handled:

* No nodes, host network or Services: NodeLocal DNSCache and the metadata server (node-local, answered on
  the node) are plain ipBlocks, as the policies name them; the autoscaler's way to the API server (the
  `kubernetes` Service, DNAT to the control plane) is modelled as its post-DNAT address, which is what
  Dataplane V2 matches. Kubelet probes (always allowed) are not modelled.
* Pods and ipBlocks are disjoint: an ipBlock never selects a pod. That is Dataplane V2's (Cilium's)
  behaviour; on Calico a broad ipBlock would also admit pod IPs inside it, which the model cannot show.
  "internet" is therefore 0.0.0.0/0 minus the private, link-local and Google VIP ranges, a set of
  addresses only, and the 8.8.8.8 rows name one public address explicitly.
* Named ports, UDP, SCTP, endPort and `ipBlock.except` are supported by nca 2.1.0 and used as such; named
  ports resolve against the modelled containers' ports (the rendered ones plus KubeRay's `metrics`).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import yaml

from mlworkload.api.load import parse_policy, parse_workload
from mlworkload.builders import build_objects
from mlworkload.policy import admit
from tests.support.helm import CACHE

Manifest = dict[str, Any]

NAMESPACE: Final = "team-a"
WORKLOAD: Final = "demo"
NAME_LABEL: Final = "kubernetes.io/metadata.name"

# The model's fixed "random" suffixes: KubeRay names a RayJob's cluster `<job>-<random>` and a RayService's
# `<service>-raycluster-<random>`.
JOB_CLUSTER: Final = f"{WORKLOAD}-x7k2p"
SERVICE_CLUSTER: Final = f"{WORKLOAD}-raycluster-q8z5w"

# Addresses outside the cluster.
LB_RANGES: Final = ("35.191.0.0/16", "130.211.0.0/22")
GOOGLE_API_VIPS: Final = ("199.36.153.8/30", "199.36.153.4/30")
METADATA_SERVER: Final = "169.254.169.254/32"
METADATA_SERVER_ALT: Final = "169.254.169.252/32"
NODELOCAL_DNS: Final = "169.254.20.10/32"
API_SERVER: Final = "172.16.0.2/32"
ALLOWED_EGRESS: Final = "10.20.0.0/16"
PUBLIC_DNS: Final = "8.8.8.8/32"
# The internet: everything but private, link-local and the Private Google Access ranges. The control plane
# endpoint and allowedEgress are private ranges; the load balancer ranges stay in (nothing may reach them).
NOT_INTERNET: Final = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", *GOOGLE_API_VIPS)

NAMESPACES: Final[Mapping[str, Mapping[str, str]]] = {
    NAMESPACE: {NAME_LABEL: NAMESPACE, "team": "a"},
    "team-b": {NAME_LABEL: "team-b", "team": "b"},
    "kuberay-system": {NAME_LABEL: "kuberay-system"},
    "gmp-system": {NAME_LABEL: "gmp-system"},
    "kube-system": {NAME_LABEL: "kube-system"},
    "gateway": {NAME_LABEL: "gateway"},
}


# --- scenarios: the workload and its policy, as documents --------------------------------------------------


class WorkloadType(StrEnum):
    CLUSTER = "Cluster"
    JOB = "Job"
    SERVICE = "Service"


class Isolation(StrEnum):
    STRICT = "Strict"
    NAMESPACE = "Namespace"


GATEWAY_PEER: Final = {"namespaceSelector": {"matchLabels": {NAME_LABEL: "gateway"}}}
SCRAPER_PEER: Final = {
    "namespaceSelector": {"matchLabels": {NAME_LABEL: "gmp-system"}},
    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "collector"}},
}


@dataclass(frozen=True, slots=True)
class Scenario:
    """One workload under one policy. `exposed`: the dashboard (Internal, IAP) and serve (External) are
    published and the gateway namespace is an allowFrom peer on 8000; the exposed scenarios also autoscale,
    so that each type is judged with and without a head that reaches the Kubernetes API."""

    type: WorkloadType
    isolation: Isolation
    exposed: bool

    @property
    def id(self) -> str:
        return f"{self.type.lower()}-{self.isolation.lower()}-{'exposed' if self.exposed else 'none'}"

    @property
    def autoscaled(self) -> bool:
        return self.exposed

    @property
    def dashboard_exposed(self) -> bool:
        return self.exposed

    @property
    def serve_exposed(self) -> bool:
        return self.exposed

    @property
    def allow_from_gateway(self) -> bool:
        return self.exposed

    @property
    def cluster_name(self) -> str:
        return {WorkloadType.CLUSTER: WORKLOAD, WorkloadType.JOB: JOB_CLUSTER,
                WorkloadType.SERVICE: SERVICE_CLUSTER}[self.type]  # fmt: skip

    def workload_document(self) -> Manifest:
        spec: Manifest = {
            "type": self.type.value,
            "ray": {"version": "2.41.0"},
            "workerGroups": [
                {"name": "cpu", "replicas": 2, "minReplicas": 0, "maxReplicas": 4},
                {
                    "name": "gpu",
                    "replicas": 1,
                    "minReplicas": 0,
                    "maxReplicas": 2,
                    "accelerator": {"type": "nvidia-l4", "count": 1},
                },
            ],
            "autoscaling": {"enabled": self.autoscaled},
            "network": {"isolation": self.isolation.value},
        }
        if self.type is WorkloadType.JOB:
            spec["job"] = {"entrypoint": "python train.py"}
        if self.type is WorkloadType.SERVICE:
            spec["serve"] = {"config": {"applications": [{"name": "app", "import_path": "serve_app:app",
                                                          "route_prefix": "/"}]}}  # fmt: skip
        if self.exposed:
            spec["expose"] = {
                "dashboard": {"enabled": True, "visibility": "Internal", "iap": True,
                              "host": "ray.internal.example.com"},
                "serve": {"enabled": True, "visibility": "External", "iap": False, "host": "llm.example.com"},
            }  # fmt: skip
        if self.allow_from_gateway:
            spec["network"]["allowFrom"] = [{**GATEWAY_PEER, "ports": [{"port": 8000, "protocol": "TCP"}]}]
        return {
            "apiVersion": "mlworkload.io/v1alpha1",
            "kind": "MLWorkload",
            "metadata": {"name": WORKLOAD, "namespace": NAMESPACE},
            "spec": spec,
        }


def policy_document() -> Manifest:
    """The team's policy: both isolations allowed, a metrics collector, the control plane's endpoint, one
    allowedEgress range, and what an Internal IAP endpoint needs (a pre-shared certificate)."""
    return {
        "apiVersion": "mlworkload.io/v1alpha1",
        "kind": "MLWorkloadPolicy",
        "metadata": {"name": "team-a"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"team": "a"}},
            "gcp": {"project": "my-proj", "location": "us-central1", "cluster": "ml-cluster"},
            "network": {
                "allowedIsolations": ["Strict", "Namespace"],
                "metricsScrapers": [copy.deepcopy(SCRAPER_PEER)],
                "apiServerCIDRs": [API_SERVER],
                "allowedEgress": [{"ipBlock": {"cidr": ALLOWED_EGRESS}}],
            },
            "expose": {
                "allowExternal": True,
                "requireIAP": False,
                "iapAccessors": ["group:ml-a@example.com"],
                "preSharedCertificates": ["nlp-internal-cert"],
            },
        },
    }


SCENARIOS: Final = tuple(
    Scenario(type_, isolation, exposed)
    for type_ in WorkloadType
    for isolation in Isolation
    for exposed in (False, True)
)


def render(scenario: Scenario) -> list[Manifest]:
    """Every object the operator would create, through its own parsing, admission and builders."""
    workload = parse_workload(scenario.workload_document())
    verdict = admit(workload, [parse_policy(policy_document())], NAMESPACES[NAMESPACE])
    assert verdict.allowed, [str(problem) for problem in verdict.problems]
    return build_objects(verdict.resolved)


def network_policies(objects: Iterable[Manifest]) -> list[Manifest]:
    return [o for o in objects if o["kind"] == "NetworkPolicy"]


# --- the world ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pod:
    name: str
    namespace: str
    labels: Mapping[str, str]
    ports: tuple[Mapping[str, Any], ...] = ()

    def manifest(self) -> Manifest:
        container: Manifest = {"name": "main", "image": "example"}
        if self.ports:
            container["ports"] = [dict(port) for port in self.ports]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": dict(self.labels)},
            "spec": {"containers": [container]},
        }


BYSTANDERS: Final = (
    Pod("neighbour", NAMESPACE, {"app": "neighbour"}, ({"name": "http", "containerPort": 8080},)),
    Pod("kuberay-operator", "kuberay-system",
        {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/component": "kuberay-operator"}),
    Pod("collector", "gmp-system", {"app.kubernetes.io/name": "collector"}),
    Pod("web", "team-b", {"app": "web"}, ({"name": "http", "containerPort": 8000},)),
    Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"},
        ({"name": "dns", "containerPort": 53, "protocol": "UDP"},
         {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"})),
    Pod("gateway", "gateway", {"app": "gateway"}),
)  # fmt: skip


def ray_object(objects: Iterable[Manifest]) -> Manifest:
    (found,) = [o for o in objects if o["apiVersion"] == "ray.io/v1"]
    return found


def cluster_spec(ray: Manifest) -> Manifest:
    """The RayCluster spec inside a RayCluster, RayJob or RayService."""
    spec: Manifest = ray["spec"]
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec


def _container_ports(template: Manifest) -> tuple[Mapping[str, Any], ...]:
    """The first container's ports, plus the `metrics` port KubeRay adds to every Ray container."""
    ports = list(template["spec"]["containers"][0].get("ports") or [])
    if all(port.get("name") != "metrics" for port in ports):
        ports.append({"name": "metrics", "containerPort": 8080})
    return tuple(ports)


def _ray_pod(scenario: Scenario, name: str, template: Manifest, node_type: str, group: str) -> Pod:
    """A pod as KubeRay creates it from a template: its labels win, except node type and group."""
    cluster = scenario.cluster_name
    kuberay = {
        "ray.io/is-ray-node": "yes",
        "ray.io/cluster": cluster,
        "ray.io/node-type": node_type,
        "ray.io/group": group,
        "ray.io/identifier": f"{cluster}-{node_type}",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }
    labels = {**kuberay, **(template.get("metadata", {}).get("labels") or {})}
    labels.update({"ray.io/node-type": node_type, "ray.io/group": group})
    if scenario.type is WorkloadType.SERVICE:
        labels["ray.io/serve"] = "true"  # every node runs a Serve proxy here; KubeRay marks the ready ones
    return Pod(name, NAMESPACE, labels, _container_ports(template))


def ray_pods(scenario: Scenario, objects: Sequence[Manifest]) -> list[Pod]:
    """The head, up to two workers per group (replicas, at least one), and a RayJob's submitter."""
    ray = ray_object(objects)
    spec = cluster_spec(ray)
    pods = [_ray_pod(scenario, "head", spec["headGroupSpec"]["template"], "head", "headgroup")]
    for group in spec.get("workerGroupSpecs") or []:
        for index in range(max(1, min(2, int(group.get("replicas", 1))))):
            name = f"worker-{group['groupName']}-{index}"
            pods.append(_ray_pod(scenario, name, group["template"], "worker", group["groupName"]))
    if scenario.type is WorkloadType.JOB:
        template = ray["spec"]["submitterPodTemplate"]
        uid = "4f1c2a9e-0000-4000-8000-00000000000a"
        labels = {**(template.get("metadata", {}).get("labels") or {}), "job-name": WORKLOAD,
                  "batch.kubernetes.io/job-name": WORKLOAD, "controller-uid": uid,
                  "batch.kubernetes.io/controller-uid": uid}  # fmt: skip
        pods.append(Pod("submitter", NAMESPACE, labels))
    return pods


def world(scenario: Scenario, objects: Sequence[Manifest]) -> list[Pod]:
    return [*ray_pods(scenario, objects), *BYSTANDERS]


# --- label selectors (the harness's own reading, to guard against vacuous selectors) --------------------


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: matchLabels and matchExpressions AND-ed; {} matches everything."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for requirement in selector.get("matchExpressions") or []:
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def peer_pods(peer: Mapping[str, Any], policy_namespace: str, pods: Iterable[Pod]) -> list[Pod]:
    """The modelled pods a NetworkPolicyPeer (without ipBlock) selects."""
    namespace_selector = peer.get("namespaceSelector")
    pod_selector = peer.get("podSelector")
    selected = []
    for pod in pods:
        if namespace_selector is None:
            in_scope = pod.namespace == policy_namespace
        else:
            in_scope = selector_matches(namespace_selector, NAMESPACES.get(pod.namespace, {}))
        if in_scope and (pod_selector is None or selector_matches(pod_selector, pod.labels)):
            selected.append(pod)
    return selected


def vacuous_selectors(policy: Manifest, pods: Sequence[Pod]) -> list[str]:
    """Where a NetworkPolicy selects nothing in the model: its podSelector, or a rule peer whose
    namespaceSelector matches no namespace or whose selectors together match no pod. ipBlocks are skipped."""
    name = policy["metadata"]["name"]
    namespace = policy["metadata"]["namespace"]
    spec = policy["spec"]
    found = []
    if not peer_pods({"podSelector": spec["podSelector"]}, namespace, pods):
        found.append(f"{name}: spec.podSelector {spec['podSelector']} selects no pod")
    for direction, key in (("ingress", "from"), ("egress", "to")):
        for index, rule in enumerate(spec.get(direction) or []):
            for position, peer in enumerate(rule.get(key) or []):
                if "ipBlock" in peer:
                    continue
                where = f"{name}: {direction}[{index}].{key}[{position}]"
                selector = peer.get("namespaceSelector")
                if selector is not None and not any(selector_matches(selector, ns) for ns in NAMESPACES.values()):
                    found.append(f"{where}.namespaceSelector {selector} selects no namespace")
                elif not peer_pods(peer, namespace, pods):
                    found.append(f"{where} {peer} selects no pod")
    return found


# --- ports -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ports:
    """Ports of one protocol: `first` alone is one port, `first`..`last` a range, neither all ports."""

    protocol: str
    first: int | None = None
    last: int | None = None

    def spec(self) -> Manifest:
        port: Manifest = {"protocol": self.protocol}
        if self.first is not None:
            port["port"] = self.first
        if self.last is not None and self.last != self.first:
            port["endPort"] = self.last
        return port

    def __str__(self) -> str:
        if self.first is None:
            return f"{self.protocol} *"
        if self.last is None or self.last == self.first:
            return f"{self.protocol} {self.first}"
        return f"{self.protocol} {self.first}-{self.last}"


def tcp(*ports: int) -> tuple[Ports, ...]:
    return tuple(Ports("TCP", port) for port in ports)


def udp(*ports: int) -> tuple[Ports, ...]:
    return tuple(Ports("UDP", port) for port in ports)


TCP_ANY: Final = (Ports("TCP"),)
ANY_PORT: Final = (Ports("TCP"), Ports("UDP"), Ports("SCTP"))
DNS: Final = (*udp(53), *tcp(53))


def tcp_except(*excluded: int) -> tuple[Ports, ...]:
    """Every TCP port but these, as ranges."""
    ranges, start = [], 1
    for port in sorted(set(excluded)):
        if port > start:
            ranges.append(Ports("TCP", start, port - 1))
        start = port + 1
    if start <= 65535:
        ranges.append(Ports("TCP", start, 65535))
    return tuple(ranges)


def any_port_except_tcp(*excluded: int) -> tuple[Ports, ...]:
    return (*tcp_except(*excluded), Ports("UDP"), Ports("SCTP"))


# --- endpoints -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodGroup:
    """Pods of one namespace, chosen by labels; `expected` names the modelled pods they must be."""

    namespace: str
    labels: Mapping[str, str]
    expected: tuple[str, ...]

    def peer(self, from_namespace: str) -> Manifest:
        pod_selector = {"podSelector": {"matchLabels": dict(self.labels)}}
        if self.namespace == from_namespace:
            return pod_selector
        # Every label of the namespace, not just its name: nca must have read them all for the flow to match.
        return {"namespaceSelector": {"matchLabels": dict(NAMESPACES[self.namespace])}, **pod_selector}

    def __str__(self) -> str:
        return f"{self.namespace}/{{{','.join(self.expected)}}}"


@dataclass(frozen=True, slots=True)
class Addresses:
    """Addresses outside the cluster: CIDRs, each less `excluded`."""

    cidrs: tuple[str, ...]
    excluded: tuple[str, ...] = ()

    def peers(self) -> list[Manifest]:
        peers = []
        for cidr in self.cidrs:
            network = ipaddress.ip_network(cidr)
            inside = [e for e in self.excluded if ipaddress.ip_network(e).subnet_of(network)]  # type: ignore[arg-type]
            peers.append({"ipBlock": {"cidr": cidr, **({"except": inside} if inside else {})}})
        return peers

    def __str__(self) -> str:
        return ",".join(self.cidrs) + (f" except {','.join(self.excluded)}" if self.excluded else "")


Endpoint = PodGroup | Addresses


def _names(pods: Sequence[Pod], predicate: Callable[[Pod], bool]) -> tuple[str, ...]:
    return tuple(pod.name for pod in pods if predicate(pod))


def endpoints(scenario: Scenario, pods: Sequence[Pod]) -> dict[str, Endpoint]:
    """Every name the flow table may use, for this scenario's world."""
    ray = "ray.io/node-type"
    head = _names(pods, lambda p: p.name == "head")
    workers = _names(pods, lambda p: p.name.startswith("worker-"))
    serving = head + workers if scenario.type is WorkloadType.SERVICE else head
    serve_labels = {"ray.io/serve": "true"} if scenario.type is WorkloadType.SERVICE else {ray: "head"}
    cluster = {"ray.io/cluster": scenario.cluster_name}
    named: dict[str, Endpoint] = {
        "head": PodGroup(NAMESPACE, {**cluster, ray: "head"}, head),
        "workers": PodGroup(NAMESPACE, {**cluster, ray: "worker"}, workers),
        "ray-nodes": PodGroup(NAMESPACE, {**cluster, "ray.io/is-ray-node": "yes"}, head + workers),
        "serve-pods": PodGroup(NAMESPACE, {**cluster, **serve_labels}, serving),
        "submitter": PodGroup(NAMESPACE, {"job-name": WORKLOAD}, _names(pods, lambda p: p.name == "submitter")),
        "neighbour": PodGroup(NAMESPACE, {"app": "neighbour"}, ("neighbour",)),
        "kuberay-operator": PodGroup("kuberay-system", {"app.kubernetes.io/name": "kuberay-operator"},
                                     ("kuberay-operator",)),
        "scraper": PodGroup("gmp-system", {"app.kubernetes.io/name": "collector"}, ("collector",)),
        "team-b": PodGroup("team-b", {"app": "web"}, ("web",)),
        "gateway": PodGroup("gateway", {"app": "gateway"}, ("gateway",)),
        "kube-dns": PodGroup("kube-system", {"k8s-app": "kube-dns"}, ("kube-dns",)),
        "lb": Addresses(LB_RANGES),
        "internet": Addresses(("0.0.0.0/0",), NOT_INTERNET),
        "public-dns": Addresses((PUBLIC_DNS,)),
        "metadata": Addresses((METADATA_SERVER,)),
        "metadata-alt": Addresses((METADATA_SERVER_ALT,)),
        "nodelocal-dns": Addresses((NODELOCAL_DNS,)),
        "google-apis": Addresses(GOOGLE_API_VIPS),
        "api-server": Addresses((API_SERVER,)),
        "allowed-egress": Addresses((ALLOWED_EGRESS,)),
    }  # fmt: skip
    return named


# --- the flows table -------------------------------------------------------------------------------------


class Expect(StrEnum):
    PERMITTED = "permitted"
    FORBIDDEN = "forbidden"


Condition = Callable[[Scenario], bool]
PortsOf = tuple[Ports, ...] | Callable[[Scenario], tuple[Ports, ...]]


def always(_: Scenario) -> bool:
    return True


def is_job(scenario: Scenario) -> bool:
    return scenario.type is WorkloadType.JOB


def strict(scenario: Scenario) -> bool:
    return scenario.isolation is Isolation.STRICT


def namespace_wide(scenario: Scenario) -> bool:
    return scenario.isolation is Isolation.NAMESPACE


def dashboard_exposed(scenario: Scenario) -> bool:
    return scenario.dashboard_exposed


def serve_exposed(scenario: Scenario) -> bool:
    return scenario.serve_exposed


def gateway_allowed(scenario: Scenario) -> bool:
    return scenario.allow_from_gateway


def gateway_not_allowed(scenario: Scenario) -> bool:
    return not scenario.allow_from_gateway


def autoscaled(scenario: Scenario) -> bool:
    return scenario.autoscaled


def not_autoscaled(scenario: Scenario) -> bool:
    return not scenario.autoscaled


def exposed_on_head(scenario: Scenario) -> tuple[int, ...]:
    return (8265,) * scenario.dashboard_exposed + (8000,) * scenario.serve_exposed


def exposed_on_workers(scenario: Scenario) -> tuple[int, ...]:
    return (8000,) * (scenario.serve_exposed and scenario.type is WorkloadType.SERVICE)


@dataclass(frozen=True, slots=True)
class FlowRule:
    """One row of the table: `source` -> `destination` on `ports` is `expect`ed when `when` holds."""

    name: str
    source: str
    destination: str
    ports: PortsOf
    expect: Expect
    when: Condition = always


P, F = Expect.PERMITTED, Expect.FORBIDDEN

FLOWS: Final[tuple[FlowRule, ...]] = (
    # Ray itself: the GCS, object manager, raylets and workers use many (partly random) TCP ports.
    FlowRule("worker to head, every TCP port", "workers", "head", TCP_ANY, P),
    FlowRule("head to worker, every TCP port", "head", "workers", TCP_ANY, P),
    FlowRule("worker to worker, every TCP port", "workers", "workers", TCP_ANY, P),
    # KubeRay's operator follows jobs and Serve through the dashboard, and nothing else.
    FlowRule("KubeRay operator to the dashboard", "kuberay-operator", "head", tcp(8265), P),
    FlowRule("KubeRay operator to GCS and client ports", "kuberay-operator", "head", tcp(6379, 10001), F),
    FlowRule("KubeRay operator to workers", "kuberay-operator", "workers", ANY_PORT, F),
    FlowRule("submitter to the dashboard", "submitter", "head", tcp(8265), P, is_job),
    # Metrics: the policy's scrapers on 8080 only.
    FlowRule("scraper to Ray metrics", "scraper", "ray-nodes", tcp(8080), P),
    FlowRule("scraper to any port but metrics", "scraper", "ray-nodes", any_port_except_tcp(8080), F),
    # Load balancers (proxies, health checks): exactly the exposed ports of the serving pods.
    FlowRule("load balancer to the exposed dashboard", "lb", "head", tcp(8265), P, dashboard_exposed),
    FlowRule("load balancer to exposed serve", "lb", "serve-pods", tcp(8000), P, serve_exposed),
    FlowRule("load balancer to GCS and client ports", "lb", "ray-nodes", tcp(6379, 10001), F),
    FlowRule("load balancer to unexposed head ports", "lb", "head",
             lambda s: any_port_except_tcp(*exposed_on_head(s)), F),
    FlowRule("load balancer to unexposed worker ports", "lb", "workers",
             lambda s: any_port_except_tcp(*exposed_on_workers(s)), F),
    # allowFrom: the gateway's peer reaches serve on 8000 only.
    FlowRule("allowFrom peer to serve", "gateway", "serve-pods", tcp(8000), P, gateway_allowed),
    FlowRule("allowFrom peer to GCS, dashboard and client", "gateway", "ray-nodes", tcp(6379, 8265, 10001), F,
             gateway_allowed),
    FlowRule("allowFrom peer to ports it was not given", "gateway", "ray-nodes", any_port_except_tcp(8000), F,
             gateway_allowed),
    FlowRule("gateway, not an allowFrom peer, to Ray", "gateway", "ray-nodes", ANY_PORT, F, gateway_not_allowed),
    # Isolation.
    FlowRule("neighbour to Ray under Namespace isolation", "neighbour", "ray-nodes", TCP_ANY, P, namespace_wide),
    FlowRule("neighbour to Ray under Strict isolation", "neighbour", "ray-nodes", ANY_PORT, F, strict),
    FlowRule("neighbour to the submitter under Strict isolation", "neighbour", "submitter", ANY_PORT, F,
             lambda s: strict(s) and is_job(s)),
    FlowRule("Ray to the neighbour under Strict isolation", "ray-nodes", "neighbour", ANY_PORT, F, strict),
    FlowRule("other team to Ray", "team-b", "ray-nodes", ANY_PORT, F),
    FlowRule("other team to the submitter", "team-b", "submitter", ANY_PORT, F, is_job),
    FlowRule("Ray to the other team", "ray-nodes", "team-b", ANY_PORT, F),
    FlowRule("submitter to the other team", "submitter", "team-b", ANY_PORT, F, is_job),
    # DNS: kube-dns and NodeLocal DNSCache only.
    FlowRule("Ray to kube-dns", "ray-nodes", "kube-dns", DNS, P),
    FlowRule("submitter to kube-dns", "submitter", "kube-dns", DNS, P, is_job),
    FlowRule("Ray to NodeLocal DNSCache", "ray-nodes", "nodelocal-dns", DNS, P),
    FlowRule("submitter to NodeLocal DNSCache", "submitter", "nodelocal-dns", DNS, P, is_job),
    FlowRule("Ray to a public DNS server", "ray-nodes", "public-dns", DNS, F),
    FlowRule("submitter to a public DNS server", "submitter", "public-dns", DNS, F, is_job),
    # Workload Identity and Google APIs.
    FlowRule("Ray to the metadata server", "ray-nodes", "metadata", tcp(80), P),
    FlowRule("Ray to the metadata server (988)", "ray-nodes", "metadata-alt", tcp(988), P),
    FlowRule("Ray to Google API VIPs on 443", "ray-nodes", "google-apis", tcp(443), P),
    FlowRule("Ray to Google API VIPs on other ports", "ray-nodes", "google-apis", any_port_except_tcp(443), F),
    FlowRule("Ray to the policy's allowedEgress", "ray-nodes", "allowed-egress", TCP_ANY, P),
    # The Kubernetes API: only an autoscaling head, only at the control plane's endpoint.
    FlowRule("autoscaling head to the API server", "head", "api-server", tcp(443), P, autoscaled),
    FlowRule("head without autoscaler to the API server", "head", "api-server", tcp(443), F, not_autoscaled),
    FlowRule("worker to the API server", "workers", "api-server", tcp(443), F),
    FlowRule("submitter to the API server", "submitter", "api-server", tcp(443), F, is_job),
    # The internet: never.
    FlowRule("Ray to the internet on 443", "ray-nodes", "internet", tcp(443), F),
    FlowRule("Ray to the internet on 80", "ray-nodes", "internet", tcp(80), F),
    FlowRule("Ray to the internet on 53", "ray-nodes", "internet", DNS, F),
    FlowRule("Ray to the internet on any port", "ray-nodes", "internet", ANY_PORT, F),
    FlowRule("submitter to the internet on any port", "submitter", "internet", ANY_PORT, F, is_job),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Flow:
    """A row of the table applied to one scenario."""

    scenario: str
    index: int
    name: str
    source: Endpoint
    destination: Endpoint
    ports: tuple[Ports, ...]
    expect: Expect

    @property
    def id(self) -> str:
        return f"{self.scenario}.{self.index:03d}"

    def describe(self) -> str:
        ports = ", ".join(str(p) for p in self.ports)
        return f"{self.name}: {self.source} -> {self.destination} [{ports}] must be {self.expect}"

    def spec_policy(self) -> Manifest:
        """The flow as a NetworkPolicy in the workload's namespace: the set of connections nca compares."""
        ports = [p.spec() for p in self.ports]
        if isinstance(self.destination, PodGroup) and self.destination.namespace == NAMESPACE:
            selected, direction, key = self.destination, "Ingress", "from"
            peers = _peers(self.source)
        elif isinstance(self.source, PodGroup) and self.source.namespace == NAMESPACE:
            selected, direction, key = self.source, "Egress", "to"
            peers = _peers(self.destination)
        else:
            raise AssertionError(f"{self.describe()}: one side must be pods of {NAMESPACE}")
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": f"flow-{self.index:03d}", "namespace": NAMESPACE},
            "spec": {
                "podSelector": {"matchLabels": dict(selected.labels)},
                "policyTypes": [direction],
                direction.lower(): [{key: peers, "ports": ports}],
            },
        }


def _peers(endpoint: Endpoint) -> list[Manifest]:
    return endpoint.peers() if isinstance(endpoint, Addresses) else [endpoint.peer(NAMESPACE)]


def applicable(scenario: Scenario) -> list[tuple[int, FlowRule]]:
    """The rows of the table that apply to a scenario, with their (stable) index."""
    return [(index, rule) for index, rule in enumerate(FLOWS) if rule.when(scenario)]


def flows(scenario: Scenario, pods: Sequence[Pod]) -> list[Flow]:
    """The table, for one scenario; each pod side checked to select exactly its expected pods."""
    named = endpoints(scenario, pods)
    result = []
    for index, rule in applicable(scenario):
        ports = rule.ports(scenario) if callable(rule.ports) else rule.ports
        flow = Flow(scenario.id, index, rule.name, named[rule.source], named[rule.destination], ports, rule.expect)
        for side in (flow.source, flow.destination):
            if isinstance(side, PodGroup):
                selected = tuple(p.name for p in peer_pods(side.peer(NAMESPACE), NAMESPACE, pods))
                assert side.expected, f"{flow.describe()}: {side} names no modelled pod"
                assert sorted(selected) == sorted(side.expected), f"{flow.describe()}: selects {selected}"
        result.append(flow)
    return result


# --- nca -------------------------------------------------------------------------------------------------


class Control(StrEnum):
    """Against what a flow is judged: the rendered policies, or a control config whose answer is known."""

    RENDERED = "rendered"
    DENY_ALL = "deny-all"
    ALLOW_ALL = "allow-all"


def control_of(flow: Flow) -> Control:
    """The config where a flow's answer must be the opposite of what the contract asks of the operator."""
    return Control.DENY_ALL if flow.expect is Expect.PERMITTED else Control.ALLOW_ALL


@dataclass(frozen=True, slots=True)
class Case:
    """One scenario, ready for nca: the rendered NetworkPolicies, the modelled pods, the flows."""

    scenario: Scenario
    policies: list[Manifest]
    pods: list[Pod]
    flows: list[Flow]

    @classmethod
    def of(cls, scenario: Scenario) -> Case:
        objects = render(scenario)
        pods = world(scenario, objects)
        return cls(scenario, network_policies(objects), pods, flows(scenario, pods))


@dataclass(frozen=True, slots=True)
class Verdict:
    holds: bool
    """permits: every connection of the flow is allowed; forbids: none is."""
    detail: str


@dataclass
class Judgement:
    verdicts: dict[tuple[str, Control], Verdict] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    queries: int = 0
    seconds: float = 0.0
    """Wall time of the nca processes (they run in parallel)."""


def _control_policy(name: str, allow: bool) -> Manifest:
    rules: list[Manifest] = [{}] if allow else []
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": rules, "egress": rules},
    }


NCA_REQUIREMENT = "network-config-analyzer==2.1.0"


def nca_command() -> list[str]:
    """nca from `$MLW_NCA`, else from a virtualenv of its own, made once in the test cache.

    nca pins its dependencies exactly (PyYAML 6.0.2, networkx 3.2.1, ...), and PyYAML 6.0.2 conflicts
    with the kubernetes client the operator needs, so it cannot share the project's environment.
    """
    explicit = os.environ.get("MLW_NCA")
    if explicit:
        return [explicit]
    home = CACHE / slug(NCA_REQUIREMENT)
    python = home / "bin" / "python"
    if not python.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix="nca-", dir=CACHE))
        subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True, capture_output=True, timeout=300)
        subprocess.run(
            [str(partial / "bin" / "python"), "-m", "pip", "install", "--quiet", NCA_REQUIREMENT],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
        shutil.rmtree(home, ignore_errors=True)
        partial.rename(home)  # atomic; its interpreter finds the moved environment, its scripts would not
    return [str(python), "-c", "import sys; from nca.nca_cli import nca_main; sys.exit(nca_main())"]


def slug(text: str) -> str:
    """A name as a lower-case id (pytest ids, file names)."""
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))


def _dump(path: Path, documents: Iterable[Manifest]) -> str:
    path.write_text(yaml.safe_dump_all(list(documents), sort_keys=False))
    return path.name


def _answer_path(directory: Path, flow: Flow, against: Control) -> Path:
    return directory / "out" / f"{flow.id}.{against}.json"


def _write_shared(directory: Path) -> tuple[str, str]:
    namespaces = {"apiVersion": "v1", "kind": "NamespaceList", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(labels)}}
        for name, labels in NAMESPACES.items()]}  # fmt: skip
    (directory / "namespaces.yaml").write_text(yaml.safe_dump(namespaces, sort_keys=False))
    (directory / "out").mkdir(exist_ok=True)
    deny = _dump(directory / "deny-all.yaml", [_control_policy("deny-all", allow=False)])
    allow = _dump(directory / "allow-all.yaml", [_control_policy("allow-all", allow=True)])
    return deny, allow


def write_scheme(directory: Path, name: str, cases: Iterable[Case]) -> int:
    """An nca scheme for some scenarios: their configs and one query per (flow, control). Returns the
    number of queries. Expects `_write_shared` to have written the namespaces and control policies."""
    configs: list[Manifest] = []
    queries: list[Manifest] = []
    for case in cases:
        sid = case.scenario.id
        pod_list = _dump(
            directory / f"pods-{sid}.yaml",
            [{"apiVersion": "v1", "kind": "PodList", "items": [p.manifest() for p in case.pods]}],
        )
        rendered = _dump(directory / f"rendered-{sid}.yaml", case.policies)
        for control, policies in (
            (Control.RENDERED, rendered),
            (Control.DENY_ALL, "deny-all.yaml"),
            (Control.ALLOW_ALL, "allow-all.yaml"),
        ):
            configs.append(
                {
                    "name": f"{control}-{sid}",
                    "namespaceList": "namespaces.yaml",
                    "podList": pod_list,
                    "networkPolicyList": [policies],
                }
            )
        for flow in case.flows:
            spec = _dump(directory / f"flow-{flow.id}.yaml", [flow.spec_policy()])
            configs.append(
                {
                    "name": f"flow-{flow.id}",
                    "namespaceList": "namespaces.yaml",
                    "podList": pod_list,
                    "networkPolicyList": [spec],
                }
            )
            query = "permits" if flow.expect is Expect.PERMITTED else "forbids"
            for against in (Control.RENDERED, control_of(flow)):
                queries.append({
                    "name": f"{flow.id}.{against}",
                    query: [f"{against}-{sid}", f"flow-{flow.id}"],
                    "outputConfiguration": {"outputFormat": "json", "fullExplanation": True,
                                            "outputPath": str(_answer_path(directory, flow, against))},
                })  # fmt: skip
    scheme = {"namespaceList": "namespaces.yaml", "networkConfigList": configs, "queries": queries}
    (directory / name).write_text(yaml.safe_dump(scheme, sort_keys=False))
    return len(queries)


def _verdict(flow: Flow, answer: Manifest) -> Verdict:
    """nca 2.1.0 encodes both answers as numerical_result 0: permits "all permitted", forbids "none allowed"."""
    assert answer.get("executed", 1) != 0, f"{flow.describe()}: nca did not run the query: {answer}"
    lines = [str(answer.get("textual_result", ""))]
    for explanation in answer.get("explanation") or []:
        lines.append(explanation.get("description", ""))
        lines.extend(f"  {', '.join(c['src'])} -> {', '.join(c['dst'])}: {c.get('conn', '')}"
                     for c in explanation.get("connections", []))  # fmt: skip
    return Verdict(answer["numerical_result"] == 0, "\n".join(line for line in lines if line))


def judge(directory: Path, cases: Sequence[Case], processes: int | None = None) -> Judgement:
    """Write the schemes and run `nca --scheme` once per share of the scenarios, the processes in parallel
    (nca is single-threaded; a scenario costs it about a second); then read one verdict per (flow, control)."""
    processes = processes or max(1, min(4, os.cpu_count() or 1))
    _write_shared(directory)
    judgement = Judgement()
    shares = [cases[start::processes] for start in range(processes) if cases[start::processes]]
    for index, share in enumerate(shares):
        judgement.queries += write_scheme(directory, f"scheme-{index}.yaml", share)
        judgement.commands.append([*nca_command(), "--scheme", str(directory / f"scheme-{index}.yaml")])
    started = time.monotonic()
    running = [subprocess.Popen(command, cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for command in judgement.commands]  # fmt: skip
    outputs = [process.communicate(timeout=600)[0] for process in running]
    judgement.seconds = time.monotonic() - started
    for command, process, output in zip(judgement.commands, running, outputs, strict=True):
        assert process.returncode == 0, f"{' '.join(command)} failed ({process.returncode}):\n{output[-6000:]}"
    for case in cases:
        for flow in case.flows:
            for against in (Control.RENDERED, control_of(flow)):
                path = _answer_path(directory, flow, against)
                assert path.exists(), f"{flow.describe()}: nca wrote no answer against {against}:\n{outputs}"
                (answer,) = json.loads(path.read_text())
                judgement.verdicts[flow.id, against] = _verdict(flow, answer)
    return judgement
