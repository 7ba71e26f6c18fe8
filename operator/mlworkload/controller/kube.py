"""The Kubernetes API, as the reconciler needs it: get, list by labels, apply, delete, status.

A small Protocol (defined where it is consumed) in front of the official client. Requests use a
static table of the kinds the operator manages rather than discovery: the operator never touches
a kind it does not know, and a missing CRD shows up as a clear 404 on that kind.
"""

import asyncio
import functools
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import kubernetes.client
from kubernetes.client.exceptions import ApiException

from mlworkload.constants import FIELD_MANAGER
from mlworkload.metrics import KUBE_API_ERRORS

Manifest = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        parts = [base, self.plural, name, subresource]
        return "/".join(part for part in parts if part)


_RESOURCES = [
    Resource("v1", "ServiceAccount", "serviceaccounts"),
    Resource("v1", "Service", "services"),
    Resource("v1", "Namespace", "namespaces", namespaced=False),
    Resource("v1", "Pod", "pods"),
    Resource("v1", "Event", "events"),
    Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    Resource("networking.k8s.io/v1", "Ingress", "ingresses"),
    Resource("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Resource("cloud.google.com/v1", "BackendConfig", "backendconfigs"),
    Resource("networking.gke.io/v1", "ManagedCertificate", "managedcertificates"),
    Resource("cloud.google.com/v1", "ComputeClass", "computeclasses", namespaced=False),
    Resource("ray.io/v1", "RayCluster", "rayclusters"),
    Resource("ray.io/v1", "RayJob", "rayjobs"),
    Resource("ray.io/v1", "RayService", "rayservices"),
    Resource("mlworkload.io/v1alpha1", "MLWorkload", "mlworkloads"),
    Resource("mlworkload.io/v1alpha1", "MLWorkloadPolicy", "mlworkloadpolicies", namespaced=False),
]
RESOURCES: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in _RESOURCES}
WORKLOADS = RESOURCES["mlworkload.io/v1alpha1", "MLWorkload"]
POLICIES = RESOURCES["mlworkload.io/v1alpha1", "MLWorkloadPolicy"]


def resource_of(manifest: Mapping[str, Any]) -> Resource:
    return RESOURCES[manifest["apiVersion"], manifest["kind"]]


# A hung call must not hold a workload's lock forever: it fails, and kopf retries the reconcile.
REQUEST_TIMEOUT_SECONDS = 30
# Threads of the client's own executor (and connections of its pool): how many calls are in flight at once.
# The operator admits as many reconciles at a time (handlers.RECONCILE_SLOTS), so a backlog waits in arrival
# order rather than as thousands of started reconciles sharing a few threads.
CLIENT_THREADS: Final = 8

T = TypeVar("T")


class KubeError(Exception):
    """A refused Kubernetes API call: the HTTP status and the API server's own reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class KubeApi(Protocol):
    async def get(self, resource: Resource, namespace: str | None, name: str) -> Manifest | None: ...

    async def list(
        self,
        resource: Resource,
        namespace: str | None,
        labels: Mapping[str, str],
        fields: Mapping[str, str] | None = None,
    ) -> list[Manifest]: ...

    async def apply(self, manifest: Manifest) -> Manifest: ...

    async def delete(self, resource: Resource, namespace: str | None, name: str, uid: str) -> None: ...

    async def patch_status(self, resource: Resource, namespace: str, name: str, status: Manifest) -> Manifest: ...

    async def patch_metadata(self, resource: Resource, namespace: str, name: str, metadata: Manifest) -> Manifest:
        """A merge patch of metadata; with `resourceVersion` in it, refused with 409 if the object moved on."""
        ...


def merge_patch(before: Mapping[str, Any], after: Mapping[str, Any]) -> Manifest:
    """The JSON merge patch (RFC 7386) that turns `before` into `after`: keys that went are nulled, maps are
    patched key by key, anything else is replaced whole."""
    patch: Manifest = {key: None for key in before if key not in after}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            inner = merge_patch(old, value)
            if inner:
                patch[key] = inner
        elif key not in before or old != value:
            patch[key] = value
    return patch


def label_selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


class ClientKubeApi:
    """KubeApi on the official `kubernetes` client; each call runs in a thread of the client's own executor
    (not asyncio's default one, which kopf's synchronous work and other libraries share)."""

    def __init__(self, api_client: kubernetes.client.ApiClient, threads: int = CLIENT_THREADS) -> None:
        self._client = api_client
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube-api")

    async def run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call` in the client's executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(call, *args, **kwargs))

    def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Manifest:
        """One synchronous API call; KubeError on any non-2xx answer (the async verbs run it in a thread)."""
        request = self._client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._client.call_api(*request, _request_timeout=REQUEST_TIMEOUT_SECONDS)
            data = response.read()  # type: ignore[no-untyped-call]
            if not 200 <= response.status <= 299:
                raise ApiException(http_resp=response)
        except ApiException as error:
            failure = _kube_error(error)
            if failure.status != 404:  # a missing object is an answer, not an error
                KUBE_API_ERRORS.labels(verb=method, code=str(failure.status)).inc()
            raise failure from None
        parsed: Manifest = json.loads(data) if data else {}
        return parsed

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Manifest | None:
        try:
            return await self.run(self.request, "GET", resource.path(namespace, name))
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def list(
        self,
        resource: Resource,
        namespace: str | None,
        labels: Mapping[str, str],
        fields: Mapping[str, str] | None = None,
    ) -> list[Manifest]:
        query = [("labelSelector", label_selector(labels))] if labels else []
        if fields:
            query.append(("fieldSelector", label_selector(fields)))
        listing = await self.run(self.request, "GET", resource.path(namespace), query=query)
        items: list[Manifest] = listing.get("items") or []
        return items

    async def apply(self, manifest: Manifest) -> Manifest:
        resource = resource_of(manifest)
        meta = manifest["metadata"]
        path = resource.path(meta.get("namespace"), meta["name"])
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        return await self.run(
            self.request,
            "PATCH",
            path,
            query=query,
            body=json.dumps(manifest),
            content_type="application/apply-patch+yaml",
        )

    async def delete(self, resource: Resource, namespace: str | None, name: str, uid: str) -> None:
        # The uid precondition: never delete a same-named object someone else created meanwhile.
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
                "preconditions": {"uid": uid}}  # fmt: skip
        try:
            await self.run(self.request, "DELETE", resource.path(namespace, name), body=body)
        except KubeError as error:
            if error.status != 404:
                raise

    async def patch_status(self, resource: Resource, namespace: str, name: str, status: Manifest) -> Manifest:
        return await self._merge_patch(resource.path(namespace, name, "status"), {"status": status})

    async def patch_metadata(self, resource: Resource, namespace: str, name: str, metadata: Manifest) -> Manifest:
        return await self._merge_patch(resource.path(namespace, name), {"metadata": metadata})

    async def _merge_patch(self, path: str, patch: Manifest) -> Manifest:
        return await self.run(self.request, "PATCH", path, body=patch, content_type="application/merge-patch+json")


def _kube_error(error: ApiException) -> KubeError:
    status = int(error.status or 0)
    reason, message = str(error.reason or ""), str(error.body or error)
    try:
        body = json.loads(error.body) if error.body else {}
        reason, message = body.get("reason", reason), body.get("message", message)
    except (TypeError, ValueError):
        pass
    return KubeError(status, reason, message)
