"""``FakeGcp``: the fake GKE, IAM, Cloud Storage and IAP APIs on 127.0.0.1, for the real client libraries.

One aiohttp server (in a background thread with its own event loop) serves the REST APIs on
``fake.endpoint``; one gRPC server serves IAM Admin on ``fake.grpc_target``, because
``iam_admin_v1.IAMClient`` only speaks gRPC. Both go through the same routing, fault injection and call
log, and both run handlers synchronously under the owning service's lock, so tests can drive state from
their own thread (``fake.gke.complete_operations()``) while clients poll.

Usage::

    with FakeGcp() as fake:
        cluster = fake.gke.add_cluster("my-proj", "us-central1", "ml")
        client = gke_client(fake)
        op = client.create_node_pool(parent=cluster.path, node_pool=pool)
        fake.gke.complete_operations()
        assert len(fake.calls("container", "CreateNodePool")) == 1
        fake.fail("container", "CreateNodePool", unavailable())   # the next create answers 503

Nothing real is ever contacted: the clients built by ``tests.support.gcp.clients`` use anonymous
credentials and point at the loopback endpoints only.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Self

import aiohttp.web
import grpc  # type: ignore[import-untyped]
from google.protobuf import any_pb2, json_format  # type: ignore[import-untyped]
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from grpc_status import rpc_status  # type: ignore[import-untyped]

from tests.support.gcp.core import Call, Fault, Handler, Recorder, Request, Route, Service
from tests.support.gcp.errors import ERROR_INFO, ApiError, Json
from tests.support.gcp.gke import Cluster, FakeGke
from tests.support.gcp.iam import GRPC_SERVICE, FakeIam, GrpcMethod
from tests.support.gcp.iap import FakeIap
from tests.support.gcp.storage import FakeStorage
from tests.support.loopback import LoopbackServer


class FakeGcp(LoopbackServer):
    """The fakes' lifecycle, endpoints, call log and fault injection. Use as a context manager."""

    label = "the fake"

    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.recorder = Recorder()
        self.gke = FakeGke()
        self.iam = FakeIam()
        self.storage = FakeStorage()
        self.iap = FakeIap(project_number=self.gke.project_number)
        self.gke.on_cluster_added = self._register_workload_pool
        self.internal_errors: list[BaseException] = []
        self._routes: list[tuple[Service, Route]] = [
            *(("container", r) for r in self.gke.routes()),
            *(("iam", r) for r in self.iam.routes()),
            *(("storage", r) for r in self.storage.routes()),
            *(("iap", r) for r in self.iap.routes()),
        ]
        self._grpc_server: Any = None
        self._grpc_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._grpc_port = 0

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        super().start()
        try:
            self._start_grpc()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_grpc(self) -> None:
        self._grpc_executor = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fake-gcp-grpc")
        server = grpc.server(self._grpc_executor)
        handlers = {method.rpc: self._grpc_handler(method) for method in self.iam.grpc_methods()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GRPC_SERVICE, handlers),))
        self._grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc_server = server

    def stop(self) -> None:
        """Close both listeners and join the server thread; clients still open just see errors."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(10)
            self._grpc_server = None
        if self._grpc_executor is not None:
            self._grpc_executor.shutdown(wait=True)
            self._grpc_executor = None
        self._grpc_port = 0
        super().stop()

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[aiohttp.web.BaseRunner]:
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = aiohttp.web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            yield runner
        finally:
            await runner.cleanup()

    # --- endpoints -------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Base URL of the REST APIs (GKE, IAM, Cloud Storage, IAP), e.g. http://127.0.0.1:41234."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        """host:port of the IAM Admin gRPC server (plaintext)."""
        if not self._grpc_port:
            raise RuntimeError("the fake is not running")
        return f"127.0.0.1:{self._grpc_port}"

    # --- calls and faults ------------------------------------------------------------------------

    def calls(
        self, service: Service | None = None, rpc: str | Iterable[str] | None = None, since: int = 0
    ) -> list[Call]:
        """Answered calls, oldest first, optionally of one service and RPC(s), from a ``mark()`` on."""
        return self.recorder.select(service, rpc, since)

    def mark(self) -> int:
        """A position in the call log for ``calls(since=...)``."""
        return self.recorder.next_index()

    @property
    def unrouted(self) -> list[str]:
        """Requests no fake serves ("METHOD /path", answered 404); a test can assert this stays empty."""
        with self.recorder.lock:
            return list(self.recorder.unrouted)

    def before_next_write(self, service: Service, write: Callable[[], object]) -> None:
        """Another writer changes an IAM policy between a client's read and its write, once.

        A fault predicate runs as the request arrives and before it is handled, the one hook for that
        interleaving without threads; it always answers False, so the stale etag is refused by the
        service's own handler.
        """
        written: list[bool] = []

        def when(_: Request) -> bool:
            if not written:
                written.append(True)
                write()
            return False

        self.fail(service, "SetIamPolicy", ApiError("INTERNAL", "never sent"), times=None, when=when)

    def fail(
        self,
        service: Service,
        rpc: str,
        error: ApiError,
        *,
        times: int | None = 1,
        when: Callable[[Request], bool] | None = None,
    ) -> Fault:
        """Answer the next ``times`` matching calls (None: all) with ``error`` instead of handling them."""
        fault = Fault(service, rpc, error, times, when)
        with self.recorder.lock:
            self.recorder.faults.append(fault)
        return fault

    def reset(self) -> None:
        """Forget all state, calls and faults (for a fake shared by several tests)."""
        self.gke.reset()
        self.iam.reset()
        self.storage.reset()
        self.iap.reset()
        with self.recorder.lock:
            self.recorder.calls.clear()
            self.recorder.faults.clear()
            self.recorder.unrouted.clear()

    def _register_workload_pool(self, cluster: Cluster) -> None:
        if cluster.workload_pool:
            with self.iam.lock:
                self.iam.workload_pools.add(cluster.workload_pool)

    # --- request handling ------------------------------------------------------------------------

    def _handle(
        self, service: Service, rpc: str, handler: Handler, request: Request
    ) -> tuple[int, Json, ApiError | None]:
        error = self.recorder.take_fault(service, rpc, request)
        if error is None:
            try:
                reply = handler(request)
            except ApiError as raised:
                error = raised
            except Exception as bug:  # a fake's own bug: answer 500 and keep it for the test to see
                self.internal_errors.append(bug)
                error = ApiError("INTERNAL", f"fake GCP internal error: {bug!r}")
            else:
                return reply.status, reply.body, None
        return error.http_status, error.to_json(), error

    async def _dispatch(self, http: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        raw = await http.read()
        query = dict(http.query.items())
        for service, candidate in self._routes:
            match = candidate.pattern.fullmatch(http.path) if candidate.method == http.method else None
            if match is None:
                continue
            body: Any = None
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
                error = ApiError("INVALID_ARGUMENT", "Invalid JSON payload received.")
                status, payload = error.http_status, error.to_json()
            else:
                request = Request(http.method, http.path, query, body, match.groupdict())
                status, payload, _ = self._handle(service, candidate.rpc, candidate.handler, request)
            self.recorder.record(Call(-1, service, candidate.rpc, http.method, http.path, query, body, status))
            return aiohttp.web.json_response(payload, status=status)
        with self.recorder.lock:
            self.recorder.unrouted.append(f"{http.method} {http.path_qs}")
        missing = ApiError("NOT_FOUND", f"fake GCP: no route for {http.method} {http.path}")
        return aiohttp.web.json_response(missing.to_json(), status=404)

    def _grpc_handler(self, method: GrpcMethod) -> Any:
        path = f"/{GRPC_SERVICE}/{method.rpc}"

        def behaviour(message: Any, context: Any) -> Any:
            body: Json = json_format.MessageToDict(message)
            failed: ApiError | None
            try:
                params = self.iam.grpc_params(body)
            except ApiError as error:
                status, payload, failed = error.http_status, error.to_json(), error
            else:
                request = Request("POST", path, {}, body, params)
                status, payload, failed = self._handle("iam", method.rpc, method.handler, request)
            self.recorder.record(Call(-1, "iam", method.rpc, "POST", path, {}, body, status, "grpc"))
            if failed is not None:
                context.abort_with_status(rpc_status.to_status(_grpc_status(failed)))
            return json_format.ParseDict(payload, method.response_type())

        return grpc.unary_unary_rpc_method_handler(
            behaviour,
            request_deserializer=method.request_type.FromString,
            response_serializer=method.response_type.SerializeToString,
        )


def _grpc_status(error: ApiError) -> Any:
    """The ``google.rpc.Status`` of an error, with its ErrorInfo details, for grpc-status-details-bin."""
    details = []
    for detail in error.details:
        if detail.get("@type") == ERROR_INFO:
            info = error_details_pb2.ErrorInfo(
                reason=detail.get("reason", ""), domain=detail.get("domain", ""), metadata=detail.get("metadata", {})
            )
            packed = any_pb2.Any()
            packed.Pack(info)
            details.append(packed)
    return status_pb2.Status(code=error.grpc_code, message=error.message, details=details)


def fresh_project(
    fake: FakeGcp, *, project: str, location: str, cluster: str, service_account: str, bucket: str
) -> Iterator[None]:
    """For a per-test fixture: forget everything, add one Workload Identity cluster, one GSA and one bucket;
    afterwards, no request may have gone unrouted or broken the fake."""
    fake.reset()
    fake.gke.add_cluster(project, location, cluster)
    fake.iam.add_service_account(service_account)
    fake.storage.add_bucket(bucket, project)
    yield
    assert fake.unrouted == []
    assert fake.internal_errors == []
