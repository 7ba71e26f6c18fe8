"""Every builder branch: Ray objects, placement, identity, isolation, exposure, the GCP plan."""

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlworkload.builders import build_gcp_plan, build_objects
from mlworkload.builders.names import kuberay_check_name
from mlworkload.builders.nodepools import GKE_POOL_NAME_PATTERN, gke_name
from mlworkload.builders.pods import (
    PRESTOP_BUDGET_SECONDS,
    RAY_STOP_SECONDS,
    SAFE_TO_EVICT_ANNOTATION,
    prestop_drain_script,
)
from mlworkload.policy import PlatformDefaults, admit
from mlworkload.problems import Refused
from tests.support.documents import (
    API_SERVER_CIDR,
    GSA,
    WorkloadDoc,
    permissive_policy,
    policy,
    resolved,
    workload,
)
from tests.support.schemas import validate_object

Manifest = dict[str, Any]


def render(doc: WorkloadDoc, with_policy: Any = None) -> list[Manifest]:
    return build_objects(resolved(doc, with_policy if with_policy is not None else permissive_policy()))


def only(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, [(o["kind"], o["metadata"]["name"]) for o in objects]
    return found[0]


def kinds(objects: list[Manifest]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def cluster_spec(ray_object: Manifest) -> Manifest:
    spec: Manifest = ray_object["spec"]
    return spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or spec


def pod_templates(ray_object: Manifest) -> list[Manifest]:
    spec = cluster_spec(ray_object)
    templates = [spec["headGroupSpec"]["template"], *(g["template"] for g in spec["workerGroupSpecs"])]
    if "submitterPodTemplate" in ray_object["spec"]:
        templates.append(ray_object["spec"]["submitterPodTemplate"])
    return templates


def worker_pod(objects: list[Manifest], index: int = 0) -> Manifest:
    ray_object = next(o for o in objects if o["apiVersion"] == "ray.io/v1")
    pod: Manifest = cluster_spec(ray_object)["workerGroupSpecs"][index]["template"]["spec"]
    return pod


# --- the Ray object ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "kind"),
    [(workload(), "RayCluster"), (workload().job(), "RayJob"), (workload().service(), "RayService")],
)
def test_each_type_becomes_its_kuberay_kind(doc: WorkloadDoc, kind: str) -> None:
    ray_object = only(render(doc), kind, "demo")
    assert ray_object["apiVersion"] == "ray.io/v1"
    assert cluster_spec(ray_object)["rayVersion"] == "2.41.0"


def test_the_head_takes_no_tasks_unless_schedulable() -> None:
    params = cluster_spec(only(render(workload()), "RayCluster"))["headGroupSpec"]["rayStartParams"]
    assert params == {"dashboard-host": "0.0.0.0", "num-cpus": "0"}
    schedulable = workload().set("spec.head.schedulable", True)
    params = cluster_spec(only(render(schedulable), "RayCluster"))["headGroupSpec"]["rayStartParams"]
    assert "num-cpus" not in params


def test_workers_get_resources_gpu_limits_and_the_gpu_image() -> None:
    objects = render(workload().gpu_group(count=2, resources={"cpu": "20", "memory": "80Gi"}))
    container = worker_pod(objects)["containers"][0]
    assert container["image"] == "rayproject/ray:2.41.0-py311-gpu"
    assert container["resources"] == {
        "requests": {"cpu": "20", "memory": "80Gi"},
        "limits": {"memory": "80Gi", "nvidia.com/gpu": "2"},
    }


def test_user_env_comes_first_and_can_override_the_register_timeout() -> None:
    objects = render(workload().group().set("spec.ray.env", [{"name": "A", "value": "1"}]))
    assert worker_pod(objects)["containers"][0]["env"] == [
        {"name": "A", "value": "1"},
        {"name": "RAY_worker_register_timeout_seconds", "value": "600"},
    ]
    overridden = workload().group().set("spec.ray.env", [{"name": "RAY_worker_register_timeout_seconds", "value": "5"}])
    assert worker_pod(render(overridden))["containers"][0]["env"] == [
        {"name": "RAY_worker_register_timeout_seconds", "value": "5"}
    ]


@pytest.mark.parametrize("enabled", [True, False])
def test_autoscaling_options_and_replica_bounds(enabled: bool) -> None:
    doc = (
        workload()
        .group("cpu", replicas=2, minReplicas=1, maxReplicas=5)
        .set("spec.autoscaling", {"enabled": enabled, "idleTimeoutSeconds": 90})
    )
    spec = cluster_spec(only(render(doc), "RayCluster"))
    assert spec["enableInTreeAutoscaling"] is enabled
    group = spec["workerGroupSpecs"][0]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2, 1, 5)
    head = spec["headGroupSpec"]["template"]["spec"]
    token_volumes = [v["name"] for v in head["volumes"] if "projected" in v]
    if enabled:
        options = spec["autoscalerOptions"]
        assert (options["upscalingMode"], options["idleTimeoutSeconds"]) == ("Default", 90)
        # The autoscaler sidecar mounts the head's token volume; the head's Ray container does not.
        assert options["volumeMounts"] == [{"name": "autoscaler-kube-api-access",
                                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                                            "readOnly": True}]  # fmt: skip
        assert token_volumes == ["autoscaler-kube-api-access"]
    else:
        assert "autoscalerOptions" not in spec
        assert token_volumes == []
    # No pod automounts the token, the autoscaling head included: it is mounted into one container.
    assert head["automountServiceAccountToken"] is False
    assert group["template"]["spec"]["automountServiceAccountToken"] is False
    assert [m["name"] for m in head["containers"][0]["volumeMounts"]] == ["dshm"]


def test_the_autoscaler_token_volume_is_what_automounting_would_project() -> None:
    """The ServiceAccount admission plugin's TokenVolumeSource(): token, cluster CA, namespace."""
    doc = workload().group().set("spec.autoscaling.enabled", True)
    head = cluster_spec(only(render(doc), "RayCluster"))["headGroupSpec"]["template"]["spec"]
    volume = next(v for v in head["volumes"] if v["name"] == "autoscaler-kube-api-access")
    assert volume["projected"]["sources"] == [
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ]  # fmt: skip


@pytest.mark.parametrize(("doc", "kind"), [(workload().job().gpu_group(), "RayJob"),
                                           (workload().service().group(), "RayService")])  # fmt: skip
def test_every_pod_runs_as_the_ray_images_user_without_privileges(doc: WorkloadDoc, kind: str) -> None:
    templates = pod_templates(only(render(doc), kind))
    assert len(templates) == (3 if kind == "RayJob" else 2)  # head, the group, and a job's submitter
    for template in templates:
        assert template["spec"]["securityContext"] == {
            "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100,
            "seccompProfile": {"type": "RuntimeDefault"},
        }  # fmt: skip
        assert template["spec"]["containers"][0]["securityContext"] == {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
        }  # fmt: skip


def test_suspend_reaches_raycluster_and_rayjob() -> None:
    assert only(render(workload().set("spec.suspend", True)), "RayCluster")["spec"]["suspend"] is True
    assert only(render(workload().job().set("spec.suspend", True)), "RayJob")["spec"]["suspend"] is True


def test_rayjob_fields() -> None:
    doc = workload().job(
        "python train.py",
        runtimeEnv={"working_dir": "gs://b/code.zip", "pip": ["torch==2.5.1"]},
        backoffLimit=2,
        ttlSecondsAfterFinished=600,
        activeDeadlineSeconds=3600,
    )
    spec = only(render(doc), "RayJob")["spec"]
    assert spec["entrypoint"] == "python train.py"
    assert spec["submissionMode"] == "K8sJobMode"
    assert spec["shutdownAfterJobFinishes"] is True
    assert (spec["ttlSecondsAfterFinished"], spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (600, 2, 3600)
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"working_dir": "gs://b/code.zip", "pip": ["torch==2.5.1"]}
    submitter = spec["submitterPodTemplate"]
    assert submitter["spec"]["restartPolicy"] == "Never"
    assert submitter["spec"]["containers"][0]["image"] == "rayproject/ray:2.41.0-py311"
    assert "command" not in submitter["spec"]["containers"][0]  # KubeRay supplies it


def test_rayjob_without_runtime_env_or_deadline_leaves_them_out() -> None:
    spec = only(render(workload().job()), "RayJob")["spec"]
    assert "runtimeEnvYAML" not in spec
    assert "activeDeadlineSeconds" not in spec
    assert spec["ttlSecondsAfterFinished"] == 0


@pytest.mark.parametrize(
    ("asked", "pending_limit", "expected"),
    [(None, None, None), (900, None, 900), (None, 1800, 1800), (600, 1800, 600)],
)
def test_rayjob_pre_running_deadline_from_the_spec_or_the_policy(
    asked: int | None, pending_limit: int | None, expected: int | None
) -> None:
    doc = workload().job(**({"preRunningDeadlineSeconds": asked} if asked else {}))
    rules = permissive_policy().set("lifecycle.maxJobPendingSeconds", pending_limit)
    ray_job = only(render(doc, rules), "RayJob")
    assert ray_job["spec"].get("preRunningDeadlineSeconds") == expected
    assert validate_object(ray_job) == []  # KubeRay 1.7's RayJob CRD: int32, minimum 1


def test_the_kuberay_schema_would_refuse_a_pre_running_deadline_of_zero() -> None:
    """The check above is live: KubeRay's CRD has `minimum: 1`, as the MLWorkload's `gt=0`."""
    ray_job = only(render(workload().job(preRunningDeadlineSeconds=60)), "RayJob")
    ray_job["spec"]["preRunningDeadlineSeconds"] = 0
    assert any("preRunningDeadlineSeconds" in error for error in validate_object(ray_job))


INCREMENTAL_OPTIONS = {"gatewayClassName": "gke-l7-rilb", "maxSurgePercent": 20, "stepSizePercent": 5,
                       "intervalSeconds": 10}  # fmt: skip
UPGRADE_STRATEGIES = {
    "KubeRay's default": None,
    "NewCluster": {"type": "NewCluster"},
    "None": {"type": "None"},
    "incremental": {"type": "NewClusterWithIncrementalUpgrade", "clusterUpgradeOptions": INCREMENTAL_OPTIONS},
    "incremental, KubeRay's surge": {
        "type": "NewClusterWithIncrementalUpgrade",
        "clusterUpgradeOptions": {"gatewayClassName": "istio", "stepSizePercent": 10, "intervalSeconds": 30},
    },
}
ALL_STRATEGIES = permissive_policy().set(
    "lifecycle.allowedUpgradeStrategies", ["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]
)


@pytest.mark.parametrize("strategy", UPGRADE_STRATEGIES.values(), ids=UPGRADE_STRATEGIES.keys())
def test_rayservice_carries_the_upgrade_strategy_as_asked(strategy: Manifest | None) -> None:
    doc = workload().service().group(maxReplicas=2).set("spec.autoscaling.enabled", True)
    ray_service = only(render(doc.set("spec.serve.upgradeStrategy", strategy), ALL_STRATEGIES), "RayService")
    assert ray_service["spec"].get("upgradeStrategy") == strategy  # none asked: none written, KubeRay's default
    assert validate_object(ray_service) == []  # KubeRay 1.7's RayService CRD


def test_the_kuberay_schema_would_refuse_incremental_options_without_their_required_fields() -> None:
    """The check above is live: KubeRay's CRD requires gatewayClassName, stepSizePercent and intervalSeconds."""
    doc = workload().service().set("spec.autoscaling.enabled", True)
    doc.set("spec.serve.upgradeStrategy", UPGRADE_STRATEGIES["incremental"])
    ray_service = only(render(doc, ALL_STRATEGIES), "RayService")
    del ray_service["spec"]["upgradeStrategy"]["clusterUpgradeOptions"]["intervalSeconds"]
    assert any("intervalSeconds" in error for error in validate_object(ray_service))


def test_rayservice_carries_the_serve_config_and_a_serve_port() -> None:
    apps = [{"name": "llm", "import_path": "app:app", "route_prefix": "/", "args": {"n": 1}}]
    ray_service = only(render(workload().service(apps)), "RayService")
    assert yaml.safe_load(ray_service["spec"]["serveConfigV2"]) == {"applications": apps}
    head = cluster_spec(ray_service)["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "serve", "containerPort": 8000} in head["ports"]


# --- ownership ------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", [workload().job().gpu_group(), workload().service().group(capacity="Spot")])
def test_every_object_and_pod_template_carries_ownership_and_cost_labels(doc: WorkloadDoc) -> None:
    doc.expose("dashboard").expose("serve")
    objects = render(doc, permissive_policy().set("labels.required", ["cost-center"]))
    expected = {"app.kubernetes.io/managed-by": "mlworkload", "mlworkload.io/workload": "demo", "cost-center": "nlp"}
    for manifest in objects:
        if manifest["kind"] == "ComputeClass":  # cluster-scoped and shared by workloads
            assert manifest["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mlworkload"
            continue
        assert expected.items() <= manifest["metadata"]["labels"].items(), manifest["kind"]
        if manifest["apiVersion"] == "ray.io/v1":
            for template in pod_templates(manifest):
                assert expected.items() <= template["metadata"]["labels"].items()


def test_owner_references_only_when_the_workload_has_a_uid() -> None:
    assert all("ownerReferences" not in o["metadata"] for o in render(workload().expose("dashboard")))
    objects = render(workload().set("metadata.uid", "uid-1").expose("dashboard"))
    for manifest in objects:
        assert manifest["metadata"]["ownerReferences"] == [
            {"apiVersion": "mlworkload.io/v1alpha1", "kind": "MLWorkload", "name": "demo", "uid": "uid-1",
             "controller": True, "blockOwnerDeletion": True}
        ]  # fmt: skip


# --- placement ------------------------------------------------------------------------------------

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
SPOT_TOLERATION = {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
NOT_SPOT = {
    "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "cloud.google.com/gke-spot", "operator": "NotIn", "values": ["true"]}]}]}}
}  # fmt: skip


# The default sharing (Policy): a pool of the policy's own, selected by its label and tolerating its taint.
TENANT = "permissive"  # permissive_policy()'s name
TENANT_SELECTOR = {"mlworkload.io/pool-policy": TENANT}
TENANT_TOLERATION = {"key": "mlworkload.io/pool-policy", "operator": "Equal", "value": TENANT, "effect": "NoSchedule"}
SHARED = permissive_policy().set("nodePools.sharing", "Cluster")


def test_spot_gpu_workers_select_accelerator_and_spot_and_tolerate_both_taints() -> None:
    pod = worker_pod(render(workload().gpu_group(capacity="Spot"), SHARED))
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4", "cloud.google.com/gke-spot": "true"}
    assert pod["tolerations"] == [GPU_TOLERATION, SPOT_TOLERATION]
    assert "affinity" not in pod


def test_on_demand_gpu_workers_never_land_on_spot() -> None:
    pod = worker_pod(render(workload().gpu_group(capacity="OnDemand"), SHARED))
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"] == [GPU_TOLERATION]
    assert pod["affinity"] == NOT_SPOT


@pytest.mark.parametrize("capacity", ["Spot", "OnDemand", "SpotWithFallback"])
def test_workers_land_only_on_their_policys_pools(capacity: str) -> None:
    pod = worker_pod(render(workload().gpu_group(capacity=capacity)))
    assert TENANT_SELECTOR.items() <= pod["nodeSelector"].items()
    assert TENANT_TOLERATION in pod["tolerations"]
    cpu_pod = worker_pod(render(workload().group("cpu", capacity=capacity)))  # general nodes: nobody's pools
    assert "mlworkload.io/pool-policy" not in (cpu_pod.get("nodeSelector") or {})
    assert TENANT_TOLERATION not in (cpu_pod.get("tolerations") or [])


def test_fallback_gpu_workers_select_only_their_compute_class() -> None:
    pod = worker_pod(render(workload().gpu_group(capacity="SpotWithFallback"), SHARED))
    # GKE refuses gke-spot / gke-accelerator selectors next to a ComputeClass selector.
    assert pod["nodeSelector"] == {"cloud.google.com/compute-class": "mlw-l4x1-swf"}
    assert pod["tolerations"] == [
        GPU_TOLERATION,
        SPOT_TOLERATION,
        {"key": "cloud.google.com/compute-class", "operator": "Equal", "value": "mlw-l4x1-swf", "effect": "NoSchedule"},
    ]
    own = worker_pod(render(workload().gpu_group(capacity="SpotWithFallback")))
    assert own["nodeSelector"] == {"cloud.google.com/compute-class": f"mlw-{TENANT}-l4x1-swf", **TENANT_SELECTOR}


@pytest.mark.parametrize(
    ("capacity", "selector", "tolerations", "affinity_kind"),
    [
        ("Spot", {"cloud.google.com/gke-spot": "true"}, [SPOT_TOLERATION], None),
        ("OnDemand", None, None, "requiredDuringSchedulingIgnoredDuringExecution"),
        ("SpotWithFallback", None, [SPOT_TOLERATION], "preferredDuringSchedulingIgnoredDuringExecution"),
    ],
)
def test_cpu_workers_on_general_nodes(
    capacity: str, selector: dict[str, str] | None, tolerations: list[Any] | None, affinity_kind: str | None
) -> None:
    pod = worker_pod(render(workload().group("cpu", capacity=capacity)))
    assert pod.get("nodeSelector") == selector
    assert pod.get("tolerations") == tolerations
    assert (next(iter(pod["affinity"]["nodeAffinity"])) if "affinity" in pod else None) == affinity_kind


def test_a_chosen_machine_type_holds_the_pods_to_it() -> None:
    pod = worker_pod(render(workload().group("cpu", machineType="n2-standard-8", capacity="Spot"), SHARED))
    assert pod["nodeSelector"] == {
        "node.kubernetes.io/instance-type": "n2-standard-8",
        "cloud.google.com/gke-spot": "true",
    }


def test_the_head_never_runs_on_spot() -> None:
    head = cluster_spec(only(render(workload().gpu_group(capacity="Spot")), "RayCluster"))["headGroupSpec"]
    assert head["template"]["spec"]["affinity"] == NOT_SPOT
    assert "tolerations" not in head["template"]["spec"]


# --- identity -------------------------------------------------------------------------------------


def test_the_service_account_carries_the_gsa_and_every_pod_uses_it() -> None:
    objects = render(workload().job().gpu_group())
    account = only(objects, "ServiceAccount", "demo")
    assert account["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": GSA}
    for template in pod_templates(only(objects, "RayJob")):
        assert template["spec"]["serviceAccountName"] == "demo"


def test_no_gsa_means_no_annotation() -> None:
    account = only(render(workload(), policy()), "ServiceAccount")
    assert "annotations" not in account["metadata"]


def test_the_service_account_is_named_as_kuberay_names_the_heads() -> None:
    """KubeRay keeps the last 50 characters (utils.CheckName): names are limited so that none is ever cut, and
    no two workloads can share an account (and its Workload Identity member)."""
    assert kuberay_check_name("a" + "b" * 51 + "c") == ("b" * 49) + "c"
    assert kuberay_check_name("x" * 47 + "-9") == "x" * 47 + "-9"
    assert kuberay_check_name("x" * 10 + "-" + "a" * 49) == "r" + "a" * 49  # no leading punctuation
    name = "a" + "b" * 48 + "c"  # 50 characters, the longest Cluster name
    assert only(render(workload(name)), "ServiceAccount")["metadata"]["name"] == name
    with pytest.raises(Refused, match="type Cluster allows at most 50"):
        workload("a" + "b" * 49 + "c").obj()


# --- network isolation ----------------------------------------------------------------------------


def policies_by_name(objects: list[Manifest]) -> dict[str, Manifest]:
    return {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "NetworkPolicy"}


OWN = {"podSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "mlworkload",
                                       "mlworkload.io/workload": "demo"}}}  # fmt: skip
KUBERAY = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}},
           "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}}  # fmt: skip
GATEWAY = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}


def tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def test_strict_isolation_admits_own_pods_kuberay_and_allow_from_on_its_ports() -> None:
    doc = workload().job().group("a").group("b").set("spec.network.allowFrom", [GATEWAY])
    found = policies_by_name(render(doc))
    assert sorted(found) == ["demo-head", "demo-submitter", "demo-workers-a", "demo-workers-b"]
    assert found["demo-workers-a"]["podSelector"]["matchLabels"]["mlworkload.io/group"] == "a"
    assert found["demo-head"]["ingress"] == [
        {"from": [OWN]},
        {"from": [KUBERAY], "ports": tcp(8265)},  # jobs are followed through the dashboard
        {"from": [GATEWAY], "ports": tcp(8000)},  # allowFrom without ports: Serve only
    ]
    assert found["demo-workers-a"]["ingress"] == [{"from": [OWN]}, {"from": [GATEWAY], "ports": tcp(8000)}]
    assert found["demo-submitter"]["ingress"] == []
    for spec in found.values():
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        assert spec["egress"][0] == {"to": [OWN]}


def test_allow_from_ports_and_kuberay_serve_health_checks_on_a_ray_service() -> None:
    peer = {**GATEWAY, "ports": [{"port": 8265}, {"port": 10001, "protocol": "TCP"}]}
    head = policies_by_name(render(workload().service().set("spec.network.allowFrom", [peer])))["demo-head"]
    # KubeRay health-checks the head's Serve proxy on 8000 to label it ray.io/serve.
    assert {"from": [KUBERAY], "ports": tcp(8265, 8000)} in head["ingress"]
    assert {"from": [GATEWAY], "ports": tcp(8265, 10001)} in head["ingress"]


def test_kuberay_operator_and_metrics_scrapers_come_from_the_policy() -> None:
    operator = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ray-system"}}}
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gmp-system"}}}
    rules = permissive_policy().set("network.kuberayOperator", operator).set("network.metricsScrapers", [scraper])
    found = policies_by_name(render(workload().group(), rules))
    assert found["demo-head"]["ingress"][1] == {"from": [operator], "ports": tcp(8265)}
    for name in ("demo-head", "demo-workers-cpu"):
        assert {"from": [scraper], "ports": tcp(8080)} in found[name]["ingress"]


def test_namespace_isolation_admits_the_whole_namespace() -> None:
    found = policies_by_name(render(workload().set("spec.network.isolation", "Namespace")))
    assert found["demo-head"]["ingress"][0] == {"from": [{"podSelector": {}}]}
    assert found["demo-head"]["egress"][0] == {"to": [{"podSelector": {}}]}


def test_isolation_none_renders_no_policy() -> None:
    assert policies_by_name(render(workload().group().set("spec.network.isolation", "None"))) == {}


def test_egress_reaches_only_dns_metadata_google_apis_and_allowed_egress() -> None:
    rules = permissive_policy().set("network.allowedEgress", [{"ipBlock": {"cidr": "10.10.0.0/16"}}])
    egress = policies_by_name(render(workload().group(), rules))["demo-workers-cpu"]["egress"]
    assert egress == [
        {"to": [OWN]},
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                 "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}},
                {"ipBlock": {"cidr": "169.254.20.10/32"}}, {"ipBlock": {"cidr": "169.254.169.254/32"}}],
         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}], "ports": tcp(80)},
        {"to": [{"ipBlock": {"cidr": "169.254.169.252/32"}}], "ports": tcp(988)},
        {"to": [{"ipBlock": {"cidr": "199.36.153.8/30"}}, {"ipBlock": {"cidr": "199.36.153.4/30"}}],
         "ports": tcp(443)},
        {"to": [{"ipBlock": {"cidr": "10.10.0.0/16"}}]},
    ]  # fmt: skip
    assert all("to" in rule for rule in egress)  # no rule reaches every address


def test_only_the_autoscaling_head_reaches_the_control_plane() -> None:
    found = policies_by_name(render(workload().group().set("spec.autoscaling.enabled", True)))
    api = {"to": [{"ipBlock": {"cidr": API_SERVER_CIDR}}], "ports": tcp(443)}
    assert found["demo-head"]["egress"][-1] == api
    assert api not in found["demo-workers-cpu"]["egress"]


def test_autoscaling_under_isolation_needs_the_control_planes_address() -> None:
    doc = workload().group().set("spec.autoscaling.enabled", True)
    verdict = admit(doc.obj(), [permissive_policy().set("network.apiServerCIDRs", []).obj()], None)
    assert [str(p) for p in verdict.problems] == [
        "spec.autoscaling.enabled: the Ray autoscaler must reach the Kubernetes API, and under Strict isolation"
        " nothing says where it is: policy permissive needs network.apiServerCIDRs (or the operator setting"
        " MLW_API_SERVER_CIDRS)"
    ]
    defaults = PlatformDefaults(api_server_cidrs=("10.0.0.2/32",))
    assert admit(doc.obj(), [permissive_policy().set("network.apiServerCIDRs", []).obj()], None, defaults).allowed
    assert admit(doc.set("spec.network.isolation", "None").obj(), [permissive_policy().obj()], None).allowed


def test_load_balancer_ranges_reach_exactly_the_exposed_ports() -> None:
    lb = [{"ipBlock": {"cidr": "35.191.0.0/16"}}, {"ipBlock": {"cidr": "130.211.0.0/22"}}]
    found = policies_by_name(render(workload().service().group().expose("dashboard").expose("serve")))
    assert found["demo-head"]["ingress"][-1] == {"from": lb, "ports": tcp(8265, 8000)}
    assert found["demo-workers-cpu"]["ingress"][-1] == {"from": lb, "ports": tcp(8000)}
    cluster = policies_by_name(render(workload().group().expose("serve")))
    assert cluster["demo-workers-cpu"]["ingress"] == [{"from": [OWN]}]  # on a RayCluster, serve runs on the head


# --- exposure -------------------------------------------------------------------------------------


def test_internal_dashboard_with_iap_is_https_only_with_the_policys_certificate() -> None:
    objects = render(workload().expose("dashboard", iap=True, host="ray.internal.example.com"))
    assert kinds(objects)[-3:] == [("Service", "demo-dashboard"), ("BackendConfig", "demo-dashboard"),
                                   ("Ingress", "demo-dashboard")]  # fmt: skip
    service = only(objects, "Service")
    assert service["metadata"]["annotations"] == {
        "cloud.google.com/neg": '{"ingress": true}',
        "cloud.google.com/backend-config": '{"default": "demo-dashboard"}',
    }
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {"app.kubernetes.io/managed-by": "mlworkload",
                                           "mlworkload.io/workload": "demo", "ray.io/node-type": "head"}  # fmt: skip
    assert only(objects, "BackendConfig")["spec"] == {
        "healthCheck": {"type": "HTTP", "requestPath": "/api/gcs_healthz", "port": 8265},
        "iap": {"enabled": True},
    }
    ingress = only(objects, "Ingress")
    assert ingress["metadata"]["annotations"] == {
        "kubernetes.io/ingress.class": "gce-internal",
        "ingress.gcp.kubernetes.io/pre-shared-cert": "internal-cert",
        "kubernetes.io/ingress.allow-http": "false",
    }
    assert "ingressClassName" not in ingress["spec"]
    assert ingress["spec"]["rules"][0]["host"] == "ray.internal.example.com"
    assert not [o for o in objects if o["kind"] == "ManagedCertificate"]  # GKE has none for internal LBs


def test_external_endpoint_with_a_host_gets_a_managed_certificate_and_no_plain_http() -> None:
    objects = render(workload().service().expose("serve", visibility="External", iap=True, host="llm.example.com"))
    assert kinds(objects)[-4:] == [("Service", "demo-serve"), ("BackendConfig", "demo-serve"),
                                   ("ManagedCertificate", "demo-serve"), ("Ingress", "demo-serve")]  # fmt: skip
    assert only(objects, "ManagedCertificate")["spec"] == {"domains": ["llm.example.com"]}
    assert only(objects, "Ingress")["metadata"]["annotations"] == {
        "kubernetes.io/ingress.class": "gce",
        "networking.gke.io/managed-certificates": "demo-serve",
        "kubernetes.io/ingress.allow-http": "false",
    }


def test_iap_accessors_are_granted_on_each_iap_endpoints_backend() -> None:
    rules = permissive_policy().set("expose.iapAccessors", ["group:ml@example.com", "user:a@example.com"])
    doc = workload().service().expose("dashboard", host="ray.internal.example.com")
    doc = doc.expose("serve", visibility="External", iap=False)
    iap = [b for b in plan_of(doc, rules)["iamBindings"] if b["role"] == "roles/iap.httpsResourceAccessor"]
    # Offline, the backend GKE will make is named by its Ingress; the dashboard's is regional (internal LB).
    pending = "projects/my-proj/iap_web/compute-us-central1/services/<backend of Ingress team-nlp/demo-dashboard>"
    assert iap == [{"resource": pending, "role": "roles/iap.httpsResourceAccessor", "member": member}
                   for member in ("group:ml@example.com", "user:a@example.com")]  # fmt: skip
    live = build_gcp_plan(resolved(doc, rules), {"demo-dashboard": ["k8s1-ab-team-nlp-demo-dashboard-8265-cd"]})
    assert {b.resource for b in live.iam_bindings if b.role == "roles/iap.httpsResourceAccessor"} == {
        "projects/my-proj/iap_web/compute-us-central1/services/k8s1-ab-team-nlp-demo-dashboard-8265-cd"
    }
    assert not [b for b in build_gcp_plan(resolved(doc, rules), {}).iam_bindings if "iap_web" in b.resource]


def test_external_serve_without_iap_or_host() -> None:
    objects = render(workload().service().expose("serve", visibility="External", iap=False))
    assert only(objects, "Ingress")["metadata"]["annotations"] == {"kubernetes.io/ingress.class": "gce"}
    assert only(objects, "Ingress")["spec"] == {
        "defaultBackend": {"service": {"name": "demo-serve", "port": {"number": 8000}}}
    }
    assert only(objects, "BackendConfig")["spec"] == {
        "healthCheck": {"type": "HTTP", "requestPath": "/-/healthz", "port": 8000}
    }
    assert only(objects, "Service")["spec"]["selector"]["ray.io/serve"] == "true"


def test_nothing_exposed_means_no_ingress() -> None:
    objects = render(workload().set("spec.expose.dashboard", {"enabled": False}))
    assert not [o for o in objects if o["kind"] in {"Ingress", "Service", "BackendConfig"}]


# --- GKE ComputeClass and node pools --------------------------------------------------------------


def test_fallback_groups_share_one_compute_class_per_shape() -> None:
    doc = workload().gpu_group("a", capacity="SpotWithFallback").gpu_group("b", capacity="SpotWithFallback")
    compute_class = only(render(doc, SHARED), "ComputeClass")
    assert compute_class["metadata"] == {"name": "mlw-l4x1-swf", "labels": {
        "app.kubernetes.io/managed-by": "mlworkload", "mlworkload.io/pool-shape": "mlw-l4x1-swf"}}  # fmt: skip
    assert compute_class["spec"] == {
        "priorities": [{"nodepools": ["mlw-l4x1-swf-spot"]}, {"nodepools": ["mlw-l4x1-swf-ondemand"]}],
        "nodePoolAutoCreation": {"enabled": False},
        "whenUnsatisfiable": "DoNotScaleUp",
    }


def test_no_compute_class_without_fallback_pools() -> None:
    doc = workload().gpu_group(capacity="Spot").group("cpu", capacity="SpotWithFallback")
    assert not [o for o in render(doc) if o["kind"] == "ComputeClass"]


def plan_of(doc: WorkloadDoc, with_policy: Any = None) -> Any:
    return build_gcp_plan(resolved(doc, with_policy if with_policy is not None else permissive_policy())).to_dict()


def test_node_pools_match_the_api_md_plan_shape() -> None:
    rules = permissive_policy().set("gcp.nodeLocations", ["us-central1-a"]).set("nodePools.maxNodesPerPool", 8)
    plan = plan_of(workload("llm-serve").gpu_group(capacity="Spot"), rules)
    assert plan["nodePools"] == [
        {
            "name": f"mlw-{TENANT}-l4x1-spot", "project": "my-proj", "location": "us-central1",
            "cluster": "ml-cluster", "machineType": "g2-standard-8", "accelerator": {"type": "nvidia-l4", "count": 1},
            "spot": True, "minNodes": 0, "maxNodes": 8, "locations": ["us-central1-a"], "locationPolicy": "ANY",
            "labels": {"managed-by": "mlworkload", "mlworkload-shape": "mlw-l4x1", "mlworkload-policy": TENANT},
            "nodeLabels": TENANT_SELECTOR,
            "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NO_SCHEDULE"},
                       {"key": "cloud.google.com/gke-spot", "value": "true", "effect": "NO_SCHEDULE"},
                       {"key": "mlworkload.io/pool-policy", "value": TENANT, "effect": "NO_SCHEDULE"}],
        }
    ]  # fmt: skip
    shared = plan_of(workload("llm-serve").gpu_group(capacity="Spot"), rules.set("nodePools.sharing", "Cluster"))
    (pool,) = shared["nodePools"]
    assert (pool["name"], pool["nodeLabels"], pool["labels"]) == (
        "mlw-l4x1-spot",
        {},
        {"managed-by": "mlworkload", "mlworkload-shape": "mlw-l4x1"},
    )
    assert len(pool["taints"]) == 2


def test_fallback_shapes_get_a_spot_and_an_on_demand_pool_with_the_class_label_and_taint() -> None:
    pools = plan_of(
        workload().gpu_group(accelerator="nvidia-tesla-a100", count=4, capacity="SpotWithFallback"), SHARED
    )["nodePools"]
    assert [(p["name"], p["spot"], p["machineType"]) for p in pools] == [
        ("mlw-a100x4-swf-ondemand", False, "a2-highgpu-4g"),
        ("mlw-a100x4-swf-spot", True, "a2-highgpu-4g"),
    ]
    for pool in pools:
        assert pool["nodeLabels"] == {"cloud.google.com/compute-class": "mlw-a100x4-swf"}
        assert {"key": "cloud.google.com/compute-class", "value": "mlw-a100x4-swf", "effect": "NO_SCHEDULE"} in pool[
            "taints"
        ]


def test_pools_are_shared_by_shape_and_named_by_it() -> None:
    doc = (
        workload()
        .gpu_group("a", capacity="Spot")
        .gpu_group("b", capacity="Spot", replicas=3)  # same shape: same pool
        .gpu_group("c", capacity="OnDemand")
        .gpu_group("d", capacity="Spot", machineType="g2-standard-16")
        .group("e", machineType="n2-standard-8", capacity="Spot")
        .group("f")  # general nodes: no pool
    )
    names = [pool["name"] for pool in plan_of(doc, SHARED)["nodePools"]]
    assert names == ["mlw-l4x1-g2-standard-16-spot", "mlw-l4x1-ondemand", "mlw-l4x1-spot", "mlw-n2-standard-8-spot"]
    cpu_pool = plan_of(workload().group("e", machineType="n2-standard-8", capacity="Spot"), SHARED)["nodePools"][0]
    assert cpu_pool["accelerator"] is None if "accelerator" in cpu_pool else True
    assert cpu_pool["taints"] == [{"key": "cloud.google.com/gke-spot", "value": "true", "effect": "NO_SCHEDULE"}]


@pytest.mark.parametrize(
    "body", ["l4x1-spot", "h100-mega-80gbx8-a3-megagpu-8g-swf-ondemand", "x" * 80, "Upper_Case.and.dots"]
)
def test_pool_names_fit_gkes_rule(body: str) -> None:
    name = gke_name(body)
    assert GKE_POOL_NAME_PATTERN.match(name), name
    assert name.startswith("mlw-")


def test_policies_never_share_a_pool_unless_both_say_cluster() -> None:
    doc = workload().gpu_group(capacity="Spot")
    own = {name: plan_of(doc, permissive_policy(name))["nodePools"][0]["name"] for name in ("team-a", "team-b")}
    assert own == {"team-a": "mlw-team-a-l4x1-spot", "team-b": "mlw-team-b-l4x1-spot"}
    shared = {plan_of(doc, permissive_policy(name).set("nodePools.sharing", "Cluster"))["nodePools"][0]["name"]
              for name in ("team-a", "team-b")}  # fmt: skip
    assert shared == {"mlw-l4x1-spot"}
    # A long policy name keeps the pool name within GKE's 40 characters, distinct from its neighbours.
    long_names = {plan_of(doc, permissive_policy("a" * 60 + suffix))["nodePools"][0]["name"] for suffix in "xy"}
    assert len(long_names) == 2
    assert all(GKE_POOL_NAME_PATTERN.match(name) for name in long_names)


def test_long_pool_names_stay_distinct() -> None:
    assert gke_name("a" * 60 + "-spot") != gke_name("a" * 60 + "-ondemand")


def test_iam_bindings_for_workload_identity_and_buckets() -> None:
    doc = workload("llm-serve").set("spec.storage", {"bucket": "gs://team-nlp-ckpt", "access": "ReadWrite"})
    assert plan_of(doc)["iamBindings"] == [
        {"resource": "projects/my-proj/serviceAccounts/ray-nlp@my-proj.iam.gserviceaccount.com",
         "role": "roles/iam.workloadIdentityUser", "member": "serviceAccount:my-proj.svc.id.goog[team-nlp/llm-serve]"},
        {"resource": "projects/_/buckets/team-nlp-ckpt", "role": "roles/storage.objectUser",
         "member": "serviceAccount:ray-nlp@my-proj.iam.gserviceaccount.com"},
    ]  # fmt: skip
    read_only = doc.set("spec.storage.access", "ReadOnly")
    assert plan_of(read_only)["iamBindings"][1]["role"] == "roles/storage.objectViewer"


def test_direct_workload_identity_principal_without_a_gsa() -> None:
    rules = policy().set("identity.allowedBuckets", ["gs://*"]).set("gcp.projectNumber", "123456789012")
    plan = plan_of(workload().set("spec.storage.bucket", "gs://data"), rules)
    assert plan["iamBindings"] == [
        {"resource": "projects/_/buckets/data", "role": "roles/storage.objectViewer",
         "member": "principal://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/"
                   "my-proj.svc.id.goog/subject/ns/team-nlp/sa/demo"}
    ]  # fmt: skip


def test_a_gsa_from_another_domain_uses_the_wildcard_project() -> None:
    gsa = "123-compute@developer.gserviceaccount.com"
    rules = permissive_policy().set("identity.gcpServiceAccount", gsa)
    assert plan_of(workload(), rules)["iamBindings"][0]["resource"] == f"projects/-/serviceAccounts/{gsa}"


def test_no_gcp_changes_for_a_cpu_workload_without_identity() -> None:
    assert plan_of(workload().group(), policy().set("gcp", None)) == {"nodePools": [], "iamBindings": []}


def test_the_plan_is_refused_when_gcp_is_needed_but_unknown() -> None:
    with pytest.raises(Refused, match="no GKE cluster is known"):
        build_gcp_plan(resolved(workload().gpu_group(), policy().set("gcp", None)))


# --- spot disruption: the preStop drain, the grace period, the autoscaler annotation, disruption budgets -----


SPOT_MIX = (
    workload()
    .group("spot", capacity="Spot")
    .gpu_group("swf", capacity="SpotWithFallback")
    .group("steady", capacity="OnDemand")
)


def groups_of(ray_object: Manifest) -> dict[str, Manifest]:
    return {group["groupName"]: group["template"] for group in cluster_spec(ray_object)["workerGroupSpecs"]}


@pytest.mark.parametrize(
    "make", [lambda d: d, lambda d: d.job(), lambda d: d.service()], ids=["Cluster", "Job", "Service"]
)
def test_spot_workers_drain_within_the_reclaim_notice(make: Any) -> None:
    objects = render(make(copy_doc(SPOT_MIX)))
    ray_object = next(o for o in objects if o["apiVersion"] == "ray.io/v1")
    assert validate_object(ray_object) == []
    templates = groups_of(ray_object)
    for name in ("spot", "swf"):
        template = templates[name]
        assert template["metadata"]["annotations"] == {SAFE_TO_EVICT_ANNOTATION: "true"}
        assert template["spec"]["terminationGracePeriodSeconds"] == 25  # GKE: <= 25 s of the 30 s notice
        command = template["spec"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert command[:2] == ["/bin/sh", "-c"]
        assert "ray drain-node" in command[2]
        assert "DRAIN_NODE_REASON_PREEMPTION" in command[2]
        assert "ray stop" in command[2]
    # Within GKE's smallest window for non-system pods (15 s after 1.27), with time left for SIGTERM.
    assert PRESTOP_BUDGET_SECONDS + RAY_STOP_SECONDS < 15
    steady = templates["steady"]
    assert "annotations" not in steady["metadata"]
    assert "terminationGracePeriodSeconds" not in steady["spec"]
    assert "lifecycle" not in steady["spec"]["containers"][0]
    head = cluster_spec(ray_object)["headGroupSpec"]["template"]
    assert head["metadata"]["annotations"] == {SAFE_TO_EVICT_ANNOTATION: "false"}  # its node is never scaled down
    assert "lifecycle" not in head["spec"]["containers"][0]


def copy_doc(doc: WorkloadDoc) -> WorkloadDoc:
    copied = workload()
    copied.doc = yaml.safe_load(yaml.safe_dump(doc.doc))
    return copied


@pytest.mark.parametrize(
    ("doc", "budgets"),
    [
        (workload().gpu_group(), ["demo-head"]),
        (workload().job().gpu_group(), ["demo-head"]),
        (workload().service().group("a").gpu_group("b"), ["demo-head", "demo-serve-workers"]),
        (workload().service(), ["demo-head", "demo-serve-workers"]),  # no workers yet: it selects nothing
    ],
    ids=["Cluster", "Job", "Service", "Service-without-workers"],
)
def test_disruption_budgets_guard_the_head_and_a_services_workers(doc: WorkloadDoc, budgets: list[str]) -> None:
    objects = render(doc.set("metadata.uid", "uid-1"))
    found = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    assert [o["metadata"]["name"] for o in found] == budgets
    for budget in found:
        assert validate_object(budget) == []
        assert budget["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        spec = budget["spec"]
        # KubeRay's pods have no owner with a scale subresource: an integer minAvailable is all a budget can use.
        assert spec["minAvailable"] == 1
        assert "maxUnavailable" not in spec
        assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    head = found[0]["spec"]["selector"]["matchLabels"]
    assert head == {"app.kubernetes.io/managed-by": "mlworkload", "mlworkload.io/workload": "demo",
                    "mlworkload.io/role": "head"}  # fmt: skip
    ray_object = next(o for o in objects if o["apiVersion"] == "ray.io/v1")
    spec = cluster_spec(ray_object)
    # The budgets select what the templates carry, and come before the Ray object that makes the pods.
    assert head.items() <= spec["headGroupSpec"]["template"]["metadata"]["labels"].items()
    if len(found) == 2:
        workers = found[1]["spec"]["selector"]["matchLabels"]
        assert all(workers.items() <= g["template"]["metadata"]["labels"].items() for g in spec["workerGroupSpecs"])
    kinds_in_order = [o["kind"] for o in objects]
    assert kinds_in_order.index("PodDisruptionBudget") < kinds_in_order.index(ray_object["kind"])


# The preStop script, run for real against stand-ins for `python` (the node id) and `ray` (which logs its calls).
FAKE_PYTHON = "#!/bin/sh\n{body}\n"
FAKE_RAY = '#!/bin/sh\necho "$@" >> "{log}"\n[ "$1" = drain-node ] && exit {drain}\nexit 0\n'


def run_prestop(tmp_path: Path, *, python: str, drain: int = 0, budget: int = 3) -> tuple[list[str], float]:
    bin_dir, log = tmp_path / "bin", tmp_path / "ray.log"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(FAKE_PYTHON.format(body=python))
    (bin_dir / "ray").write_text(FAKE_RAY.format(log=log, drain=drain))
    for tool in ("python", "ray"):
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOSTNAME": "demo-spot-worker-x1"}
    started = time.monotonic()
    done = subprocess.run(["/bin/sh", "-c", prestop_drain_script(budget=budget, stop=2)], env=env, timeout=30,
                          check=False)  # fmt: skip
    assert done.returncode == 0  # a preStop hook never fails
    calls = log.read_text().splitlines() if log.exists() else []
    return calls, time.monotonic() - started


def test_the_prestop_hook_drains_this_ray_node_then_stops_ray(tmp_path: Path) -> None:
    calls, took = run_prestop(tmp_path, python="echo 2026-11-23 noise; echo 0123abcd")
    assert len(calls) == 2
    drain = calls[0].split()
    assert drain[:5] == ["drain-node", "--node-id", "0123abcd", "--reason", "DRAIN_NODE_REASON_PREEMPTION"]
    assert "pod demo-spot-worker-x1 is being terminated" in calls[0]
    assert 0 < int(drain[drain.index("--deadline-remaining-seconds") + 1]) <= 3
    assert calls[1] == "stop --grace-period 1"
    assert took < 3  # nothing runs on this node: no wait


def test_without_a_node_id_or_a_drain_the_hook_only_stops_ray(tmp_path: Path) -> None:
    calls, _ = run_prestop(tmp_path, python="exit 1")  # no Ray driver: the head is gone
    assert calls == ["stop --grace-period 1"]


def test_a_refused_drain_still_stops_ray(tmp_path: Path) -> None:
    calls, _ = run_prestop(tmp_path, python="echo 0123abcd", drain=2)  # Ray 2.9 has no drain-node command
    assert [call.split()[0] for call in calls] == ["drain-node", "stop"]


def test_the_hook_waits_while_ray_runs_work_here_but_never_past_its_budget(tmp_path: Path) -> None:
    # A Ray worker process running a task, as its process title shows it (an idle one is `ray::IDLE`).
    busy = subprocess.Popen(["bash", "-c", 'exec -a "ray::train_step" sleep 30'])
    try:
        calls, took = run_prestop(tmp_path, python="echo 0123abcd", budget=3)
    finally:
        busy.kill()
        busy.wait()
    assert [call.split()[0] for call in calls] == ["drain-node", "stop"]
    assert 1.5 < took < 7


# --- Kueue (docs/platform/quotas.md#kueue-and-the-static-gpu-quota) ---------------------------------------------

QUEUED_POLICY = permissive_policy().set("queues", {"default": "team-queue"})


@pytest.mark.parametrize("doc", [workload().group(), workload().job()], ids=["cluster", "job"])
def test_a_queued_ray_object_carries_kueues_labels_and_no_suspend(doc: WorkloadDoc) -> None:
    """Kueue's docs (site/content/en/docs/tasks/run/rayjobs.md): "The target local queue should be specified in
    the metadata.labels section"; Kueue's webhook suspends the object and its reconciler unsuspends it, so the
    operator sends no spec.suspend at all (server-side apply: a field never sent is never owned)."""
    ray = only(render(doc.set("spec.queue", {"name": "urgent", "priorityClass": "high"})), doc.obj().spec.type.ray_kind)
    assert ray["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "urgent"
    assert ray["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "high"
    assert "suspend" not in ray["spec"]


def test_the_policys_default_queue_applies_to_clusters_and_jobs_only() -> None:
    job = only(render(workload().job(), QUEUED_POLICY), "RayJob")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"
    assert "kueue.x-k8s.io/priority-class" not in job["metadata"]["labels"]
    service = only(render(workload().service(), QUEUED_POLICY), "RayService")
    assert not any(key.startswith("kueue.x-k8s.io/") for key in service["metadata"]["labels"])
    # Only the Ray object is queued: Kueue creates a Workload for it, none for a ServiceAccount or a Service.
    others = [o for o in render(workload().job(), QUEUED_POLICY) if o["kind"] != "RayJob"]
    assert all("kueue.x-k8s.io/queue-name" not in o["metadata"].get("labels", {}) for o in others)


def test_an_unqueued_workload_keeps_sending_suspend() -> None:
    assert only(render(workload().job()), "RayJob")["spec"]["suspend"] is False
    assert "kueue.x-k8s.io/queue-name" not in only(render(workload().job()), "RayJob")["metadata"]["labels"]
