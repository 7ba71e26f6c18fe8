"""Google API clients from the operator's settings.

Credentials are Application Default Credentials (on GKE: the operator's own Workload Identity).
An endpoint override (`MLW_GKE_ENDPOINT`, `MLW_IAM_ENDPOINT`, `MLW_STORAGE_ENDPOINT`, `MLW_IAP_ENDPOINT`)
points a client at Private Service Connect or an emulator; a plain `http://` endpoint means an emulator,
so it gets anonymous credentials (and, for IAM's gRPC, an insecure channel) and no token is fetched.
"""

from typing import Any

import grpc  # type: ignore[import-untyped]
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import container_v1, iam_admin_v1, iap_v1
from google.cloud.iam_admin_v1.services.iam.transports.grpc import IAMGrpcTransport
from google.cloud.storage import Client as StorageClient  # type: ignore[import-untyped]

_PLAIN_HTTP = "http://"


def _anonymous(endpoint: str | None) -> Credentials | None:
    if endpoint and endpoint.startswith(_PLAIN_HTTP):
        return AnonymousCredentials()  # type: ignore[no-untyped-call]
    return None


def gke_client(endpoint: str | None) -> container_v1.ClusterManagerClient:
    """REST transport: GKE's enums and int64s as REST sends them, and no gRPC channel to keep alive."""
    options = ClientOptions(api_endpoint=endpoint) if endpoint else None
    return container_v1.ClusterManagerClient(credentials=_anonymous(endpoint), transport="rest", client_options=options)


def iam_client(endpoint: str | None) -> iam_admin_v1.IAMClient:
    """gRPC, the only transport google-cloud-iam's IAM Admin client has."""
    if endpoint and endpoint.startswith(_PLAIN_HTTP):
        channel = grpc.insecure_channel(endpoint.removeprefix(_PLAIN_HTTP).rstrip("/"))
        return iam_admin_v1.IAMClient(transport=IAMGrpcTransport(channel=channel))
    return iam_admin_v1.IAMClient(client_options=ClientOptions(api_endpoint=endpoint) if endpoint else None)


def iap_client(endpoint: str | None) -> iap_v1.IdentityAwareProxyAdminServiceClient:
    """REST transport, as for GKE: no gRPC channel to keep alive, and an emulator only has to speak JSON."""
    options = ClientOptions(api_endpoint=endpoint) if endpoint else None
    return iap_v1.IdentityAwareProxyAdminServiceClient(
        credentials=_anonymous(endpoint), transport="rest", client_options=options
    )


def storage_client(endpoint: str | None, project: str | None) -> Any:
    """A google.cloud.storage.Client (the library ships no type information)."""
    options = {"api_endpoint": endpoint} if endpoint else None
    return StorageClient(project=project, credentials=_anonymous(endpoint), client_options=options)
