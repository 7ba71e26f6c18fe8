"""Kubernetes API faults: chosen requests are answered with the API server's own error responses.

A test (or the chaos suite) registers faults on ``KubeEmulatorServer``; the emulator consults them for
every resource request *before* anything else runs, so a faulted request never reaches the store (a
real server rejects in admission or storage without persisting). Discovery requests are never faulted.

    handle = server.inject(KubeFault(status=409, methods={"PATCH"}, resource="rayclusters"))
    ...
    assert handle.hits == 1

    chaos = server.inject_random(rate=0.1, statuses=(409, 500), rng=random.Random(seed))
    print(chaos.injected)  # Counter({500: 4, 409: 3})

The bodies are ``metav1.Status`` objects shaped exactly as k8s.io/apimachinery/pkg/api/errors builds
them (``NewConflict``, ``NewInvalid``, ``NewForbidden``, ``NewInternalError``, ``NewTooManyRequests``,
``NewServiceUnavailable``; Go's ``omitempty`` drops empty detail fields), and a ``Retry-After`` header
is sent whenever ``details.retryAfterSeconds`` is set, as k8s.io/apiserver's
``responsewriters.ErrorNegotiated`` does::

    if status.Details != nil && status.Details.RetryAfterSeconds > 0 {
        w.Header().Set("Retry-After", strconv.Itoa(int(status.Details.RetryAfterSeconds)))
    }

Thread-safe: faults are added and read from the test thread while the server's loop consumes them,
so all bookkeeping happens under one lock (no awaits are held under it).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import kmock
from pydantic import BaseModel, ConfigDict, Field

WRITES: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
APPLY_PATCH: Final = "application/apply-patch+yaml"
MERGE_PATCH: Final = "application/merge-patch+json"

# The reason each status code gets unless the fault names one (metav1.StatusReason* for that code).
DEFAULT_REASONS: Final[dict[int, str]] = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
# registry.OptimisticLockErrorMsg: what an update with a stale resourceVersion is told.
OPTIMISTIC_LOCK_MESSAGE: Final = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
# The identity named in Forbidden messages (the emulator accepts any token, so it knows no user).
FAULT_USER: Final = "system:serviceaccount:default:emulator-client"


# --- the wire shape ---------------------------------------------------------------------------------


class StatusCause(BaseModel):
    """metav1.StatusCause."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = None
    message: str | None = None
    field: str | None = None


class StatusDetails(BaseModel):
    """metav1.StatusDetails; ``kind`` is the resource plural except for Invalid, which names the Kind."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    group: str | None = None
    kind: str | None = None
    uid: str | None = None
    causes: list[StatusCause] | None = None
    retry_after_seconds: int | None = Field(default=None, alias="retryAfterSeconds")


class Status(BaseModel):
    """metav1.Status as the API server sends it for a failed request."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: Literal["Status"] = "Status"
    api_version: Literal["v1"] = Field(default="v1", alias="apiVersion")
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Literal["Failure", "Success"] = "Failure"
    message: str
    reason: str
    details: StatusDetails | None = None
    code: int

    def body(self) -> dict[str, Any]:
        """The JSON body: empty fields are omitted as Go's ``omitempty`` does (``metadata: {}`` stays)."""
        return self.model_dump(by_alias=True, exclude_none=True)

    @property
    def retry_after(self) -> int | None:
        return self.details.retry_after_seconds if self.details else None


# --- what is matched ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeCall:
    """One resource request as routed: what faults are matched on, and what their messages name."""

    method: str  # HTTP method, upper case
    verb: str  # the authorizer's verb: get list watch create update patch delete deletecollection
    group: str
    version: str
    resource: str  # the plural
    namespace: str | None
    name: str | None  # from the URL, or the body's metadata.name for a create
    subresource: str  # "" for the main resource
    content_type: str | None  # the media type, without parameters
    kind: str | None = None  # the Kind, when the resource is served
    request: kmock.Request | None = field(default=None, compare=False, repr=False)  # for predicates

    @property
    def is_write(self) -> bool:
        return self.method in WRITES


def verb_of(method: str, name: str | None, params: dict[str, str] | Any) -> str:
    """The verb the API server's RequestInfo derives from a resource request."""
    method = method.upper()
    if method == "GET":
        if params.get("watch") in ("true", "1"):
            return "watch"
        return "get" if name else "list"
    if method == "DELETE":
        return "delete" if name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def _matches(wanted: str | Collection[str] | None, actual: str | None) -> bool:
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return actual == wanted
    return actual in wanted


@dataclass(frozen=True, kw_only=True)
class FaultMatch:
    """Which requests a fault applies to; every criterion left as None matches anything.

    ``verbs`` None means every verb *except* ``watch``: a fault aimed at writes or reads must not cut
    the operator's watch streams by accident; name ``"watch"`` to fault them. ``subresource=""`` is
    the main resource only, ``"status"`` the status subresource only. ``content_type`` tells
    server-side apply (``APPLY_PATCH``) from merge patches. ``when`` is the escape hatch; it runs on
    the server's loop under the faults' lock, after every other criterion matched: keep it quick and
    never make it wait for the test thread.
    """

    methods: Collection[str] | None = None
    verbs: Collection[str] | None = None
    group: str | None = None
    resource: str | Collection[str] | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    content_type: str | None = None
    when: Callable[[KubeCall], bool] | None = None

    def matches(self, call: KubeCall) -> bool:
        if self.methods is not None and call.method not in {m.upper() for m in self.methods}:
            return False
        if (self.verbs is None and call.verb == "watch") or not _matches(self.verbs, call.verb):
            return False
        return (
            _matches(self.group, call.group)
            and _matches(self.resource, call.resource)
            and _matches(self.namespace, call.namespace)
            and _matches(self.name, call.name)
            and _matches(self.subresource, call.subresource)
            and _matches(self.content_type, call.content_type)
            and (self.when is None or self.when(call))
        )


@dataclass(frozen=True, kw_only=True)
class KubeFault(FaultMatch):
    """Answer matching requests with ``status``: the first ``after`` matches pass, then ``times``
    matches fail (None: every one until removed).

    ``reason`` defaults from the status (409 Conflict, 422 Invalid, 403 Forbidden, 500 InternalError,
    429 TooManyRequests, 503 ServiceUnavailable, ...); ``message`` replaces the cause part of the
    server's message (``Operation cannot be fulfilled on <resource> "<name>": <message>``).
    """

    status: int
    times: int | None = 1
    after: int = 0
    reason: str | None = None
    message: str | None = None
    retry_after_seconds: int = 1  # 429 and 503 only

    def __post_init__(self) -> None:
        if self.reason is None and self.status not in DEFAULT_REASONS:
            raise ValueError(f"status {self.status} has no default reason: name one")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be at least 1 (or None: forever)")
        if self.after < 0:
            raise ValueError("after must not be negative")


@dataclass(frozen=True, kw_only=True)
class RandomFaults(FaultMatch):
    """Fail a ``rate`` fraction of matching requests with a status drawn from ``statuses``.

    Both draws come from ``rng`` and only for matching requests, so one seed and one request
    sequence give the same faults every time.
    """

    rate: float
    rng: random.Random = field(compare=False, repr=False)
    statuses: Sequence[int] = (409, 500)
    methods: Collection[str] | None = WRITES
    retry_after_seconds: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        if not self.statuses or any(status not in DEFAULT_REASONS for status in self.statuses):
            raise ValueError(f"statuses must be among {sorted(DEFAULT_REASONS)}")


# --- the bodies ----------------------------------------------------------------------------------------


def _qualified(name: str, group: str) -> str:
    """schema.GroupResource.String() / GroupKind.String(): ``rayclusters.ray.io``, core ``services``."""
    return f"{name}.{group}" if group else name


def _named(call: KubeCall) -> str:
    return f'{_qualified(call.resource, call.group)} "{call.name or ""}"'


def build_status(
    call: KubeCall, code: int, *, reason: str | None = None, message: str | None = None, retry_after_seconds: int = 1
) -> Status:
    """The Status the API server would send for ``call`` failing with ``code`` (see the module docstring)."""
    reason = reason or DEFAULT_REASONS[code]
    # Optional strings as Go's omitempty leaves them: "" is absent.
    target = StatusDetails(name=call.name or None, group=call.group or None, kind=call.resource)
    retry = StatusDetails(retry_after_seconds=retry_after_seconds)
    if reason == "Conflict":  # errors.NewConflict
        text = f"Operation cannot be fulfilled on {_named(call)}: {message or OPTIMISTIC_LOCK_MESSAGE}"
        return Status(code=code, reason=reason, message=text, details=target)
    if reason == "AlreadyExists":  # errors.NewAlreadyExists
        return Status(code=code, reason=reason, message=f"{_named(call)} already exists", details=target)
    if reason == "NotFound":  # errors.NewNotFound
        return Status(code=code, reason=reason, message=f"{_named(call)} not found", details=target)
    if reason == "Invalid":  # errors.NewInvalid: details.kind is the Kind, one field.Error per cause
        kind = call.kind or call.resource
        cause = StatusCause(
            reason="FieldValueInvalid", message=message or 'Invalid value: "object": rejected by the test', field="spec"
        )
        text = f'{_qualified(kind, call.group)} "{call.name or ""}" is invalid: {cause.field}: {cause.message}'
        details = StatusDetails(name=call.name or None, group=call.group or None, kind=kind, causes=[cause])
        return Status(code=code, reason=reason, message=text, details=details)
    if reason == "Forbidden":  # errors.NewForbidden with the RBAC authorizer's reason
        resource = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
        scope = f'the namespace "{call.namespace}"' if call.namespace else "the cluster scope"
        why = (
            message
            or f'User "{FAULT_USER}" cannot {call.verb} resource "{resource}" in API group "{call.group}" in {scope}'
        )
        subject = _named(call) if call.name else _qualified(call.resource, call.group)
        return Status(code=code, reason=reason, message=f"{subject} is forbidden: {why}", details=target)
    if reason == "InternalError":  # errors.NewInternalError: only the cause, no object details
        why = message or "injected fault"
        details = StatusDetails(causes=[StatusCause(message=why)])
        return Status(code=code, reason=reason, message=f"Internal error occurred: {why}", details=details)
    if reason == "TooManyRequests":  # errors.NewTooManyRequests
        text = message or "Too many requests, please try again later."
        return Status(code=code, reason=reason, message=text, details=retry)
    if reason == "ServiceUnavailable":  # errors.NewServiceUnavailable, with a retry delay as when the server is busy
        text = message or "the server is currently unable to handle the request"
        return Status(code=code, reason=reason, message=text, details=retry)
    return Status(code=code, reason=reason, message=message or f"injected {code} {reason}", details=target)


# --- bookkeeping ---------------------------------------------------------------------------------------


class _Handle:
    """What every registered fault has: the request ids it answered, and a way to remove it."""

    def __init__(self, table: FaultTable) -> None:
        self._table = table
        self._hits: list[int] = []  # request ids answered by this fault

    @property
    def hits(self) -> int:
        with self._table.lock:
            return len(self._hits)

    @property
    def request_ids(self) -> list[int]:
        with self._table.lock:
            return list(self._hits)

    def remove(self) -> None:
        self._table.remove(self)  # type: ignore[arg-type]  # every _Handle is one of `Handle`


class FaultHandle(_Handle):
    """A registered ``KubeFault``: how often it fired, and a way to remove it."""

    def __init__(self, table: FaultTable, fault: KubeFault) -> None:
        super().__init__(table)
        self.fault = fault
        self._matched = 0

    @property
    def exhausted(self) -> bool:
        with self._table.lock:
            return self.fault.times is not None and len(self._hits) >= self.fault.times

    def _decide(self, call: KubeCall, request_id: int) -> Status | None:
        fault = self.fault
        if (fault.times is not None and len(self._hits) >= fault.times) or not fault.matches(call):
            return None
        self._matched += 1
        if self._matched <= fault.after:
            return None
        self._hits.append(request_id)
        return build_status(
            call,
            fault.status,
            reason=fault.reason,
            message=fault.message,
            retry_after_seconds=fault.retry_after_seconds,
        )


class RandomFaultHandle(_Handle):
    """Registered ``RandomFaults``: what they injected (count by status), for the chaos suite's figures."""

    def __init__(self, table: FaultTable, faults: RandomFaults) -> None:
        super().__init__(table)
        self.faults = faults
        self._seen = 0
        self._injected: Counter[int] = Counter()

    @property
    def seen(self) -> int:
        """Matching requests, faulted or not."""
        with self._table.lock:
            return self._seen

    @property
    def injected(self) -> Counter[int]:
        with self._table.lock:
            return Counter(self._injected)

    def _decide(self, call: KubeCall, request_id: int) -> Status | None:
        faults = self.faults
        if not faults.matches(call):
            return None
        self._seen += 1
        if faults.rng.random() >= faults.rate:
            return None
        code = faults.rng.choice(list(faults.statuses))
        self._injected[code] += 1
        self._hits.append(request_id)
        return build_status(call, code, retry_after_seconds=faults.retry_after_seconds)


Handle = FaultHandle | RandomFaultHandle


class FaultTable:
    """The registered faults, in order: the first one that fires answers the request."""

    def __init__(self) -> None:
        # Re-entrant: a ``when`` predicate runs under it and may read a handle's counters.
        self.lock = threading.RLock()
        self._handles: list[Handle] = []

    def add(self, handle: Handle) -> None:
        with self.lock:
            self._handles.append(handle)

    def remove(self, handle: Handle) -> None:
        with self.lock:
            if handle in self._handles:
                self._handles.remove(handle)

    def clear(self) -> None:
        with self.lock:
            self._handles.clear()

    def __len__(self) -> int:
        with self.lock:
            return len(self._handles)

    def take(self, call: KubeCall, request_id: int) -> Status | None:
        """The failure to answer ``call`` with, if a fault fires for it (its counters are updated)."""
        with self.lock:
            for handle in self._handles:
                status = handle._decide(call, request_id)
                if status is not None:
                    return status
        return None
