"""Fake GKE, IAM, Cloud Storage and IAP APIs on loopback, for testing GCP adapters with the real client libraries.

See ``server.FakeGcp`` for the entry point, ``clients`` for configured clients, and each service module
(``gke``, ``iam``, ``storage``, ``iap``) for what is emulated, what was confirmed about the real API and where.
"""

from tests.support.gcp.clients import gke_client, iam_client, iap_client, rest_session, storage_client
from tests.support.gcp.core import Call, Fault, Request
from tests.support.gcp.errors import ApiError, api_error, service_disabled, unavailable
from tests.support.gcp.gke import (
    Cluster,
    FakeGke,
    OperationFailure,
    invalid_argument,
    permission_denied,
    quota_exceeded,
    quota_exceeded_at_create,
    stockout,
)
from tests.support.gcp.iam import FakeIam, iam_permission_denied
from tests.support.gcp.iap import FakeIap, iap_permission_denied, iap_resource_not_found
from tests.support.gcp.server import FakeGcp, fresh_project
from tests.support.gcp.storage import FakeStorage, precondition_failed, storage_permission_denied

__all__ = [
    "ApiError",
    "Call",
    "Cluster",
    "FakeGcp",
    "FakeGke",
    "FakeIam",
    "FakeIap",
    "FakeStorage",
    "Fault",
    "OperationFailure",
    "Request",
    "api_error",
    "fresh_project",
    "gke_client",
    "iam_client",
    "iam_permission_denied",
    "iap_client",
    "iap_permission_denied",
    "iap_resource_not_found",
    "invalid_argument",
    "permission_denied",
    "precondition_failed",
    "quota_exceeded",
    "quota_exceeded_at_create",
    "rest_session",
    "service_disabled",
    "stockout",
    "storage_client",
    "storage_permission_denied",
    "unavailable",
]
