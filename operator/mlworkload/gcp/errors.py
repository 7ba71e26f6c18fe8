"""GCP failures, classified once, so adapters raise one exception type and status gets one reason.

google-api-core picks an exception class from the HTTP status alone over REST (a busy cluster's
400 FAILED_PRECONDITION is `BadRequest`, a stale IAM etag's 409 ABORTED is `Conflict`) and from the
gRPC code over gRPC. So the kind is read from the payload: the `google.rpc.ErrorInfo` reason, the
canonical status in the JSON body, the legacy `errors[].reason`, then the message.
"""

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import requests
from google.api_core import exceptions as google_exceptions


class FailureKind(StrEnum):
    """What went wrong; the value is the condition reason shown in status."""

    BUSY = "ClusterBusy"  # another operation runs on the cluster: wait and retry
    QUOTA = "QuotaExceeded"
    STOCKOUT = "Stockout"
    PERMISSION = "PermissionDenied"
    API_DISABLED = "ApiDisabled"
    INVALID = "InvalidRequest"  # e.g. a machine type and accelerator GKE will not pair
    NOT_FOUND = "NotFound"
    ALREADY_EXISTS = "AlreadyExists"
    STALE = "ConcurrentChange"  # an IAM etag went stale: re-read and retry at once
    UNAVAILABLE = "GcpUnavailable"


# Failures that need a person (quota, IAM, the spec) to go away: Stalled=True while still retried slowly.
STALLING: frozenset[FailureKind] = frozenset(
    {FailureKind.QUOTA, FailureKind.STOCKOUT, FailureKind.PERMISSION, FailureKind.API_DISABLED, FailureKind.INVALID}
)


@dataclass(eq=False)
class GcpError(Exception):
    kind: FailureKind
    message: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"

    @property
    def stalls(self) -> bool:
        return self.kind in STALLING


_BUSY_MESSAGE = re.compile(
    r"currently (creating|deleting|upgrading|updating)|incompatible operation|too many operations", re.IGNORECASE
)


def _canonical_status(error: google_exceptions.GoogleAPICallError) -> str:
    if error.grpc_status_code is not None:
        return str(error.grpc_status_code.name)
    response = error.response
    if isinstance(response, requests.Response):
        try:
            body: Any = response.json()
        except ValueError:
            return ""
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            return str(body["error"].get("status") or "")
    return ""


def _legacy_reasons(error: google_exceptions.GoogleAPICallError) -> set[str]:
    return {str(item.get("reason")) for item in error.errors or [] if isinstance(item, dict)}


def classify(error: BaseException) -> GcpError:
    """The `GcpError` for anything a Google client raised (or a transport error under it)."""
    if isinstance(error, GcpError):
        return error
    if isinstance(error, google_exceptions.RetryError | requests.ConnectionError | requests.Timeout | TimeoutError):
        return GcpError(FailureKind.UNAVAILABLE, str(error) or type(error).__name__)
    if not isinstance(error, google_exceptions.GoogleAPICallError):
        return GcpError(FailureKind.UNAVAILABLE, f"{type(error).__name__}: {error}")
    message = error.message or str(error)
    status = _canonical_status(error)
    reasons = _legacy_reasons(error) | {error.reason or ""}
    if "CLUSTER_ALREADY_HAS_OPERATION" in reasons or _BUSY_MESSAGE.search(message):
        return GcpError(FailureKind.BUSY, message)
    if "SERVICE_DISABLED" in reasons:
        return GcpError(FailureKind.API_DISABLED, message)
    code = error.code or 0
    if code == 403 and "quota" in message.lower():
        return GcpError(FailureKind.QUOTA, message)  # GKE's up-front regional quota check is a 403
    if code in (401, 403):
        return GcpError(FailureKind.PERMISSION, message)
    if code == 404:
        return GcpError(FailureKind.NOT_FOUND, message)
    if code == 412 or status == "ABORTED" or "aborted" in reasons or "conditionNotMet" in reasons:
        return GcpError(FailureKind.STALE, message)
    if code == 409:
        return GcpError(FailureKind.ALREADY_EXISTS, message)
    if code == 400:
        return GcpError(FailureKind.INVALID, message)
    return GcpError(FailureKind.UNAVAILABLE, message)  # 429, 5xx and the rest: retry with backoff


_STOCKOUT = re.compile(r"GCE_STOCKOUT|does not have enough resources|out of resources", re.IGNORECASE)
_QUOTA = re.compile(r"GCE_QUOTA_EXCEEDED|quota .*exceeded|quota exceeded|insufficient .*quota", re.IGNORECASE)


def classify_message(text: str, code: int = 0) -> GcpError:
    """A failure GKE reports as text: a finished operation's error, a pool's status message, an autoscaler event.

    `code` is the google.rpc.Code of an operation error when there is one (7 permission, 3 invalid).
    """
    if _STOCKOUT.search(text):
        return GcpError(FailureKind.STOCKOUT, text)
    if _QUOTA.search(text):
        return GcpError(FailureKind.QUOTA, text)
    if code == 7:
        return GcpError(FailureKind.PERMISSION, text)
    if code == 3:
        return GcpError(FailureKind.INVALID, text)
    return GcpError(FailureKind.UNAVAILABLE, text)
