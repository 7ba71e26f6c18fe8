"""The real operator (kopf, in its own thread) against the in-memory API server, end to end."""

import json
import ssl
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import prometheus_client
import pytest

from tests.support.documents import PolicyDoc, WorkloadDoc, permissive_policy, policy, workload
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.kuberay import KubeRaySimulator
from tests.support.observed import workload_condition, workload_status
from tests.support.operator import free_port, running_operator

NS = "team-nlp"
MLW = "mlworkload.io/v1alpha1"
WAIT = 30.0  # seconds; the operator is usually there in well under one


@pytest.fixture(scope="module")
def server() -> Iterator[KubeEmulatorServer]:
    with KubeEmulatorServer() as emulator:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": "nlp"}}}
        emulator.put_object(namespace)
        emulator.put_object(permissive_policy("team").set("namespaceSelector", {"matchLabels": {"team": "nlp"}}).doc)
        yield emulator


@pytest.fixture(scope="module")
def webhook_port() -> int:
    return free_port()


@pytest.fixture(scope="module", autouse=True)
def operator(server: KubeEmulatorServer, tmp_path_factory: pytest.TempPathFactory, webhook_port: int) -> Iterator[None]:
    kubeconfig = server.kubeconfig(tmp_path_factory.mktemp("kube") / "config")
    with running_operator(kubeconfig, webhook_port=webhook_port):
        yield


def status(server: KubeEmulatorServer, name: str) -> dict[str, Any]:
    return workload_status(server, NS, name)


def condition(server: KubeEmulatorServer, name: str, kind: str) -> dict[str, Any]:
    return workload_condition(server, NS, name, kind)


CHILD_KINDS = [("v1", "ServiceAccount"), ("v1", "Service"), ("networking.k8s.io/v1", "NetworkPolicy"),
               ("networking.k8s.io/v1", "Ingress"), ("cloud.google.com/v1", "BackendConfig"),
               ("ray.io/v1", "RayCluster"), ("ray.io/v1", "RayJob"), ("ray.io/v1", "RayService")]  # fmt: skip


def children(server: KubeEmulatorServer, name: str) -> set[str]:
    selector = f"mlworkload.io/workload={name}"
    return {f"{o['kind']}/{o['metadata']['name']}" for av, kind in CHILD_KINDS
            for o in server.list_objects(av, kind, NS, selector)}  # fmt: skip


TYPES = {
    "cluster": (workload("c1", NS).gpu_group(), "RayCluster", KubeRaySimulator.cluster_ready, "RayClusterReady"),
    "job": (workload("j1", NS).job(), "RayJob", KubeRaySimulator.job_running, "RayJobRunning"),
    "service": (workload("s1", NS).service(), "RayService", KubeRaySimulator.service_running, "RayServiceRunning"),
}


@pytest.mark.parametrize("case", TYPES.values(), ids=TYPES.keys())
def test_each_type_reaches_ready(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator, create: Callable[[WorkloadDoc], str], case: Any
) -> None:
    doc, kind, make_ready, ready_reason = case
    name = create(doc)
    wait_until(lambda: server.get_object("ray.io/v1", kind, name, NS), timeout=WAIT, what=f"the {kind}")
    wait_until(lambda: status(server, name).get("phase") in {"Provisioning", "Pending"}, timeout=WAIT, what="status")
    assert condition(server, name, "Ready")["status"] == "False"
    make_ready(kuberay, NS, name)
    wait_until(lambda: condition(server, name, "Ready").get("status") == "True", timeout=WAIT, what="Ready=True")
    assert condition(server, name, "Ready")["reason"] == ready_reason
    assert status(server, name)["observedGeneration"] == 1
    ray = server.get_object("ray.io/v1", kind, name, NS)
    assert ray is not None
    assert ray["metadata"]["ownerReferences"][0]["name"] == name


def test_spec_changes_roll_through_and_removed_children_are_deleted(
    server: KubeEmulatorServer, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(workload("roll", NS).group("a").group("b").expose("dashboard"))
    wait_until(lambda: "Ingress/roll-dashboard" in children(server, name), timeout=WAIT, what="the Ingress")
    server.patch_object(MLW, "MLWorkload", name, {"spec": {
        "workerGroups": [{"name": "a", "replicas": 3}], "expose": {"dashboard": {"enabled": False}},
        "ray": {"version": "2.41.0", "image": "rayproject/ray:2.41.0-py311-cpu"}}}, NS)  # fmt: skip
    wait_until(lambda: status(server, name).get("observedGeneration") == 2, timeout=WAIT, what="observedGeneration 2")
    cluster = server.get_object("ray.io/v1", "RayCluster", name, NS)
    assert cluster is not None
    assert [g["replicas"] for g in cluster["spec"]["workerGroupSpecs"]] == [3]
    assert cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"].endswith("-cpu")
    gone = {"Ingress/roll-dashboard", "Service/roll-dashboard", "BackendConfig/roll-dashboard",
            "NetworkPolicy/roll-workers-b"}  # fmt: skip
    wait_until(lambda: not gone & children(server, name), timeout=WAIT, what="the removed children to be deleted")
    assert "NetworkPolicy/roll-workers-a" in children(server, name)


def test_suspend_and_resume(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(workload("nap", NS).group())
    wait_until(lambda: server.get_object("ray.io/v1", "RayCluster", name, NS), timeout=WAIT, what="the RayCluster")
    server.patch_object(MLW, "MLWorkload", name, {"spec": {"suspend": True}}, NS)

    def ray_suspend() -> object:
        return (server.get_object("ray.io/v1", "RayCluster", name, NS) or {}).get("spec", {}).get("suspend")

    wait_until(lambda: ray_suspend() is True, timeout=WAIT, what="the RayCluster suspended")
    kuberay.cluster_suspended(NS, name)
    wait_until(lambda: status(server, name).get("phase") == "Suspended", timeout=WAIT, what="phase Suspended")
    assert condition(server, name, "Ready")["reason"] == "Suspended"
    assert condition(server, name, "Reconciling")["status"] == "False"
    server.patch_object(MLW, "MLWorkload", name, {"spec": {"suspend": False}}, NS)
    wait_until(lambda: ray_suspend() is False, timeout=WAIT, what="the RayCluster resumed")
    kuberay.cluster_ready(NS, name)
    wait_until(lambda: status(server, name).get("phase") == "Running", timeout=WAIT, what="phase Running")


def test_job_success_and_failure(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator, create: Callable[[WorkloadDoc], str]
) -> None:
    for name in (create(workload("ok", NS).job()), create(workload("bad", NS).job())):
        wait_until(lambda n=name: server.get_object("ray.io/v1", "RayJob", n, NS), timeout=WAIT, what=f"RayJob {name}")
    kuberay.job_succeeded(NS, "ok")
    kuberay.job_failed(NS, "bad", "Job entrypoint command failed with exit code 1")
    wait_until(lambda: status(server, "ok").get("phase") == "Succeeded", timeout=WAIT, what="ok Succeeded")
    wait_until(lambda: status(server, "bad").get("phase") == "Failed", timeout=WAIT, what="bad Failed")
    assert status(server, "ok")["job"]["status"] == "SUCCEEDED"
    assert condition(server, "ok", "Ready")["reason"] == "RayJobSucceeded"
    stalled = condition(server, "bad", "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "AppFailed")
    assert stalled["message"] == "Job entrypoint command failed with exit code 1"
    assert status(server, "bad")["job"]["attempts"] == 3


def test_a_policy_change_stalls_a_workload_it_no_longer_admits(
    server: KubeEmulatorServer, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(workload("later", NS).expose("serve", visibility="External"))
    wait_until(lambda: condition(server, name, "PolicyAdmitted").get("status") == "True", timeout=WAIT, what="admitted")
    strict = policy("strict").set("priority", 100).set("namespaceSelector", {"matchLabels": {"team": "nlp"}})
    server.put_object(strict.doc)
    try:
        wait_until(lambda: condition(server, name, "Stalled").get("reason") == "PolicyViolation", timeout=WAIT,
                   what="Stalled=PolicyViolation after the policy changed")  # fmt: skip
        assert "External is not allowed by policy strict" in condition(server, name, "Stalled")["message"]
        assert condition(server, name, "PolicyAdmitted")["status"] == "False"
        events = server.list_objects("v1", "Event", NS)
        assert any(e.get("type") == "Warning" and e.get("reason") == "PolicyViolation"
                   and e["involvedObject"]["name"] == name for e in events)  # fmt: skip
    finally:
        server.delete_object(MLW, "MLWorkloadPolicy", "strict")
    wait_until(lambda: condition(server, name, "Stalled").get("status") == "False", timeout=WAIT,
               what="re-admitted once the strict policy is gone")  # fmt: skip


def policy_status(server: KubeEmulatorServer, name: str) -> dict[str, Any]:
    return (server.get_object(MLW, "MLWorkloadPolicy", name) or {}).get("status") or {}


def test_a_policy_reports_what_it_governs_and_writes_its_status_only_when_it_changes(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator
) -> None:
    """In a namespace and under a policy of its own, so that no other test's workload moves the report."""
    namespace = "counted"
    labels = {"team": "counted"}
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": labels}})
    server.put_object(permissive_policy("counted").set("namespaceSelector", {"matchLabels": {"team": "counted"}})
                      .set("quota", {"maxGPUs": 8}).doc)  # fmt: skip
    doc = workload("w", namespace).gpu_group()
    server.put_object(doc.doc)
    try:
        wait_until(lambda: server.get_object("ray.io/v1", "RayCluster", "w", namespace), timeout=WAIT, what="Ray")
        kuberay.cluster_ready(namespace, "w")
        wait_until(lambda: policy_status(server, "counted").get("workloads", {}).get("byPhase") == {"Running": 1},
                   timeout=WAIT, what="the running workload counted")  # fmt: skip
        reported = policy_status(server, "counted")
        assert reported["namespaces"] == [namespace]
        assert reported["namespaceCount"] == 1
        assert reported["gpus"] == {"inUse": doc.obj().spec.gpus_at_max_scale, "quota": 8}
        assert [(c["type"], c["status"], c["reason"]) for c in reported["conditions"]] == [("Ready", "True", "Valid")]

        # Another policy's first report comes from a later pass, which reports "counted" too: it writes nothing.
        mark = server.request_count
        server.put_object(policy("idle").set("namespaceSelector", {"matchLabels": {"team": "nobody"}}).doc)
        wait_until(lambda: "namespaceCount" in policy_status(server, "idle"), timeout=WAIT, what="idle's report")
        writes = [(r.method, r.path) for r in server.writes(mark) if "/mlworkloadpolicies/" in r.path]
        assert writes == [("PATCH", "/apis/mlworkload.io/v1alpha1/mlworkloadpolicies/idle/status")]
        assert policy_status(server, "counted") == reported
    finally:
        server.delete_object(MLW, "MLWorkload", "w", namespace)
        wait_until(lambda: server.get_object(MLW, "MLWorkload", "w", namespace) is None, timeout=WAIT, what="gone")
        server.delete_object(MLW, "MLWorkloadPolicy", "idle")
        server.delete_object(MLW, "MLWorkloadPolicy", "counted")


def test_delete_removes_children_and_releases_gcp(
    server: KubeEmulatorServer, create: Callable[[WorkloadDoc], str]
) -> None:
    name = create(workload("gone", NS).gpu_group().expose("dashboard"))
    wait_until(lambda: len(children(server, name)) == 7, timeout=WAIT, what="all seven children")
    server.delete_object(MLW, "MLWorkload", name, NS)
    wait_until(lambda: server.get_object(MLW, "MLWorkload", name, NS) is None, timeout=WAIT, what="finalizer released")
    wait_until(lambda: not children(server, name), timeout=WAIT, what="garbage collection of the children")
    events = server.list_objects("v1", "Event", NS)
    assert any(e.get("reason") == "GcpReleased" and e["involvedObject"]["name"] == name for e in events)


def test_an_unchanged_workload_is_reconciled_without_a_single_request(
    server: KubeEmulatorServer, kuberay: KubeRaySimulator, create: Callable[[WorkloadDoc], str]
) -> None:
    """The resync sees the children through the watch caches, and the workload as kopf's copy, which includes
    the operator's own last status write (controller/freshness.py): no round trip at all."""
    name = create(workload("quiet", NS).gpu_group().expose("dashboard"))
    wait_until(lambda: server.get_object("ray.io/v1", "RayCluster", name, NS), timeout=WAIT, what="the RayCluster")
    kuberay.cluster_ready(NS, name)
    wait_until(lambda: status(server, name).get("phase") == "Running", timeout=WAIT, what="Running")

    def unchanged_reconciles() -> float:  # the operator runs in this process: its metrics are here
        return prometheus_client.REGISTRY.get_sample_value("mlworkload_reconciles_total", {"result": "unchanged"}) or 0

    mark, reconciled = server.request_count, unchanged_reconciles()
    wait_until(lambda: unchanged_reconciles() >= reconciled + 2, timeout=WAIT, what="two periodic reconciles")
    requests = [r for r in server.requests(mark) if f"/namespaces/{NS}/" in r.path and r.query.get("watch") != "true"]
    assert [(r.method, r.path) for r in requests] == []  # no LIST, no GET of the workload or a child, no write


def admission_review(doc: WorkloadDoc | PolicyDoc, port: int, old: WorkloadDoc | None = None) -> dict[str, Any]:
    operation = "CREATE" if old is None else "UPDATE"
    kind, plural, path = (("MLWorkload", "mlworkloads", "policy") if isinstance(doc, WorkloadDoc)
                          else ("MLWorkloadPolicy", "mlworkloadpolicies", "policy-spec"))  # fmt: skip
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "review-1", "operation": operation, "name": doc.doc["metadata"]["name"],
        **({"namespace": NS} if isinstance(doc, WorkloadDoc) else {}),
        "kind": {"group": "mlworkload.io", "version": "v1alpha1", "kind": kind},
        "resource": {"group": "mlworkload.io", "version": "v1alpha1", "resource": plural},
        "userInfo": {"username": "alice"}, "object": doc.doc, "oldObject": old.doc if old else None,
        "dryRun": False}}  # fmt: skip
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE  # self-signed in tests
    request = urllib.request.Request(f"https://127.0.0.1:{port}/{path}", data=json.dumps(review).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, context=insecure, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())["response"]
        return answer


def _view_ready(webhook_port: int) -> bool:
    """Until its indexes are filled, the webhook refuses with 503 and asks to retry (never judges blind)."""
    answer = admission_review(workload("probe", NS), webhook_port)
    if answer["allowed"]:
        return True
    assert answer["status"]["code"] == 503, answer
    assert "retry in a few seconds" in answer["status"]["message"]
    return False


def test_the_webhook_admits_and_refuses_with_the_policy_checks(webhook_port: int) -> None:
    wait_until(lambda: _listening(webhook_port), timeout=WAIT, what="the webhook server")
    wait_until(lambda: _view_ready(webhook_port), timeout=WAIT, what="the webhook's view filled")
    assert admission_review(workload("fine", NS).gpu_group(), webhook_port)["allowed"] is True
    refused = admission_review(workload("greedy", NS).gpu_group(accelerator="nvidia-b200", count=8), webhook_port)
    assert refused["allowed"] is False
    assert refused["status"]["code"] == 422
    assert "spec.workerGroups[0].accelerator.type: unknown accelerator 'nvidia-b200'" in refused["status"]["message"]
    snake = workload("snake", NS).set("spec.worker_groups", [{"name": "g"}])
    assert "spec.worker_groups: unknown field" in admission_review(snake, webhook_port)["status"]["message"]


def test_the_webhook_never_blocks_finalizers_annotations_or_deletion(webhook_port: int) -> None:
    """A policy tightened after admission must not make a workload impossible to finalize or delete; a change
    of its spec or labels, though, is judged in full."""
    refused = workload("old", NS).gpu_group(accelerator="nvidia-b200", count=8)
    finalized = workload("old", NS).gpu_group(accelerator="nvidia-b200", count=8).set("metadata.finalizers", [])
    finalized.set("metadata.annotations", {"note": "x"})
    assert admission_review(finalized, webhook_port, old=refused)["allowed"] is True
    deleting = workload("old", NS).gpu_group(accelerator="nvidia-b200", count=4)
    deleting.set("metadata.deletionTimestamp", "2026-11-23T12:00:00Z")
    assert admission_review(deleting, webhook_port, old=refused)["allowed"] is True
    changed = workload("old", NS).gpu_group(accelerator="nvidia-b200", count=4)
    assert admission_review(changed, webhook_port, old=refused)["allowed"] is False
    relabelled = workload("old", NS).gpu_group(accelerator="nvidia-b200", count=8).set("metadata.labels", {"x": "y"})
    assert admission_review(relabelled, webhook_port, old=refused)["allowed"] is False


def test_an_update_that_drops_a_required_label_is_re_checked(webhook_port: int) -> None:
    labelled = workload("labelled", NS)  # carries cost-center: nlp
    unlabelled = workload("labelled", NS).set("metadata.labels", {})
    assert admission_review(unlabelled, webhook_port, old=labelled)["allowed"] is True  # the policy requires none
    assert admission_review(labelled, webhook_port, old=labelled)["allowed"] is True


def test_the_policy_webhook_refuses_a_policy_it_could_not_read(webhook_port: int) -> None:
    refused = admission_review(policy("typo").set("accelerators.allowed", ["nvidia-h100"]), webhook_port)
    assert refused["allowed"] is False
    assert "spec.accelerators.allowed: 'nvidia-h100' is not a GKE accelerator type" in refused["status"]["message"]
    assert admission_review(policy("fine"), webhook_port)["allowed"] is True


def invalid_policy_events(server: KubeEmulatorServer) -> list[dict[str, Any]]:
    return [event for event in server.list_objects("v1", "Event") if event.get("reason") == "InvalidPolicy"]


def test_a_stored_policy_the_operator_cannot_read_refuses_its_workloads_and_says_so(
    server: KubeEmulatorServer, webhook_port: int
) -> None:
    """Stored past the webhook (or before it existed): never skipped, so its namespaces do not fall to another."""
    broken = policy("broken").set("priority", 90).set("ray.allowedVersions", ["2.41"]).doc
    server.put_object(broken)
    try:
        wait_until(lambda: not admission_review(workload("victim", NS), webhook_port)["allowed"], timeout=WAIT,
                   what="the unreadable policy in effect")  # fmt: skip
        message = admission_review(workload("victim", NS), webhook_port)["status"]["message"]
        assert "metadata.namespace: MLWorkloadPolicy broken may govern this namespace and cannot be read" in message
        wait_until(lambda: invalid_policy_events(server), timeout=WAIT, what="an InvalidPolicy Event")
    finally:
        server.delete_object(MLW, "MLWorkloadPolicy", "broken")
    wait_until(lambda: admission_review(workload("victim", NS), webhook_port)["allowed"], timeout=WAIT,
               what="admitted again once the policy is gone")  # fmt: skip


def test_the_webhook_enforces_the_namespace_gpu_quota(server: KubeEmulatorServer, webhook_port: int) -> None:
    # Its own namespace, so that workloads of other tests do not share the quota.
    server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "quota", "labels": {"q": "1"}}})
    capped = permissive_policy("capped").set("priority", 50).set("quota.maxGPUs", 8)
    server.put_object(capped.set("namespaceSelector", {"matchLabels": {"q": "1"}}).doc)
    try:
        server.put_object(workload("big", "quota").gpu_group(count=8).doc)
        big = workload("big2", "quota").gpu_group(count=4)
        wait_until(lambda: not admission_review(big, webhook_port)["allowed"], timeout=WAIT, what="quota in effect")
        message = admission_review(big, webhook_port)["status"]["message"]
        assert "already use 8 of their quota of 8 (quota.maxGPUs)" in message
    finally:
        server.delete_object(MLW, "MLWorkloadPolicy", "capped")
        server.delete_object(MLW, "MLWorkload", "big", "quota")


def _listening(port: int) -> bool:
    import socket  # noqa: PLC0415

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
