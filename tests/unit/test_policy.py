"""Policy selection, defaults and every check: table-driven, refusals included."""

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mlworkload.api.policy import PolicyGcp
from mlworkload.api.workload import Capacity, Isolation, Visibility
from mlworkload.builders import build_objects
from mlworkload.policy import (
    BUILTIN_POLICY_NAME,
    ClusterView,
    PlatformDefaults,
    WorkloadGpus,
    admit,
    admit_in,
    gpus_in_use,
    select_policy,
)
from mlworkload.problems import Refused
from tests.support.documents import GSA, PolicyDoc, WorkloadDoc, permissive_policy, policy, verdicts, workload
from tests.support.documents import NODE_SETTINGS as DEFAULT_NODE_SETTINGS
from tests.support.schemas import validate_object

# --- selection ----------------------------------------------------------------------------------


def named(name: str, priority: int = 0, selector: dict[str, Any] | None = None) -> PolicyDoc:
    doc = policy(name).set("priority", priority)
    return doc.set("namespaceSelector", selector) if selector is not None else doc


@pytest.mark.parametrize(
    ("policies", "labels", "chosen"),
    [
        ([], {"team": "nlp"}, None),
        ([named("a", selector={"matchLabels": {"team": "cv"}})], {"team": "nlp"}, None),
        ([named("a", selector={"matchLabels": {"team": "nlp"}})], {"team": "nlp"}, "a"),
        ([named("everything")], {"team": "nlp"}, "everything"),  # no selector: every namespace
        ([named("empty", selector={})], {}, "empty"),
        ([named("low", 1), named("high", 5)], {}, "high"),
        ([named("b", 5), named("a", 5), named("c", 5)], {}, "a"),  # ties: alphabetical
        ([named("prod", 9, {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}),
          named("base")], {"env": "dev"}, "base"),
        ([named("prod", 9, {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}),
          named("base")], {"env": "prod"}, "prod"),
        ([named("x", 1, {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["free"]}]})],
         {}, "x"),
        ([named("x", 1, {"matchExpressions": [{"key": "tier", "operator": "Exists"}]})], {}, None),
        ([named("x", 1, {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})], {}, "x"),
        ([named("sel", 1, {"matchLabels": {"team": "nlp"}}), named("other", 0)], None, "sel"),  # offline
    ],
)  # fmt: skip
def test_the_governing_policy_is_selected_by_labels_priority_then_name(
    policies: list[PolicyDoc], labels: dict[str, str] | None, chosen: str | None
) -> None:
    selected = select_policy([doc.obj() for doc in policies], labels)
    assert (selected.name if selected else None) == chosen


# --- defaults -----------------------------------------------------------------------------------


def test_a_namespace_no_policy_governs_gets_nothing() -> None:
    """Default deny: the refusal names the missing policy, and reports the rest of the workload too."""
    doc = workload().gpu_group().set("spec.identity.gcpServiceAccount", GSA).set("spec.storage.bucket", "gs://x-y")
    verdict = admit(doc.obj(), [], {"team": "nlp"})
    assert [str(p) for p in verdict.problems][:1] == [
        "metadata.namespace: no MLWorkloadPolicy governs namespace 'team-nlp': ask the platform team for one whose"
        " namespaceSelector matches it (or to enable the chart's defaultPolicy)"
    ]
    assert [p.path for p in verdict.problems][1:] == ["spec.identity.gcpServiceAccount", "spec.storage.bucket"]
    assert verdict.resolved.policy_name == BUILTIN_POLICY_NAME
    other_team = policy().set("namespaceSelector", {"matchLabels": {"team": "cv"}})
    assert not admit(workload().obj(), [other_team.obj()], {"team": "nlp"}).allowed


def test_an_empty_policy_admits_with_the_documented_safe_defaults() -> None:
    verdict = admit(workload().gpu_group().expose("serve").obj(), [policy().obj()], {"team": "nlp"})
    assert verdict.allowed, verdict.problems
    resolved = verdict.resolved
    assert resolved.isolation is Isolation.STRICT
    assert resolved.groups[0].capacity is Capacity.SPOT_WITH_FALLBACK  # spot Preferred
    assert resolved.gcp_service_account is None
    assert resolved.serve is not None
    assert (resolved.serve.visibility, resolved.serve.iap) == (Visibility.INTERNAL, False)


@pytest.mark.parametrize(
    ("spot", "capacity"),
    [("Required", Capacity.SPOT), ("Preferred", Capacity.SPOT_WITH_FALLBACK), ("Forbidden", Capacity.ON_DEMAND)],
)
def test_capacity_defaults_to_what_the_spot_rule_allows(spot: str, capacity: Capacity) -> None:
    verdict = admit(workload().gpu_group().obj(), [policy().set("capacity.spot", spot).obj()], None)
    assert verdict.allowed
    assert verdict.resolved.groups[0].capacity is capacity


def test_policy_defaults_fill_identity_isolation_iap_deadline_and_gcp() -> None:
    rules = (
        permissive_policy()
        .set("network.defaultIsolation", "Namespace")
        .set("expose.requireIAP", True)
        .set("lifecycle.maxJobRuntimeSeconds", 3600)
    )
    resolved = admit(workload().job().expose("dashboard").obj(), [rules.obj()], None).resolved
    assert resolved.gcp_service_account == GSA
    assert resolved.isolation is Isolation.NAMESPACE
    assert resolved.dashboard is not None
    assert resolved.dashboard.iap is True
    assert resolved.active_deadline_seconds == 3600
    assert resolved.gcp == PolicyGcp(project="my-proj", location="us-central1", cluster="ml-cluster")


@pytest.mark.parametrize(
    ("asked", "policy_pending", "resolved_to"),
    [(None, 1800, 1800), (300, 1800, 300), (None, None, None), (300, None, 300)],
)
def test_the_pre_running_deadline_defaults_to_the_policys_max_job_pending_seconds(
    asked: int | None, policy_pending: int | None, resolved_to: int | None
) -> None:
    doc = workload().job(**({"preRunningDeadlineSeconds": asked} if asked else {}))
    rules = permissive_policy().set("lifecycle.maxJobPendingSeconds", policy_pending)
    verdict = admit(doc.obj(), [rules.obj()], None)
    assert verdict.allowed, verdict.problems
    assert verdict.resolved.pre_running_deadline_seconds == resolved_to


def test_the_operators_gcp_setting_applies_when_the_policy_names_no_cluster() -> None:
    fallback = PolicyGcp(project="ops-proj", location="europe-west4", cluster="ops")
    verdict = admit(workload().obj(), [policy().set("gcp", None).obj()], None, PlatformDefaults(gcp=fallback))
    assert verdict.resolved.gcp == fallback


def test_default_image_follows_version_and_gpu() -> None:
    assert admit(workload().obj(), [], None).resolved.image == "rayproject/ray:2.41.0-py311"
    assert admit(workload().gpu_group().obj(), [], None).resolved.image == "rayproject/ray:2.41.0-py311-gpu"


def test_the_machine_type_is_derived_from_the_accelerator() -> None:
    resolved = admit(workload().gpu_group(accelerator="nvidia-h100-80gb", count=8).obj(), [], None).resolved
    assert resolved.groups[0].machine_type == "a3-highgpu-8g"


# --- checks: one row per rule, refusals and admissions ---------------------------------------------


@dataclass
class Case:
    workload: WorkloadDoc
    policy: PolicyDoc | None = field(default_factory=permissive_policy)
    refused: list[str] = field(default_factory=list)  # "path: message fragment"


def l4(**fields: Any) -> WorkloadDoc:
    return workload().gpu_group("gpu", **fields)


INCREMENTAL = {
    "type": "NewClusterWithIncrementalUpgrade",
    "clusterUpgradeOptions": {"gatewayClassName": "gke-l7-rilb", "stepSizePercent": 10, "intervalSeconds": 30},
}


def incremental() -> WorkloadDoc:
    return workload().service().set("spec.autoscaling.enabled", True).set("spec.serve.upgradeStrategy", INCREMENTAL)


def with_strategies(*strategies: str) -> PolicyDoc:
    return permissive_policy().set("lifecycle.allowedUpgradeStrategies", list(strategies))


CASES = {
    "accelerator allowed": Case(l4(), permissive_policy().set("accelerators.allowed", ["nvidia-l4"])),
    "accelerator not allowed": Case(
        workload().gpu_group(accelerator="nvidia-h100-80gb", count=8),
        permissive_policy().set("accelerators.allowed", ["nvidia-l4", "nvidia-tesla-a100"]),
        ["spec.workerGroups[0].accelerator.type: 'nvidia-h100-80gb' is not allowed by policy permissive;"
         " allowed: nvidia-l4, nvidia-tesla-a100"],
    ),
    "unknown accelerator without machine type": Case(
        workload().gpu_group(accelerator="nvidia-b200", count=8),
        refused=["spec.workerGroups[0].accelerator.type: unknown accelerator 'nvidia-b200'; known:"],
    ),
    "unknown accelerator with machine type": Case(
        workload().gpu_group(accelerator="nvidia-b200", count=8, machineType="a4-highgpu-8g")
    ),
    "count the machine family does not offer": Case(
        workload().gpu_group(accelerator="nvidia-h200-141gb", count=4),
        refused=["spec.workerGroups[0].accelerator: nvidia-h200-141gb comes in 8 GPUs per node on GKE, not 4"],
    ),
    "machine type that cannot carry the GPUs": Case(
        l4(machineType="a2-highgpu-1g"),
        refused=["spec.workerGroups[0].machineType: 'a2-highgpu-1g' cannot carry 1 x nvidia-l4; machine types"
                 " that can: g2-standard-8, g2-standard-4"],
    ),
    "t4 on n1 within the vCPU limit": Case(workload().gpu_group(accelerator="nvidia-tesla-t4",
                                                                machineType="n1-standard-16")),
    "t4 on a machine too large": Case(
        workload().gpu_group(accelerator="nvidia-tesla-t4", machineType="n1-standard-96"),
        refused=["spec.workerGroups[0].machineType: 'n1-standard-96' cannot carry 1 x nvidia-tesla-t4"],
    ),
    "gpus per workload at max scale": Case(
        l4(replicas=1, maxReplicas=8),
        permissive_policy().set("accelerators.maxPerWorkload", 4),
        ["spec.workerGroups: the workload needs 8 GPUs at max scale"],
    ),
    "gpus within per-workload cap": Case(l4(maxReplicas=4), permissive_policy().set("accelerators.maxPerWorkload", 4)),
    "pod larger than its node": Case(
        l4(resources={"cpu": "8", "memory": "32Gi"}),
        refused=["spec.workerGroups[0].resources.cpu: 8 does not fit a g2-standard-8 node (7.91 CPUs allocatable)",
                 "spec.workerGroups[0].resources.memory: 32Gi does not fit a g2-standard-8 node (28.3Gi"],
    ),
    "pod that fits a larger chosen machine": Case(l4(resources={"cpu": "8", "memory": "32Gi"},
                                                     machineType="g2-standard-16")),
    "ray version allowed": Case(workload(), permissive_policy().set("ray.allowedVersions", ["2.41.*"])),
    "ray version not allowed": Case(
        workload(),
        permissive_policy().set("ray.allowedVersions", ["2.40.*", "2.39.*"]),
        ["spec.ray.version: '2.41.0' is not allowed by policy permissive; allowed: 2.40.*, 2.39.*"],
    ),
    "image repository not allowed": Case(
        workload().set("spec.ray.image", "docker.io/evil/ray:2.41.0"),
        permissive_policy().set("ray.imageRepositories", ["us-docker.pkg.dev/my-proj/ray/"]),
        ["spec.ray.image: 'docker.io/evil/ray:2.41.0' is not from a repository policy permissive allows:"],
    ),
    "default image not allowed names the fix": Case(
        workload(),
        permissive_policy().set("ray.imageRepositories", ["us-docker.pkg.dev/my-proj/ray/"]),
        ["spec.ray.image: 'rayproject/ray:2.41.0-py311' (the default image); set spec.ray.image to one"],
    ),
    "the policy's GSA by name": Case(workload().set("spec.identity.gcpServiceAccount", GSA)),
    "another team's GSA": Case(
        workload().set("spec.identity.gcpServiceAccount", "ray-cv@my-proj.iam.gserviceaccount.com"),
        refused=["spec.identity.gcpServiceAccount: 'ray-cv@my-proj.iam.gserviceaccount.com' is not granted to this"
                 " namespace by policy permissive; allowed: only " + GSA],
    ),
    "any GSA when the policy grants none": Case(
        workload().set("spec.identity.gcpServiceAccount", GSA),
        policy(),
        ["spec.identity.gcpServiceAccount: '" + GSA + "' is not granted to this namespace by policy team-nlp;"
         " allowed: none"],
    ),
    "bucket allowed by pattern": Case(
        workload().set("spec.storage.bucket", "gs://team-nlp-ckpt"),
        permissive_policy().set("identity.allowedBuckets", ["gs://team-nlp-*"]),
    ),
    "bucket of another team": Case(
        workload().set("spec.storage.bucket", "gs://team-cv-ckpt"),
        permissive_policy().set("identity.allowedBuckets", ["gs://team-nlp-*"]),
        ["spec.storage.bucket: 'gs://team-cv-ckpt' is not allowed by policy permissive; allowed: gs://team-nlp-*"],
    ),
    "bucket without any identity": Case(
        workload().set("spec.storage.bucket", "gs://team-nlp-ckpt"),
        policy().set("identity.allowedBuckets", ["gs://team-nlp-*"]),
        ["spec.storage: bucket access needs a GCP identity"],
    ),
    "bucket through a direct principal": Case(
        workload().set("spec.storage.bucket", "gs://team-nlp-ckpt"),
        policy().set("identity.allowedBuckets", ["gs://team-nlp-*"]).set("gcp.projectNumber", "123456789012"),
    ),
    "external exposure not allowed": Case(
        workload().expose("serve", visibility="External"),
        policy(),
        ["spec.expose.serve.visibility: External is not allowed by policy team-nlp; use Internal"],
    ),
    "IAP required but switched off": Case(
        workload().expose("dashboard", iap=False),
        permissive_policy().set("expose.requireIAP", True),
        ["spec.expose.dashboard.iap: false is not allowed: policy permissive requires IAP"],
    ),
    "IAP required and defaulted": Case(
        workload().expose("dashboard"), permissive_policy().set("expose.requireIAP", True)
    ),
    "an External dashboard without IAP, under any policy": Case(
        workload().expose("dashboard", visibility="External", iap=False, host="ray.example.com"),
        permissive_policy().set("expose.requireIAP", False),
        ["spec.expose.dashboard.iap: false is never allowed for an External dashboard: it runs any code its"
         " visitors send, as the workload's Google identity; keep IAP on, or use Internal"],
    ),
    "an Internal dashboard without IAP where the policy is silent": Case(
        workload().expose("dashboard", iap=False),
        refused=["spec.expose.dashboard.iap: false is not allowed for the dashboard: policy permissive does not"
                 " say requireIAP: false; keep IAP on"],
    ),
    "an Internal dashboard without IAP where the policy says requireIAP: false": Case(
        workload().expose("dashboard", iap=False), permissive_policy().set("expose.requireIAP", False)
    ),
    "an External IAP endpoint needs a host for its certificate": Case(
        workload().service().expose("serve", visibility="External", iap=True),
        refused=["spec.expose.serve.host: an External endpoint with IAP needs a host, for its Google-managed"
                 " certificate; set the DNS name it is served at"],
    ),
    "an Internal IAP endpoint needs the policy's certificate": Case(
        workload().expose("dashboard"),
        permissive_policy().set("expose.preSharedCertificates", []),
        ["spec.expose.dashboard.iap: an Internal endpoint with IAP needs HTTPS, and policy permissive names no"
         " certificate for it (expose.preSharedCertificates)"],
    ),
    "a managed certificate's domain is fully qualified": Case(
        workload().service().expose("serve", visibility="External", host="llm"),
        refused=["spec.expose.serve.host: 'llm' cannot have a Google-managed certificate: it must be a fully"
                 " qualified domain name of at most 63 characters, e.g. llm.example.com"],
    ),
    "a managed certificate's domain is at most 63 characters": Case(
        workload().service().expose("serve", visibility="External", host="a" * 60 + ".example.com"),
        refused=["spec.expose.serve.host: '" + "a" * 60 + ".example.com' cannot have a Google-managed certificate:"
                 " it must be a fully qualified domain name of at most 63 characters, e.g. llm.example.com"],
    ),
    "an isolation level the policy does not allow": Case(
        workload().set("spec.network.isolation", "None"),
        permissive_policy().set("network.allowedIsolations", ["Strict", "Namespace"]),
        ["spec.network.isolation: None is not allowed by policy permissive; allowed: Strict, Namespace"],
    ),
    "a default isolation the policy's own list excludes": Case(
        workload().set("spec.network.isolation", "Namespace"),
        permissive_policy().set("network", {"allowedIsolations": ["Namespace"], "defaultIsolation": "Namespace"}),
    ),
    "allowFrom never reaches the GCS": Case(
        workload().set("spec.network.allowFrom", [{"podSelector": {}, "ports": [{"port": 8265}, {"port": 6379}]}]),
        refused=["spec.network.allowFrom[0].ports[1].port: 6379 is Ray's GCS, which holds the whole cluster's"
                 " state: it is never opened to other pods"],
    ),
    "allowFrom every namespace where the policy forbids it": Case(
        workload().set("spec.network.allowFrom", [{"namespaceSelector": {}}]),
        permissive_policy().set("network.allowFromAnyNamespace", False),
        ["spec.network.allowFrom[0].namespaceSelector: an empty selector (every namespace) is not allowed by"
         " policy permissive; select the namespaces by label"],
    ),
    "a CPU machine type GCE does not sell": Case(
        workload().group("cpu", machineType="zz-foo-1"),
        refused=["spec.workerGroups[0].machineType: 'zz-foo-1' is not a machine type the operator knows"],
    ),
    "a catalogued CPU machine type": Case(workload().group("cpu", machineType="c3-highmem-22")),
    "a CPU group too big for its machine": Case(
        workload().group("cpu", machineType="e2-standard-4", resources={"cpu": "8", "memory": "8Gi"}),
        refused=["spec.workerGroups[0].resources.cpu: 8 does not fit a e2-standard-4 node"],
    ),
    "a head larger than any machine": Case(
        workload().set("spec.head.resources", {"cpu": "500", "memory": "64Gi"}),
        refused=["spec.head.resources: cpu 500 and memory 64Gi fit no general-purpose GKE machine type"],
    ),
    "a worker on general nodes larger than any machine": Case(
        workload().group("big", resources={"cpu": "8", "memory": "5000Gi"}),
        refused=["spec.workerGroups[0].resources: cpu 8 and memory 5000Gi fit no general-purpose GKE machine"],
    ),
    "allowFrom every namespace by default": Case(workload().set("spec.network.allowFrom", [{"namespaceSelector": {}}])),
    "token auth required on a Ray version without it": Case(
        workload(),
        permissive_policy().set("ray.tokenAuth", "Required"),
        ["spec.ray.version: '2.41.0' has no token authentication, which policy permissive requires"
         " (ray.tokenAuth: Required); use Ray 2.52.0 or later"],
    ),
    "token auth required on Ray 2.52": Case(
        workload().set("spec.ray.version", "2.52.0"), permissive_policy().set("ray.tokenAuth", "Required")
    ),
    "disabled endpoint is not checked": Case(workload().set("spec.expose.serve", {"enabled": False,
                                                                                 "visibility": "External"}), policy()),
    "required label missing": Case(
        workload().set("metadata.labels", {"team": "nlp"}),
        permissive_policy().set("labels.required", ["cost-center", "team"]),
        ["metadata.labels[cost-center]: required by policy permissive (a cost label); set it"],
    ),
    "required label empty": Case(
        workload().set("metadata.labels", {"cost-center": ""}),
        permissive_policy().set("labels.required", ["cost-center"]),
        ["metadata.labels[cost-center]: required by policy permissive"],
    ),
    "spot required, on-demand asked": Case(
        l4(capacity="OnDemand"),
        permissive_policy().set("capacity.spot", "Required"),
        ["spec.workerGroups[0].capacity: OnDemand is not allowed: spot is Required under policy permissive;"
         " allowed: Spot"],
    ),
    "spot required, fallback asked": Case(
        l4(capacity="SpotWithFallback"), permissive_policy().set("capacity.spot", "Required"),
        ["spec.workerGroups[0].capacity: SpotWithFallback is not allowed"],
    ),
    "spot forbidden, spot asked": Case(
        workload().group("cpu", capacity="Spot"), permissive_policy().set("capacity.spot", "Forbidden"),
        ["spec.workerGroups[0].capacity: Spot is not allowed: spot is Forbidden under policy permissive;"
         " allowed: OnDemand"],
    ),
    "job deadline within the maximum": Case(
        workload().job(activeDeadlineSeconds=600), permissive_policy().set("lifecycle.maxJobRuntimeSeconds", 3600)
    ),
    "job deadline above the maximum": Case(
        workload().job(activeDeadlineSeconds=7200), permissive_policy().set("lifecycle.maxJobRuntimeSeconds", 3600),
        ["spec.job.activeDeadlineSeconds: 7200 exceeds the 3600 seconds policy permissive allows"],
    ),
    "job pre-running deadline within the maximum": Case(
        workload().job(preRunningDeadlineSeconds=600), permissive_policy().set("lifecycle.maxJobPendingSeconds", 600)
    ),
    "job pre-running deadline above the maximum": Case(
        workload().job(preRunningDeadlineSeconds=7200), permissive_policy().set("lifecycle.maxJobPendingSeconds", 3600),
        ["spec.job.preRunningDeadlineSeconds: 7200 exceeds the 3600 seconds policy permissive allows"
         " (maxJobPendingSeconds)"],
    ),
    "service with KubeRay's default strategy": Case(workload().service()),
    "service asking None": Case(workload().service().set("spec.serve.upgradeStrategy", {"type": "None"})),
    "incremental upgrade, not listed": Case(
        incremental(),
        refused=["spec.serve.upgradeStrategy.type: NewClusterWithIncrementalUpgrade is not allowed by policy"
                 " permissive (lifecycle.allowedUpgradeStrategies); allowed: NewCluster, None"],
    ),
    "incremental upgrade, listed": Case(incremental(), with_strategies("NewClusterWithIncrementalUpgrade")),
    "incremental upgrade without autoscaling": Case(
        incremental().set("spec.autoscaling.enabled", False), with_strategies("NewClusterWithIncrementalUpgrade"),
        ["spec.serve.upgradeStrategy.type: NewClusterWithIncrementalUpgrade needs spec.autoscaling.enabled: true:"
         " KubeRay grows the new cluster and shrinks the old one through the Ray autoscaler"],
    ),
    "NewCluster asked, only None allowed": Case(
        workload().service().set("spec.serve.upgradeStrategy", {"type": "NewCluster"}), with_strategies("None"),
        ["spec.serve.upgradeStrategy.type: NewCluster is not allowed by policy permissive"
         " (lifecycle.allowedUpgradeStrategies); allowed: None"],
    ),
    "KubeRay's default, only None allowed": Case(
        workload().service(), with_strategies("None"),
        ["spec.serve.upgradeStrategy: none is set, so KubeRay's default NewCluster applies, which policy permissive"
         " does not allow (lifecycle.allowedUpgradeStrategies); allowed: None; set spec.serve.upgradeStrategy.type"],
    ),
    "the strategy rule ignores other types": Case(workload().job(), with_strategies("None")),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_policy_checks(case: Case) -> None:
    policies = [case.policy.obj()] if case.policy is not None else []
    verdict = admit(case.workload.obj(), policies, None)
    lines = [str(problem) for problem in verdict.problems]
    assert len(lines) == len(case.refused), lines
    for expected, line in zip(case.refused, lines, strict=True):
        assert line.startswith(expected), (expected, line)


def test_every_problem_names_a_field_of_the_workload() -> None:
    doc = (
        workload()
        .set("metadata.labels", {})
        .gpu_group("a", accelerator="nvidia-h100-80gb", count=8, capacity="OnDemand")
        .expose("serve", visibility="External", iap=False)
        .set("spec.storage.bucket", "gs://other")
    )
    rules = (
        policy()
        .set("labels.required", ["cost-center"])
        .set("accelerators", {"allowed": ["nvidia-l4"], "maxPerWorkload": 4})
        .set("capacity.spot", "Required")
        .set("expose.requireIAP", True)
    )
    verdict = admit(doc.obj(), [rules.obj()], None)
    assert [problem.path for problem in verdict.problems] == [
        "metadata.labels[cost-center]",
        "spec.workerGroups[0].accelerator.type",
        "spec.workerGroups",
        "spec.workerGroups[0].capacity",
        "spec.storage.bucket",
        "spec.storage",
        "spec.expose.serve.visibility",
        "spec.expose.serve.iap",
    ]


# --- the cross-object quota rule -------------------------------------------------------------------


def test_quota_counts_gpus_at_max_scale_across_governed_namespaces() -> None:
    rules = permissive_policy().set("quota.maxGPUs", 16).set("namespaceSelector", {"matchLabels": {"team": "nlp"}})
    others = [
        workload("a", "nlp-1").gpu_group(count=4, maxReplicas=2).obj(),  # 8
        workload("b", "nlp-2").gpu_group(count=2, replicas=0, maxReplicas=2).obj(),  # 4
        workload("c", "cv").gpu_group(count=8, maxReplicas=8).obj(),  # not governed
    ]
    labels = {"nlp-1": {"team": "nlp"}, "nlp-2": {"team": "nlp"}, "cv": {"team": "cv"}}
    new = workload("d", "nlp-1").gpu_group(count=4, maxReplicas=2).obj()  # 8: 12 + 8 > 16
    view = ClusterView([rules.obj()], labels, usage=[WorkloadGpus.of(w) for w in [*others, new]])
    assert gpus_in_use(view, rules.obj(), excluding=new) == 12
    verdict = admit_in(view, new)
    assert [str(problem) for problem in verdict.problems] == [
        "spec.workerGroups: the workload needs 8 GPUs at max scale and the namespaces governed by policy permissive"
        " already use 12 of their quota of 16 (quota.maxGPUs)"
    ]
    fits = workload("d", "nlp-1").gpu_group(count=4).obj()  # 4: 12 + 4 = 16
    assert admit_in(view, fits).allowed


def test_namespaces_of_a_higher_priority_policy_do_not_count_against_a_catch_all_quota() -> None:
    catch_all = permissive_policy("catch-all").set("quota.maxGPUs", 8)
    team = permissive_policy("team").set("priority", 10).set("namespaceSelector", {"matchLabels": {"team": "a"}})
    teams_workload = workload("big", "team-a").gpu_group(count=8).obj()
    view = ClusterView([catch_all.obj(), team.obj()], {"team-a": {"team": "a"}, "other": {}},
                       usage=[WorkloadGpus.of(teams_workload)])  # fmt: skip
    assert admit_in(view, workload("mine", "other").gpu_group(count=8).obj()).allowed


def test_an_update_does_not_count_the_workload_against_itself() -> None:
    rules = permissive_policy().set("quota.maxGPUs", 8)
    current = workload("a").gpu_group(count=8).obj()
    view = ClusterView([rules.obj()], usage=[WorkloadGpus.of(current)])
    assert admit_in(view, current).allowed


def test_cpu_only_workloads_never_hit_the_gpu_quota() -> None:
    rules = permissive_policy().set("quota.maxGPUs", 0)
    assert admit(workload().group("cpu").obj(), [rules.obj()], None, gpus_of_others=100).allowed


@pytest.mark.parametrize(
    ("rule", "version", "enabled"),
    [("Disabled", "2.52.0", False), ("Enabled", "2.41.0", False), ("Enabled", "2.52.1", True),
     ("Required", "2.53.0", True)],
)  # fmt: skip
def test_token_auth_turns_on_kuberays_auth_options(rule: str, version: str, enabled: bool) -> None:
    doc = workload().set("spec.ray.version", version)
    verdict = admit(doc.obj(), [permissive_policy().set("ray.tokenAuth", rule).obj()], None)
    assert verdict.allowed, verdict.problems
    ray_cluster = next(o for o in build_objects(verdict.resolved) if o["kind"] == "RayCluster")
    assert ("authOptions" in ray_cluster["spec"]) is enabled
    if enabled:
        assert ray_cluster["spec"]["authOptions"] == {"mode": "token"}


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("accelerators.allowed", ["nvidia-h100"], "spec.accelerators.allowed: 'nvidia-h100' is not a GKE accelerator"),
        ("identity.allowedBuckets", ["team-nlp-*"], "spec.identity.allowedBuckets: 'team-nlp-*' is not a bucket"),
        ("ray.allowedVersions", ["2.41"], "spec.ray.allowedVersions: '2.41' can never match a Ray version X.Y.Z"),
        ("ray.imageRepositories", ["Ray Project/"], "spec.ray.imageRepositories: 'Ray Project/' is not the start"),
        ("network.apiServerCIDRs", ["172.16.0.2"], "spec.network.apiServerCIDRs: '172.16.0.2' is not a CIDR"),
        ("network.loadBalancerSourceRanges", ["35.191.0.0/33"], "'35.191.0.0/33' is not a CIDR"),
        ("network.allowedEgress", [{"ipBlock": {"cidr": "x"}}], "spec.network.allowedEgress[0].ipBlock: 'x' is not"),
        ("network", {"allowedIsolations": ["Strict"], "defaultIsolation": "Namespace"},
         "spec.network: defaultIsolation Namespace is not in allowedIsolations (Strict)"),
        ("expose.iapAccessors", ["ml-nlp@example.com"], "spec.expose.iapAccessors: 'ml-nlp@example.com' is not an"),
        ("expose.preSharedCertificates", ["Internal Cert"], "'Internal Cert' is not an SSL certificate name"),
        ("namespaceSelector", {"matchExpressions": [{"key": "team", "operator": "In"}]}, "needs at least one value"),
        ("nodePools.serviceAccount", "default", "spec.nodePools.serviceAccount: 'default' is not a Google service "
         "account email (NAME@PROJECT.iam.gserviceaccount.com); leave serviceAccount out for GKE's default"),
        ("nodePools.diskSizeGb", 5, "spec.nodePools.diskSizeGb: Input should be greater than or equal to 10"),
        ("nodePools.diskType", "pd-extreme", "spec.nodePools.diskType: 'pd-extreme' is not one of the allowed values"),
        ("nodePools.imageType", "COS", "spec.nodePools.imageType: 'COS' is not one of the allowed values"),
        ("nodePools", {"imageType": "UBUNTU_CONTAINERD", "imageStreaming": True},
         "spec.nodePools: imageStreaming needs imageType COS_CONTAINERD (GKE streams images only to Container-Optimized"
         " OS nodes): set imageType to COS_CONTAINERD or leave it out, or turn imageStreaming off (imageType is "
         "UBUNTU_CONTAINERD)"),
        ("nodePools.resourceLabels", {"Cost-Center": "cc1"}, "spec.nodePools.resourceLabels: 'Cost-Center' is not a "
         "GCP label key: 1-63 lowercase letters, digits, '_' or '-', starting with a letter"),
        ("nodePools.resourceLabels", {"team": "NLP team"}, "spec.nodePools.resourceLabels: 'team': 'NLP team' is not "
         "a GCP label value: at most 63 lowercase letters, digits, '_' or '-'"),
        ("nodePools.resourceLabels", {"managed-by": "me"}, "spec.nodePools.resourceLabels: 'managed-by' is the "
         "operator's own (it marks the pools it owns): choose a key that does not start with goog- or mlworkload- "
         "and is not managed-by"),
        ("nodePools.resourceLabels", {"mlworkload-installation": "x"}, "'mlworkload-installation' is the operator's"),
        ("nodePools.resourceLabels", {"goog-gke-node-pool-provisioning-model": "spot"}, "is Google's: choose a key"),
        ("nodePools.resourceLabels", {f"k{i}": "v" for i in range(33)},
         "spec.nodePools.resourceLabels: Dictionary should have at most 32 items"),
    ],
)  # fmt: skip
def test_policies_are_validated_naming_the_field(path: str, value: Any, expected: str) -> None:
    with pytest.raises(Refused) as refused:
        policy().set(path, value).obj()
    assert any(expected in line for line in refused.value.lines()), refused.value.lines()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["Recreate"], "spec.lifecycle.allowedUpgradeStrategies[0]: 'Recreate' is not one of the allowed values"),
        ([], "spec.lifecycle.allowedUpgradeStrategies: List should have at least 1 item"),
        (["None", "None"], "spec.lifecycle.allowedUpgradeStrategies: upgrade strategies must be unique; repeated:"
                           " None"),
    ],
)  # fmt: skip
def test_allowed_upgrade_strategies_are_validated(value: Any, expected: str) -> None:
    doc = policy().set("lifecycle.allowedUpgradeStrategies", value)
    with pytest.raises(Refused) as refused:
        doc.obj()
    assert any(expected in line for line in refused.value.lines()), refused.value.lines()
    assert validate_object(doc.doc) != []  # and the CRD refuses it too, while the webhook is down


def test_the_default_upgrade_strategies_leave_out_the_one_that_needs_gateway_api() -> None:
    assert [s.value for s in policy().obj().spec.lifecycle.upgrade_strategies] == ["NewCluster", "None"]
    listed = with_strategies("NewClusterWithIncrementalUpgrade").obj().spec.lifecycle.upgrade_strategies
    assert [s.value for s in listed] == ["NewClusterWithIncrementalUpgrade"]


# The workload's lifecycle fields: refused by the model (the webhook) and by the CRD (kubectl, webhook down) alike.
LIFECYCLE_FIELDS = {
    "pre-running deadline": (workload().job(preRunningDeadlineSeconds=600), None),
    "pre-running deadline shorter than the active one": (
        workload().job(preRunningDeadlineSeconds=600, activeDeadlineSeconds=3600), None),
    "pre-running deadline as long as the active one": (
        workload().job(preRunningDeadlineSeconds=3600, activeDeadlineSeconds=3600),
        "spec.job: preRunningDeadlineSeconds must be less than activeDeadlineSeconds: both count from when KubeRay"
        " starts the job, and the active deadline would end it first (3600 >= 3600)"),
    "pre-running deadline zero": (workload().job(preRunningDeadlineSeconds=0),
                                  "spec.job.preRunningDeadlineSeconds: Input should be greater than 0"),
    "pre-running deadline beyond int32": (workload().job(preRunningDeadlineSeconds=2**31),
                                          "spec.job.preRunningDeadlineSeconds"),
    "every strategy type": (incremental(), None),
    "strategy None": (workload().service().set("spec.serve.upgradeStrategy", {"type": "None"}), None),
    "unknown strategy": (workload().service().set("spec.serve.upgradeStrategy", {"type": "Recreate"}),
                         "spec.serve.upgradeStrategy.type: 'Recreate' is not one of the allowed values"),
    "strategy without a type": (workload().service().set("spec.serve.upgradeStrategy", {}),
                                "spec.serve.upgradeStrategy.type"),
    "incremental without options": (
        workload().service().set("spec.serve.upgradeStrategy", {"type": "NewClusterWithIncrementalUpgrade"}),
        "spec.serve.upgradeStrategy: clusterUpgradeOptions is required for type NewClusterWithIncrementalUpgrade"
        " and forbidden otherwise"),
    "options with NewCluster": (
        workload().service().set("spec.serve.upgradeStrategy", {**INCREMENTAL, "type": "NewCluster"}),
        "clusterUpgradeOptions is required for type NewClusterWithIncrementalUpgrade and forbidden otherwise"),
    "a step larger than the surge": (
        incremental().set("spec.serve.upgradeStrategy.clusterUpgradeOptions.maxSurgePercent", 5),
        "spec.serve.upgradeStrategy.clusterUpgradeOptions: stepSizePercent must not exceed maxSurgePercent"
        " (default 100) (10 > 5)"),
    "a surge of zero": (incremental().set("spec.serve.upgradeStrategy.clusterUpgradeOptions.maxSurgePercent", 0),
                        "spec.serve.upgradeStrategy.clusterUpgradeOptions.maxSurgePercent"),
    "a step of zero": (incremental().set("spec.serve.upgradeStrategy.clusterUpgradeOptions.stepSizePercent", 0),
                       "spec.serve.upgradeStrategy.clusterUpgradeOptions.stepSizePercent"),
    "no gateway class": (incremental().set("spec.serve.upgradeStrategy.clusterUpgradeOptions.gatewayClassName", None),
                         "spec.serve.upgradeStrategy.clusterUpgradeOptions.gatewayClassName"),
    "a gateway class that is no object name": (
        incremental().set("spec.serve.upgradeStrategy.clusterUpgradeOptions.gatewayClassName", "GKE L7"),
        "spec.serve.upgradeStrategy.clusterUpgradeOptions.gatewayClassName"),
}  # fmt: skip


@pytest.mark.parametrize(("doc", "refusal"), LIFECYCLE_FIELDS.values(), ids=LIFECYCLE_FIELDS.keys())
def test_the_lifecycle_fields_are_refused_by_the_model_and_the_crd_alike(doc: WorkloadDoc, refusal: str | None) -> None:
    api_server_errors = validate_object(doc.doc)
    try:
        doc.obj()
        lines: list[str] = []
    except Refused as refused:
        lines = refused.lines()
    if refusal is None:
        assert (api_server_errors, lines) == ([], [])
    else:
        assert any(refusal in line for line in lines), lines
        assert api_server_errors != []


def test_good_policy_patterns_pass() -> None:
    rules = (
        policy()
        .set("ray.allowedVersions", ["2.41.*", "2.*", "2.41.0", "2.4?.1"])
        .set("identity.allowedBuckets", ["gs://team-nlp-*", "gs://shared-?"])
        .set("expose.iapAccessors", ["group:ml@example.com", "domain:example.com", "user:a@example.com"])
    )
    assert rules.obj().spec.ray.allowed_versions == ["2.41.*", "2.*", "2.41.0", "2.4?.1"]


# --- node pool settings ---------------------------------------------------------------------------------


NODE_SETTINGS = {**DEFAULT_NODE_SETTINGS, "resourceLabels": {"cost-center": "cc-1234", "team": "nlp", "empty": ""}}


def test_node_settings_are_read_from_camel_case_and_round_trip() -> None:
    rules = policy().set("nodePools", NODE_SETTINGS).obj()
    pools = rules.spec.node_pools
    assert (pools.service_account, pools.disk_type, pools.disk_size_gb, pools.image_type) == (
        "gke-nodes@my-proj.iam.gserviceaccount.com", "pd-ssd", 200, "COS_CONTAINERD")  # fmt: skip
    assert (pools.secure_boot, pools.image_streaming) == (True, True)
    assert pools.resource_labels == {"cost-center": "cc-1234", "team": "nlp", "empty": ""}
    assert rules.to_dict()["spec"]["nodePools"] == {"maxNodesPerPool": 8, "locationPolicy": "ANY",
                                                    "sharing": "Policy", **NODE_SETTINGS}  # fmt: skip


def test_without_node_settings_gke_chooses() -> None:
    pools = policy().obj().spec.node_pools
    assert (pools.service_account, pools.disk_type, pools.disk_size_gb, pools.image_type) == (None,) * 4
    assert (pools.secure_boot, pools.image_streaming, pools.resource_labels) == (None, None, {})


@pytest.mark.parametrize(
    ("disk", "allowed", "problems"),
    [
        ("pd-standard", ["nvidia-l4", "nvidia-tesla-a100"],
         ["g2 machines boot from pd-balanced or pd-ssd only, not pd-standard (nvidia-l4 is in accelerators.allowed)"]),
        ("hyperdisk-balanced", ["nvidia-tesla-t4", "nvidia-h100-80gb"],
         ["n1 machines boot from pd-balanced, pd-ssd or pd-standard only, not hyperdisk-balanced (nvidia-tesla-t4"]),
        ("pd-balanced", ["nvidia-h200-141gb", "nvidia-b200"],
         ["a3-ultragpu machines boot from hyperdisk-balanced only, not pd-balanced (nvidia-h200-141gb",
          "a4 machines boot from hyperdisk-balanced only, not pd-balanced (nvidia-b200"]),
        ("hyperdisk-balanced", ["nvidia-h100-80gb", "nvidia-h200-141gb", "nvidia-b200"], []),
        ("pd-ssd", ["nvidia-l4", "nvidia-tesla-a100", "nvidia-tesla-t4", "nvidia-h100-mega-80gb"], []),
        ("pd-standard", None, []),  # which machines the workloads pick is not known here: GKE answers for them
        ("pd-standard", ["nvidia-rtx-pro-6000"], []),  # a series this version does not know: not checked
    ],
)  # fmt: skip
def test_a_disk_type_the_allowed_gpus_machines_cannot_boot_from_is_refused(
    disk: str, allowed: list[str] | None, problems: list[str]
) -> None:
    doc = policy().set("nodePools.diskType", disk).set("accelerators.allowed", allowed)
    if not problems:
        assert doc.obj().spec.node_pools.disk_type == disk
        return
    with pytest.raises(Refused) as refused:
        doc.obj()
    lines = refused.value.lines()
    assert len(lines) == len(problems), lines
    for line, expected in zip(lines, problems, strict=True):
        assert line.startswith("MLWorkloadPolicy team-nlp: spec: nodePools.diskType: "), line
        assert expected in line, line
        assert "choose a disk type its machines take, or take" in line


CRD_CASES = {
    "streaming on COS": ({"imageStreaming": True, "imageType": "COS_CONTAINERD"}, True),
    "streaming on GKE's default image": ({"imageStreaming": True}, True),
    "streaming off on Ubuntu": ({"imageStreaming": False, "imageType": "UBUNTU_CONTAINERD"}, True),
    "streaming on Ubuntu": ({"imageStreaming": True, "imageType": "UBUNTU_CONTAINERD"}, False),
    "a label value with capitals": ({"resourceLabels": {"team": "NLP"}}, False),
    "a label value too long": ({"resourceLabels": {"team": "x" * 64}}, False),
    "33 labels": ({"resourceLabels": {f"k{i}": "v" for i in range(33)}}, False),
    "a disk too small": ({"diskSizeGb": 9}, False),
    "every setting": (NODE_SETTINGS, True),
}


@pytest.mark.parametrize(("settings", "valid"), CRD_CASES.values(), ids=CRD_CASES.keys())
def test_the_crd_refuses_what_the_models_refuse(settings: dict[str, Any], valid: bool) -> None:
    """What `kubectl apply` refuses while the webhook is down (label keys are the webhook's alone: a CRD schema
    has no pattern for map keys, and CEL over them would cost more than the API server allows)."""
    api_server_errors, model_valid = verdicts(policy().set("nodePools", settings))
    assert (not api_server_errors, model_valid) == (valid, valid), api_server_errors


def test_the_documented_streaming_refusal_is_the_operators_word_for_word() -> None:
    doc = policy("team-cv").set("nodePools", {"imageType": "UBUNTU_CONTAINERD", "imageStreaming": True})
    doc.doc["spec"].pop("gcp")
    with pytest.raises(Refused) as refused:
        doc.obj()
    [line] = refused.value.lines()
    page = Path(__file__).resolve().parents[2] / "docs" / "platform" / "node-pools.md"
    assert f"\n{line}\n" in page.read_text(encoding="utf-8")


def test_a_workload_whose_machine_cannot_boot_from_the_policys_disk_type_is_refused_at_admission() -> None:
    """The policy check above needs accelerators.allowed; without it, the workload's own machine is judged."""
    strict = permissive_policy().set("nodePools.diskType", "pd-standard").obj()
    l4 = workload().gpu_group(accelerator="nvidia-l4").obj()  # g2: no Standard PD
    t4 = workload().gpu_group(accelerator="nvidia-tesla-t4").obj()  # n1: Standard PD is fine

    [problem] = admit(l4, [strict], None).problems
    assert problem.path == "spec.workerGroups[0]"
    assert problem.rule == "boot_disk"
    assert "g2 machines boot from pd-balanced or pd-ssd only, not pd-standard" in problem.message
    assert "(nodePools.diskType)" in problem.message
    assert admit(t4, [strict], None).allowed
    assert admit(l4, [permissive_policy().obj()], None).allowed  # no disk type: GKE's default


IDLE_POLICY = permissive_policy().set("lifecycle.maxClusterIdleSeconds", 3600)
AUTOSCALED = workload().group(replicas=0, minReplicas=0, maxReplicas=2).set("spec.autoscaling", {"enabled": True})


@pytest.mark.parametrize(
    ("asked", "rules", "window"),
    [(None, IDLE_POLICY, 3600), (600, IDLE_POLICY, 600), (600, permissive_policy(), 600),
     (None, permissive_policy(), None)],
)  # fmt: skip
def test_the_idle_window_is_the_workloads_within_the_policys_cap(
    asked: int | None, rules: PolicyDoc, window: int | None
) -> None:
    doc = copy.deepcopy(AUTOSCALED)
    if asked is not None:
        doc.set("spec.lifecycle", {"idleSeconds": asked})
    verdict = admit(doc.obj(), [rules.obj()], None)
    assert verdict.allowed, [str(p) for p in verdict.problems]
    assert verdict.resolved.idle_seconds == window


def test_an_idle_window_above_the_cap_or_without_the_autoscaler_is_refused() -> None:
    above = copy.deepcopy(AUTOSCALED).set("spec.lifecycle", {"idleSeconds": 7200})
    problems = [str(p) for p in admit(above.obj(), [IDLE_POLICY.obj()], None).problems]
    assert any("spec.lifecycle.idleSeconds" in p and "maxClusterIdleSeconds" in p and "7200" in p for p in problems)
    unobservable = workload().group().set("spec.lifecycle", {"idleSeconds": 60})
    problems = [str(p) for p in admit(unobservable.obj(), [IDLE_POLICY.obj()], None).problems]
    assert any("spec.autoscaling.enabled" in p for p in problems)
    # Without the autoscaler the policy's limit cannot be observed: no window, and nothing refused.
    assert admit(workload().group().obj(), [IDLE_POLICY.obj()], None).resolved.idle_seconds is None


def test_lifecycle_is_for_clusters_and_the_runtime_cap_is_validated() -> None:
    with pytest.raises(Refused):
        workload().job().set("spec.lifecycle", {"idleSeconds": 60}).obj()
    with pytest.raises(Refused):
        permissive_policy().set("lifecycle.maxClusterRuntimeSeconds", 0).obj()
    assert (
        permissive_policy()
        .set("lifecycle.maxClusterRuntimeSeconds", 86400)
        .obj()
        .spec.lifecycle.max_cluster_runtime_seconds
        == 86400
    )


# --- Kueue queues ---------------------------------------------------------------------------------------------


def _queue_problems(doc: WorkloadDoc, rules: PolicyDoc) -> list[str]:
    verdict = admit(doc.obj(), [rules.obj()], None)
    return [str(problem) for problem in verdict.problems if problem.rule == "queue"]


def _queue_of(doc: WorkloadDoc, rules: PolicyDoc) -> str | None:
    return admit(doc.obj(), [rules.obj()], None).resolved.queue


QUEUES = permissive_policy().set("queues", {"default": "team-queue", "allowed": ["team-queue", "urgent"]})


def test_the_workloads_queue_else_the_policys_default() -> None:
    assert _queue_of(workload().job().set("spec.queue", {"name": "urgent"}), QUEUES) == "urgent"
    assert _queue_of(workload().job(), QUEUES) == "team-queue"
    assert _queue_of(workload().job(), permissive_policy()) is None
    assert _queue_of(workload().service(), QUEUES) is None  # Kueue does not manage RayService


def test_a_queue_the_policy_does_not_allow_is_refused_naming_both_fields() -> None:
    [problem] = _queue_problems(workload().job().set("spec.queue", {"name": "other"}), QUEUES)
    assert "spec.queue.name" in problem
    assert "queues.allowed" in problem
    assert "team-queue, urgent" in problem


def test_a_service_cannot_be_queued() -> None:
    [problem] = _queue_problems(workload().service().set("spec.queue", {"name": "urgent"}), QUEUES)
    assert "not RayService" in problem


def test_what_kueue_refuses_or_fights_over_is_refused_when_queued() -> None:
    """Kueue's webhook refuses autoscaled Ray objects ("a kueue managed job can use autoscaling only when the
    ElasticJobsViaWorkloadSlices feature gate is on") and more than 7 worker groups; a user's suspend would fight
    Kueue's admission."""
    cluster = workload().group().set("spec.autoscaling", {"enabled": True}).set("spec.suspend", True)
    problems = _queue_problems(cluster, QUEUES)
    assert [p.split(":")[0] for p in problems] == ["spec.suspend", "spec.autoscaling.enabled"]
    assert "queues.default" in problems[0]
    many = workload().job()
    for index in range(8):
        many.group(f"g{index}")
    assert [p.split(":")[0] for p in _queue_problems(many, QUEUES)] == ["spec.workerGroups"]
    assert _queue_problems(cluster, permissive_policy()) == []  # not queued: nothing to fight over


def test_queue_names_are_validated_as_label_values() -> None:
    assert verdicts(workload().job().set("spec.queue", {"name": "Not_A_Queue"}))[1] is False
    assert verdicts(workload().job().set("spec.queue", {"name": "q" * 64}))[1] is False
    assert verdicts(workload().job().set("spec.queue", {"name": "urgent", "priorityClass": "high"})) == ([], True)
    refused = permissive_policy().set("queues", {"default": "x", "allowed": ["y"]})
    with pytest.raises(Refused, match=r"queues.default 'x' is not in queues.allowed"):
        refused.obj()
