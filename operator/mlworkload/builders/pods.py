"""Pod templates of the Ray head, the workers and the job submitter.

KubeRay fills in the `ray start` command; these templates carry what it does not: resources,
GKE placement, the Workload Identity ServiceAccount, ownership labels and hardening.
"""

from typing import Any

from mlworkload.api.workload import Capacity, EnvVar
from mlworkload.builders.metadata import Manifest, pod_labels
from mlworkload.builders.names import service_account_name
from mlworkload.builders.scheduling import HEAD_PLACEMENT, Placement, worker_placement
from mlworkload.constants import (
    GPU_RESOURCE,
    PORT_CLIENT,
    PORT_DASHBOARD,
    PORT_GCS,
    PORT_METRICS,
    PORT_SERVE,
)
from mlworkload.policy.resolve import ResolvedGroup, ResolvedWorkload

# Ray's default (60 s) is too short when a large GPU image imports torch before registering.
WORKER_REGISTER_TIMEOUT_ENV = "RAY_worker_register_timeout_seconds"
WORKER_REGISTER_TIMEOUT_SECONDS = "600"

HEAD_PORTS = (
    ("gcs-server", PORT_GCS),
    ("dashboard", PORT_DASHBOARD),
    ("client", PORT_CLIENT),
    ("serve", PORT_SERVE),
    ("metrics", PORT_METRICS),
)

_SHM_VOLUME = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
_SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}

# The user of the rayproject/ray images (ray's docker/base-deps/Dockerfile: `ARG RAY_UID=1000`,
# `ARG RAY_GID=100`, `useradd ... ray --uid $RAY_UID --gid $RAY_GID`, `USER $RAY_UID`).
RAY_UID = 1000
RAY_GID = 100

# Where every Kubernetes client, the Ray autoscaler included, looks for its credentials: Ray's
# kuberay/node_provider.py reads `/var/run/secrets/kubernetes.io/serviceaccount/token` and `ca.crt`.
SERVICE_ACCOUNT_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
API_TOKEN_VOLUME = "autoscaler-kube-api-access"
# The value of the volume the ServiceAccount admission plugin would inject (`TokenVolumeSource()`:
# serviceaccount.WarnOnlyBoundTokenExpirationSeconds = 60*60 + 7). The API server extends a token of
# exactly this lifetime (--service-account-extend-token-expiration, on by default), so the
# autoscaler gets the token it would get from automounting, only not in the other containers.
API_TOKEN_EXPIRATION_SECONDS = 3607


# --- Spot disruption -----------------------------------------------------------------------------------------
#
# GKE, "Spot VMs": "When Compute Engine needs to reclaim the resources used by Spot VMs, a termination notice is
# sent to GKE. Spot VMs terminate 30 seconds after receiving a termination notice. By default, clusters use
# graceful node shutdown. The kubelet notices the termination notice and gracefully terminates Pods that are
# running on the node." Of those 30 s the kubelet keeps the last ones for system Pods (priority classes
# system-cluster-critical and system-node-critical): on a best-effort basis, the same page says, non-system Pods
# get 25 s up to GKE 1.27 and 15 s in later versions. (GKE on AWS and Azure spell out the same defaults:
# "ShutdownGracePeriod: 30 seconds, ShutdownGracePeriodCriticalPods: 15 seconds. These settings give non-system
# Pods 15 seconds to gracefully terminate before they are forcibly stopped.")
#
# So a Spot worker gets terminationGracePeriodSeconds 25: the most any GKE version grants a non-system Pod on a
# reclaim (during a node shutdown the kubelet uses the smaller of the two), and what an eviction, a scale-down
# or KubeRay's own deletion of the pod then also gets. Its preStop hook is built for the smallest window, 15 s:
# done with the drain and the wait within PRESTOP_BUDGET_SECONDS, then `ray stop`, within 3 s more.
SPOT_TERMINATION_GRACE_SECONDS = 25
PRESTOP_BUDGET_SECONDS = 10
RAY_STOP_SECONDS = 3

# The cluster autoscaler FAQ ("What types of pods can prevent CA from removing a node?"): pods annotated
# `"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"` do; `"true"` lifts its other objections (a pod with
# local storage, one not backed by a controller object), never a PodDisruptionBudget. Spot workers are expendable
# by design: "true". The head holds the cluster's state: "false", so its node is never scaled down under it.
SAFE_TO_EVICT_ANNOTATION = "cluster-autoscaler.kubernetes.io/safe-to-evict"
SPOT_CAPACITIES = frozenset({Capacity.SPOT, Capacity.SPOT_WITH_FALLBACK})


def prestop_drain_script(budget: int = PRESTOP_BUDGET_SECONDS, stop: int = RAY_STOP_SECONDS) -> str:
    """The preStop hook of a Spot worker's Ray container: drain this Ray node, so Ray schedules nothing more on it
    and reschedules elsewhere what it must, then stop Ray; never longer than `budget` + `stop` seconds, and it
    never fails (a hook that fails only delays the SIGTERM that follows it).

    1. This node's id: a driver connected to the local raylet asks `ray.get_runtime_context().get_node_id()`
       (public API). KubeRay's `RAY_ADDRESS` (the head's GCS) lets `ray.init(address="auto")` find the cluster.
    2. `ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION --deadline-remaining-seconds <left>`: the GCS marks
       the node draining, as Ray's own autoscaler does before it removes a node. Ray ships the command from 2.10
       on (2.9 has none: there step 4 is all), hidden ("This is NOT a public API"); KubeRay's proposal for
       graceful termination (kuberay#5004, #5005) relies on the same one. A PREEMPTION drain cannot be refused;
       Serve moves its replicas and proxies off a draining node, and recent Ray Train versions report the
       preemption to the training function (`ray.train.get_preemption_info`).
    3. While a Ray worker process still runs a task or holds an actor (its process title is `ray::<name>`, an
       idle one's `ray::IDLE`), wait, up to the budget: work that ends in time needs no retry. An idle node (the
       Ray autoscaler scaling down) goes at once.
    4. `ray stop`: the raylet leaves the cluster now rather than at SIGKILL (before Ray 2.33 the container's
       shell swallows the SIGTERM that follows). Without a node id or a drain (an older Ray, a head already
       gone), this is all that happens.
    """
    python = ('import ray; ray.init(address="auto", logging_level="ERROR", log_to_driver=False);'
              ' print(ray.get_runtime_context().get_node_id())')  # fmt: skip
    return "\n".join([
        "busy() {",
        "  for f in /proc/[0-9]*/cmdline; do",
        "    case \"$(tr '\\0' ' ' < \"$f\" 2>/dev/null)\" in \"ray::IDLE\"*) ;; \"ray::\"*) return 0 ;; esac",
        "  done",
        "  return 1",
        "}",
        f"end=$(( $(date +%s) + {budget} ))",
        f"node=$(timeout {max(budget - 4, 1)} python -c '{python}' 2>/dev/null | tail -n 1)",
        "left=$(( end - $(date +%s) ))",
        "if [ -n \"$node\" ] && [ \"$left\" -gt 1 ] && timeout 4 ray drain-node --node-id \"$node\""
        " --reason DRAIN_NODE_REASON_PREEMPTION --reason-message \"pod ${HOSTNAME:-} is being terminated\""
        " --deadline-remaining-seconds \"$left\" >/dev/null 2>&1; then",
        "  while [ \"$(date +%s)\" -lt \"$end\" ] && busy; do sleep 1; done",
        "fi",
        f"timeout {stop} ray stop --grace-period 1 >/dev/null 2>&1",
        "exit 0",
    ])  # fmt: skip


def _prepare_for_spot(template: Manifest) -> None:
    """A Spot worker's template: the drain on the way out, a grace period that fits the reclaim notice, and the
    cluster autoscaler told it may evict the pod."""
    spec = template["spec"]
    spec["terminationGracePeriodSeconds"] = SPOT_TERMINATION_GRACE_SECONDS
    spec["containers"][0]["lifecycle"] = {"preStop": {"exec": {"command": ["/bin/sh", "-c", prestop_drain_script()]}}}
    template["metadata"]["annotations"] = {SAFE_TO_EVICT_ANNOTATION: "true"}


def pod_security_context() -> Manifest:
    """Pod Security `restricted` at pod level, for every container including those KubeRay adds.

    runAsUser is pinned because the kubelet can only verify runAsNonRoot against a numeric user: an
    image built FROM rayproject/ray that ends with `USER ray` (a name) or `USER root` would otherwise
    be refused ("container has runAsNonRoot and image has non-numeric user (ray), cannot verify user
    is non-root", kubelet's verifyRunAsNonRoot). runAsGroup keeps the image's primary group (users).

    fsGroup is not needed by today's volumes: the emptyDirs are world-writable, and the projected API
    token is written 0600 for the one uid all containers share (kubelet's FsUserFrom). It keeps the
    token readable to the group and not to everyone should a container ever get its own uid (then
    FsUser is unset: 0644 by default, 0640 for the fsGroup, projected.go: "When FsGroup is set, we
    depend on SetVolumeOwnership to change from 0600 to 0640"), and makes any volume a later feature
    mounts (PVC, CSI) writable by the image's group.
    """
    return {
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "runAsGroup": RAY_GID,
        "fsGroup": RAY_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> Manifest:
    """Pod Security `restricted` per container; KubeRay copies it to the workers' wait-gcs-ready init
    container (`SecurityContext: ...Containers[RayContainerIndex].SecurityContext.DeepCopy()`).

    No privilege escalation also makes the image's `ray ALL=NOPASSWD: ALL` sudoers entry useless:
    with no_new_privs set, sudo's setuid bit does not apply. runAsNonRoot is repeated here so each
    container's context stands on its own wherever KubeRay copies it.
    """
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}


def api_token_volume() -> Manifest:
    """The Kubernetes API credentials, as the ServiceAccount admission plugin would project them.

    The pod never automounts them (automountServiceAccountToken: false); only the head declares this
    volume, and only the autoscaler container mounts it (see `autoscaler_container_options`).
    """
    return {
        "name": API_TOKEN_VOLUME,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": API_TOKEN_EXPIRATION_SECONDS}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ]
        },
    }


def autoscaler_container_options() -> Manifest:
    """The autoscalerOptions fields that shape the autoscaler sidecar KubeRay adds to the head.

    KubeRay 1.7 builds the sidecar with no securityContext and no credentials of its own
    (`BuildAutoscalerContainer`), then `mergeAutoscalerOverrides` appends `autoscalerOptions.volumeMounts`
    and replaces the securityContext with `autoscalerOptions.securityContext`. The token that can patch
    RayClusters and Pods (KubeRay's autoscaler Role) thus reaches this container only, never the Ray
    container where user code runs.
    """
    return {
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": API_TOKEN_VOLUME, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH, "readOnly": True}],
    }


def container_env(resolved: ResolvedWorkload) -> list[dict[str, Any]]:
    """The user's environment, plus the operator's defaults the user did not override."""
    user: list[EnvVar] = resolved.workload.spec.ray.env
    env = [variable.to_dict() for variable in user]
    if all(variable.name != WORKER_REGISTER_TIMEOUT_ENV for variable in user):
        env.append({"name": WORKER_REGISTER_TIMEOUT_ENV, "value": WORKER_REGISTER_TIMEOUT_SECONDS})
    return env


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict[str, Any]:
    requests = {"cpu": cpu, "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    if gpus:
        limits[GPU_RESOURCE] = str(gpus)
    return {"requests": requests, "limits": limits}


def _pod_template(
    resolved: ResolvedWorkload, *, role: str, group: str, container: Manifest, placement: Placement
) -> Manifest:
    spec: Manifest = {
        "serviceAccountName": service_account_name(resolved),
        # No container gets the Kubernetes API token by default: KubeRay never sets this field (it
        # only sets the head's serviceAccountName when autoscaling), so what is rendered here holds.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [dict(_SHM_VOLUME)],
    }
    placement.apply_to(spec)
    return {"metadata": {"labels": pod_labels(resolved, role, group)}, "spec": spec}


def _ray_container(resolved: ResolvedWorkload, name: str, resources: dict[str, Any]) -> Manifest:
    return {
        "name": name,
        "image": resolved.image,
        "env": container_env(resolved),
        "resources": resources,
        "volumeMounts": [dict(_SHM_MOUNT)],
        "securityContext": container_security_context(),
    }


def build_head_template(resolved: ResolvedWorkload) -> Manifest:
    head = resolved.workload.spec.head
    container = _ray_container(resolved, "ray-head", _resources(head.resources.cpu, head.resources.memory))
    container["ports"] = [{"name": name, "containerPort": port} for name, port in HEAD_PORTS]
    template = _pod_template(resolved, role="head", group="head", container=container, placement=HEAD_PLACEMENT)
    template["metadata"]["annotations"] = {SAFE_TO_EVICT_ANNOTATION: "false"}
    if resolved.workload.spec.autoscaling.enabled:
        # The autoscaler, in its own container on the head, is the one Ray process that calls the
        # Kubernetes API; the Ray container next to it does not mount this volume.
        template["spec"]["volumes"].append(api_token_volume())
    return template


def build_worker_template(resolved: ResolvedWorkload, group: ResolvedGroup) -> Manifest:
    spec = group.spec
    gpus = spec.accelerator.count if spec.accelerator else 0
    container = _ray_container(resolved, "ray-worker", _resources(spec.resources.cpu, spec.resources.memory, gpus))
    placement = worker_placement(group)
    template = _pod_template(resolved, role="worker", group=group.name, container=container, placement=placement)
    if group.capacity in SPOT_CAPACITIES:
        _prepare_for_spot(template)
    return template


def build_submitter_template(resolved: ResolvedWorkload) -> Manifest:
    """The RayJob submitter pod. KubeRay supplies its command when none is set."""
    container = {
        "name": "ray-job-submitter",
        "image": resolved.image,
        "env": container_env(resolved),
        "resources": {
            "requests": {"cpu": "500m", "memory": "200Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        },
        "securityContext": container_security_context(),
    }
    template = _pod_template(
        resolved, role="submitter", group="submitter", container=container, placement=HEAD_PLACEMENT
    )
    template["spec"]["restartPolicy"] = "Never"
    del template["spec"]["volumes"]
    return template
