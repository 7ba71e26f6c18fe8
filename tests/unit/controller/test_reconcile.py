"""The reconcile steps against an in-memory API: apply, skip unchanged, prune, refuse, report."""

from typing import Any

from mlworkload.api.workload import IamBindingStatus
from mlworkload.controller.reconcile import Reconciler, live_claims, reconcile, trusted
from mlworkload.gcp.errors import FailureKind, GcpError
from mlworkload.gcp.provisioner import DryRunProvisioner, Recorded
from mlworkload.policy import BrokenPolicy, ClusterView, admit, admit_in
from tests.support.clock import NOW
from tests.support.documents import WorkloadDoc, permissive_policy, policy, workload
from tests.support.fake_kube import FakeKubeApi

VIEW = ClusterView(policies=[permissive_policy().obj()], default_labels={})


def created(kube: FakeKubeApi, doc: WorkloadDoc) -> dict[str, Any]:
    body = kube.put(doc.set("metadata.generation", 1).doc)
    body["metadata"]["generation"] = 1
    return body


def body_of(kube: FakeKubeApi, name: str = "demo") -> dict[str, Any]:
    return kube.objects["MLWorkload", "team-nlp", name]


async def test_first_reconcile_applies_every_child_and_reports_status(
    kube: FakeKubeApi, reconciler: Reconciler
) -> None:
    created(kube, workload().gpu_group().expose("dashboard"))
    outcome = await reconcile(reconciler, body_of(kube), VIEW)
    assert outcome.result == "applied"
    assert sorted(outcome.apply.applied) == sorted([
        "ServiceAccount/demo", "NetworkPolicy/demo-head", "NetworkPolicy/demo-workers-gpu",
        "ComputeClass/mlw-permissive-l4x1-swf", "PodDisruptionBudget/demo-head", "RayCluster/demo",
        "Service/demo-dashboard",
        "BackendConfig/demo-dashboard", "Ingress/demo-dashboard",
    ])  # fmt: skip
    ray_cluster = kube.objects["RayCluster", "team-nlp", "demo"]
    assert ray_cluster["metadata"]["ownerReferences"][0]["uid"] == body_of(kube)["metadata"]["uid"]
    status = kube.status_of("MLWorkload", "team-nlp", "demo")
    assert status["phase"] == "Provisioning"
    assert status["observedGeneration"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]}["Reconciling"] == "True"


async def test_a_second_reconcile_of_an_unchanged_workload_writes_nothing(
    kube: FakeKubeApi, reconciler: Reconciler
) -> None:
    created(kube, workload().job().gpu_group().expose("dashboard").expose("serve"))
    await reconcile(reconciler, body_of(kube), VIEW)
    writes = len(kube.writes)
    outcome = await reconcile(reconciler, body_of(kube), VIEW)
    assert (outcome.result, outcome.status_written) == ("unchanged", False)
    assert kube.writes[writes:] == []


async def test_ray_readiness_reaches_the_workload_status(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    created(kube, workload().group())
    await reconcile(reconciler, body_of(kube), VIEW)
    kube.objects["RayCluster", "team-nlp", "demo"]["status"] = {"state": "ready", "conditions": [
        {"type": "HeadPodReady", "status": "True"}, {"type": "RayClusterProvisioned", "status": "True"}]}  # fmt: skip
    outcome = await reconcile(reconciler, body_of(kube), VIEW)
    assert outcome.status_written
    status = kube.status_of("MLWorkload", "team-nlp", "demo")
    assert status["phase"] == "Running"
    assert {c["type"]: c["reason"] for c in status["conditions"]}["Ready"] == "RayClusterReady"


async def test_removed_children_are_pruned(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    doc = workload().group("a").group("b").expose("dashboard")
    created(kube, doc)
    await reconcile(reconciler, body_of(kube), VIEW)
    doc.set("spec.expose", None).set("spec.workerGroups", [{"name": "a"}]).set("metadata.generation", 2)
    kube.objects["MLWorkload", "team-nlp", "demo"]["spec"] = doc.doc["spec"]
    outcome = await reconcile(reconciler, body_of(kube), VIEW)
    assert sorted(outcome.apply.deleted) == [
        "BackendConfig/demo-dashboard", "Ingress/demo-dashboard", "NetworkPolicy/demo-workers-b",
        "Service/demo-dashboard",
    ]  # fmt: skip
    assert ("NetworkPolicy", "team-nlp", "demo-workers-a") in kube.objects


async def test_a_policy_violation_after_admission_applies_nothing(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    created(kube, workload().expose("serve", visibility="External"))
    outcome = await reconcile(reconciler, body_of(kube), ClusterView(policies=[policy().obj()]))
    assert outcome.result == "refused"
    assert kube.writes == ["status MLWorkload/demo"]
    status = kube.status_of("MLWorkload", "team-nlp", "demo")
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "PolicyViolation")
    assert "spec.expose.serve.visibility: External is not allowed" in stalled["message"]


async def test_an_invalid_spec_is_reported_not_raised(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    created(kube, workload().set("spec.workerGroups", [{"name": "g", "replicas": 2, "maxReplicas": 1}]))
    outcome = await reconcile(reconciler, body_of(kube), VIEW)
    assert outcome.result == "refused"
    stalled = next(c for c in kube.status_of("MLWorkload", "team-nlp", "demo")["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "InvalidSpec"


async def test_foreign_objects_with_a_childs_name_are_left_alone(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    theirs = {"name": "demo", "namespace": "team-nlp", "labels": {"app": "theirs"}}
    foreign = kube.put({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": theirs})
    created(kube, workload())
    outcome = await reconcile(reconciler, body_of(kube), VIEW)
    assert kube.objects["ServiceAccount", "team-nlp", "demo"] == foreign
    stalled = next(c for c in kube.status_of("MLWorkload", "team-nlp", "demo")["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "ChildConflict")
    assert outcome.apply.conflicts[0].path == "ServiceAccount/demo"


async def test_drift_in_a_child_is_corrected(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    created(kube, workload().group())
    await reconcile(reconciler, body_of(kube), VIEW)
    kube.objects["RayCluster", "team-nlp", "demo"]["spec"]["workerGroupSpecs"][0]["replicas"] = 7
    outcome = await reconcile(reconciler, body_of(kube), VIEW)
    assert outcome.apply.applied == ["RayCluster/demo"]
    assert kube.objects["RayCluster", "team-nlp", "demo"]["spec"]["workerGroupSpecs"][0]["replicas"] == 1


async def test_gpu_plan_goes_to_the_gcp_provisioner(kube: FakeKubeApi) -> None:
    gcp = DryRunProvisioner()
    created(kube, workload().gpu_group(capacity="Spot"))
    await reconcile(Reconciler(kube=kube, gcp=gcp, clock=lambda: NOW), body_of(kube), VIEW)
    assert list(gcp.digests) == ["team-nlp/demo"]  # the dry run keeps a digest of the plan; status shows it:
    status = kube.status_of("MLWorkload", "team-nlp", "demo")
    assert status["nodePools"] == [
        {"name": "mlw-permissive-l4x1-spot", "capacity": "Spot", "state": "DryRun", "operation": ""}
    ]
    assert status["gpus"] == {"requested": 1, "accelerator": "nvidia-l4"}


async def test_clusters_kuberay_makes_from_our_rayjob_are_not_pruned(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    created(kube, workload().job())
    await reconcile(reconciler, body_of(kube), VIEW)
    job = kube.objects["RayJob", "team-nlp", "demo"]
    # KubeRay copies the RayJob's labels onto the cluster it creates and makes the RayJob its controller.
    kube.put({"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {
        "name": "demo-x7k2p", "namespace": "team-nlp", "labels": dict(job["metadata"]["labels"]),
        "ownerReferences": [{"apiVersion": "ray.io/v1", "kind": "RayJob", "name": "demo",
                             "uid": job["metadata"]["uid"], "controller": True}]}})  # fmt: skip
    outcome = await reconcile(reconciler, body_of(kube), VIEW)
    assert outcome.apply.deleted == []
    assert ("RayCluster", "team-nlp", "demo-x7k2p") in kube.objects


async def test_the_autoscaler_owns_replicas_once_the_cluster_exists(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    created(
        kube, workload().group("cpu", replicas=1, minReplicas=0, maxReplicas=6).set("spec.autoscaling.enabled", True)
    )
    await reconcile(reconciler, body_of(kube), VIEW)
    kube.objects["RayCluster", "team-nlp", "demo"]["spec"]["workerGroupSpecs"][0]["replicas"] = 4  # the autoscaler
    writes = len(kube.writes)
    outcome = await reconcile(reconciler, body_of(kube), VIEW)
    assert (outcome.result, kube.writes[writes:]) == ("unchanged", [])
    assert kube.objects["RayCluster", "team-nlp", "demo"]["spec"]["workerGroupSpecs"][0]["replicas"] == 4


async def test_status_fields_that_no_longer_apply_are_removed(kube: FakeKubeApi, reconciler: Reconciler) -> None:
    doc = workload().expose("dashboard", host="ray.example.com")
    created(kube, doc)
    await reconcile(reconciler, body_of(kube), VIEW)
    assert "dashboardURL" not in kube.status_of("MLWorkload", "team-nlp", "demo")  # no load balancer yet
    # GKE's Ingress controller gives the load balancer its address.
    kube.objects["Ingress", "team-nlp", "demo-dashboard"]["status"] = {
        "loadBalancer": {"ingress": [{"ip": "10.9.0.7"}]}
    }
    await reconcile(reconciler, body_of(kube), VIEW)
    assert kube.status_of("MLWorkload", "team-nlp", "demo")["dashboardURL"] == "https://ray.example.com"
    body_of(kube)["spec"]["expose"] = {}
    await reconcile(reconciler, body_of(kube), VIEW)
    assert "dashboardURL" not in kube.status_of("MLWorkload", "team-nlp", "demo")
    writes = len(kube.writes)
    assert (await reconcile(reconciler, body_of(kube), VIEW)).status_written is False
    assert kube.writes[writes:] == []


async def test_fields_the_api_server_omits_when_empty_do_not_cause_rewrites(
    kube: FakeKubeApi, reconciler: Reconciler
) -> None:
    created(kube, workload().job())
    await reconcile(reconciler, body_of(kube), VIEW)
    del kube.objects["NetworkPolicy", "team-nlp", "demo-submitter"]["spec"]["ingress"]  # omitempty
    writes = len(kube.writes)
    await reconcile(reconciler, body_of(kube), VIEW)
    assert kube.writes[writes:] == []


async def test_a_conflict_stops_before_the_ray_pods_and_is_not_a_policy_refusal(
    kube: FakeKubeApi, reconciler: Reconciler
) -> None:
    kube.put({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "demo-head", "namespace": "team-nlp"}, "spec": {"podSelector": {}}})  # fmt: skip
    created(kube, workload().group())
    outcome = await reconcile(reconciler, body_of(kube), VIEW)
    assert ("RayCluster", "team-nlp", "demo") not in kube.objects
    assert outcome.apply.applied == ["ServiceAccount/demo"]
    conditions = {c["type"]: c for c in kube.status_of("MLWorkload", "team-nlp", "demo")["conditions"]}
    assert (conditions["Stalled"]["status"], conditions["Stalled"]["reason"]) == ("True", "ChildConflict")
    assert conditions["PolicyAdmitted"]["status"] == "True"


class Datapath:
    """A stand-in for GKE's answer about the cluster (the adapter itself is tested against the fake GKE)."""

    def __init__(self, enforced: bool) -> None:
        self.enforced: bool | GcpError = enforced

    async def network_policies_enforced(self, cluster_path: str) -> bool:
        if isinstance(self.enforced, GcpError):
            raise self.enforced
        return self.enforced


def enforcement(kube: FakeKubeApi) -> dict[str, Any] | None:
    conditions = kube.status_of("MLWorkload", "team-nlp", "demo")["conditions"]
    return next((c for c in conditions if c["type"] == "NetworkPoliciesEnforced"), None)


async def test_a_cluster_that_does_not_enforce_network_policies_is_reported_and_kept_through_errors(
    kube: FakeKubeApi,
) -> None:
    datapath = Datapath(enforced=False)
    reconciler = Reconciler(kube=kube, gcp=DryRunProvisioner(), clock=lambda: NOW, clusters=datapath)
    created(kube, workload())
    await reconcile(reconciler, body_of(kube), VIEW)
    warning = enforcement(kube)
    assert warning is not None
    assert (warning["status"], warning["reason"]) == ("False", "NotEnforced")
    assert "written but not enforced" in warning["message"]
    assert {c["type"]: c["status"] for c in kube.status_of("MLWorkload", "team-nlp", "demo")["conditions"]}[
        "Stalled"
    ] == "False"  # a warning, not a reason to stall

    datapath.enforced = GcpError(FailureKind.UNAVAILABLE, "503")
    writes = len(kube.writes)
    await reconcile(reconciler, body_of(kube), VIEW)
    assert enforcement(kube) == warning  # GKE did not answer: what was known stays, nothing is written
    assert kube.writes[writes:] == []

    datapath.enforced = True
    await reconcile(reconciler, body_of(kube), VIEW)
    assert (enforcement(kube) or {}).get("reason") == "Enforced"
    body_of(kube)["spec"]["network"] = {"isolation": "None"}
    await reconcile(reconciler, body_of(kube), VIEW)
    assert enforcement(kube) is None  # no NetworkPolicies, nothing to enforce


def record_of(*bindings: tuple[str, str, str]) -> Recorded:
    return Recorded(bindings=tuple(IamBindingStatus(resource=r, role=role, member=m, added_by_operator=True)
                                   for r, role, m in bindings))  # fmt: skip


def test_a_workloads_own_identity_is_revoked_whatever_its_policy_says_now() -> None:
    """Trust must not hang on the current policy: a workload whose policy went away, or moved to another
    project, still loses the Workload Identity binding of its own ServiceAccount."""
    own = ("projects/old-proj/serviceAccounts/ray-nlp@old-proj.iam.gserviceaccount.com",
           "roles/iam.workloadIdentityUser", "serviceAccount:old-proj.svc.id.goog[team-nlp/demo]")  # fmt: skip
    other_team = ("projects/old-proj/serviceAccounts/ray-cv@old-proj.iam.gserviceaccount.com",
                  "roles/iam.workloadIdentityUser", "serviceAccount:old-proj.svc.id.goog[team-cv/vision]")  # fmt: skip
    for rules in ([], [policy().obj()]):  # no policy at all (default deny), or one naming no GSA
        resolved_ = admit(workload().obj(), rules, None).resolved
        kept, forged = trusted(resolved_, record_of(own, other_team))
        assert [b.member for b in kept.bindings] == [own[2]]
        assert [b.member for b in forged] == [other_team[2]]


class Spy(DryRunProvisioner):
    """Dry-run GCP that remembers what it was asked to release."""

    def __init__(self) -> None:
        super().__init__()
        self.released: list[str] = []

    async def release(self, owner: str, recorded: Recorded, *, keep_pools: bool = False) -> list[IamBindingStatus]:
        self.released.append(owner)
        return []


async def test_an_unreadable_policy_refuses_but_revokes_nothing(kube: FakeKubeApi) -> None:
    gcp = Spy()
    reconciler = Reconciler(kube=kube, gcp=gcp, clock=lambda: NOW)
    created(kube, workload())
    broken = BrokenPolicy("typo", "spec.ray.allowedVersions: '2.41' can never match", selector=None, priority=100)
    view = ClusterView(policies=[permissive_policy().obj()], default_labels={}, broken=[broken])
    body_of(kube)["status"] = {"iamBindings": [{"resource": "projects/p/serviceAccounts/a@p.iam.gserviceaccount.com",
                                                "role": "roles/iam.workloadIdentityUser", "addedByOperator": True,
                                                "member": "serviceAccount:p.svc.id.goog[team-nlp/demo]"}]}  # fmt: skip
    outcome = await reconcile(reconciler, body_of(kube), view)
    assert outcome.result == "refused"
    assert gcp.released == []  # a typo in a policy takes nobody's identity away
    outranked = BrokenPolicy("typo", "unreadable", selector=None, priority=-5)
    assert admit_in(ClusterView(policies=[permissive_policy().obj()], default_labels={}, broken=[outranked]),
                    workload().obj()).allowed  # fmt: skip


async def test_a_forged_claim_in_another_workload_keeps_no_binding_alive(kube: FakeKubeApi) -> None:
    """Shared bindings are kept while another workload claims them; a Workload Identity entry claims only
    when it is that workload's own identity."""
    victim = "serviceAccount:p.svc.id.goog[team-nlp/demo]"
    entry = {"resource": "projects/p/serviceAccounts/a@p.iam.gserviceaccount.com",
             "role": "roles/iam.workloadIdentityUser", "addedByOperator": True}  # fmt: skip
    created(kube, workload("forger"))
    body_of(kube, "forger")["status"] = {"iamBindings": [
        {**entry, "member": victim},  # not the forger's identity: no claim
        {**entry, "member": "serviceAccount:p.svc.id.goog[team-nlp/forger]"},  # its own: a claim
    ]}  # fmt: skip
    claims = await live_claims(kube, [])
    assert [b.member for b in claims["team-nlp/forger"].bindings] == ["serviceAccount:p.svc.id.goog[team-nlp/forger]"]
