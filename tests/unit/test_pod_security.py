"""Every Ray pod meets Pod Security `restricted`, and only the autoscaler holds a Kubernetes API token.

Three parts:

1. `restricted_violations`: a checker of the Pod Security Standard `restricted` profile (its baseline
   controls included), written from the standard's rules as they read for Kubernetes 1.30 and later.
2. A model of what KubeRay 1.7 adds to the pod templates we render before it creates the pods (the
   autoscaler sidecar, the workers' `wait-gcs-ready` init container, its emptyDirs, the submitter's
   command), so the check covers the containers we never render ourselves.
3. The matrix: three workload types x autoscaling on/off x CPU/GPU groups, every pod checked, the token
   holders listed, every Ray object still valid against the upstream KubeRay CRDs.

Evidence for the model is quoted from ray-project/kuberay at tag v1.7.0 (commit 59d663ae), the release the
CRDs in /work/shared/testdata/kuberay-crds come from.
"""

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mlworkload.builders import build_objects
from mlworkload.builders.pods import SERVICE_ACCOUNT_MOUNT_PATH
from tests.support.documents import WorkloadDoc, permissive_policy, resolved, workload
from tests.support.schemas import validate_object

Manifest = dict[str, Any]

# --- 1. the Pod Security Standard `restricted` ------------------------------------------------------

# Volume types `restricted` allows. `image` volumes joined the list after 1.30; they are left out so
# that a pod passing here passes on every Kubernetes from 1.30 on.
ALLOWED_VOLUME_TYPES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
# The "safe" sysctls of the baseline profile as of 1.29 (the 1.30 set).
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
# 1.30's list; container_engine_t was added in 1.31.
ALLOWED_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
ALLOWED_PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
HANDLERS = ("livenessProbe", "readinessProbe", "startupProbe")

Check = Callable[[Manifest, Manifest], Iterator[str]]


def containers(pod: Manifest) -> Iterator[Manifest]:
    """Every container the standard covers: init, regular and ephemeral (pod-security-admission's
    visitContainers walks the same three lists)."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def _context(container: Manifest) -> Manifest:
    context: Manifest = container.get("securityContext") or {}
    return context


def _host_namespaces(_: Manifest, pod: Manifest) -> Iterator[str]:
    """Host Namespaces: spec.hostNetwork, spec.hostPID, spec.hostIPC must be undefined or false."""
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            yield f"spec.{field} must be false"


def _privileged(_: Manifest, pod: Manifest) -> Iterator[str]:
    """Privileged Containers: securityContext.privileged must be undefined or false."""
    for container in containers(pod):
        if _context(container).get("privileged"):
            yield f"container {container['name']}: securityContext.privileged must be false"


def _capabilities(_: Manifest, pod: Manifest) -> Iterator[str]:
    """Capabilities (restricted): drop must include ALL; add may only hold NET_BIND_SERVICE."""
    for container in containers(pod):
        capabilities = _context(container).get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            yield f'container {container["name"]}: securityContext.capabilities.drop must include "ALL"'
        for added in capabilities.get("add") or []:
            if added != "NET_BIND_SERVICE":
                yield f"container {container['name']}: securityContext.capabilities.add must not hold {added}"


def _volume_types(_: Manifest, pod: Manifest) -> Iterator[str]:
    """Volume Types (restricted, which also covers HostPath Volumes): only the allowed inline sources."""
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            yield f"volume {volume['name']}: type {', '.join(sorted(kinds - ALLOWED_VOLUME_TYPES))} is not allowed"


def _host_ports(_: Manifest, pod: Manifest) -> Iterator[str]:
    """Host Ports: ports[*].hostPort must be undefined or 0."""
    for container in containers(pod):
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                yield f"container {container['name']}: hostPort {port['hostPort']} is not allowed"


def _app_armor(metadata: Manifest, pod: Manifest) -> Iterator[str]:
    """AppArmor: appArmorProfile.type RuntimeDefault, Localhost or undefined; the beta annotations
    runtime/default, localhost/* or empty."""
    contexts = [("pod", pod.get("securityContext") or {})]
    contexts += [(f"container {c['name']}", _context(c)) for c in containers(pod)]
    for who, context in contexts:
        profile = context.get("appArmorProfile")
        if profile is not None and profile.get("type") not in ALLOWED_PROFILE_TYPES:
            yield f"{who}: appArmorProfile.type {profile.get('type')} is not allowed"
    for key, value in (metadata.get("annotations") or {}).items():
        allowed = value in ("", "runtime/default") or value.startswith("localhost/")
        if key.startswith(APPARMOR_ANNOTATION_PREFIX) and not allowed:
            yield f"annotation {key}: AppArmor profile {value} is not allowed"


def _se_linux(_: Manifest, pod: Manifest) -> Iterator[str]:
    """SELinux: seLinuxOptions.type from the allowed list; user and role undefined."""
    contexts = [("pod", pod.get("securityContext") or {})]
    contexts += [(f"container {c['name']}", _context(c)) for c in containers(pod)]
    for who, context in contexts:
        options = context.get("seLinuxOptions") or {}
        if options.get("type", "") not in ALLOWED_SELINUX_TYPES:
            yield f"{who}: seLinuxOptions.type {options['type']} is not allowed"
        for field in ("user", "role"):
            if options.get(field):
                yield f"{who}: seLinuxOptions.{field} must be empty"


def _proc_mount(_: Manifest, pod: Manifest) -> Iterator[str]:
    """/proc Mount Type: procMount undefined or Default."""
    for container in containers(pod):
        if _context(container).get("procMount", "Default") != "Default":
            yield f"container {container['name']}: procMount must be Default"


def _seccomp(_: Manifest, pod: Manifest) -> Iterator[str]:
    """Seccomp (restricted): RuntimeDefault or Localhost, set on the pod or on every container."""
    profile = (pod.get("securityContext") or {}).get("seccompProfile")
    if profile is not None and profile.get("type") not in ALLOWED_PROFILE_TYPES:
        yield f"pod: seccompProfile.type {profile.get('type')} is not allowed"
    pod_set = profile is not None and profile.get("type") in ALLOWED_PROFILE_TYPES
    for container in containers(pod):
        own = _context(container).get("seccompProfile")
        if own is not None and own.get("type") not in ALLOWED_PROFILE_TYPES:
            yield f"container {container['name']}: seccompProfile.type {own.get('type')} is not allowed"
        elif own is None and not pod_set:
            yield f"container {container['name']}: pod or container must set seccompProfile.type"


def _sysctls(_: Manifest, pod: Manifest) -> Iterator[str]:
    """Sysctls: only the safe subset."""
    for sysctl in (pod.get("securityContext") or {}).get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            yield f"pod: sysctl {sysctl['name']} is not allowed"


def _host_process(_: Manifest, pod: Manifest) -> Iterator[str]:
    """HostProcess: windowsOptions.hostProcess undefined or false."""
    contexts = [("pod", pod.get("securityContext") or {})]
    contexts += [(f"container {c['name']}", _context(c)) for c in containers(pod)]
    for who, context in contexts:
        if (context.get("windowsOptions") or {}).get("hostProcess"):
            yield f"{who}: windowsOptions.hostProcess must be false"


def _probe_hosts(_: Manifest, pod: Manifest) -> Iterator[str]:
    """Host Probes / Lifecycle Hooks (1.34+, kept: stricter for earlier versions): no host field."""
    for container in containers(pod):
        handlers = [container.get(name) or {} for name in HANDLERS]
        handlers += [hook for hook in (container.get("lifecycle") or {}).values() if isinstance(hook, dict)]
        for handler in handlers:
            for action in ("httpGet", "tcpSocket"):
                if (handler.get(action) or {}).get("host"):
                    yield f"container {container['name']}: {action}.host must be empty"


def _privilege_escalation(_: Manifest, pod: Manifest) -> Iterator[str]:
    """Privilege Escalation (restricted): allowPrivilegeEscalation must be false, not just unset."""
    for container in containers(pod):
        if _context(container).get("allowPrivilegeEscalation") is not False:
            yield f"container {container['name']}: securityContext.allowPrivilegeEscalation must be false"


def _run_as_non_root(_: Manifest, pod: Manifest) -> Iterator[str]:
    """Running as Non-root (restricted): runAsNonRoot true on the pod, or on each container; never false."""
    pod_value = (pod.get("securityContext") or {}).get("runAsNonRoot")
    if pod_value is False:
        yield "pod: securityContext.runAsNonRoot must not be false"
    for container in containers(pod):
        own = _context(container).get("runAsNonRoot")
        if own is False or (own is None and pod_value is not True):
            yield f"container {container['name']}: runAsNonRoot must be true (on the pod or the container)"


def _run_as_user(_: Manifest, pod: Manifest) -> Iterator[str]:
    """Running as Non-root user (restricted): runAsUser must not be 0."""
    if (pod.get("securityContext") or {}).get("runAsUser") == 0:
        yield "pod: runAsUser must not be 0"
    for container in containers(pod):
        if _context(container).get("runAsUser") == 0:
            yield f"container {container['name']}: runAsUser must not be 0"


CHECKS: tuple[Check, ...] = (
    _host_namespaces, _privileged, _capabilities, _volume_types, _host_ports, _app_armor, _se_linux,
    _proc_mount, _seccomp, _sysctls, _host_process, _probe_hosts, _privilege_escalation, _run_as_non_root,
    _run_as_user,
)  # fmt: skip


def restricted_violations(template: Manifest) -> list[str]:
    """Every way a pod made from `template` ({metadata, spec}) breaks the Pod Security Standard `restricted`.

    Implemented from the standard's written controls, https://kubernetes.io/docs/concepts/security/pod-security-standards/
    (Baseline and Restricted tables; the same text heads each check in kubernetes/pod-security-admission's
    policy/check_*.go). It is the strict reading for Kubernetes 1.30 and later: the relaxations for
    Windows pods (spec.os.name) and user-namespaced pods (hostUsers: false) are not applied, and the value
    lists are those of 1.30, so a template passing here is admitted by every version from 1.30 on.
    An empty list means compliant.
    """
    metadata: Manifest = template.get("metadata") or {}
    spec: Manifest = template["spec"]
    return [problem for check in CHECKS for problem in check(metadata, spec)]


# --- 2. what KubeRay 1.7 adds to our templates ------------------------------------------------------

AUTOSCALER = "autoscaler"  # common/pod.go: AutoscalerContainerName = "autoscaler"
WAIT_GCS_READY = "wait-gcs-ready"


def _kuberay_autoscaler(ray_container: Manifest, options: Manifest) -> Manifest:
    """`BuildAutoscalerContainer(autoscalerImage)` and then `mergeAutoscalerOverrides` (common/pod.go).

    The built container has a name, the Ray image, env from the downward API, command/args and
    resources, and NO securityContext and NO volumeMounts. The merge, from the same file:

        if len(autoscalerOptions.VolumeMounts) > 0 {
            autoscalerContainer.VolumeMounts = append(autoscalerContainer.VolumeMounts,
                autoscalerOptions.VolumeMounts...)
        }
        if autoscalerOptions.SecurityContext != nil {
            autoscalerContainer.SecurityContext = autoscalerOptions.SecurityContext.DeepCopy()
        }
    """
    container: Manifest = {
        "name": AUTOSCALER,
        "image": options.get("image", ray_container["image"]),
        "imagePullPolicy": options.get("imagePullPolicy", "IfNotPresent"),
        "env": [
            {"name": "RAY_CLUSTER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['ray.io/cluster']"}}},
            {"name": "RAY_CLUSTER_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "RAY_HEAD_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "KUBERAY_CRD_VER", "value": "v1"},
            *copy.deepcopy(options.get("env", [])),
        ],
        "command": ["/bin/bash", "-c", "--"],  # utils.GetContainerCommand
        "args": [
            "ray kuberay-autoscaler --cluster-name $(RAY_CLUSTER_NAME) --cluster-namespace $(RAY_CLUSTER_NAMESPACE)"
        ],
        "resources": copy.deepcopy(options.get("resources", {"limits": {"cpu": "500m", "memory": "512Mi"}})),
    }
    if options.get("volumeMounts"):
        container["volumeMounts"] = copy.deepcopy(options["volumeMounts"])
    if options.get("securityContext") is not None:
        container["securityContext"] = copy.deepcopy(options["securityContext"])
    return container


def _add_empty_dir(pod: Manifest, container: Manifest, name: str, path: str, medium: str = "") -> None:
    """`addEmptyDir` (common/pod.go): skipped when the container already mounts something at `path`."""
    if any(mount["mountPath"] == path for mount in container.get("volumeMounts", [])):
        return
    if all(volume["name"] != name for volume in pod.get("volumes", [])):
        pod.setdefault("volumes", []).append({"name": name, "emptyDir": {"medium": medium} if medium else {}})
    container.setdefault("volumeMounts", []).append({"name": name, "mountPath": path})


def kuberay_head_pod(cluster: Manifest) -> Manifest:
    """The head pod as KubeRay builds it: `DefaultHeadPodTemplate` and `BuildPod` (common/pod.go).

    With in-tree autoscaling: `podTemplate.Spec.ServiceAccountName = utils.CheckName(utils.
    GetHeadGroupServiceAccountName(&instance))` (our own name, already cut as CheckName cuts it), the
    autoscaler appended to the containers, and the `ray-logs` emptyDir at /tmp/ray shared by both. KubeRay
    sets nothing on the pod's securityContext or automountServiceAccountToken (no occurrence in
    ray-operator/ outside the generated CRDs).
    """
    pod: Manifest = copy.deepcopy(cluster["headGroupSpec"]["template"])
    spec = pod["spec"]
    ray = spec["containers"][0]
    if cluster.get("enableInTreeAutoscaling"):
        spec["containers"].append(_kuberay_autoscaler(ray, cluster.get("autoscalerOptions", {})))
    _add_empty_dir(spec, ray, "shared-mem", "/dev/shm", "Memory")
    if cluster.get("enableInTreeAutoscaling"):
        for container in (ray, spec["containers"][-1]):
            _add_empty_dir(spec, container, "ray-logs", "/tmp/ray")
    return pod


def kuberay_worker_pod(group: Manifest) -> Manifest:
    """A worker pod as KubeRay builds it: `DefaultWorkerPodTemplate` (common/pod.go) adds `wait-gcs-ready`:

        SecurityContext: podTemplate.Spec.Containers[utils.RayContainerIndex].SecurityContext.DeepCopy(),
        Env:          deepCopyRayContainer.Env,
        VolumeMounts: deepCopyRayContainer.VolumeMounts,

    (ENABLE_INIT_CONTAINER_INJECTION defaults to true), then `BuildPod` the /dev/shm emptyDir.
    """
    pod: Manifest = copy.deepcopy(group["template"])
    spec = pod["spec"]
    ray = spec["containers"][0]
    wait = {
        "name": WAIT_GCS_READY,
        "image": ray["image"],
        "command": ["/bin/bash", "-c", "--"],  # utils.GetContainerCommand
        "args": ["until ray health-check --address $(FQ_RAY_IP):6379; do sleep 5; done"],
        "env": copy.deepcopy(ray.get("env", [])),
        "volumeMounts": copy.deepcopy(ray.get("volumeMounts", [])),
        "resources": {"limits": {"cpu": "200m", "memory": "256Mi"}, "requests": {"cpu": "200m", "memory": "256Mi"}},
    }
    if ray.get("securityContext") is not None:
        wait["securityContext"] = copy.deepcopy(ray["securityContext"])
    spec.setdefault("initContainers", []).append(wait)
    _add_empty_dir(spec, ray, "shared-mem", "/dev/shm", "Memory")
    return pod


def kuberay_submitter_pod(template: Manifest) -> Manifest:
    """The RayJob submitter pod: `GetSubmitterTemplate` returns our template as is (DeepCopy) and
    `configureSubmitterContainer` only sets command/args (when unset) and appends env; no volumes,
    no securityContext."""
    pod: Manifest = copy.deepcopy(template)
    container = pod["spec"]["containers"][0]
    container.setdefault("command", ["/bin/bash", "-ce", "--"])
    container["env"] = [*container.get("env", []), {"name": "PYTHONUNBUFFERED", "value": "1"}]
    return pod


def cluster_spec(ray_object: Manifest) -> Manifest:
    spec: Manifest = ray_object["spec"]
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec


def kuberay_pods(ray_object: Manifest) -> dict[str, Manifest]:
    """Every pod KubeRay creates for a Ray object, by role (head, worker/<group>, submitter)."""
    cluster = cluster_spec(ray_object)
    pods = {"head": kuberay_head_pod(cluster)}
    pods |= {f"worker/{group['groupName']}": kuberay_worker_pod(group) for group in cluster["workerGroupSpecs"]}
    if "submitterPodTemplate" in ray_object["spec"]:
        pods["submitter"] = kuberay_submitter_pod(ray_object["spec"]["submitterPodTemplate"])
    return pods


# --- who holds a Kubernetes API token ---------------------------------------------------------------


def _token_volumes(pod: Manifest) -> set[str]:
    return {
        volume["name"]
        for volume in pod.get("volumes", [])
        if any("serviceAccountToken" in source for source in (volume.get("projected") or {}).get("sources", []))
    }


def token_holders(template: Manifest) -> set[str]:
    """Containers that can read a Kubernetes API token of the pod's ServiceAccount.

    Unless automountServiceAccountToken is false, the ServiceAccount admission plugin mounts the token
    into every init and regular container that has nothing at the default path; otherwise a container
    holds one when it mounts a projected serviceAccountToken volume (or anything at the default path).
    """
    spec = template["spec"]
    everyone = list(containers(spec))
    if spec.get("automountServiceAccountToken") is not False:
        return {c["name"] for c in everyone}
    tokens = _token_volumes(spec)
    return {
        c["name"]
        for c in everyone
        for mount in c.get("volumeMounts", [])
        if mount["name"] in tokens or mount["mountPath"].startswith(SERVICE_ACCOUNT_MOUNT_PATH)
    }


# --- 3. the matrix ----------------------------------------------------------------------------------

TYPES: dict[str, tuple[str, Callable[[WorkloadDoc], WorkloadDoc]]] = {
    "Cluster": ("RayCluster", lambda d: d),
    "Job": ("RayJob", lambda d: d.job()),
    "Service": ("RayService", lambda d: d.service()),
}
GROUPS: dict[str, Callable[[WorkloadDoc], WorkloadDoc]] = {
    "cpu": lambda d: d.group("cpu", capacity="Spot"),
    "gpu": lambda d: d.gpu_group("gpu", capacity="SpotWithFallback"),
    "cpu+gpu": lambda d: d.group("cpu").gpu_group("gpu", accelerator="nvidia-tesla-a100", count=4),
}


def rendered(type_: str, autoscaling: bool, groups: str, *, token_auth: bool = False) -> Manifest:
    kind, make = TYPES[type_]
    doc = GROUPS[groups](make(workload()).set("spec.autoscaling.enabled", autoscaling))
    rules = permissive_policy()
    if token_auth:
        doc = doc.set("spec.ray.version", "2.52.0")
        rules = rules.set("ray.tokenAuth", "Required")
    objects = build_objects(resolved(doc, rules))
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, [o["kind"] for o in objects]
    return found[0]


MATRIX = [
    pytest.param(type_, autoscaling, groups, id=f"{type_}-{'autoscaling' if autoscaling else 'fixed'}-{groups}")
    for type_ in TYPES
    for autoscaling in (True, False)
    for groups in GROUPS
]


@pytest.mark.parametrize(("type_", "autoscaling", "groups"), MATRIX)
def test_every_pod_kuberay_creates_meets_restricted(type_: str, autoscaling: bool, groups: str) -> None:
    ray_object = rendered(type_, autoscaling, groups)
    assert validate_object(ray_object) == []  # still what the upstream KubeRay CRD accepts
    pods = kuberay_pods(ray_object)
    expected = {"head", *(f"worker/{g}" for g in groups.split("+"))} | ({"submitter"} if type_ == "Job" else set())
    assert set(pods) == expected
    for role, pod in pods.items():
        assert restricted_violations(pod) == [], role
    head_containers = [c["name"] for c in pods["head"]["spec"]["containers"]]
    assert head_containers == (["ray-head", AUTOSCALER] if autoscaling else ["ray-head"])
    for role, pod in pods.items():
        if role.startswith("worker/"):
            assert [c["name"] for c in pod["spec"]["initContainers"]] == [WAIT_GCS_READY]


@pytest.mark.parametrize(("type_", "autoscaling", "groups"), MATRIX)
def test_only_the_autoscaler_holds_a_kubernetes_token(type_: str, autoscaling: bool, groups: str) -> None:
    pods = kuberay_pods(rendered(type_, autoscaling, groups))
    holders = {role: token_holders(pod) for role, pod in pods.items()}
    assert holders == {role: ({AUTOSCALER} if role == "head" and autoscaling else set()) for role in pods}


def test_the_autoscaler_finds_its_credentials_where_ray_reads_them() -> None:
    """Ray's kuberay/node_provider.py `load_k8s_secrets()` opens
    /var/run/secrets/kubernetes.io/serviceaccount/token and verifies with .../ca.crt."""
    head = kuberay_pods(rendered("Cluster", True, "cpu"))["head"]["spec"]
    autoscaler = next(c for c in head["containers"] if c["name"] == AUTOSCALER)
    mount = next(m for m in autoscaler["volumeMounts"] if m["mountPath"] == SERVICE_ACCOUNT_MOUNT_PATH)
    assert mount["readOnly"] is True
    volume = next(v for v in head["volumes"] if v["name"] == mount["name"])
    paths = {item["path"] for source in volume["projected"]["sources"] for part in source.values()
             for item in part.get("items", [part])}  # fmt: skip
    assert paths == {"token", "ca.crt", "namespace"}


def test_token_authentication_adds_no_kubernetes_token() -> None:
    """authOptions {mode: token} hands Ray's own token through a Secret env var; only
    enableK8sTokenAuth would project a ServiceAccount token into the Ray containers (AddRayTokenVolume)."""
    ray_object = rendered("Job", True, "cpu", token_auth=True)
    assert cluster_spec(ray_object)["authOptions"] == {"mode": "token"}
    assert validate_object(ray_object) == []
    holders = {role: token_holders(pod) for role, pod in kuberay_pods(ray_object).items()}
    assert holders == {"head": {AUTOSCALER}, "worker/cpu": set(), "submitter": set()}


# --- the model is what makes the check meaningful ---------------------------------------------------


def test_without_autoscaler_options_kuberay_adds_an_unhardened_sidecar() -> None:
    """The finding of the issue: KubeRay's autoscaler has no securityContext unless we give it one."""
    ray_object = rendered("Cluster", True, "cpu")
    options = cluster_spec(ray_object)["autoscalerOptions"]
    del options["securityContext"]
    problems = restricted_violations(kuberay_pods(ray_object)["head"])
    assert "container autoscaler: securityContext.allowPrivilegeEscalation must be false" in problems
    assert 'container autoscaler: securityContext.capabilities.drop must include "ALL"' in problems
    del options["volumeMounts"]
    assert token_holders(kuberay_pods(ray_object)["head"]) == set()


def test_wait_gcs_ready_inherits_the_worker_containers_context() -> None:
    ray_object = rendered("Cluster", False, "gpu")
    del cluster_spec(ray_object)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["securityContext"]
    problems = restricted_violations(kuberay_pods(ray_object)["worker/gpu"])
    assert "container wait-gcs-ready: securityContext.allowPrivilegeEscalation must be false" in problems
    assert "container ray-worker: securityContext.allowPrivilegeEscalation must be false" in problems


def test_automounting_would_give_every_container_the_token() -> None:
    head = kuberay_pods(rendered("Cluster", True, "cpu"))["head"]
    head["spec"]["automountServiceAccountToken"] = True
    assert token_holders(head) == {"ray-head", AUTOSCALER}
    del head["spec"]["automountServiceAccountToken"]  # the API default is true
    assert token_holders(head) == {"ray-head", AUTOSCALER}


# --- the checker itself -----------------------------------------------------------------------------


def compliant() -> Manifest:
    return {
        "metadata": {"annotations": {APPARMOR_ANNOTATION_PREFIX + "c": "runtime/default"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "initContainers": [{"name": "i", "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
            "containers": [{"name": "c", "ports": [{"containerPort": 80}], "securityContext": {
                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                "runAsUser": 1000, "procMount": "Default", "seLinuxOptions": {"type": "container_t"},
                "appArmorProfile": {"type": "Localhost", "localhostProfile": "p"}}}],
            "volumes": [{"name": "v", "emptyDir": {}}, {"name": "p", "persistentVolumeClaim": {"claimName": "x"}}],
        },
    }  # fmt: skip


def test_a_compliant_pod_passes() -> None:
    assert restricted_violations(compliant()) == []


def test_container_level_settings_can_stand_in_for_the_pods() -> None:
    pod = compliant()
    del pod["spec"]["securityContext"]
    for container in containers(pod["spec"]):
        container["securityContext"] |= {"runAsNonRoot": True, "seccompProfile": {"type": "Localhost"}}
    assert restricted_violations(pod) == []


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    def mutate(pod: Manifest) -> None:
        *parents, last = path.split(".")
        node: Any = pod
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if value is None:
            del node[last]
        else:
            node[last] = value

    return mutate


C = "spec.containers.0.securityContext"
I = "spec.initContainers.0.securityContext"  # noqa: E741


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (_set("spec.hostNetwork", True), "spec.hostNetwork must be false"),
        (_set("spec.hostPID", True), "spec.hostPID must be false"),
        (_set("spec.hostIPC", True), "spec.hostIPC must be false"),
        (_set(f"{I}.privileged", True), "container i: securityContext.privileged must be false"),
        (_set(f"{I}.capabilities", {"drop": ["NET_RAW"]}), "container i: securityContext.capabilities.drop must"),
        (_set(f"{C}.capabilities.add", ["SYS_ADMIN"]), "container c: securityContext.capabilities.add must not"),
        (_set("spec.volumes", [{"name": "h", "hostPath": {"path": "/"}}]), "volume h: type hostPath"),
        (_set("spec.volumes", [{"name": "n", "nfs": {"server": "s", "path": "/"}}]), "volume n: type nfs"),
        (_set("spec.containers.0.ports", [{"containerPort": 80, "hostPort": 80}]), "container c: hostPort 80"),
        (_set(f"{C}.appArmorProfile", {"type": "Unconfined"}), "container c: appArmorProfile.type Unconfined"),
        (_set("metadata.annotations", {APPARMOR_ANNOTATION_PREFIX + "c": "unconfined"}), "AppArmor profile"),
        (_set(f"{C}.seLinuxOptions", {"type": "spc_t"}), "container c: seLinuxOptions.type spc_t"),
        (_set(f"{C}.seLinuxOptions", {"user": "root"}), "container c: seLinuxOptions.user must be empty"),
        (_set(f"{C}.procMount", "Unmasked"), "container c: procMount must be Default"),
        (_set("spec.securityContext.seccompProfile", {"type": "Unconfined"}), "pod: seccompProfile.type Unconfined"),
        (_set("spec.securityContext.seccompProfile", None), "container i: pod or container must set seccompProfile"),
        (_set(f"{C}.seccompProfile", {"type": "Unconfined"}), "container c: seccompProfile.type Unconfined"),
        (_set("spec.securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}]), "sysctl kernel.msgmax"),
        (_set(f"{C}.windowsOptions", {"hostProcess": True}), "container c: windowsOptions.hostProcess"),
        (_set("spec.containers.0.livenessProbe", {"httpGet": {"host": "10.0.0.1", "port": 80}}), "httpGet.host"),
        (_set("spec.containers.0.lifecycle", {"preStop": {"tcpSocket": {"host": "x", "port": 1}}}), "tcpSocket.host"),
        (_set(f"{I}.allowPrivilegeEscalation", None), "container i: securityContext.allowPrivilegeEscalation"),
        (_set(f"{C}.allowPrivilegeEscalation", True), "container c: securityContext.allowPrivilegeEscalation"),
        (_set("spec.securityContext.runAsNonRoot", None), "container i: runAsNonRoot must be true"),
        (_set("spec.securityContext.runAsNonRoot", False), "pod: securityContext.runAsNonRoot must not be false"),
        (_set(f"{C}.runAsNonRoot", False), "container c: runAsNonRoot must be true"),
        (_set(f"{C}.runAsUser", 0), "container c: runAsUser must not be 0"),
        (_set("spec.securityContext.runAsUser", 0), "pod: runAsUser must not be 0"),
        (_set("spec.ephemeralContainers", [{"name": "e"}]), "container e: securityContext.allowPrivilegeEscalation"),
    ],
)
def test_each_control_is_enforced(mutation: Callable[[Manifest], None], expected: str) -> None:
    pod = compliant()
    mutation(pod)
    problems = restricted_violations(pod)
    assert any(expected in problem for problem in problems), problems
