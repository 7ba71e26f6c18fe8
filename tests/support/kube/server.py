"""Run the emulated API server on 127.0.0.1 in a background thread with its own event loop.

The operator under test (kopf in a KopfRunner thread) and the official client talk to it over real HTTP;
tests inspect and drive it through thread-safe helpers that run on the server's loop and go through the
same store code as HTTP writes, so watchers see their events.

Usage::

    with KubeEmulatorServer() as server:
        api = kubernetes.client.CustomObjectsApi(server.api_client())
        mark = server.request_count
        ...
        assert server.writes(since=mark) == []
        server.patch_status("ray.io/v1", "RayCluster", "rc", {"state": "ready"}, namespace="ns")
        conflict = server.inject(KubeFault(status=409, methods={"PATCH"}, resource="rayclusters"))
        ...
        assert conflict.hits == 1 and server.faulted(since=mark)[0].injected == 409

Served over plain http with a dummy bearer token (the server accepts any credentials). Objects may be
created in namespaces that do not exist: the emulator is lenient there, a real server would answer 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar, overload

import aiohttp.web
import kmock
import kubernetes.client
import kubernetes.config
import yaml

from tests.support.kube.emulator import WRITE_METHODS, KubeEmulator, present
from tests.support.kube.faults import (
    WRITES,
    FaultHandle,
    FaultTable,
    KubeCall,
    KubeFault,
    RandomFaultHandle,
    RandomFaults,
)
from tests.support.kube.resources import (
    BUILTIN_RESOURCES,
    Obj,
    ResourceRegistry,
    ResourceSpec,
    default_crd_paths,
    load_crds,
)
from tests.support.kube.selectors import LabelSelector
from tests.support.kube.store import ObjectStore
from tests.support.loopback import LoopbackServer

T = TypeVar("T")
TOKEN: Final = "emulator-dummy-token"
CRD_SPEC: Final = ("apiextensions.k8s.io", "customresourcedefinitions")


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request as the server saw it, for assertions such as "no writes in the second reconcile"."""

    index: int
    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    injected: int | None = None  # the status an injected fault answered with; None: served normally

    @property
    def is_write(self) -> bool:
        return self.method in WRITE_METHODS


class KubeEmulatorServer(LoopbackServer):
    """The emulated API server's lifecycle, client configuration, request log and object helpers."""

    label = "the emulator"

    def __init__(
        self,
        *,
        crd_paths: Iterable[Path] | None = None,
        history_limit: int = 10_000,
        startup_timeout: float = 30.0,
    ) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self._crd_paths = list(default_crd_paths() if crd_paths is None else crd_paths)
        self._history_limit = history_limit
        self._emulator: KubeEmulator | None = None
        self.internal_errors: list[BaseException] = []
        # Owned here rather than by the emulator: faults can be set up before start() and are thread-safe.
        self._faults = FaultTable()

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[aiohttp.web.BaseRunner]:
        store = self._build_store(asyncio.get_running_loop())
        emulator = KubeEmulator(store=store, internal_errors=self.internal_errors, faults=self._faults)
        async with emulator:
            runner = aiohttp.web.ServerRunner(
                aiohttp.web.Server(emulator, handler_cancellation=True, access_log=None), shutdown_timeout=1.0
            )
            await runner.setup()
            self._emulator = emulator
            try:
                yield runner
            finally:
                store.changes.close()
                await runner.cleanup()

    def _build_store(self, loop: asyncio.AbstractEventLoop) -> ObjectStore:
        """The store with its deferred work (garbage collection) on the loop, and the CRDs created."""

        def guarded(callback: Callable[[], None]) -> None:
            try:
                callback()
            except Exception as error:  # a GC failure is an emulator bug; keep it for the tests
                self.internal_errors.append(error)

        store = ObjectStore(
            ResourceRegistry(BUILTIN_RESOURCES),
            history_limit=self._history_limit,
            schedule=lambda callback: loop.call_soon(guarded, callback),
        )
        crd_spec = store.registry.get(CRD_SPEC)
        assert crd_spec is not None
        for crd in load_crds(self._crd_paths):
            store.create(crd_spec, None, crd)
        return store

    # --- client configuration -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig_dict(self) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": TOKEN}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}],
            "current-context": "emulator",
        }

    def kubeconfig(self, path: Path | str) -> Path:
        """Write a kubeconfig for this server (plain http, dummy token) and return its path."""
        path = Path(path)
        path.write_text(yaml.safe_dump(self.kubeconfig_dict()), encoding="utf-8")
        return path

    def api_client(self) -> kubernetes.client.ApiClient:
        """An official-client ApiClient configured exactly as from the kubeconfig."""
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config_from_dict(self.kubeconfig_dict(), client_configuration=configuration)  # type: ignore[no-untyped-call]
        return kubernetes.client.ApiClient(configuration)

    # --- thread-safe access -------------------------------------------------------------------------

    def call(self, fn: Callable[[], T], timeout: float = 30.0) -> T:
        """Run ``fn`` on the server loop (where the store lives) and return its result."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("the emulator is not running")
        if threading.current_thread() is self._thread:
            return fn()

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    @property
    def emulator(self) -> KubeEmulator:
        """The kmock handler, e.g. for raw kmock reactions (register them via ``call``); for faults with
        the API server's own error responses, use ``inject``."""
        if self._emulator is None:
            raise RuntimeError("the emulator is not running")
        return self._emulator

    @property
    def store(self) -> ObjectStore:
        return self.emulator.store

    # --- request log --------------------------------------------------------------------------------

    def _journal(self) -> list[kmock.Request]:
        """kmock's request journal itself: iterating the emulator (``list(emulator)``, kmock's public way)
        copies all of it through a generator, so a mark or a short tail would cost every past request."""
        return self.emulator._requests

    @property
    def request_count(self) -> int:
        """A mark for ``requests(since=...)`` / ``writes(since=...)``."""
        return self.call(lambda: len(self._journal()))

    def requests(self, since: int = 0) -> list[RequestRecord]:
        def collect() -> list[RequestRecord]:
            return [
                RequestRecord(
                    index=request.id,
                    method=str(request.method.value).upper(),
                    path=request.url.path,
                    query=dict(request.params),
                    content_type=next((v for k, v in request.headers.items() if k.lower() == "content-type"), None),
                    injected=self.emulator.injected.get(request.id),
                )
                for request in self._journal()[since:]
            ]

        return self.call(collect)

    def writes(self, since: int = 0) -> list[RequestRecord]:
        return [record for record in self.requests(since) if record.is_write]

    def faulted(self, since: int = 0) -> list[RequestRecord]:
        """The requests an injected fault answered (they reached neither kmock reactions nor the store)."""
        return [record for record in self.requests(since) if record.injected is not None]

    # --- fault injection ----------------------------------------------------------------------------

    @overload
    def inject(self, fault: KubeFault) -> FaultHandle: ...
    @overload
    def inject(self, fault: RandomFaults) -> RandomFaultHandle: ...
    def inject(self, fault: KubeFault | RandomFaults) -> FaultHandle | RandomFaultHandle:
        """Answer matching requests with a real API server error from now on (after earlier faults)."""
        handle = (
            FaultHandle(self._faults, fault) if isinstance(fault, KubeFault) else RandomFaultHandle(self._faults, fault)
        )
        self._faults.add(handle)
        return handle

    def inject_random(
        self,
        *,
        rate: float,
        rng: random.Random,
        statuses: tuple[int, ...] = (409, 500),
        methods: frozenset[str] | set[str] | None = WRITES,
        resource: str | frozenset[str] | set[str] | None = None,
        namespace: str | None = None,
        subresource: str | None = None,
        when: Callable[[KubeCall], bool] | None = None,
    ) -> RandomFaultHandle:
        """Chaos: fail a ``rate`` fraction of matching requests (writes by default) with ``statuses``.

        Reproducible for a seeded ``rng`` and the same sequence of matching requests; the handle counts
        what it injected by status. For any other criterion, ``inject(RandomFaults(...))``.
        """
        faults = RandomFaults(
            rate=rate,
            rng=rng,
            statuses=statuses,
            methods=methods,
            resource=resource,
            namespace=namespace,
            subresource=subresource,
            when=when,
        )
        return self.inject(faults)

    def clear_faults(self) -> None:
        """Remove every fault; their handles keep their counts."""
        self._faults.clear()

    # --- objects ------------------------------------------------------------------------------------

    def _spec(self, api_version: str, kind: str) -> ResourceSpec:
        return self.call(lambda: self.store.registry.resolve(api_version, kind))

    def _version(self, api_version: str) -> str:
        return api_version.rpartition("/")[2]

    def get_object(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """A copy of the stored object (``kind`` may also be the plural), or None."""
        spec = self._spec(api_version, kind)

        def find() -> Obj | None:
            obj = self.store.find(spec, namespace, name)
            return None if obj is None else copy.deepcopy(present(obj, spec, self._version(api_version)))

        return self.call(find)

    def list_objects(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        spec = self._spec(api_version, kind)
        labels = LabelSelector.parse(label_selector)
        version = self._version(api_version)
        return self.call(
            lambda: [copy.deepcopy(present(o, spec, version)) for o in self.store.select(spec, namespace, labels)]
        )

    def put_object(self, obj: Obj) -> Obj:
        """Create or replace (unconditionally), then write ``status`` through /status when the kind has it."""
        spec = self._spec(obj["apiVersion"], obj["kind"])
        namespace, name = obj["metadata"].get("namespace"), obj["metadata"]["name"]
        body = {key: value for key, value in obj.items() if key != "metadata"}
        body["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}

        def write() -> Obj:
            if self.store.find(spec, namespace, name) is None:
                result = self.store.create(spec, namespace, body)
            else:
                result = self.store.replace(spec, namespace, name, body)
            if spec.status_subresource and "status" in obj:
                result = self.store.replace(
                    spec, namespace, name, {**result, "status": obj["status"]}, subresource="status"
                )
            return copy.deepcopy(present(result, spec, self._version(obj["apiVersion"])))

        return self.call(write)

    def patch_object(self, api_version: str, kind: str, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        """A JSON merge patch of the main resource (status changes are ignored where /status exists)."""
        return self._merge_patch(api_version, kind, name, patch, namespace=namespace, sub="")

    def patch_status(self, api_version: str, kind: str, name: str, status: Obj, namespace: str | None = None) -> Obj:
        """Merge-patch ``status`` through /status (or the main resource for kinds without it)."""
        spec = self._spec(api_version, kind)
        subresource = "status" if spec.status_subresource else ""
        return self._merge_patch(api_version, kind, name, {"status": status}, namespace=namespace, sub=subresource)

    def _merge_patch(
        self, api_version: str, kind: str, name: str, patch: Obj, *, namespace: str | None, sub: str
    ) -> Obj:
        spec = self._spec(api_version, kind)

        def write() -> Obj:
            result = self.store.patch(spec, namespace, name, "application/merge-patch+json", patch, subresource=sub)
            return copy.deepcopy(present(result, spec, self._version(api_version)))

        return self.call(write)

    def delete_object(
        self, api_version: str, kind: str, name: str, namespace: str | None = None, propagation: str | None = None
    ) -> Obj | None:
        """Delete as the API would (finalizers and GC apply); None if there was no such object."""
        spec = self._spec(api_version, kind)

        def delete() -> Obj | None:
            if self.store.find(spec, namespace, name) is None:
                return None
            return copy.deepcopy(self.store.delete(spec, namespace, name, propagation=propagation))

        return self.call(delete)

    def watches(self) -> list[tuple[str, str, str | None]]:
        """Open watch streams as (group, plural, namespace or None), e.g. to wait until an operator watches."""
        return self.call(self.store.changes.watched)
