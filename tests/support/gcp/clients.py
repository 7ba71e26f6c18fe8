"""Real Google client libraries, configured to talk to a ``FakeGcp`` and nothing else.

All use ``AnonymousCredentials``: no token is fetched, no metadata server or ADC file is consulted,
and no request can leave the loopback interface.

- GKE: ``ClusterManagerClient(transport="rest")`` with ``api_endpoint="http://127.0.0.1:PORT"``. The REST
  transport keeps an explicit ``http://`` scheme from the endpoint (its ``url_scheme`` argument only
  applies to a bare host), so no ``url_scheme`` is needed.
- IAM: ``iam_admin_v1.IAMClient`` has only gRPC transports; it gets an ``IAMGrpcTransport`` over an
  insecure channel to ``fake.grpc_target`` (a channel given to the transport makes it ignore credentials).
- IAP: ``IdentityAwareProxyAdminServiceClient(transport="rest")`` with ``api_endpoint=fake.endpoint``, like GKE.
- Cloud Storage: ``storage.Client`` with ``client_options={"api_endpoint": fake.endpoint}``; setting
  ``STORAGE_EMULATOR_HOST`` would work too but is process-global, so it is avoided here.
"""

from __future__ import annotations

from typing import Any

import grpc  # type: ignore[import-untyped]
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import container_v1, iam_admin_v1, iap_v1
from google.cloud.iam_admin_v1.services.iam.transports.grpc import IAMGrpcTransport
from google.cloud.storage import Client as StorageClient  # type: ignore[import-untyped]

from tests.support.gcp.server import FakeGcp


def gke_client(fake: FakeGcp) -> container_v1.ClusterManagerClient:
    return container_v1.ClusterManagerClient(
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        transport="rest",
        client_options=ClientOptions(api_endpoint=fake.endpoint),
    )


def iam_client(fake: FakeGcp) -> iam_admin_v1.IAMClient:
    """Close with ``client.transport.close()`` (closes the channel)."""
    channel = grpc.insecure_channel(fake.grpc_target)
    return iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel))


def iap_client(fake: FakeGcp) -> iap_v1.IdentityAwareProxyAdminServiceClient:
    return iap_v1.IdentityAwareProxyAdminServiceClient(
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        transport="rest",
        client_options=ClientOptions(api_endpoint=fake.endpoint),
    )


def storage_client(fake: FakeGcp, project: str = "my-proj") -> Any:
    """A ``google.cloud.storage.Client`` (the library ships no type information)."""
    return StorageClient(
        project=project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": fake.endpoint},
    )


def rest_session() -> AuthorizedSession:
    """An HTTP session for calling a fake REST API directly (e.g. IAM over REST at ``fake.endpoint``)."""
    return AuthorizedSession(AnonymousCredentials())  # type: ignore[no-untyped-call]
