"""Google API errors as the real services send them, over JSON/HTTP and over gRPC.

Why this shape matters: google-api-core turns an HTTP error into an exception class chosen by the
HTTP status alone (``exceptions.from_http_response`` -> ``exception_class_for_http_status``), so a
REST 400 FAILED_PRECONDITION raises ``BadRequest`` (not ``FailedPrecondition``) and a REST 409
ALREADY_EXISTS or ABORTED raises ``Conflict`` (not ``AlreadyExists``/``Aborted``). Over gRPC the class
comes from the status code instead (``Aborted``, ``FailedPrecondition``...). Adapters therefore have to
look at the payload: ``exc.errors`` (the legacy ``errors[]`` list, whose ``reason`` is e.g.
``failedPrecondition``), ``exc.reason``/``exc.domain`` (from a ``google.rpc.ErrorInfo`` detail) and
``exc.response.json()["error"]["status"]``. The fakes send all of these, like the real services:

- JSON error body: https://cloud.google.com/apis/design/errors#http_mapping (``code``, ``message``,
  ``status``, ``details``); the legacy ``errors[].reason`` is what the Go client prints after the
  message, e.g. "googleapi: Error 400: Operation operation-... is currently deleting a node pool for
  cluster default-cluster. Please wait and try again once it is done., failedPrecondition"
  (hashicorp/terraform-provider-google#10366).
- Cloud Storage's JSON API has no ``status`` field, only ``code``, ``message`` and ``errors[]``
  (https://cloud.google.com/storage/docs/json_api/v1/status-codes), e.g. "Error 412: Precondition
  Failed, conditionNotMet" (hashicorp/terraform-provider-google#7853).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Final

Json = dict[str, Any]

# canonical status -> (HTTP status, legacy errors[].reason, gRPC code number)
_CANONICAL: Final[dict[str, tuple[int, str, int]]] = {
    "CANCELLED": (499, "cancelled", 1),
    "UNKNOWN": (500, "backendError", 2),
    "INVALID_ARGUMENT": (400, "badRequest", 3),
    "DEADLINE_EXCEEDED": (504, "deadlineExceeded", 4),
    "NOT_FOUND": (404, "notFound", 5),
    "ALREADY_EXISTS": (409, "alreadyExists", 6),
    "PERMISSION_DENIED": (403, "forbidden", 7),
    "RESOURCE_EXHAUSTED": (429, "rateLimitExceeded", 8),
    "FAILED_PRECONDITION": (400, "failedPrecondition", 9),
    "ABORTED": (409, "aborted", 10),
    "OUT_OF_RANGE": (400, "outOfRange", 11),
    "UNIMPLEMENTED": (501, "notImplemented", 12),
    "INTERNAL": (500, "backendError", 13),
    "UNAVAILABLE": (503, "backendError", 14),
    "DATA_LOSS": (500, "backendError", 15),
    "UNAUTHENTICATED": (401, "unauthorized", 16),
}

ERROR_INFO: Final = "type.googleapis.com/google.rpc.ErrorInfo"


def canonical_code(status: str) -> int:
    """The google.rpc.Code number of a canonical status name (e.g. RESOURCE_EXHAUSTED -> 8)."""
    return _CANONICAL[status][2]


@dataclass(eq=False)
class ApiError(Exception):
    """One error reply. Raise it from a handler, or queue it with ``FakeGcp.fail(...)``.

    ``http_status`` and ``reason`` default from the canonical ``status``; override them where a service
    differs (GKE reports an exhausted regional quota at create time as 403 PERMISSION_DENIED).
    """

    status: str
    message: str
    http_status: int = 0
    reason: str = ""
    domain: str = "global"
    details: list[Json] = field(default_factory=list)
    with_status_field: bool = True  # Cloud Storage's JSON API omits "status"

    def __post_init__(self) -> None:
        if self.status not in _CANONICAL:
            raise ValueError(f"unknown canonical status {self.status!r}")
        http_status, reason, _ = _CANONICAL[self.status]
        self.http_status = self.http_status or http_status
        self.reason = self.reason or reason
        super().__init__(f"{self.http_status} {self.status}: {self.message}")

    def with_error_info(self, reason: str, domain: str, metadata: dict[str, str] | None = None) -> ApiError:
        """Add a ``google.rpc.ErrorInfo`` detail: what ``GoogleAPICallError.reason``/``.domain`` read."""
        info: Json = {"@type": ERROR_INFO, "reason": reason, "domain": domain}
        if metadata:
            info["metadata"] = dict(metadata)
        self.details.append(info)
        return self

    @property
    def grpc_code(self) -> int:
        return _CANONICAL[self.status][2]

    def to_json(self) -> Json:
        """The ``{"error": {...}}`` body of the HTTP reply."""
        error: Json = {
            "code": self.http_status,
            "message": self.message,
            "errors": [{"message": self.message, "domain": self.domain, "reason": self.reason}],
        }
        if self.with_status_field:
            error["status"] = self.status
        if self.details:
            error["details"] = [dict(detail) for detail in self.details]
        return {"error": error}


def api_error(status: str, message: str, **kwargs: Any) -> ApiError:
    return ApiError(status, message, **kwargs)


def unavailable(message: str = "The service is currently unavailable.") -> ApiError:
    """503 UNAVAILABLE: what a Google front end answers when a backend is down (retryable)."""
    return ApiError("UNAVAILABLE", message)


def service_disabled(title: str, service: str, project: str) -> ApiError:
    """403 with ErrorInfo SERVICE_DISABLED: the API is not enabled in the project (not retryable).

    Shape as documented at https://cloud.google.com/apis/design/errors#error_info (domain
    googleapis.com, metadata service/consumer).
    """
    message = (
        f"{title} has not been used in project {project} before or it is disabled. Enable it by visiting "
        f"https://console.developers.google.com/apis/api/{service}/overview?project={project} then retry."
    )
    return ApiError("PERMISSION_DENIED", message).with_error_info(
        "SERVICE_DISABLED", "googleapis.com", {"service": service, "consumer": f"projects/{project}"}
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
