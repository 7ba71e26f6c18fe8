"""The bypass guard: the chart's ValidatingAdmissionPolicy that keeps Pods and Ray objects off mlworkload's node
pools unless KubeRay or the operator makes them for an MLWorkload.

The policy is rendered by a real `helm template` (tests/support/helm.py) and its CEL is evaluated with cel-python
the way the API server does it: each variable in order over `object`, `oldObject` and `request`, then the
validation. The table of admission requests below mixes hand-written Pods and Ray objects with the ones the operator
really builds (its builders, for a spot GPU workload of each type) and the ones KubeRay makes from them.
"""

import copy
import functools
from dataclasses import dataclass, field
from typing import Any

import celpy
import celpy.celtypes
import pytest
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError

from mlworkload.builders import build_objects
from tests.support.documents import permissive_policy, resolved, workload
from tests.support.helm import CHART, helm, render
from tests.support.schemas import validate_object

Manifest = dict[str, Any]

FULL = ["-f", str(CHART / "ci" / "full-values.yaml")]
NAMESPACE = "team-nlp"
KUBERAY = "system:serviceaccount:kuberay-system:kuberay-operator"
OPERATOR = "system:serviceaccount:mlworkload-system:mlworkload-operator"
AUTOSCALER = f"system:serviceaccount:{NAMESPACE}:demo"  # the Ray autoscaler runs as the workload's ServiceAccount
USER = "alice@example.com"
OWNED = {"app.kubernetes.io/managed-by": "mlworkload", "mlworkload.io/workload": "demo"}
ALLOWED, DENIED = True, False
MESSAGE = "use an MLWorkload; pods that reach mlworkload's node pools must come from KubeRay acting for an MLWorkload"


# --- the policy, rendered and evaluated --------------------------------------------------------------------------


def guard_objects(*values: str, namespace: str = "mlworkload-system") -> list[Manifest]:
    return [
        m
        for m in render(*values, namespace=namespace)
        if m["kind"] in {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    ]


def one(manifests: list[Manifest], kind: str) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] == kind]
    return found


class CelError(AssertionError):
    """A variable or validation failed to evaluate: with failurePolicy Fail the API server would refuse."""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    variables: dict[str, Any] = field(repr=False)


class Guard:
    """The policy's CEL, compiled once; `judge` evaluates it on one admission request as the API server does."""

    def __init__(self, policy: Manifest) -> None:
        env = celpy.Environment()
        self.variables = [(v["name"], env.program(env.compile(v["expression"]))) for v in policy["spec"]["variables"]]
        self.validations = [env.program(env.compile(v["expression"])) for v in policy["spec"]["validations"]]

    @staticmethod
    def _run(what: str, program: celpy.Runner, activation: dict[str, Any]) -> Any:
        try:
            result = program.evaluate(activation)
        except CELEvalError as exc:
            raise CelError(f"{what} failed to evaluate: {exc}") from exc
        if isinstance(result, CELEvalError):
            raise CelError(f"{what} failed to evaluate: {result}")
        return result

    def judge(self, request: "Request") -> Verdict:
        activation: dict[str, Any] = {
            "object": json_to_cel(request.object),
            "oldObject": json_to_cel(request.old),
            "request": json_to_cel(request.admission()),
        }
        # The API server evaluates variables lazily; here every one is evaluated, so none may fail on any input.
        values: dict[str, Any] = {}
        for name, program in self.variables:
            activation["variables"] = _cel_map(values)
            values[name] = self._run(f"variable {name}", program, activation)
        activation["variables"] = _cel_map(values)
        outcomes = [self._run("validation", program, activation) for program in self.validations]
        assert all(isinstance(outcome, celpy.celtypes.BoolType) for outcome in outcomes), outcomes
        return Verdict(all(bool(outcome) for outcome in outcomes), values)


def _cel_map(values: dict[str, Any]) -> celpy.celtypes.MapType:
    return celpy.celtypes.MapType({celpy.celtypes.StringType(name): value for name, value in values.items()})


@functools.cache
def guard(*values: str, namespace: str = "mlworkload-system") -> Guard:
    return Guard(one(guard_objects(*values, namespace=namespace), "ValidatingAdmissionPolicy"))


# --- admission requests -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What the policy sees of an AdmissionRequest: the object, the old object (UPDATE) and the request."""

    object: Manifest
    username: str
    operation: str = "CREATE"
    old: Manifest | None = None

    def admission(self) -> Manifest:
        group, _, version = self.object["apiVersion"].rpartition("/")
        return {
            "kind": {"group": group, "version": version, "kind": self.object["kind"]},
            "operation": self.operation,
            "namespace": self.object.get("metadata", {}).get("namespace", NAMESPACE),
            "userInfo": {"username": self.username, "groups": ["system:authenticated"]},
        }


def operator_objects(doc: Any) -> dict[str, Manifest]:
    """The operator's own children for a workload, by kind (its builders, under a permissive policy)."""
    return {o["kind"]: o for o in build_objects(resolved(doc, permissive_policy()))}


def spot_gpu_workload() -> Any:
    """A spot L4 worker group the Ray autoscaler scales between 0 and 4, and a SpotWithFallback group."""
    return (
        workload()
        .gpu_group("spot", capacity="Spot", replicas=1, minReplicas=0, maxReplicas=4)
        .gpu_group("swf", capacity="SpotWithFallback")
        .set("spec.autoscaling", {"enabled": True})
    )


RAY_CLUSTER = operator_objects(spot_gpu_workload())["RayCluster"]
RAY_JOB = operator_objects(spot_gpu_workload().job())["RayJob"]
RAY_SERVICE = operator_objects(spot_gpu_workload().service())["RayService"]


def cluster_spec(ray_object: Manifest) -> Manifest:
    spec: Manifest = ray_object["spec"]
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec


def kuberay_cluster(parent: Manifest) -> Manifest:
    """The RayCluster KubeRay makes for a RayJob or RayService: the parent's labels and its cluster spec."""
    labels = {**parent["metadata"]["labels"], "ray.io/originated-from-cr-name": parent["metadata"]["name"],
              "ray.io/originated-from-crd": parent["kind"]}  # fmt: skip
    metadata = {"name": f"{parent['metadata']['name']}-raycluster-x7k2p", "namespace": NAMESPACE, "labels": labels}
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": metadata,
            "spec": copy.deepcopy(cluster_spec(parent))}  # fmt: skip


def kuberay_pod(ray_object: Manifest, group: str) -> Manifest:
    """A pod KubeRay makes from a group's template: the template's labels (never the RayCluster's) and KubeRay's."""
    spec = cluster_spec(ray_object)
    if group == "head":
        template, node_type = spec["headGroupSpec"]["template"], "head"
    else:
        (worker,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == group]
        template, node_type = worker["template"], "worker"
    name = ray_object["metadata"]["name"]
    labels = {**template.get("metadata", {}).get("labels", {}), "ray.io/cluster": name, "ray.io/node-type": node_type,
              "ray.io/group": "headgroup" if group == "head" else group}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-{group}-q8z4m", "namespace": NAMESPACE, "labels": labels},
            "spec": copy.deepcopy(template["spec"])}  # fmt: skip


def without_labels(obj: Manifest) -> Manifest:
    stripped = copy.deepcopy(obj)
    stripped["metadata"].pop("labels", None)
    return stripped


def changed(obj: Manifest, edit: Any) -> Manifest:
    """A copy of `obj` with `edit(copy)` applied: the new object of an UPDATE."""
    new = copy.deepcopy(obj)
    edit(new)
    return new


def user_pod(**spec: Any) -> Manifest:
    """A user's own Pod: one CPU container, plus whatever `spec` fields are given."""
    container = {"name": "main", "image": "python:3.11", "resources": {"requests": {"cpu": "1", "memory": "2Gi"}}}
    metadata = {"name": "notebook", "namespace": NAMESPACE}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {"containers": [container], **spec}}


def gpu_container(name: str = "main", where: str = "limits") -> Manifest:
    return {"name": name, "image": "python:3.11", "resources": {where: {"nvidia.com/gpu": "1"}}}


def user_ray_cluster(worker_spec: Manifest, **extra: Any) -> Manifest:
    """A RayCluster as a user would write it by hand: a CPU head and one worker group."""
    head = {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.41.0"}]}
    worker = {"groupName": "gpu", "replicas": 1, "minReplicas": 0, "maxReplicas": 1, "rayStartParams": {},
              "template": {"spec": worker_spec}}  # fmt: skip
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster",
            "metadata": {"name": "mine", "namespace": NAMESPACE},
            "spec": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": head}},
                     "workerGroupSpecs": [worker], **extra}}  # fmt: skip


def user_ray_object(kind: str, **spec: Any) -> Manifest:
    return {"apiVersion": "ray.io/v1", "kind": kind, "metadata": {"name": "mine", "namespace": NAMESPACE}, "spec": spec}


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
GPU_WORKER_SPEC = {"containers": [gpu_container("ray-worker")], "tolerations": [GPU_TOLERATION]}
CPU_WORKER_SPEC = {"containers": [{"name": "ray-worker", "image": "rayproject/ray:2.41.0"}]}


def affinity(kind: str, key: str, operator: str, values: list[str] | None = None) -> Manifest:
    expression: Manifest = {"key": key, "operator": operator, **({"values": values} if values else {})}
    if kind == "required":
        return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [expression]}]}}}  # fmt: skip
    return {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [expression]}}]}}  # fmt: skip


def scale(cluster: Manifest) -> None:
    """What the Ray autoscaler patches: a group's replicas and the workers it removes."""
    group = cluster_spec(cluster)["workerGroupSpecs"][0]
    group["replicas"] = 3
    group["scaleStrategy"] = {"workersToDelete": ["demo-spot-worker-q8z4m"]}


def raise_max(cluster: Manifest) -> None:
    cluster_spec(cluster)["workerGroupSpecs"][0]["maxReplicas"] = 64


def tolerate_spot_on_head(cluster: Manifest) -> None:
    head = cluster_spec(cluster)["headGroupSpec"]["template"]["spec"]
    head["tolerations"] = [{"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true"}]


def unsuspend(cluster: Manifest) -> None:
    cluster["spec"]["suspend"] = False


def drop_finalizer(pod: Manifest) -> None:
    pod["metadata"]["finalizers"] = []


GPU_WORKER_POD = kuberay_pod(RAY_CLUSTER, "spot")
SWF_WORKER_POD = kuberay_pod(RAY_CLUSTER, "swf")
HEAD_POD = kuberay_pod(RAY_CLUSTER, "head")
SERVICE_CLUSTER = kuberay_cluster(RAY_SERVICE)
JOB_CLUSTER = kuberay_cluster(RAY_JOB)
SUSPENDED_CLUSTER = changed(RAY_CLUSTER, lambda c: c["spec"].update(suspend=True))
FINALIZED_POD = changed(GPU_WORKER_POD, lambda p: p["metadata"].update(finalizers=["example.com/drain"]))
HALF_LABELLED_POD = changed(GPU_WORKER_POD, lambda p: p["metadata"]["labels"].pop("mlworkload.io/workload"))
USERS_CLUSTERS_POD = kuberay_pod(user_ray_cluster(GPU_WORKER_SPEC), "gpu")

SPOT_TOLERATION = {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true"}
OUR_CLASS_TOLERATION = {"key": "cloud.google.com/compute-class", "operator": "Equal", "value": "mlw-l4x1-swf"}
GKE_CLASS_TOLERATION = {"key": "cloud.google.com/compute-class", "operator": "Equal", "value": "Performance"}
ANY_CLASS_TOLERATION = {"key": "cloud.google.com/compute-class", "operator": "Exists"}
EVERY_NOEXECUTE_TAINT = {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}
# A policy's own pools (sharing: Policy) carry its taint and node label; a CPU pool of a policy has nothing else.
POLICY_POOL_TOLERATION = {"key": "mlworkload.io/pool-policy", "operator": "Equal", "value": "team-a"}
POLICY_POOL_SELECTOR = {"mlworkload.io/pool-policy": "team-a"}
REQUIRES_POLICY_POOL = affinity("required", "mlworkload.io/pool-policy", "Exists")

EVERYTHING_POD = user_pod(tolerations=[{"operator": "Exists"}])
OUR_POOL_POD = user_pod(nodeSelector={"cloud.google.com/gke-nodepool": "mlw-l4x1-spot"})
GPU_LIMITS_POD = user_pod(containers=[gpu_container()])
MINIMAL_POD = {"apiVersion": "v1", "kind": "Pod"}
EMPTY_SPEC_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}}
GKE_CLASS_POD = user_pod(
    nodeSelector={"cloud.google.com/compute-class": "Performance"}, tolerations=[GKE_CLASS_TOLERATION]
)
REQUIRES_GPU_NODE = affinity("required", "cloud.google.com/gke-accelerator", "Exists")
PREFERS_SPOT = affinity("preferred", "cloud.google.com/gke-spot", "In", ["true"])
REQUIRES_OUR_POOL = affinity("required", "cloud.google.com/gke-nodepool", "In", ["default-pool", "mlw-a100x8-spot"])
REQUIRES_DEFAULT_POOL = affinity("required", "cloud.google.com/gke-nodepool", "In", ["default-pool"])
AVOIDS_GPUS = affinity("required", "cloud.google.com/gke-accelerator", "DoesNotExist")
NODE_NAME = "gke-ml-prod-mlw-l4x1-spot-5f2c9a1b-x1k2"

USER_GPU_CLUSTER = user_ray_cluster(GPU_WORKER_SPEC)
USER_CPU_CLUSTER = user_ray_cluster(CPU_WORKER_SPEC)
GPU_AUTOSCALER = {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
USER_GPU_AUTOSCALER_CLUSTER = user_ray_cluster(
    CPU_WORKER_SPEC, enableInTreeAutoscaling=True, autoscalerOptions=GPU_AUTOSCALER
)
USER_GPU_JOB = user_ray_object("RayJob", entrypoint="python train.py", rayClusterSpec=USER_GPU_CLUSTER["spec"])
USER_GPU_SUBMITTER_JOB = user_ray_object(
    "RayJob",
    entrypoint="python train.py",
    rayClusterSpec=USER_CPU_CLUSTER["spec"],
    submitterPodTemplate={"spec": GPU_WORKER_SPEC},
)
USER_SELECTOR_JOB = user_ray_object("RayJob", entrypoint="python train.py", clusterSelector={"ray.io/cluster": "demo"})
USER_GPU_SERVICE = user_ray_object("RayService", rayClusterConfig=USER_GPU_CLUSTER["spec"])
KUBERAY_DEFAULT_SA = "system:serviceaccount:kuberay-system:default"
GC = "system:serviceaccount:kube-system:generic-garbage-collector"
REPLICASET_CONTROLLER = "system:serviceaccount:kube-system:replicaset-controller"

CASES: dict[str, tuple[Request, bool]] = {
    # What the guard is for.
    "kuberay-makes-our-gpu-worker-pod": (Request(GPU_WORKER_POD, KUBERAY), ALLOWED),
    "a-user-makes-the-same-gpu-worker-pod": (Request(GPU_WORKER_POD, USER), DENIED),
    "a-users-cpu-pod": (Request(user_pod(), USER), ALLOWED),
    "a-user-pod-tolerating-everything": (Request(EVERYTHING_POD, USER), DENIED),
    "a-user-pod-selecting-our-pool": (Request(OUR_POOL_POD, USER), DENIED),
    "our-head-pod-staying-off-spot-from-a-user": (Request(HEAD_POD, USER), ALLOWED),
    "a-user-raycluster-with-a-gpu-worker-group": (Request(USER_GPU_CLUSTER, USER), DENIED),
    "the-operators-rayservice": (Request(RAY_SERVICE, OPERATOR), ALLOWED),
    "kuberays-raycluster-for-our-rayservice": (Request(SERVICE_CLUSTER, KUBERAY), ALLOWED),
    "a-user-pod-with-gpu-limits": (Request(GPU_LIMITS_POD, USER), DENIED),
    "a-minimal-pod": (Request(MINIMAL_POD, USER), ALLOWED),
    # The operator's other objects, and the same from anyone else.
    "the-operators-raycluster": (Request(RAY_CLUSTER, OPERATOR), ALLOWED),
    "the-operators-rayjob": (Request(RAY_JOB, OPERATOR), ALLOWED),
    "kuberays-raycluster-for-our-rayjob": (Request(JOB_CLUSTER, KUBERAY), ALLOWED),
    "kuberay-makes-our-compute-class-worker-pod": (Request(SWF_WORKER_POD, KUBERAY), ALLOWED),
    "a-user-makes-the-operators-raycluster": (Request(RAY_CLUSTER, USER), DENIED),
    "a-user-makes-the-operators-rayjob": (Request(RAY_JOB, USER), DENIED),
    "a-user-makes-the-operators-rayservice": (Request(RAY_SERVICE, USER), DENIED),
    "a-user-makes-our-compute-class-worker-pod": (Request(SWF_WORKER_POD, USER), DENIED),
    # Trust needs both: the right ServiceAccount and the ownership labels.
    "kuberay-makes-a-gpu-pod-without-our-labels": (Request(without_labels(GPU_WORKER_POD), KUBERAY), DENIED),
    "kuberay-makes-a-gpu-pod-with-half-our-labels": (Request(HALF_LABELLED_POD, KUBERAY), DENIED),
    "the-operator-makes-a-raycluster-without-our-labels": (Request(without_labels(RAY_CLUSTER), OPERATOR), DENIED),
    "kuberay-makes-a-pod-for-a-users-raycluster": (Request(USERS_CLUSTERS_POD, KUBERAY), DENIED),
    "another-service-account-with-our-labels": (Request(GPU_WORKER_POD, KUBERAY_DEFAULT_SA), DENIED),
    "a-controller-makes-a-gpu-pod": (Request(GPU_LIMITS_POD, REPLICASET_CONTROLLER), DENIED),
    # Every way of reaching the pools, one at a time.
    "tolerating-the-gpu-taint": (Request(user_pod(tolerations=[GPU_TOLERATION]), USER), DENIED),
    "tolerating-the-spot-taint": (Request(user_pod(tolerations=[SPOT_TOLERATION]), USER), DENIED),
    "tolerating-our-compute-class": (Request(user_pod(tolerations=[OUR_CLASS_TOLERATION]), USER), DENIED),
    "tolerating-every-compute-class": (Request(user_pod(tolerations=[ANY_CLASS_TOLERATION]), USER), DENIED),
    "tolerating-a-policys-pool-taint": (Request(user_pod(tolerations=[POLICY_POOL_TOLERATION]), USER), DENIED),
    "selecting-a-policys-pools": (Request(user_pod(nodeSelector=POLICY_POOL_SELECTOR), USER), DENIED),
    "requiring-a-policys-pools": (Request(user_pod(affinity=REQUIRES_POLICY_POOL), USER), DENIED),
    "tolerating-every-noschedule-taint": (
        Request(user_pod(tolerations=[{"operator": "Exists", "effect": "NoSchedule"}]), USER),
        DENIED,
    ),
    "tolerating-every-noexecute-taint-only": (Request(user_pod(tolerations=[EVERY_NOEXECUTE_TAINT]), USER), ALLOWED),
    "tolerating-an-unrelated-taint": (
        Request(user_pod(tolerations=[{"key": "dedicated", "operator": "Equal", "value": "ci"}]), USER),
        ALLOWED,
    ),
    "selecting-a-gpu": (
        Request(user_pod(nodeSelector={"cloud.google.com/gke-accelerator": "nvidia-l4"}), USER),
        DENIED,
    ),
    "selecting-spot": (Request(user_pod(nodeSelector={"cloud.google.com/gke-spot": "true"}), USER), DENIED),
    "selecting-our-compute-class": (
        Request(user_pod(nodeSelector={"cloud.google.com/compute-class": "mlw-l4x1-swf"}), USER),
        DENIED,
    ),
    "selecting-gkes-own-compute-class": (Request(GKE_CLASS_POD, USER), ALLOWED),
    "selecting-another-node-pool": (
        Request(user_pod(nodeSelector={"cloud.google.com/gke-nodepool": "default-pool"}), USER),
        ALLOWED,
    ),
    "requiring-a-gpu-node": (Request(user_pod(affinity=REQUIRES_GPU_NODE), USER), DENIED),
    "preferring-spot": (Request(user_pod(affinity=PREFERS_SPOT), USER), DENIED),
    "requiring-our-pool-by-name": (Request(user_pod(affinity=REQUIRES_OUR_POOL), USER), DENIED),
    "requiring-another-pool-by-name": (Request(user_pod(affinity=REQUIRES_DEFAULT_POOL), USER), ALLOWED),
    "avoiding-gpus": (Request(user_pod(affinity=AVOIDS_GPUS), USER), ALLOWED),
    "naming-a-node": (Request(user_pod(nodeName=NODE_NAME), USER), DENIED),
    "an-init-container-asking-for-a-gpu": (
        Request(user_pod(initContainers=[gpu_container("setup", "requests")]), USER),
        DENIED,
    ),
    "a-pod-with-an-empty-spec": (Request(EMPTY_SPEC_POD, USER), ALLOWED),
    "a-user-raycluster-on-cpu": (Request(USER_CPU_CLUSTER, USER), ALLOWED),
    "a-user-raycluster-whose-autoscaler-asks-for-a-gpu": (Request(USER_GPU_AUTOSCALER_CLUSTER, USER), DENIED),
    "a-user-rayjob-on-gpus": (Request(USER_GPU_JOB, USER), DENIED),
    "a-user-rayjob-whose-submitter-tolerates-gpus": (Request(USER_GPU_SUBMITTER_JOB, USER), DENIED),
    "a-user-rayjob-on-an-existing-cluster": (Request(USER_SELECTOR_JOB, USER), ALLOWED),
    "a-user-rayservice-on-gpus": (Request(USER_GPU_SERVICE, USER), DENIED),
    # UPDATEs: what changes nothing about where and how many pods run passes, whoever sends it.
    "the-autoscaler-scales-our-raycluster": (
        Request(changed(RAY_CLUSTER, scale), AUTOSCALER, "UPDATE", RAY_CLUSTER),
        ALLOWED,
    ),
    "a-user-scales-kuberays-raycluster-for-our-rayservice": (
        Request(changed(SERVICE_CLUSTER, scale), USER, "UPDATE", SERVICE_CLUSTER),
        ALLOWED,
    ),
    "the-autoscaler-raises-maxreplicas": (
        Request(changed(RAY_CLUSTER, raise_max), AUTOSCALER, "UPDATE", RAY_CLUSTER),
        DENIED,
    ),
    "a-user-puts-our-head-on-spot": (
        Request(changed(RAY_CLUSTER, tolerate_spot_on_head), USER, "UPDATE", RAY_CLUSTER),
        DENIED,
    ),
    "a-user-resumes-our-suspended-raycluster": (
        Request(changed(SUSPENDED_CLUSTER, unsuspend), USER, "UPDATE", SUSPENDED_CLUSTER),
        DENIED,
    ),
    "the-operator-resumes-our-suspended-raycluster": (
        Request(changed(SUSPENDED_CLUSTER, unsuspend), OPERATOR, "UPDATE", SUSPENDED_CLUSTER),
        ALLOWED,
    ),
    "the-operator-raises-maxreplicas": (
        Request(changed(RAY_CLUSTER, raise_max), OPERATOR, "UPDATE", RAY_CLUSTER),
        ALLOWED,
    ),
    "a-controller-drops-a-finalizer-from-our-running-gpu-pod": (
        Request(changed(FINALIZED_POD, drop_finalizer), GC, "UPDATE", FINALIZED_POD),
        ALLOWED,
    ),
    "a-user-adds-a-gpu-toleration-to-a-gated-pod": (
        Request(user_pod(tolerations=[GPU_TOLERATION]), USER, "UPDATE", user_pod()),
        DENIED,
    ),
    "a-user-moves-a-gated-pod-off-our-pools": (
        Request(user_pod(), USER, "UPDATE", user_pod(nodeSelector={"cloud.google.com/gke-spot": "true"})),
        ALLOWED,
    ),
}


@pytest.mark.parametrize(("request_", "expected"), list(CASES.values()), ids=list(CASES))
def test_the_guard_admits_exactly_what_kuberay_makes_for_an_mlworkload(request_: Request, expected: bool) -> None:
    verdict = guard().judge(request_)
    assert verdict.allowed is expected, {name: verdict.variables[name] for name in ("reaches", "trusted", "owned")}


def test_every_refusal_is_for_reaching_the_pools() -> None:
    """The rows reach the pools (or not) for the reason their names give, so a verdict is never right by accident."""
    reaching = {name for name, (request_, _) in CASES.items() if guard().judge(request_).variables["reaches"]}
    assert {"a-users-cpu-pod", "our-head-pod-staying-off-spot-from-a-user", "a-minimal-pod"}.isdisjoint(reaching)
    assert {"kuberay-makes-our-gpu-worker-pod", "the-operators-rayservice", "the-operators-rayjob",
            "kuberays-raycluster-for-our-rayservice", "the-autoscaler-scales-our-raycluster"} <= reaching  # fmt: skip
    denied = {name for name, (_, expected) in CASES.items() if expected is DENIED}
    assert denied <= reaching  # nothing is refused for another reason than reaching the pools


def test_the_objects_of_the_table_are_ones_the_api_server_accepts() -> None:
    """The policy runs after schema validation: every row but the deliberately minimal Pods is a valid object."""
    minimal = {"a-minimal-pod", "a-pod-with-an-empty-spec"}
    problems = {}
    for name, (request_, _) in CASES.items():
        for obj in (request_.object, request_.old):
            if obj is not None and name not in minimal:
                problems[name] = validate_object(obj)
    assert {name: errors for name, errors in problems.items() if errors} == {}


def test_the_operators_pods_are_the_ones_the_guard_is_about() -> None:
    """The operator's GPU workers tolerate and select the pools and its head stays off spot: the table's premise."""
    worker = GPU_WORKER_POD["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in worker["tolerations"]
    assert worker["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    assert GPU_WORKER_POD["metadata"]["labels"].items() >= OWNED.items()
    head_affinity = HEAD_POD["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert head_affinity["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "cloud.google.com/gke-spot", "operator": "NotIn", "values": ["true"]}
    ]
    assert RAY_SERVICE["metadata"]["labels"].items() >= OWNED.items()
    # The policy's pools: the workers select their label and tolerate their taint (the keys the guard checks).
    policy_key = POLICY_POOL_TOLERATION["key"]
    assert policy_key in worker["nodeSelector"]
    assert any(toleration["key"] == policy_key for toleration in worker["tolerations"])


def test_the_trusted_usernames_follow_the_release_and_the_values() -> None:
    kuberay = "bypassGuard.kuberayServiceAccount=system:serviceaccount:ray:kuberay"
    moved = guard("--set", "serviceAccount.name=mlw", "--set", kuberay, namespace="platform")
    for username, expected in [
        ("system:serviceaccount:platform:mlw", ALLOWED),
        ("system:serviceaccount:ray:kuberay", ALLOWED),
        (OPERATOR, DENIED),
        (KUBERAY, DENIED),
    ]:
        assert moved.judge(Request(RAY_SERVICE, username)).allowed is expected, username


# --- the rendered objects -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], FULL], ids=["default", "full"])
def test_the_policy_and_its_binding_validate(values: list[str]) -> None:
    objects = guard_objects(*values)
    assert sorted(m["kind"] for m in objects) == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    assert {f"{m['kind']}/{m['metadata']['name']}": validate_object(m) for m in objects} == {
        "ValidatingAdmissionPolicy/mlworkload-bypass-guard": [],
        "ValidatingAdmissionPolicyBinding/mlworkload-bypass-guard": [],
    }


def test_the_policy_matches_pods_and_ray_objects_and_fails_closed() -> None:
    policy = one(guard_objects(), "ValidatingAdmissionPolicy")
    assert policy["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert policy["spec"]["failurePolicy"] == "Fail"
    rules = {(group, resource): set(rule["operations"])
             for rule in policy["spec"]["matchConstraints"]["resourceRules"]
             for group in rule["apiGroups"] for resource in rule["resources"]}  # fmt: skip
    both = {"CREATE", "UPDATE"}
    assert rules == {("", "pods"): both, ("ray.io", "rayclusters"): both, ("ray.io", "rayjobs"): both,
                     ("ray.io", "rayservices"): both}  # fmt: skip
    (validation,) = policy["spec"]["validations"]
    assert validation["reason"] == "Forbidden"
    assert MESSAGE in validation["message"]
    assert "\n" not in validation["message"]


def test_the_binding_enforces_by_default_and_can_warn_or_audit_first() -> None:
    def actions(*values: str) -> list[str]:
        binding = one(guard_objects(*values), "ValidatingAdmissionPolicyBinding")
        assert binding["spec"]["policyName"] == "mlworkload-bypass-guard"
        return list(binding["spec"]["validationActions"])

    assert actions() == ["Deny"]
    assert actions("--set", "bypassGuard.validationActions={Warn}") == ["Warn"]
    assert actions("--set", "bypassGuard.validationActions={Audit}") == ["Audit"]
    assert actions(*FULL) == ["Warn", "Audit"]


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("bypassGuard.validationActions={Deny,Warn}", "/bypassGuard/validationActions"),
        ("bypassGuard.validationActions={Block}", "/bypassGuard/validationActions/0"),
        ("bypassGuard.kuberayServiceAccount=kuberay-operator", "/bypassGuard/kuberayServiceAccount"),
        ("bypassGuard.excludedNamespaces={Kube-System}", "/bypassGuard/excludedNamespaces/0"),
        ("bypassGuard.enforce=true", "additional properties 'enforce' not allowed"),
    ],
)
def test_bad_guard_values_are_refused_naming_the_field(setting: str, fragment: str) -> None:
    result = helm("template", "mlworkload", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert fragment in result.stderr


def test_disabled_the_guard_is_absent() -> None:
    assert guard_objects("--set", "bypassGuard.enabled=false") == []


def test_system_namespaces_and_the_release_namespace_are_never_checked() -> None:
    def excluded(*values: str, namespace: str = "mlworkload-system") -> list[str]:
        policy = one(guard_objects(*values, namespace=namespace), "ValidatingAdmissionPolicy")
        (expression,) = policy["spec"]["matchConstraints"]["namespaceSelector"]["matchExpressions"]
        assert (expression["key"], expression["operator"]) == ("kubernetes.io/metadata.name", "NotIn")
        return list(expression["values"])

    gke = ["kube-system", "kube-public", "kube-node-lease", "gke-managed-system", "gmp-system", "gmp-public"]
    assert excluded() == [*gke, "mlworkload-system"]
    assert excluded(namespace="platform") == [*gke, "platform"]
    assert excluded("--set", "bypassGuard.excludedNamespaces={monitoring}") == ["monitoring", "mlworkload-system"]
    assert excluded(*FULL) == [*gke, "monitoring", "mlworkload-system"]
