"""What every fake service shares: the request/reply plumbing, the call log and injected faults.

Each service (GKE, IAM, Cloud Storage, IAP) declares its routes as regular expressions over the decoded
path; handlers are plain synchronous functions that run under the service's lock, so state changes
made over HTTP, over gRPC and by the test thread (``fake.gke.complete_operations()``) never interleave.
Every call is logged with its parsed body and the status it got, so tests can assert "exactly one
create call" without counting on timing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from tests.support.gcp.errors import ApiError, Json

Service = Literal["container", "iam", "storage", "iap"]
Transport = Literal["http", "grpc"]


@dataclass(frozen=True)
class Call:
    """One request as a fake service saw it, after it was answered."""

    index: int  # position in the call log
    service: Service
    rpc: str  # the API method, e.g. CreateNodePool, GetIamPolicy, SetIamPolicy
    method: str  # HTTP method; POST for gRPC
    path: str  # decoded URL path, or /package.Service/Method for gRPC
    query: dict[str, str]
    body: Any  # parsed JSON (gRPC requests as their proto3 JSON form), None when empty
    status: int  # HTTP status sent (gRPC: the HTTP equivalent of the status code)
    transport: Transport = "http"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    params: dict[str, str]  # named groups of the route's pattern

    @property
    def wants_int_enums(self) -> bool:
        """The GAPIC REST transports send ``$alt=json;enum-encoding=int`` and expect numeric enums back."""
        return "enum-encoding=int" in self.query.get("$alt", "")


@dataclass
class Reply:
    body: Json
    status: int = 200


Handler = Callable[[Request], Reply]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    rpc: str
    handler: Handler


def route(method: str, pattern: str, rpc: str, handler: Handler) -> Route:
    return Route(method, re.compile(pattern), rpc, handler)


@dataclass
class Fault:
    """An error to answer instead of handling, for the next ``times`` matching calls (None: forever)."""

    service: Service
    rpc: str
    error: ApiError
    times: int | None = 1
    when: Callable[[Request], bool] | None = None
    hits: int = 0

    def matches(self, service: Service, rpc: str, request: Request) -> bool:
        if self.service != service or self.rpc != rpc or self.times == 0:
            return False
        return self.when is None or self.when(request)


@dataclass
class Recorder:
    """The call log and the fault queue, shared by all services of one fake (thread-safe)."""

    calls: list[Call] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    unrouted: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, service: Service, rpc: str, request: Request) -> ApiError | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(service, rpc, request):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                    return fault.error
        return None

    def record(self, call: Call) -> Call:
        """Append ``call``, numbered by its position in the log (its ``index`` argument is ignored)."""
        with self.lock:
            numbered = replace(call, index=len(self.calls))
            self.calls.append(numbered)
            return numbered

    def next_index(self) -> int:
        with self.lock:
            return len(self.calls)

    def select(
        self, service: Service | None = None, rpc: str | Iterable[str] | None = None, since: int = 0
    ) -> list[Call]:
        rpcs = {rpc} if isinstance(rpc, str) else set(rpc) if rpc is not None else None
        with self.lock:
            return [
                call
                for call in self.calls[since:]
                if (service is None or call.service == service) and (rpcs is None or call.rpc in rpcs)
            ]
