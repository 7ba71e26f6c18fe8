"""The in-memory Kubernetes API server behaves like a real one for the official client and for kopf.

Most tests share one server (module fixture) and isolate themselves by namespace; tests about global
state (history limits, shutdown) start their own. Nothing sleeps to synchronise: waits poll a condition.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import http.client
import json
import random
import re
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import kopf
import kopf.testing
import kubernetes.client
import kubernetes.config
import kubernetes.config.kube_config
import kubernetes.watch
import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.kube import (
    APPLY_PATCH,
    KubeEmulatorServer,
    KubeFault,
    RandomFaults,
    Status,
    parse_route,
    wait_until,
)

Obj = dict[str, Any]
MLW = "/apis/mlworkload.io/v1alpha1"
RAY = "/apis/ray.io/v1"


@dataclass
class Reply:
    status: int
    body: Any


def call(
    server: KubeEmulatorServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    **query: str,
) -> Reply:
    """One raw HTTP request, so tests see exact status codes and bodies (no client-side interpretation)."""
    url = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=10)
    data = body.encode() if isinstance(body, str) else None if body is None else json.dumps(body).encode()
    target = path + (f"?{urllib.parse.urlencode(query)}" if query else "")
    headers = {"Authorization": "Bearer x", **({"Content-Type": content_type} if data is not None else {})}
    try:
        connection.request(method, target, body=data, headers=headers)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    return Reply(response.status, json.loads(raw) if raw else None)


def workload(name: str, **extra: Any) -> Obj:
    return {"apiVersion": "mlworkload.io/v1alpha1", "kind": "MLWorkload", "metadata": {"name": name}, **extra}


def configmap(name: str, labels: dict[str, str] | None = None, **extra: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}}, **extra}


def created(server: KubeEmulatorServer, path: str, body: Obj) -> Obj:
    reply = call(server, "POST", path, body)
    assert reply.status == 201, reply.body
    result: Obj = reply.body
    return result


def rv(obj: Obj) -> int:
    return int(obj["metadata"]["resourceVersion"])


@pytest.fixture(scope="module")
def server() -> Iterator[KubeEmulatorServer]:
    with KubeEmulatorServer() as running:
        yield running
    assert running.internal_errors == []


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    """A namespace unique to the test; it need not exist as an object (the emulator is lenient)."""
    name: str = request.node.name
    digest = hashlib.sha1(name.encode()).hexdigest()[:6]
    return f"{re.sub(r'[^a-z0-9]+', '-', name.lower())[:40].strip('-')}-{digest}"


@pytest.fixture
def api(server: KubeEmulatorServer) -> kubernetes.client.ApiClient:
    return server.api_client()


# --- 1. serving ---------------------------------------------------------------------------------------


def test_serves_on_loopback_with_a_kubeconfig_for_the_client_and_kopf(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with KubeEmulatorServer(crd_paths=[]) as server:
        assert server.url.startswith("http://127.0.0.1:")
        path = server.kubeconfig(tmp_path / "kubeconfig")
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(str(path), client_configuration=configuration)
        core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
        core.create_namespace({"metadata": {"name": "via-kubeconfig"}})
        assert [n.metadata.name for n in core.list_namespace().items] == ["via-kubeconfig"]

        monkeypatch.setenv("KUBECONFIG", str(path))
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings(), logger=None)
        assert info is not None
        assert (info.server, info.token) == (server.url, "emulator-dummy-token")
        url = server.url
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection(url.removeprefix("http://").split(":")[0], int(url.rsplit(":", 1)[1])).connect()


def test_two_servers_get_different_free_ports() -> None:
    with KubeEmulatorServer(crd_paths=[]) as first, KubeEmulatorServer(crd_paths=[]) as second:
        assert first.url != second.url
        assert call(first, "GET", "/api").status == call(second, "GET", "/api").status == 200


# --- 2. discovery -------------------------------------------------------------------------------------


def resources_of(server: KubeEmulatorServer, path: str) -> dict[str, Obj]:
    reply = call(server, "GET", path)
    assert reply.status == 200, (path, reply.body)
    return {entry["name"]: entry for entry in reply.body["resources"]}


def test_discovery_of_groups_and_preferred_versions(
    server: KubeEmulatorServer, api: kubernetes.client.ApiClient
) -> None:
    assert call(server, "GET", "/api").body["versions"] == ["v1"]
    groups = {g.name: g for g in kubernetes.client.ApisApi(api).get_api_versions().groups}
    expected = {
        "ray.io",
        "mlworkload.io",
        "networking.k8s.io",
        "apiextensions.k8s.io",
        "events.k8s.io",
        "coordination.k8s.io",
        "cloud.google.com",
    }
    assert expected <= set(groups)
    assert groups["ray.io"].preferred_version.version == "v1"  # v1 is preferred over v1alpha1
    assert [v.version for v in groups["ray.io"].versions] == ["v1", "v1alpha1"]
    assert call(server, "GET", "/apis/ray.io").body["preferredVersion"]["groupVersion"] == "ray.io/v1"
    assert call(server, "GET", "/apis/unknown.example.com").status == 404
    assert call(server, "GET", "/apis/ray.io/v2").status == 404


@pytest.mark.parametrize(
    ("path", "plural", "kind", "namespaced", "has_status"),
    [
        ("/api/v1", "namespaces", "Namespace", False, True),
        ("/api/v1", "serviceaccounts", "ServiceAccount", True, False),
        ("/api/v1", "services", "Service", True, True),
        ("/api/v1", "events", "Event", True, False),
        ("/api/v1", "configmaps", "ConfigMap", True, False),
        ("/api/v1", "pods", "Pod", True, True),
        ("/apis/networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True, False),
        ("/apis/networking.k8s.io/v1", "ingresses", "Ingress", True, True),
        ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition", False, True),
        ("/apis/events.k8s.io/v1", "events", "Event", True, False),
        ("/apis/coordination.k8s.io/v1", "leases", "Lease", True, False),
        ("/apis/cloud.google.com/v1", "backendconfigs", "BackendConfig", True, False),
        ("/apis/cloud.google.com/v1", "computeclasses", "ComputeClass", False, True),
        ("/apis/mlworkload.io/v1alpha1", "mlworkloads", "MLWorkload", True, True),
        ("/apis/mlworkload.io/v1alpha1", "mlworkloadpolicies", "MLWorkloadPolicy", False, True),
        ("/apis/ray.io/v1", "rayclusters", "RayCluster", True, True),
        ("/apis/ray.io/v1", "rayjobs", "RayJob", True, True),
        ("/apis/ray.io/v1", "rayservices", "RayService", True, True),
        ("/apis/ray.io/v1alpha1", "rayclusters", "RayCluster", True, True),
    ],
)
def test_discovery_of_kinds_scopes_and_status_subresources(
    server: KubeEmulatorServer, *, path: str, plural: str, kind: str, namespaced: bool, has_status: bool
) -> None:
    resources = resources_of(server, path)
    assert (resources[plural]["kind"], resources[plural]["namespaced"]) == (kind, namespaced)
    assert (f"{plural}/status" in resources) == has_status
    assert resources_of(server, path + "/") == resources  # the official client asks with a trailing slash


@pytest.mark.parametrize(
    ("base", "plural", "kind", "namespaced"),
    [
        ("/api/v1", "serviceaccounts", "ServiceAccount", True),
        ("/api/v1", "events", "Event", True),
        ("/apis/networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True),
        ("/apis/events.k8s.io/v1", "events", "Event", True),
        ("/apis/coordination.k8s.io/v1", "leases", "Lease", True),
        ("/apis/cloud.google.com/v1", "backendconfigs", "BackendConfig", True),
        ("/apis/cloud.google.com/v1", "computeclasses", "ComputeClass", False),
        ("/apis/mlworkload.io/v1alpha1", "mlworkloadpolicies", "MLWorkloadPolicy", False),
        ("/apis/ray.io/v1", "rayjobs", "RayJob", True),
    ],
)
def test_each_kind_is_served_only_at_its_scope(
    server: KubeEmulatorServer, ns: str, *, base: str, plural: str, kind: str, namespaced: bool
) -> None:
    scoped, wrong = (f"{base}/namespaces/{ns}/{plural}", f"{base}/{plural}/x")
    if not namespaced:
        scoped, wrong = f"{base}/{plural}", f"{base}/namespaces/{ns}/{plural}"
    api_version = base.removeprefix("/apis/").removeprefix("/api/")
    body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": f"{ns}-obj"}}
    obj = created(server, scoped, body)
    assert ("namespace" in obj["metadata"]) == namespaced
    assert call(server, "GET", f"{scoped}/{ns}-obj").body["kind"] == kind
    assert call(server, "GET", wrong).status == 404
    assert call(server, "DELETE", f"{scoped}/{ns}-obj").status == 200


def test_a_crd_created_through_the_api_becomes_servable(server: KubeEmulatorServer, ns: str) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {"type": "object"}}}
            ],
        },
    }
    assert call(server, "GET", f"/apis/example.com/v1/namespaces/{ns}/widgets").status == 404
    created(server, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    stored = call(server, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
    assert {c["type"]: c["status"] for c in stored.body["status"]["conditions"]}["Established"] == "True"
    assert "widgets/status" not in resources_of(server, "/apis/example.com/v1")
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert created(server, f"/apis/example.com/v1/namespaces/{ns}/widgets", widget)["metadata"]["uid"]


def test_loaded_crds_are_stored_objects(server: KubeEmulatorServer) -> None:
    names = {
        crd["metadata"]["name"] for crd in server.list_objects("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    }
    assert {
        "mlworkloads.mlworkload.io",
        "mlworkloadpolicies.mlworkload.io",
        "rayclusters.ray.io",
        "rayjobs.ray.io",
        "rayservices.ray.io",
    } <= names


def test_kuberay_crds_come_from_the_configured_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERAY_CRDS_DIR", str(tmp_path))  # an empty directory: no Ray kinds at all
    with KubeEmulatorServer() as server:
        assert call(server, "GET", "/apis/ray.io/v1").status == 404
        assert call(server, "GET", "/apis/mlworkload.io/v1alpha1").status == 200


def test_route_parsing_handles_namespace_urls() -> None:
    assert parse_route("/api/v1/namespaces") == parse_route("/api/v1/namespaces/")
    assert parse_route("/api/v1/namespaces/a") is not None
    assert parse_route("/api/v1/namespaces/a/status").subresource == "status"  # type: ignore[union-attr]
    route = parse_route("/apis/ray.io/v1/namespaces/a/rayclusters/b/status")
    assert route is not None
    assert (route.namespace, route.plural, route.name, route.subresource) == ("a", "rayclusters", "b", "status")
    assert parse_route("/apis/ray.io/v1") is None


# --- 3. object identity, versions, errors --------------------------------------------------------------


def test_create_assigns_identity_and_a_global_resource_version(server: KubeEmulatorServer, ns: str) -> None:
    first = created(server, f"/api/v1/namespaces/{ns}/configmaps", configmap("a"))
    second = created(server, f"{MLW}/namespaces/{ns}/mlworkloads", workload("b", spec={"x": 1}))
    for obj in (first, second):
        assert len(obj["metadata"]["uid"]) == 36
        assert obj["metadata"]["creationTimestamp"].endswith("Z")
        assert obj["metadata"]["generation"] == 1
        assert isinstance(obj["metadata"]["resourceVersion"], str)
    assert first["metadata"]["uid"] != second["metadata"]["uid"]
    assert rv(second) > rv(first)  # one counter across kinds
    generated = created(server, f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"generateName": "gen-"}})
    assert generated["metadata"]["name"].startswith("gen-")
    assert len(generated["metadata"]["name"]) == len("gen-") + 5


def test_duplicates_and_missing_objects_get_status_bodies(server: KubeEmulatorServer, ns: str) -> None:
    created(server, f"/api/v1/namespaces/{ns}/configmaps", configmap("dup"))
    duplicate = call(server, "POST", f"/api/v1/namespaces/{ns}/configmaps", configmap("dup"))
    assert duplicate.status == 409
    assert duplicate.body["kind"] == "Status"
    assert (duplicate.body["reason"], duplicate.body["code"]) == ("AlreadyExists", 409)
    assert duplicate.body["details"]["name"] == "dup"
    missing = call(server, "GET", f"{RAY}/namespaces/{ns}/rayclusters/nope")
    assert (missing.status, missing.body["reason"], missing.body["status"]) == (404, "NotFound", "Failure")
    assert missing.body["message"] == 'rayclusters.ray.io "nope" not found'
    assert (
        call(
            server, "PATCH", f"{RAY}/namespaces/{ns}/rayclusters/nope", {}, content_type="application/merge-patch+json"
        ).status
        == 404
    )
    assert call(server, "DELETE", f"{RAY}/namespaces/{ns}/rayclusters/nope").status == 404


def test_noop_writes_keep_the_resource_version(server: KubeEmulatorServer, ns: str) -> None:
    path = f"{MLW}/namespaces/{ns}/mlworkloads"
    obj = created(server, path, workload("w", metadata={"name": "w", "labels": {"a": "1"}}, spec={"x": 1}))
    same = call(server, "PATCH", f"{path}/w", {"spec": {"x": 1}}, content_type="application/merge-patch+json")
    assert same.body["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    put = call(server, "PUT", f"{path}/w", same.body)
    assert put.body["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    changed = call(server, "PATCH", f"{path}/w", {"spec": {"x": 2}}, content_type="application/merge-patch+json")
    assert rv(changed.body) > rv(obj)


def test_generation_counts_spec_changes_only(server: KubeEmulatorServer, ns: str) -> None:
    path = f"{MLW}/namespaces/{ns}/mlworkloads/w"
    created(server, f"{MLW}/namespaces/{ns}/mlworkloads", workload("w", spec={"x": 1}))
    merge = "application/merge-patch+json"
    labelled = call(server, "PATCH", path, {"metadata": {"labels": {"l": "1"}}}, content_type=merge).body
    assert labelled["metadata"]["generation"] == 1
    with_status = call(server, "PATCH", f"{path}/status", {"status": {"phase": "x"}}, content_type=merge).body
    assert with_status["metadata"]["generation"] == 1
    respecced = call(server, "PATCH", path, {"spec": {"x": 2}}, content_type=merge).body
    assert respecced["metadata"]["generation"] == 2
    assert call(server, "PATCH", path, {"spec": {"y": True}}, content_type=merge).body["metadata"]["generation"] == 3


def test_kinds_without_status_subresource_count_status_as_spec(server: KubeEmulatorServer, ns: str) -> None:
    path = f"/apis/cloud.google.com/v1/namespaces/{ns}/backendconfigs"
    created(server, path, {"apiVersion": "cloud.google.com/v1", "kind": "BackendConfig", "metadata": {"name": "b"}})
    patched = call(server, "PATCH", f"{path}/b", {"status": {"s": 1}}, content_type="application/merge-patch+json")
    assert (patched.body["status"], patched.body["metadata"]["generation"]) == ({"s": 1}, 2)
    assert call(server, "PATCH", f"{path}/b/status", {}, content_type="application/merge-patch+json").status == 404


def test_stale_resource_versions_conflict(server: KubeEmulatorServer, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    obj = created(server, path, configmap("c", data={"k": "1"}))
    fresh = call(server, "PUT", f"{path}/c", {**obj, "data": {"k": "2"}})
    assert fresh.status == 200
    stale_put = call(server, "PUT", f"{path}/c", {**obj, "data": {"k": "3"}})
    assert (stale_put.status, stale_put.body["reason"]) == (409, "Conflict")
    assert "the object has been modified" in stale_put.body["message"]
    stale = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "data": {"k": "4"}}
    stale_patch = call(server, "PATCH", f"{path}/c", stale, content_type="application/merge-patch+json")
    assert (stale_patch.status, stale_patch.body["reason"]) == (409, "Conflict")
    assert call(server, "GET", f"{path}/c").body["data"] == {"k": "2"}
    unconditional = call(server, "PUT", f"{path}/c", configmap("c", data={"k": "5"}))
    assert unconditional.status == 200


# --- 4. status subresource -----------------------------------------------------------------------------


def test_status_subresource_isolates_writes_both_ways(server: KubeEmulatorServer, ns: str) -> None:
    path = f"{RAY}/namespaces/{ns}/rayclusters"
    body = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "rc"},
        "spec": {"a": 1},
        "status": {"state": "ready"},
    }
    obj = created(server, path, body)
    assert "status" not in obj  # status is dropped on create
    merge = "application/merge-patch+json"
    main = call(server, "PATCH", f"{path}/rc", {"spec": {"a": 2}, "status": {"state": "x"}}, content_type=merge).body
    assert (main["spec"], main.get("status")) == ({"a": 2}, None)
    status = call(
        server,
        "PATCH",
        f"{path}/rc/status",
        {"spec": {"a": 3}, "metadata": {"labels": {"l": "x"}}, "status": {"state": "ready"}},
        content_type=merge,
    ).body
    assert (status["spec"], status["status"], status["metadata"].get("labels")) == ({"a": 2}, {"state": "ready"}, None)
    assert status["metadata"]["generation"] == main["metadata"]["generation"] == 2
    put = call(server, "PUT", f"{path}/rc", {**status, "status": {"state": "lost"}, "spec": {"a": 4}}).body
    assert (put["spec"], put["status"]) == ({"a": 4}, {"state": "ready"})
    put_status = call(server, "PUT", f"{path}/rc/status", {**put, "status": {"state": "gone"}, "spec": {"a": 5}})
    assert (put_status.body["spec"], put_status.body["status"]) == ({"a": 4}, {"state": "gone"})


# --- 5. verbs: list, watch, patch flavours, apply, delete ----------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", {"web-prod", "web-dev"}),
        ("app==web,tier=prod", {"web-prod"}),
        ("app!=web", {"db", "bare"}),
        ("tier in (prod, dev)", {"web-prod", "web-dev", "db"}),
        ("tier notin (prod)", {"web-dev", "bare"}),
        ("tier", {"web-prod", "web-dev", "db"}),
        ("!tier", {"bare"}),
        ("app=web,!tier", set()),
    ],
)
def test_list_with_label_selectors(server: KubeEmulatorServer, ns: str, selector: str, expected: set[str]) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    for name, labels in [
        ("web-prod", {"app": "web", "tier": "prod"}),
        ("web-dev", {"app": "web", "tier": "dev"}),
        ("db", {"app": "db", "tier": "prod"}),
        ("bare", {}),
    ]:
        created(server, path, configmap(name, labels))
    listed = call(server, "GET", path, labelSelector=selector)
    assert listed.status == 200
    assert {item["metadata"]["name"] for item in listed.body["items"]} == expected
    assert listed.body["kind"] == "ConfigMapList"
    assert int(listed.body["metadata"]["resourceVersion"]) >= max(
        rv(i) for i in call(server, "GET", path).body["items"]
    )


def test_list_with_field_selectors_and_across_namespaces(server: KubeEmulatorServer, ns: str) -> None:
    for namespace in (f"{ns}-a", f"{ns}-b"):
        for name in ("one", "two"):
            created(server, f"/api/v1/namespaces/{namespace}/configmaps", configmap(name))
    everywhere = call(server, "GET", "/api/v1/configmaps", fieldSelector="metadata.name=one").body["items"]
    assert {i["metadata"]["namespace"] for i in everywhere if i["metadata"]["namespace"].startswith(ns)} == {
        f"{ns}-a",
        f"{ns}-b",
    }
    narrowed = call(server, "GET", "/api/v1/configmaps", fieldSelector=f"metadata.namespace={ns}-b,metadata.name!=one")
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in narrowed.body["items"]] == [(f"{ns}-b", "two")]
    assert call(server, "GET", "/api/v1/configmaps", labelSelector="a b c").status == 400


def watch_events(list_fn: Callable[..., Any], *args: Any, count: int, **kwargs: Any) -> list[tuple[str, str]]:
    """Collect ``count`` (type, name) events from an official-client watch; bounded by timeout_seconds."""
    events: list[tuple[str, str]] = []
    watch = kubernetes.watch.Watch()
    for event in watch.stream(list_fn, *args, timeout_seconds=5, **kwargs):
        events.append((event["type"], event["object"].metadata.name))
        if len(events) >= count:
            watch.stop()
    return events


def test_watch_resumes_after_a_resource_version(
    server: KubeEmulatorServer, api: kubernetes.client.ApiClient, ns: str
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    start = core.create_namespaced_config_map(ns, configmap("first")).metadata.resource_version
    core.create_namespaced_config_map(ns, configmap("second"))
    core.patch_namespaced_config_map("first", ns, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("second", ns)
    replay = watch_events(core.list_namespaced_config_map, ns, resource_version=start, count=3)
    assert replay == [("ADDED", "second"), ("MODIFIED", "first"), ("DELETED", "second")]
    initial = watch_events(core.list_namespaced_config_map, ns, count=1)  # no resourceVersion: current state
    assert initial == [("ADDED", "first")]


def test_watch_streams_live_events_and_selection_changes(
    server: KubeEmulatorServer, api: kubernetes.client.ApiClient, ns: str
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    listing = core.list_namespaced_config_map(ns)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(
            watch_events,
            core.list_namespaced_config_map,
            ns,
            label_selector="app=web",
            resource_version=listing.metadata.resource_version,
            count=3,
        )
        wait_until(lambda: ("", "configmaps", ns) in server.watches(), what="the watch to be open")
        core.create_namespaced_config_map(ns, configmap("outside", {"app": "db"}))
        core.create_namespaced_config_map(ns, configmap("inside", {"app": "web"}))
        core.patch_namespaced_config_map("outside", ns, {"metadata": {"labels": {"app": "web"}}})  # enters
        core.patch_namespaced_config_map("inside", ns, {"metadata": {"labels": {"app": "db"}}})  # leaves
        events = future.result(timeout=10)
    assert events == [("ADDED", "inside"), ("ADDED", "outside"), ("DELETED", "inside")]


def test_watch_from_a_compacted_resource_version_is_gone(tmp_path: Path) -> None:
    with KubeEmulatorServer(crd_paths=[], history_limit=3) as server:
        core = kubernetes.client.CoreV1Api(server.api_client())
        first = core.create_namespaced_config_map("ns", configmap("c0")).metadata.resource_version
        for index in range(1, 6):
            core.create_namespaced_config_map("ns", configmap(f"c{index}"))
        with pytest.raises(ApiException) as error:
            watch_events(core.list_namespaced_config_map, "ns", resource_version=first, count=1)
        assert error.value.status == 410
        recent = core.list_namespaced_config_map("ns").metadata.resource_version
        core.delete_namespaced_config_map("c0", "ns")
        assert watch_events(core.list_namespaced_config_map, "ns", resource_version=recent, count=1) == [
            ("DELETED", "c0")
        ]


def test_watch_ends_at_timeout_seconds(server: KubeEmulatorServer, ns: str) -> None:
    reply = call(server, "GET", f"/api/v1/namespaces/{ns}/configmaps", watch="true", timeoutSeconds="0.2")
    assert reply.status == 200  # the stream closed by itself (empty: nothing happened)


def test_merge_json_and_strategic_patches(server: KubeEmulatorServer, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/pods"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "finalizers": ["a"], "labels": {"x": "1"}},
        "spec": {"containers": [{"name": "main", "image": "i:1"}, {"name": "side", "image": "s:1"}]},
    }
    created(server, path, pod)
    smp = {"metadata": {"finalizers": ["b"]}, "spec": {"containers": [{"name": "side", "image": "s:2"}]}}
    merged = call(server, "PATCH", f"{path}/p", smp, content_type="application/strategic-merge-patch+json").body
    assert merged["spec"]["containers"] == [{"name": "main", "image": "i:1"}, {"name": "side", "image": "s:2"}]
    assert merged["metadata"]["finalizers"] == ["a", "b"]
    deleting = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]},
        "spec": {"containers": [{"name": "main", "$patch": "delete"}]},
    }
    pruned = call(server, "PATCH", f"{path}/p", deleting, content_type="application/strategic-merge-patch+json").body
    assert (pruned["metadata"]["finalizers"], [c["name"] for c in pruned["spec"]["containers"]]) == (["b"], ["side"])
    merge = call(
        server,
        "PATCH",
        f"{path}/p",
        {"metadata": {"labels": {"x": None}, "finalizers": []}},
        content_type="application/merge-patch+json",
    ).body
    assert (merge["metadata"].get("labels"), merge["metadata"]["finalizers"]) == ({}, [])
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": merge["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/metadata/labels/y", "value": "2"},
    ]
    assert call(server, "PATCH", f"{path}/p", ops, content_type="application/json-patch+json").body["metadata"][
        "labels"
    ] == {"y": "2"}
    failed = call(server, "PATCH", f"{path}/p", ops, content_type="application/json-patch+json")  # stale test op
    assert (failed.status, failed.body["reason"]) == (422, "Invalid")  # what kopf expects for its optimistic locks
    unsupported = call(
        server,
        "PATCH",
        f"{MLW}/namespaces/{ns}/mlworkloads/any",
        {},
        content_type="application/strategic-merge-patch+json",
    )
    assert unsupported.status == 404
    created(server, f"{MLW}/namespaces/{ns}/mlworkloads", workload("any"))
    unsupported = call(
        server,
        "PATCH",
        f"{MLW}/namespaces/{ns}/mlworkloads/any",
        {},
        content_type="application/strategic-merge-patch+json",
    )
    assert (unsupported.status, unsupported.body["reason"]) == (415, "UnsupportedMediaType")


def apply(server: KubeEmulatorServer, path: str, body: Obj, manager: str, force: bool = True) -> Reply:
    params = {"fieldManager": manager} | ({"force": "true"} if force else {})
    return call(server, "PATCH", path, json.dumps(body), content_type="application/apply-patch+yaml", **params)


def test_server_side_apply_tracks_field_ownership(server: KubeEmulatorServer, ns: str) -> None:
    path = f"{RAY}/namespaces/{ns}/rayclusters/rc"
    config = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "rc", "labels": {"a": "1", "b": "2"}},
        "spec": {"rayVersion": "2.9", "headGroupSpec": {"x": [1, 2]}},
    }
    first = apply(server, path, config, "mlworkload")
    assert (first.status, first.body["metadata"]["generation"]) == (200, 1)  # apply creates
    entry = first.body["metadata"]["managedFields"][0]
    assert (entry["manager"], entry["operation"]) == ("mlworkload", "Apply")
    assert entry["fieldsV1"]["f:spec"]["f:headGroupSpec"] == {"f:x": {}}  # lists are atomic leaves
    assert rv(apply(server, path, config, "mlworkload").body) == rv(first.body)  # unchanged apply: no-op

    merge = "application/merge-patch+json"
    call(server, "PATCH", path, {"metadata": {"labels": {"c": "plain"}}, "spec": {"extra": 1}}, content_type=merge)
    other = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "rc"}, "spec": {"suspend": True}}
    assert apply(server, path, other, "other").status == 200
    shrunk = {**config, "metadata": {"name": "rc", "labels": {"a": "1"}}, "spec": {"rayVersion": "2.9"}}
    result = apply(server, path, shrunk, "mlworkload").body
    assert result["metadata"]["labels"] == {"a": "1", "c": "plain"}  # b removed; plainly-set c kept
    assert result["spec"] == {"rayVersion": "2.9", "extra": 1, "suspend": True}  # headGroupSpec removed
    assert result["metadata"]["generation"] == 4

    clash = {**shrunk, "spec": {"rayVersion": "2.9", "suspend": False}}
    refused = apply(server, path, clash, "mlworkload", force=False)
    assert (refused.status, refused.body["reason"]) == (409, "Conflict")
    assert 'conflict with "other": .spec.suspend' in refused.body["message"]
    forced = apply(server, path, clash, "mlworkload").body
    assert forced["spec"]["suspend"] is False
    owners = {e["manager"]: e["fieldsV1"] for e in forced["metadata"]["managedFields"]}
    assert set(owners) == {"mlworkload"}  # "other" lost its only field


def test_server_side_apply_respects_the_status_subresource(server: KubeEmulatorServer, ns: str) -> None:
    path = f"{RAY}/namespaces/{ns}/rayclusters/rc"
    config = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "rc"},
        "spec": {"a": 1},
        "status": {"state": "ignored"},
    }
    assert "status" not in apply(server, path, config, "op").body
    status = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "rc"},
        "spec": {"a": 9},
        "status": {"state": "ready"},
    }
    applied = apply(server, f"{path}/status", status, "kuberay").body
    assert (applied["spec"], applied["status"], applied["metadata"]["generation"]) == ({"a": 1}, {"state": "ready"}, 1)
    again = apply(server, path, {k: v for k, v in config.items() if k != "status"}, "op").body
    assert again["status"] == {"state": "ready"}  # the main-resource apply did not drop status


def test_server_defaults_survive_reapply(server: KubeEmulatorServer, ns: str) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80}], "selector": {"a": "b"}},
    }
    first = apply(server, f"/api/v1/namespaces/{ns}/services/s", service, "op").body
    assert first["spec"]["clusterIP"].startswith("10.96.")
    assert first["spec"]["type"] == "ClusterIP"
    assert first["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    again = apply(server, f"/api/v1/namespaces/{ns}/services/s", service, "op").body
    assert (again["spec"]["clusterIP"], rv(again)) == (first["spec"]["clusterIP"], rv(first))


def test_delete_waits_for_finalizers(server: KubeEmulatorServer, ns: str) -> None:
    path = f"{MLW}/namespaces/{ns}/mlworkloads"
    obj = created(server, path, workload("w", metadata={"name": "w", "finalizers": ["x/y"]}))
    marked = call(server, "DELETE", f"{path}/w", {"propagationPolicy": "Foreground"})
    assert marked.status == 200
    assert marked.body["metadata"]["deletionTimestamp"]
    assert marked.body["metadata"]["generation"] == 2
    assert call(server, "GET", f"{path}/w").status == 200
    again = call(server, "DELETE", f"{path}/w", propagationPolicy="Orphan")
    assert (again.status, rv(again.body)) == (200, rv(marked.body))
    merge = "application/merge-patch+json"
    more = call(server, "PATCH", f"{path}/w", {"metadata": {"finalizers": ["x/y", "new"]}}, content_type=merge)
    assert (more.status, more.body["reason"]) == (422, "Invalid")
    released = call(server, "PATCH", f"{path}/w", {"metadata": {"finalizers": None}}, content_type=merge)
    assert released.status == 200
    assert call(server, "GET", f"{path}/w").status == 404
    created(server, path, workload("w"))  # the name is free again, with a new uid
    wrong = call(server, "DELETE", f"{path}/w", {"preconditions": {"uid": obj["metadata"]["uid"]}})
    assert (wrong.status, wrong.body["reason"]) == (409, "Conflict")
    assert call(server, "DELETE", f"{path}/w", propagationPolicy="Sideways").status == 400


# --- 6. garbage collection -----------------------------------------------------------------------------


def owned_by(owner: Obj) -> list[Obj]:
    return [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def exists(server: KubeEmulatorServer, api_version: str, kind: str, name: str, namespace: str | None) -> bool:
    return server.get_object(api_version, kind, name, namespace) is not None


def test_garbage_collection_cascades_and_respects_finalizers(server: KubeEmulatorServer, ns: str) -> None:
    owner = created(server, f"{MLW}/namespaces/{ns}/mlworkloads", workload("owner"))
    cluster = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "rc", "ownerReferences": owned_by(owner), "finalizers": ["ray.io/x"]},
    }
    rc = created(server, f"{RAY}/namespaces/{ns}/rayclusters", cluster)
    created(
        server,
        f"/api/v1/namespaces/{ns}/configmaps",
        {**configmap("cm"), "metadata": {"name": "cm", "ownerReferences": owned_by(owner)}},
    )
    created(server, f"/api/v1/namespaces/{ns}/services", {"metadata": {"name": "svc", "ownerReferences": owned_by(rc)}})
    created(
        server,
        f"/api/v1/namespaces/{ns}-other/configmaps",
        {"metadata": {"name": "cm", "ownerReferences": owned_by(owner)}},
    )
    two_owners = [*owned_by(owner), {**owned_by(rc)[0], "controller": False}]
    created(
        server, f"/api/v1/namespaces/{ns}/configmaps", {"metadata": {"name": "shared", "ownerReferences": two_owners}}
    )

    assert call(server, "DELETE", f"{MLW}/namespaces/{ns}/mlworkloads/owner").status == 200
    wait_until(lambda: not exists(server, "v1", "ConfigMap", "cm", ns), what="the owned configmap to be collected")
    terminating = wait_until(
        lambda: (
            (server.get_object("ray.io/v1", "RayCluster", "rc", ns) or {}).get("metadata", {}).get("deletionTimestamp")
        )
    )
    assert terminating
    assert exists(server, "v1", "Service", "svc", ns)  # the grandchild waits for its owner's finalizer
    assert exists(server, "v1", "ConfigMap", "shared", ns)  # still owned by the live RayCluster
    server.patch_object("ray.io/v1", "RayCluster", "rc", {"metadata": {"finalizers": None}}, namespace=ns)
    wait_until(lambda: not exists(server, "v1", "Service", "svc", ns), what="the grandchild to be collected")
    wait_until(lambda: not exists(server, "v1", "ConfigMap", "shared", ns), what="the last owner to be gone")
    assert exists(server, "v1", "ConfigMap", "cm", f"{ns}-other")  # a namespaced owner cannot own across namespaces


def test_orphan_and_foreground_propagation(server: KubeEmulatorServer, ns: str) -> None:
    orphaning = created(server, f"{MLW}/namespaces/{ns}/mlworkloads", workload("orphaning"))
    created(
        server,
        f"/api/v1/namespaces/{ns}/configmaps",
        {"metadata": {"name": "kept", "ownerReferences": owned_by(orphaning)}},
    )
    call(server, "DELETE", f"{MLW}/namespaces/{ns}/mlworkloads/orphaning", propagationPolicy="Orphan")
    wait_until(lambda: not exists(server, "mlworkload.io/v1alpha1", "MLWorkload", "orphaning", ns))
    kept = server.get_object("v1", "ConfigMap", "kept", ns)
    assert kept is not None
    assert not kept["metadata"].get("ownerReferences")

    fg = created(server, f"{MLW}/namespaces/{ns}/mlworkloads", workload("fg"))
    blocker = {"metadata": {"name": "blocker", "ownerReferences": owned_by(fg), "finalizers": ["hold"]}}
    created(server, f"/api/v1/namespaces/{ns}/configmaps", blocker)
    deleting = call(server, "DELETE", f"{MLW}/namespaces/{ns}/mlworkloads/fg", {"propagationPolicy": "Foreground"})
    assert deleting.body["metadata"]["finalizers"] == ["foregroundDeletion"]
    wait_until(lambda: (server.get_object("v1", "ConfigMap", "blocker", ns) or {})["metadata"].get("deletionTimestamp"))
    assert exists(server, "mlworkload.io/v1alpha1", "MLWorkload", "fg", ns)  # the owner waits for its dependents
    server.patch_object("v1", "ConfigMap", "blocker", {"metadata": {"finalizers": None}}, namespace=ns)
    wait_until(lambda: not exists(server, "mlworkload.io/v1alpha1", "MLWorkload", "fg", ns), what="foreground owner")


# --- 7. request log, helpers, fault injection ----------------------------------------------------------


def test_request_log_records_every_request(server: KubeEmulatorServer, ns: str) -> None:
    mark = server.request_count
    created(server, f"/api/v1/namespaces/{ns}/configmaps", configmap("c"))
    call(server, "GET", f"/api/v1/namespaces/{ns}/configmaps", labelSelector="a=b")
    call(
        server,
        "PATCH",
        f"/api/v1/namespaces/{ns}/configmaps/c",
        {"data": {}},
        content_type="application/merge-patch+json",
    )
    server.patch_object("v1", "ConfigMap", "c", {"data": {"by": "helper"}}, namespace=ns)  # not an HTTP request
    records = server.requests(since=mark)
    assert [(r.method, r.is_write) for r in records] == [("POST", True), ("GET", False), ("PATCH", True)]
    assert records[1].query == {"labelSelector": "a=b"}
    assert records[2].content_type == "application/merge-patch+json"
    assert records[0].path == f"/api/v1/namespaces/{ns}/configmaps"
    assert [r.method for r in server.writes(since=mark)] == ["POST", "PATCH"]
    assert server.writes(since=server.request_count) == []


def test_helpers_write_through_the_store_so_watchers_see_them(
    server: KubeEmulatorServer, api: kubernetes.client.ApiClient, ns: str
) -> None:
    objects = kubernetes.client.CustomObjectsApi(api)
    start = objects.list_namespaced_custom_object("ray.io", "v1", ns, "rayclusters")["metadata"]["resourceVersion"]
    rc = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "rc", "namespace": ns},
        "spec": {"a": 1},
        "status": {"state": "pending"},
    }
    stored = server.put_object(rc)
    assert (stored["status"], stored["metadata"]["generation"]) == ({"state": "pending"}, 1)
    ready = server.patch_status("ray.io/v1", "RayCluster", "rc", {"state": "ready"}, namespace=ns)
    assert (ready["status"], ready["metadata"]["generation"]) == ({"state": "ready"}, 1)
    events = []
    watch = kubernetes.watch.Watch()
    for event in watch.stream(
        objects.list_namespaced_custom_object,
        "ray.io",
        "v1",
        ns,
        "rayclusters",
        resource_version=start,
        timeout_seconds=5,
    ):
        events.append((event["type"], (event["object"].get("status") or {}).get("state")))
        if len(events) == 3:
            watch.stop()
    assert events == [("ADDED", None), ("MODIFIED", "pending"), ("MODIFIED", "ready")]
    assert server.get_object("ray.io/v1alpha1", "rayclusters", "rc", ns)["apiVersion"] == "ray.io/v1alpha1"  # type: ignore[index]
    assert server.delete_object("ray.io/v1", "RayCluster", "rc", ns) is not None
    assert server.get_object("ray.io/v1", "RayCluster", "rc", ns) is None
    assert server.delete_object("ray.io/v1", "RayCluster", "rc", ns) is None


def test_kmock_reactions_inject_faults_before_emulation(server: KubeEmulatorServer, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    created(server, path, configmap("c"))
    target = kmock.resource("", "v1", "configmaps")
    server.call(lambda: server.emulator[kmock.action.UPDATE, target, kmock.namespace(ns)][:1] << 503)
    merge = "application/merge-patch+json"
    assert call(server, "PATCH", f"{path}/c", {"data": {"k": "v"}}, content_type=merge).status == 503
    assert call(server, "PATCH", f"{path}/c", {"data": {"k": "v"}}, content_type=merge).status == 200  # only once


def test_a_plain_kmock_filter_judges_each_request_once(server: KubeEmulatorServer, ns: str) -> None:
    """kmock itself replays the whole request journal through a reaction's filters on every request (the cost
    grows with every request served); the emulator asks a plain filter chain about the new request only, in
    kmock's order (inner filters first), with kmock's answers."""
    path = f"/api/v1/namespaces/{ns}/configmaps"
    created(server, path, configmap("judged"))
    seen: list[str] = []

    def judge(request: kmock.Request) -> bool:
        seen.append(str(request.url.path))
        return False

    target = kmock.resource("", "v1", "configmaps")
    server.call(lambda: server.emulator[kmock.action.FETCH, target, kmock.namespace(ns)][judge] << 503)
    server.call(lambda: server.emulator[kmock.action.UPDATE, target, kmock.name("judged")] << 409)
    for _ in range(5):
        assert call(server, "GET", f"{path}/judged").status == 200
    assert seen == [f"{path}/judged"] * 5  # once per GET of the namespace's configmaps, never for earlier ones
    merge = "application/merge-patch+json"
    for _ in range(2):  # a plain reaction without a slice answers every request it sees
        assert call(server, "PATCH", f"{path}/judged", {"data": {"k": "v"}}, content_type=merge).status == 409
    assert len(seen) == 5  # the filters inside `judge` (FETCH) turned the PATCHes away before it was asked


# --- 7b. injected Kubernetes API faults ---------------------------------------------------------------


@pytest.fixture
def faults(server: KubeEmulatorServer) -> Iterator[KubeEmulatorServer]:
    """The shared server, with every fault removed afterwards so none leaks into other tests."""
    yield server
    server.clear_faults()


def raycluster(name: str, **spec: Any) -> Obj:
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name}, "spec": spec}


def store_version(server: KubeEmulatorServer) -> str:
    """The store's global resourceVersion: it moves on any write that reached the store."""
    return server.call(lambda: server.store.resource_version)


def failure(code: int, reason: str, message: str, details: Obj) -> Obj:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details, "code": code}  # fmt: skip


def expected_failures(ns: str) -> list[tuple[KubeFault, Obj, str | None]]:
    """(fault, the exact Status body, the Retry-After header) for a PATCH of RayCluster ``rc`` in ``ns``."""
    target = {"name": "rc", "group": "ray.io", "kind": "rayclusters"}
    conflict = 'Operation cannot be fulfilled on rayclusters.ray.io "rc": '
    stale = "the object has been modified; please apply your changes to the latest version and try again"
    invalid = 'Invalid value: "object": rejected by the test'
    cause = {"reason": "FieldValueInvalid", "message": invalid, "field": "spec"}
    invalid_details = {"name": "rc", "group": "ray.io", "kind": "RayCluster", "causes": [cause]}
    forbidden = (
        'rayclusters.ray.io "rc" is forbidden: User "system:serviceaccount:default:emulator-client" cannot patch'
        f' resource "rayclusters" in API group "ray.io" in the namespace "{ns}"'
    )
    busy = "the server is currently unable to handle the request"
    return [
        (KubeFault(status=409), failure(409, "Conflict", conflict + stale, target), None),
        (KubeFault(status=409, message="a cause"), failure(409, "Conflict", conflict + "a cause", target), None),
        (KubeFault(status=422), failure(422, "Invalid", f'RayCluster.ray.io "rc" is invalid: spec: {invalid}',
                                        invalid_details), None),
        (KubeFault(status=403), failure(403, "Forbidden", forbidden, target), None),
        (KubeFault(status=500), failure(500, "InternalError", "Internal error occurred: injected fault",
                                        {"causes": [{"message": "injected fault"}]}), None),
        (KubeFault(status=429, retry_after_seconds=3), failure(429, "TooManyRequests",
         "Too many requests, please try again later.", {"retryAfterSeconds": 3}), "3"),
        (KubeFault(status=503), failure(503, "ServiceUnavailable", busy, {"retryAfterSeconds": 1}), "1"),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(7), ids=["409", "409-message", "422", "403", "500", "429", "503"])
def test_an_injected_fault_reaches_the_official_client_as_the_api_server_sends_it(
    faults: KubeEmulatorServer, api: kubernetes.client.ApiClient, ns: str, case: int
) -> None:
    fault, body, retry_after = expected_failures(ns)[case]
    objects = kubernetes.client.CustomObjectsApi(api)
    before = objects.create_namespaced_custom_object("ray.io", "v1", ns, "rayclusters", raycluster("rc", a=1))
    version, mark = store_version(faults), faults.request_count
    handle = faults.inject(dataclasses.replace(fault, methods={"PATCH"}, resource="rayclusters", namespace=ns))
    with pytest.raises(ApiException) as raised:
        objects.patch_namespaced_custom_object("ray.io", "v1", ns, "rayclusters", "rc", {"spec": {"a": 2}})
    error = raised.value
    assert (error.status, error.reason) == (body["code"], http.HTTPStatus(body["code"]).phrase)
    assert json.loads(error.body or "null") == body
    assert Status.model_validate(body).reason == body["reason"]  # the shape is metav1.Status's
    assert (error.headers or {}).get("Retry-After") == retry_after
    # Nothing reached the store, and the log shows the request as injected.
    assert store_version(faults) == version
    assert objects.get_namespaced_custom_object("ray.io", "v1", ns, "rayclusters", "rc") == before
    assert [(r.method, r.injected) for r in faults.requests(since=mark)] == [("PATCH", body["code"]), ("GET", None)]
    assert handle.hits == 1
    patched = objects.patch_namespaced_custom_object("ray.io", "v1", ns, "rayclusters", "rc", {"spec": {"a": 2}})
    assert isinstance(patched, dict)
    assert patched["spec"] == {"a": 2}  # times=1 by default: the retry goes through
    assert handle.hits == 1
    assert handle.exhausted


def configmap_names(server: KubeEmulatorServer, namespace: str) -> list[str]:
    return [
        item["metadata"]["name"]
        for item in call(server, "GET", f"/api/v1/namespaces/{namespace}/configmaps").body["items"]
    ]


def test_faulted_creates_and_deletes_change_nothing(
    faults: KubeEmulatorServer, api: kubernetes.client.ApiClient, ns: str
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    created(faults, f"/api/v1/namespaces/{ns}/configmaps", configmap("kept"))
    version = store_version(faults)
    refused = faults.inject(KubeFault(status=500, methods={"POST", "DELETE"}, namespace=ns, times=None))
    with pytest.raises(ApiException) as create:
        core.create_namespaced_config_map(ns, kubernetes.client.V1ConfigMap(metadata={"name": "new"}))
    with pytest.raises(ApiException) as delete:
        core.delete_namespaced_config_map("kept", ns)
    assert (create.value.status, delete.value.status) == (500, 500)
    assert configmap_names(faults, ns) == ["kept"]
    assert store_version(faults) == version
    assert refused.hits == 2


def test_times_and_after_choose_which_matches_fail(faults: KubeEmulatorServer, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    created(faults, path, configmap("c"))
    merge = "application/merge-patch+json"
    handle = faults.inject(KubeFault(status=409, methods={"PATCH"}, namespace=ns, after=1, times=2))
    codes = [call(faults, "PATCH", f"{path}/c", {"data": {"n": str(n)}}, content_type=merge).status for n in range(5)]
    assert codes == [200, 409, 409, 200, 200]
    assert handle.hits == 2
    assert handle.request_ids == [r.index for r in faults.faulted() if r.path == f"{path}/c"]


def test_forever_until_removed_or_cleared(faults: KubeEmulatorServer, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    first = faults.inject(KubeFault(status=503, verbs={"list"}, namespace=ns, times=None))
    second = faults.inject(KubeFault(status=500, verbs={"get"}, namespace=ns, times=None))
    assert [call(faults, "GET", path).status for _ in range(3)] == [503, 503, 503]
    first.remove()
    assert call(faults, "GET", path).status == 200
    assert call(faults, "GET", f"{path}/missing").status == 500  # the other fault stays
    faults.clear_faults()
    assert call(faults, "GET", f"{path}/missing").status == 404  # served again: not found
    assert (first.hits, second.hits) == (3, 1)  # handles keep their counts


def test_faults_match_resource_name_subresource_and_content_type(faults: KubeEmulatorServer, ns: str) -> None:
    path = f"{RAY}/namespaces/{ns}/rayclusters"
    created(faults, path, raycluster("a"))
    created(faults, path, raycluster("b"))
    merge = "application/merge-patch+json"
    status_only = faults.inject(KubeFault(status=409, resource="rayclusters", subresource="status", times=None))
    apply_only = faults.inject(KubeFault(status=500, content_type=APPLY_PATCH, name="a", namespace=ns, times=None))
    assert call(faults, "PATCH", f"{path}/a/status", {"status": {"s": 1}}, content_type=merge).status == 409
    assert call(faults, "PATCH", f"{path}/a", {"spec": {"s": 1}}, content_type=merge).status == 200
    assert apply(faults, f"{path}/a", raycluster("a", s=2), "tester").status == 500
    assert apply(faults, f"{path}/b", raycluster("b", s=2), "tester").status == 200  # another name
    assert call(faults, "PATCH", f"{RAY}/namespaces/{ns}-other/rayclusters/a", {}, content_type=merge).status == 404
    assert (status_only.hits, apply_only.hits) == (1, 1)
    # A create is matched on the name in its body; the predicate sees the parsed call.
    faults.inject(KubeFault(status=409, reason="AlreadyExists", name="c", when=lambda c: c.verb == "create"))
    refused = call(faults, "POST", path, raycluster("c"))
    assert (refused.status, refused.body["reason"], refused.body["message"]) == (
        409, "AlreadyExists", 'rayclusters.ray.io "c" already exists')  # fmt: skip
    assert call(faults, "POST", path, raycluster("c")).status == 201


def test_invalid_faults_are_refused_when_declared() -> None:
    with pytest.raises(ValueError, match="no default reason"):
        KubeFault(status=418)
    with pytest.raises(ValueError, match="times"):
        KubeFault(status=500, times=0)
    with pytest.raises(ValueError, match="rate"):
        RandomFaults(rate=1.5, rng=random.Random(0))


def test_write_faults_leave_watch_streams_alone_and_watches_can_be_faulted(
    faults: KubeEmulatorServer, api: kubernetes.client.ApiClient, ns: str
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    start = call(faults, "GET", f"/api/v1/namespaces/{ns}/configmaps").body["metadata"]["resourceVersion"]
    everything = faults.inject(KubeFault(status=500, namespace=ns, times=None))  # no verbs named: all but watch
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(watch_events, core.list_namespaced_config_map, ns, resource_version=start, count=1)
        wait_until(lambda: ("", "configmaps", ns) in faults.watches(), what="the watch to be open")
        with pytest.raises(ApiException):
            core.create_namespaced_config_map(ns, kubernetes.client.V1ConfigMap(metadata={"name": "refused"}))
        faults.put_object({**configmap("helper"), "metadata": {"name": "helper", "namespace": ns}})
        assert future.result(timeout=10) == [("ADDED", "helper")]  # the refused create made no event
    assert everything.hits == 1
    everything.remove()
    faults.inject(KubeFault(status=500, verbs={"watch"}, namespace=ns))
    with pytest.raises(ApiException) as raised:
        watch_events(core.list_namespaced_config_map, ns, count=1)
    assert raised.value.status == 500
    assert configmap_names(faults, ns) == ["helper"]


def chaos_round(server: KubeEmulatorServer, namespace: str, seed: int) -> tuple[list[int], Counter[int], int]:
    """40 merge patches under seeded random faults: each reply's status, the counts, the matching requests."""
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    created(server, path, configmap("c"))
    chaos = server.inject_random(rate=0.3, statuses=(409, 500), rng=random.Random(seed), namespace=namespace)
    try:
        merge = "application/merge-patch+json"
        codes = [call(server, "PATCH", f"{path}/c", {"data": {"n": str(n)}}, content_type=merge).status
                 for n in range(40)]  # fmt: skip
    finally:
        chaos.remove()
    assert chaos.hits == sum(chaos.injected.values()) == sum(code != 200 for code in codes)
    return codes, chaos.injected, chaos.seen


def test_random_faults_are_reproducible_for_a_seed(faults: KubeEmulatorServer, ns: str) -> None:
    mark = faults.request_count
    codes, injected, seen = chaos_round(faults, f"{ns}-a", seed=7)
    assert seen == 40
    assert set(codes) == {200, 409, 500}
    assert injected == Counter(code for code in codes if code != 200)
    assert Counter(r.injected for r in faults.faulted(since=mark)) == injected
    assert chaos_round(faults, f"{ns}-b", seed=7)[:2] == (codes, injected)  # same seed, same faults
    assert chaos_round(faults, f"{ns}-c", seed=8)[0] != codes
    final = call(faults, "GET", f"/api/v1/namespaces/{ns}-a/configmaps/c").body
    assert final["data"] == {"n": str(max(n for n, code in enumerate(codes) if code == 200))}


# --- 8. namespaces -------------------------------------------------------------------------------------


def test_namespaces_are_optional_and_their_deletion_empties_them(server: KubeEmulatorServer, ns: str) -> None:
    created(server, f"/api/v1/namespaces/{ns}/configmaps", configmap("before-namespace"))  # lenient: no Namespace yet
    namespace = created(server, "/api/v1/namespaces", {"metadata": {"name": ns}})
    assert namespace["status"] == {"phase": "Active"}
    assert namespace["metadata"]["labels"] == {"kubernetes.io/metadata.name": ns}
    assert ns in {item["metadata"]["name"] for item in call(server, "GET", "/api/v1/namespaces").body["items"]}
    assert call(server, "GET", f"/api/v1/namespaces/{ns}").body["metadata"]["uid"] == namespace["metadata"]["uid"]
    assert call(server, "DELETE", f"/api/v1/namespaces/{ns}").status == 200
    wait_until(lambda: not exists(server, "v1", "ConfigMap", "before-namespace", ns), what="namespace cleanup")


# --- 9. thread safety ----------------------------------------------------------------------------------


def test_concurrent_helpers_and_http_writes_stay_consistent(server: KubeEmulatorServer, ns: str) -> None:
    start = server.call(lambda: server.store.resource_version)
    names = [f"t{index}" for index in range(4)]
    for name in names:
        server.put_object({**configmap(name), "metadata": {"name": name, "namespace": ns}, "data": {"n": "0"}})
    barrier = threading.Barrier(len(names) + 1)

    def bump_helper(name: str) -> None:
        barrier.wait()
        for count in range(1, 21):
            server.patch_object("v1", "ConfigMap", name, {"data": {"n": str(count)}}, namespace=ns)

    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(bump_helper, name) for name in names]
        barrier.wait()
        for count in range(20):
            call(
                server,
                "PATCH",
                f"/api/v1/namespaces/{ns}/configmaps/{names[0]}",
                {"metadata": {"labels": {"http": str(count)}}},
                content_type="application/merge-patch+json",
            )
        for future in futures:
            future.result(timeout=30)
    versions = [
        int(c.rv)
        for c in server.call(lambda: server.store.changes.since(int(start)))
        if c.obj["metadata"].get("namespace") == ns
    ]
    assert versions == sorted(set(versions))  # strictly increasing, no duplicates
    assert len(versions) == len(names) * 21 + 20
    assert all(server.get_object("v1", "ConfigMap", n, ns)["data"] == {"n": "20"} for n in names)  # type: ignore[index]


# --- 10. kopf against the emulator ---------------------------------------------------------------------


def test_a_kopf_operator_reconciles_against_the_emulator(
    server: KubeEmulatorServer,
    api: kubernetes.client.ApiClient,
    ns: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    # kubernetes.config reads $KUBECONFIG once at import time; kopf.login_via_client uses that default.
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    registry = kopf.OperatorRegistry()
    settings = kopf.OperatorSettings()
    settings.peering.standalone = True
    settings.persistence.finalizer = "mlworkload.io/test"
    settings.watching.server_timeout = 5
    settings.watching.client_timeout = 10
    settings.watching.reconnect_backoff = 0.1
    settings.networking.request_timeout = 10
    deleted: list[str] = []

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_via_client(**kwargs)

    @kopf.on.create("mlworkload.io", "v1alpha1", "mlworkloads", id="on_create", registry=registry)
    def on_create(patch: kopf.Patch, **_: Any) -> dict[str, str]:
        patch.status["phase"] = "Ready"
        return {"message": "reconciled"}

    @kopf.on.delete("mlworkload.io", "v1alpha1", "mlworkloads", id="on_delete", registry=registry)
    def on_delete(name: str, **_: Any) -> None:
        deleted.append(name)

    objects = kubernetes.client.CustomObjectsApi(api)
    # kopf serves a --namespace only once it sees that Namespace in its cluster-wide namespace watch.
    kubernetes.client.CoreV1Api(api).create_namespace(
        kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=ns))
    )
    args = ["run", "--standalone", f"--namespace={ns}", "--verbose"]  # scoped: other tests' objects are left alone
    with kopf.testing.KopfRunner(args, registry=registry, settings=settings, timeout=30) as runner:
        expected = {("apiextensions.k8s.io", "customresourcedefinitions", None), ("mlworkload.io", "mlworkloads", ns)}
        wait_until(lambda: expected <= set(server.watches()), timeout=20, what="kopf to watch CRDs and MLWorkloads")
        mark = server.request_count
        objects.create_namespaced_custom_object("mlworkload.io", "v1alpha1", ns, "mlworkloads", workload("w", spec={}))

        def reconciled() -> Obj | None:
            obj = server.get_object("mlworkload.io/v1alpha1", "MLWorkload", "w", ns)
            return obj if obj and (obj.get("status") or {}).get("phase") == "Ready" else None

        obj = wait_until(reconciled, timeout=20, what="the handler's status")
        assert obj["status"]["on_create"] == {"message": "reconciled"}
        assert obj["metadata"]["finalizers"] == ["mlworkload.io/test"]
        status_writes = [w for w in server.writes(since=mark) if w.path.endswith("/w/status")]
        assert status_writes
        assert all(w.content_type == "application/merge-patch+json" for w in status_writes)

        objects.delete_namespaced_custom_object("mlworkload.io", "v1alpha1", ns, "mlworkloads", "w")
        wait_until(
            lambda: server.get_object("mlworkload.io/v1alpha1", "MLWorkload", "w", ns) is None,
            timeout=20,
            what="kopf to release its finalizer",
        )
    assert runner.exit_code == 0
    assert runner.exception is None
    assert deleted == ["w"]
    assert "Handler 'on_create' succeeded" in runner.output


# --- 11. the store's indexes: a request costs what it touches ------------------------------------------


def test_a_namespace_list_answers_its_own_objects_in_name_order_among_many_elsewhere(
    server: KubeEmulatorServer, ns: str
) -> None:
    names = ["m", "b", "z", "a-1", "a"]  # created out of order, as a controller would
    for index in range(200):  # neighbours on both sides of ns in key order, with the same names and labels
        namespace = f"{ns}-{index % 4}" if index % 2 else f"0{ns}-{index % 4}"
        obj = configmap(f"n{index}", {"app": "web"})
        server.put_object({**obj, "metadata": {**obj["metadata"], "namespace": namespace}})
    for name in [*names, "n1", "n2"]:
        created(server, f"/api/v1/namespaces/{ns}/configmaps", configmap(name, {"app": "web"}))

    listed = call(server, "GET", f"/api/v1/namespaces/{ns}/configmaps").body["items"]
    assert [i["metadata"]["name"] for i in listed] == ["a", "a-1", "b", "m", "n1", "n2", "z"]
    assert {i["metadata"]["namespace"] for i in listed} == {ns}
    selected = call(server, "GET", f"/api/v1/namespaces/{ns}/configmaps", labelSelector="app=web").body["items"]
    assert [i["metadata"]["name"] for i in selected] == ["a", "a-1", "b", "m", "n1", "n2", "z"]

    everywhere = call(server, "GET", "/api/v1/configmaps", labelSelector="app=web").body["items"]
    keys = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere]
    assert keys == sorted(keys)  # namespace, then name
    ours = [key for key in keys if key[0] == ns or key[0].startswith((f"{ns}-", f"0{ns}-"))]
    assert len(ours) == 207


def test_label_and_name_lookups_follow_relabels_deletes_and_other_terms(server: KubeEmulatorServer, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    merge = "application/merge-patch+json"
    for name, labels in [("one", {"app": "web", "tier": "prod"}), ("two", {"app": "web"}), ("three", {"app": "db"})]:
        created(server, path, configmap(name, labels))

    def names(**query: str) -> list[str]:
        reply = call(server, "GET", path, **query)
        assert reply.status == 200, reply.body
        return [item["metadata"]["name"] for item in reply.body["items"]]

    assert names(labelSelector="app=web") == ["one", "two"]
    assert names(labelSelector="app=web,tier!=prod") == ["two"]  # the index proposes, every term decides
    assert names(labelSelector="app=web,tier=prod,app=db") == []
    call(server, "PATCH", f"{path}/two", {"metadata": {"labels": {"app": "db"}}}, content_type=merge)
    call(server, "PATCH", f"{path}/one", {"metadata": {"labels": None}}, content_type=merge)
    assert names(labelSelector="app=web") == []
    assert names(labelSelector="app=db") == ["three", "two"]
    assert call(server, "DELETE", f"{path}/three").status == 200
    assert names(labelSelector="app=db") == ["two"]
    assert names(fieldSelector="metadata.name=two") == ["two"]
    assert names(fieldSelector="metadata.name=three") == []
    assert names(fieldSelector=f"metadata.namespace={ns}") == ["one", "two"]
    assert names(fieldSelector="metadata.namespace=elsewhere") == []
    everywhere = call(server, "GET", "/api/v1/configmaps", fieldSelector=f"metadata.namespace={ns},metadata.name=one")
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in everywhere.body["items"]] == [(ns, "one")]


def test_garbage_collection_follows_owner_references_changed_after_creation(
    server: KubeEmulatorServer, ns: str
) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps"
    merge = "application/merge-patch+json"
    owner = created(server, f"{MLW}/namespaces/{ns}/mlworkloads", workload("owner"))
    created(server, path, {"metadata": {"name": "released", "ownerReferences": owned_by(owner)}})
    created(server, path, configmap("adopted"))
    created(server, path, {"metadata": {"name": "owned", "ownerReferences": owned_by(owner)}})
    call(server, "PATCH", f"{path}/released", {"metadata": {"ownerReferences": None}}, content_type=merge)
    call(server, "PATCH", f"{path}/adopted", {"metadata": {"ownerReferences": owned_by(owner)}}, content_type=merge)

    assert call(server, "DELETE", f"{MLW}/namespaces/{ns}/mlworkloads/owner").status == 200
    wait_until(lambda: not exists(server, "v1", "ConfigMap", "adopted", ns), what="the adopted configmap to go")
    wait_until(lambda: not exists(server, "v1", "ConfigMap", "owned", ns), what="the owned configmap to go")
    assert exists(server, "v1", "ConfigMap", "released", ns)


def test_server_side_apply_takes_json_and_yaml_bodies(server: KubeEmulatorServer, ns: str) -> None:
    path = f"/api/v1/namespaces/{ns}/configmaps/c"
    as_json = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}})
    first = call(server, "PATCH", path, as_json, content_type=APPLY_PATCH, fieldManager="op")
    assert (first.status, first.body["data"]) == (200, {"a": "1"})
    as_yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  a: '1'\n  b: two\n"
    second = call(server, "PATCH", path, as_yaml, content_type=APPLY_PATCH, fieldManager="op")
    assert (second.status, second.body["data"]) == (200, {"a": "1", "b": "two"})
    assert rv(second.body) > rv(first.body)
    broken = call(server, "PATCH", path, "data: [unclosed", content_type=APPLY_PATCH, fieldManager="op")
    assert (broken.status, broken.body["reason"]) == (400, "BadRequest")
    yaml_elsewhere = call(server, "PATCH", path, "data: {}", content_type="application/merge-patch+json")
    assert (yaml_elsewhere.status, yaml_elsewhere.body["reason"]) == (400, "BadRequest")


def test_a_resumed_watch_replays_its_kinds_changes_among_many_of_other_kinds(
    server: KubeEmulatorServer, api: kubernetes.client.ApiClient, ns: str
) -> None:
    core = kubernetes.client.CoreV1Api(api)
    start = core.create_namespaced_config_map(ns, configmap("first")).metadata.resource_version
    for index in range(30):
        server.put_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s{index}", "namespace": ns}})
        if index == 10:
            core.create_namespaced_config_map(ns, configmap("second"))
        if index == 20:
            core.delete_namespaced_config_map("first", ns)
    replay = watch_events(core.list_namespaced_config_map, ns, resource_version=start, count=2)
    assert replay == [("ADDED", "second"), ("DELETED", "first")]
    changes = server.call(lambda: server.store.changes.since(int(start)))
    assert [c.rv for c in changes] == sorted(c.rv for c in changes)  # all kinds, oldest first
    assert {c.spec.plural for c in changes if c.obj["metadata"].get("namespace") == ns} == {"configmaps", "secrets"}
