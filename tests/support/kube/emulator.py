"""The HTTP face of the emulated API server: kmock's Kubernetes scaffold plus a realistic object store.

Built on ``kmock.KubernetesScaffold`` (the stateless part of ``kmock.KubernetesEmulator``): kmock provides
the discovery routes, ``kind: Status`` error bodies, the request journal, and its DSL, so a test can still
inject faults with ordinary kmock reactions (``emulator['patch', kmock.resource('ray.io', 'v1',
'rayclusters')] << 500``), which take priority over the emulated behaviour. Faults answered with the
API server's own error bodies live in the ``faults`` table (see ``faults.py``), consulted before any
reaction. ``kmock.KubernetesEmulator`` itself is not subclassed: its ``_handle`` mutates objects naively
(plain dict merges, no resourceVersion, no status isolation) before any handler runs, which cannot be
switched off.

Two kmock pieces are replaced: request parsing (kmock's path parser raises on ``/api/v1/namespaces``,
the namespace list that operators and kopf watch) and the discovery documents (kmock picks a random
preferred version out of a set; the server must prefer ``v1`` over ``v1alpha1``).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import dsl
from kmock._internal.rendering import (
    ReactionMismatchError,
    Response,  # exported as kmock.Response, but missing from kmock.__all__
)
from typing_extensions import override

from tests.support.kube.faults import APPLY_PATCH, WRITES, FaultTable, KubeCall, Status, verb_of
from tests.support.kube.resources import Obj, ResourceSpec
from tests.support.kube.selectors import FieldSelector, LabelSelector, SelectorError
from tests.support.kube.store import ObjectStore, api_error, bad_request
from tests.support.kube.watching import GoneError, Subscription, WatchFilter

WRITE_METHODS: Final = WRITES
DEFAULT_WATCH_TIMEOUT: Final = 1800.0  # the real server's --min-request-timeout


@dataclass(frozen=True)
class Route:
    """A resource URL: ``/api/v1[/namespaces/<ns>]/<plural>[/<name>[/<subresource>]]`` or ``/apis/<g>/<v>/...``."""

    group: str
    version: str
    plural: str
    namespace: str | None = None
    name: str | None = None
    subresource: str = ""


def parse_route(path: str) -> Route | None:
    """Split a resource URL; discovery URLs and anything else give None."""
    parts = [part for part in path.split("/") if part]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    # "namespaces/<ns>/<plural>..." unless it is the Namespace's own "namespaces/<name>/status".
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    return Route(group, version, rest[0], namespace, rest[1] if len(rest) > 1 else None, "/".join(rest[2:]))


def present(obj: Obj, spec: ResourceSpec, version: str) -> Obj:
    """The object as served at the requested version (no conversion: only apiVersion differs)."""
    return {**obj, "apiVersion": spec.api_version(version)}


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _action(route: Route | None, method: str, params: Mapping[str, str]) -> kmock.action | None:
    """kmock's action vocabulary, so kmock's DSL filters (``kmock.action.UPDATE`` ...) work on requests."""
    if route is None:
        return None
    if method == "GET":
        watching = params.get("watch") in ("true", "1")
        return kmock.action.WATCH if watching else kmock.action.FETCH if route.name else kmock.action.LIST
    actions = {"POST": kmock.action.CREATE, "PATCH": kmock.action.UPDATE, "DELETE": kmock.action.DELETE}
    return actions.get(method)


def _discovery_parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesScaffold):
    """A kmock handler that serves the object store with the API server's verbs and error bodies."""

    store: ObjectStore
    internal_errors: list[BaseException] = attrs.field(factory=list)
    faults: FaultTable = attrs.field(factory=FaultTable)
    injected: dict[int, int] = attrs.field(factory=dict)  # request id -> the status a fault answered with

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fallback[self._is_resource_request] << self._serve
        # The official client asks for "/apis/" and "/apis/<group>/<version>/": trailing slashes are served too.
        self.fallback["get /api/"] << self._serve_api
        self.fallback["get /apis/"] << self._serve_apis
        self.fallback["get", re.compile(r"/apis/[^/]+/[^/]+/")] << self._serve_version
        self.fallback["get", re.compile(r"/apis/[^/]+/")] << self._serve_group
        self.fallback["get", re.compile(r"/api/[^/]+/")] << self._serve_version

    @staticmethod
    def _is_resource_request(request: kmock.Request) -> bool:
        return parse_route(request.url.path) is not None

    # --- request intake -----------------------------------------------------------------------------

    @override
    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        request = await self._parse(raw_request)
        self._requests.append(request)
        try:
            faulted = self._inject_fault(request)
            if faulted is not None:
                return faulted
            return await self._handle(request)
        except kmock.KubernetesError as error:
            return await self._render_error(error)
        except Exception as error:  # an emulator bug: answer 500 and keep it for the test to see
            self.internal_errors.append(error)
            return await self._render_error(error)

    @override
    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        """kmock's routing (the first enabled reaction, by priority, whose view sees the request), without
        its cost: kmock decides whether a view sees a request by replaying the whole request journal through
        the view's filters, so every request costs more than the last (a chaos run spent 90 % of the server's
        time there). `_sees` answers for the request alone wherever the view allows it."""
        priorities = [payload.priorities for payload in self._payloads]
        width = max((len(priority) for priority in priorities), default=0)
        ranks = [tuple(-p for p in priority) + (0,) * (width - len(priority)) for priority in priorities]
        for index in sorted(range(len(ranks)), key=ranks.__getitem__):
            payload = self._payloads[index]
            if payload._disabled.is_set() or not self._sees(payload._source, request):
                continue
            try:
                return await payload(request)
            except ReactionMismatchError:  # a mismatch or a depleted reaction, as in kmock
                payload._disabled.set()
            except NotImplementedError:  # matched, but nothing to respond with
                pass
        raise NotImplementedError("no reaction matches the request")

    def _sees(self, view: dsl.View, request: kmock.Request) -> bool:
        """`request in view`, for the request alone when the view is a chain of plain filters and priorities
        over this emulator (its filters run from the root outwards, as kmock runs them); any other view
        (slices, groups, exclusions: they depend on earlier requests) the way kmock decides it."""
        chain: list[dsl.Filter] = []
        node: dsl.View = view
        while node is not self:
            if type(node) is dsl.Filter:
                chain.append(node)
            elif type(node) is not dsl.Priority:
                return request in view
            node = node._source  # Filter and Priority are Chained: both have a source
        return all(link.criteria(request) for link in reversed(chain))

    async def _parse(self, raw_request: aiohttp.web.BaseRequest) -> kmock.Request:
        body = await raw_request.read()
        route = parse_route(raw_request.path)
        params = dict(raw_request.query)
        resource = kmock.resource(route.group, route.version, route.plural) if route else None
        return kmock.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=params,
            headers=dict(raw_request.headers),
            cookies=dict(raw_request.cookies),
            body=body,
            text=body.decode("utf-8", "replace"),
            data=_json_or_none(body),
            action=_action(route, raw_request.method, params),
            resource=resource,
            namespace=route.namespace if route else None,
            name=route.name if route else None,
            subresource=(route.subresource or None) if route else None,
        )

    def _inject_fault(self, request: kmock.Request) -> aiohttp.web.StreamResponse | None:
        """The answer of the first fault that fires for this resource request, or None.

        Checked before routing to the store, so a faulted request changes nothing, as a request the real
        server rejects before persisting. Runs without awaiting: the request log and the fault counters agree.
        """
        route = parse_route(request.url.path)
        if route is None or len(self.faults) == 0:
            return None
        method = str(request.method.value).upper()
        name = route.name
        if name is None and method == "POST" and isinstance(request.data, dict):
            name = (request.data.get("metadata") or {}).get("name")  # a create names its object in the body
        spec = self.store.registry.lookup(route.group, route.version, route.plural)
        call = KubeCall(
            method=method,
            verb=verb_of(method, route.name, request.params),
            group=route.group,
            version=route.version,
            resource=route.plural,
            namespace=route.namespace,
            name=name,
            subresource=route.subresource,
            content_type=self._content_type(request) if request.body else None,
            kind=spec.kind if spec is not None else None,
            request=request,
        )
        status = self.faults.take(call, request.id)
        if status is None:
            return None
        self.injected[request.id] = status.code
        return self._render_status(status)

    def _render_status(self, status: Status) -> aiohttp.web.StreamResponse:
        retry_after = status.retry_after
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return aiohttp.web.json_response(status.body(), status=status.code, headers=headers)

    @override
    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if not isinstance(exc, kmock.KubernetesError):
            exc = api_error(500, "InternalError", f"emulator failure: {exc!r}")
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": exc.message,
            "reason": exc.reason,
            "details": exc.details or {},
            "code": exc.status,
        }
        return aiohttp.web.json_response(body, status=exc.status)

    # --- discovery ----------------------------------------------------------------------------------

    @override
    def _get_resources(self) -> list[kmock.resource]:
        return [kmock.resource(s.group, v, s.plural) for s in self.store.registry for v in s.versions]

    @override
    async def _serve_api(self, request: kmock.Request) -> kmock.Payload:
        address = {"clientCIDR": "0.0.0.0/0", "serverAddress": request.url.host or "127.0.0.1"}
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [address]}

    def _group_document(self, group: str, versions: list[str]) -> Obj:
        listed = [{"groupVersion": f"{group}/{version}", "version": version} for version in versions]
        return {"name": group, "versions": listed, "preferredVersion": listed[0]}

    @override
    async def _serve_apis(self, request: kmock.Request) -> kmock.Payload:
        groups = self.store.registry.group_versions()
        documents = [self._group_document(group, versions) for group, versions in groups.items()]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": documents}

    @override
    async def _serve_group(self, request: kmock.Request) -> kmock.Payload:
        group = _discovery_parts(request.url.path)[1]
        versions = self.store.registry.group_versions().get(group)
        if not versions:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_document(group, versions)}

    @override
    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        parts = _discovery_parts(request.url.path)
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        specs = self.store.registry.in_group_version(group, version)
        if not specs:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        entries = [entry for spec in sorted(specs, key=lambda s: s.plural) for entry in spec.discovery_entries()]
        group_version = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}

    # --- resource verbs -----------------------------------------------------------------------------

    async def _serve(self, request: kmock.Request) -> Response:
        """Dispatch a resource URL by method; errors surface as kmock.KubernetesError (Status bodies)."""
        route = parse_route(request.url.path)
        assert route is not None  # guaranteed by the reaction's criterion
        spec = self._spec_for(route)
        method = str(request.method.value).upper()
        if method == "GET" and request.params.get("watch") in ("true", "1"):
            return self._watch(request, route, spec)
        if method == "GET" and route.name:
            obj = self.store.get(spec, route.namespace, route.name)
            return self._respond(200, present(obj, spec, route.version))
        if method == "GET":
            return self._list(request, route, spec)
        if method == "POST" and not route.name:
            obj = self.store.create(spec, route.namespace, self._body(request), dry_run=self._dry_run(request))
            return self._respond(201, present(obj, spec, route.version))
        if method == "DELETE" and not route.name:
            return self._delete_collection(request, route, spec)
        if method in ("PUT", "PATCH", "DELETE") and route.name:
            return self._respond(200, present(self._write(request, method, route, spec), spec, route.version))
        raise api_error(
            405, "MethodNotAllowed", f"the server does not allow this method on the requested resource ({method})"
        )

    def _spec_for(self, route: Route) -> ResourceSpec:
        spec = self.store.registry.lookup(route.group, route.version, route.plural)
        scope_ok = spec is not None and (spec.namespaced or route.namespace is None)
        sub_ok = spec is not None and route.subresource in (("", "status") if spec.status_subresource else ("",))
        if spec is None or not scope_ok or not sub_ok:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        if spec.namespaced and route.name and not route.namespace:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        return spec

    def _write(self, request: kmock.Request, method: str, route: Route, spec: ResourceSpec) -> Obj:
        assert route.name is not None
        dry_run = self._dry_run(request)
        if method == "PUT":
            body = self._body(request)
            return self.store.replace(
                spec, route.namespace, route.name, body, subresource=route.subresource, dry_run=dry_run
            )
        if method == "DELETE":
            options = self._body(request) if request.body else {}
            policy = request.params.get("propagationPolicy") or options.get("propagationPolicy")
            return self.store.delete(
                spec,
                route.namespace,
                route.name,
                propagation=policy,
                preconditions=options.get("preconditions"),
                dry_run=dry_run,
            )
        content_type = self._content_type(request)
        if content_type == APPLY_PATCH:
            force = request.params.get("force") == "true"
            manager = request.params.get("fieldManager", "")
            return self.store.apply(
                spec,
                route.namespace,
                route.name,
                self._body(request),
                manager=manager,
                force=force,
                subresource=route.subresource,
                dry_run=dry_run,
            )
        return self.store.patch(
            spec,
            route.namespace,
            route.name,
            content_type,
            self._json(request),
            subresource=route.subresource,
            dry_run=dry_run,
        )

    def _list(self, request: kmock.Request, route: Route, spec: ResourceSpec) -> Response:
        labels, fields = self._selectors(request)
        items = [present(obj, spec, route.version) for obj in self.store.select(spec, route.namespace, labels, fields)]
        listing = {
            "apiVersion": spec.api_version(route.version),
            "kind": f"{spec.kind}List",
            "metadata": {"resourceVersion": self.store.resource_version},
            "items": items,
        }
        return self._respond(200, listing)

    def _delete_collection(self, request: kmock.Request, route: Route, spec: ResourceSpec) -> Response:
        labels, fields = self._selectors(request)
        policy = request.params.get("propagationPolicy")
        deleted = [
            self.store.delete(spec, route.namespace, obj["metadata"]["name"], propagation=policy)
            for obj in self.store.select(spec, route.namespace, labels, fields)
        ]
        listing = {
            "apiVersion": spec.api_version(route.version),
            "kind": f"{spec.kind}List",
            "metadata": {"resourceVersion": self.store.resource_version},
            "items": [present(obj, spec, route.version) for obj in deleted],
        }
        return self._respond(200, listing)

    # --- watch --------------------------------------------------------------------------------------

    def _watch(self, request: kmock.Request, route: Route, spec: ResourceSpec) -> Response:
        """Initial state (or replay after a resourceVersion) then live events, until timeoutSeconds.

        Everything up to the subscription runs without awaiting, so no write can fall between the
        replayed history and the live events.
        """
        labels, fields = self._selectors(request)
        if route.name:
            fields = FieldSelector((*fields.terms, ("metadata.name", True, route.name)))
        watch_filter = WatchFilter(spec.key, route.namespace, labels, fields)
        since = request.params.get("resourceVersion") or "0"
        try:
            initial = self._initial_events(watch_filter, spec, route.version, since)
        except GoneError as error:
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": str(error),
                "reason": "Expired",
                "code": 410,
            }
            return self._respond(200, self._event_stream([{"type": "ERROR", "object": status}], None, 0, route.version))
        subscription = self.store.changes.subscribe(watch_filter)
        timeout = float(request.params.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        return self._respond(200, self._event_stream(initial, subscription, timeout, route.version))

    def _initial_events(self, watch_filter: WatchFilter, spec: ResourceSpec, version: str, since: str) -> list[Obj]:
        if since == "0":
            objs = self.store.select(spec, watch_filter.namespace, watch_filter.labels, watch_filter.fields)
            return [{"type": "ADDED", "object": present(obj, spec, version)} for obj in objs]
        if not since.isdigit():
            raise bad_request(f"invalid resourceVersion {since!r}")
        return [
            {"type": event_type, "object": present(change.obj, spec, version)}
            for change in self.store.changes.since(int(since), spec.key)
            if (event_type := watch_filter.event_type(change)) is not None
        ]

    async def _event_stream(
        self, initial: list[Obj], subscription: Subscription | None, timeout: float, version: str
    ) -> AsyncIterator[bytes | Obj]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            yield b""  # sends the headers at once, as the real server does for an idle watch
            for event in initial:
                yield event
            while subscription is not None and (remaining := deadline - loop.time()) > 0:
                try:
                    change = await asyncio.wait_for(subscription.queue.get(), remaining)
                except TimeoutError:
                    return
                if change is None:
                    return
                event_type = subscription.filter.event_type(change)
                if event_type is not None:
                    yield {"type": event_type, "object": present(change.obj, change.spec, version)}
        finally:
            if subscription is not None:
                self.store.changes.unsubscribe(subscription)

    # --- request details ----------------------------------------------------------------------------

    def _respond(self, status: int, payload: Obj | AsyncIterator[bytes | Obj]) -> Response:
        # The status is always explicit: kmock reuses one Response object per reaction.
        return Response(status=status, payload=payload, headers={"Content-Type": "application/json"})

    def _content_type(self, request: kmock.Request) -> str:
        headers = {key.lower(): value for key, value in request.headers.items()}
        return headers.get("content-type", "application/json").split(";")[0].strip().lower()

    def _json(self, request: kmock.Request) -> Any:
        try:
            return json.loads(request.body)
        except ValueError as error:
            raise bad_request(f"the request body is not valid JSON: {error}") from error

    def _body(self, request: kmock.Request) -> Obj:
        """A JSON object, or a YAML one for apply patches and YAML content types.

        A YAML body is tried as JSON first: kubectl and the Python client send apply patches as JSON
        (valid YAML) under ``application/apply-patch+yaml``, and YAML parsing is many times slower.
        """
        try:
            body = json.loads(request.body)
        except ValueError as error:
            if "yaml" not in self._content_type(request):
                raise bad_request(f"the request body could not be decoded: {error}") from error
            try:
                body = yaml.load(request.body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
            except yaml.YAMLError as yaml_error:
                raise bad_request(f"the request body could not be decoded: {yaml_error}") from yaml_error
        if not isinstance(body, dict):
            raise bad_request("the request body must be an object")
        return body

    def _dry_run(self, request: kmock.Request) -> bool:
        return request.params.get("dryRun") == "All"

    def _selectors(self, request: kmock.Request) -> tuple[LabelSelector, FieldSelector]:
        try:
            labels = LabelSelector.parse(request.params.get("labelSelector"))
            fields = FieldSelector.parse(request.params.get("fieldSelector"))
        except SelectorError as error:
            raise bad_request(str(error)) from error
        return labels, fields
