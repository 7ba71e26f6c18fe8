"""IAP access: one member in `roles/iap.httpsResourceAccessor` on the backend service of an IAP-secured Ingress.

IAP keeps its own IAM policy per backend service, apart from the Compute Engine policy of the backend
service itself (that one refuses IAP roles: "Role roles/iap.httpsResourceAccessor has been retired.",
hashicorp/terraform-provider-google#11751), so the grant goes through the IAP Admin API
(google-cloud-iap, `IdentityAwareProxyAdminServiceClient`) as a read-modify-write with the etag, like
the other IAM policies (`iam.py`): a write with a stale etag is refused and the whole cycle is retried
(409 ABORTED is IAM's answer for service accounts; IAP's own wording was not found, and `errors.classify`
also takes 412 and the `aborted` reason as stale).

Resource names, as the IAP API addresses a backend service's policy:

- global backend service (GKE's External Ingress): ``projects/{project}/iap_web/compute/services/{name}``;
- regional backend service (``gce-internal`` Ingress): ``projects/{project}/iap_web/compute-{region}/services/{name}``.

Confirmed in terraform-provider-google, which builds exactly these URLs for
``google_iap_web_backend_service_iam_*`` ("projects/%s/iap_web/compute/services/%s",
``iam_iap_web_backend_service.go``) and ``google_iap_web_region_backend_service_iam_*``
("projects/%s/iap_web/compute-%s/services/%s", ``iam_iap_web_region_backend_service.go``), and the same
forms are those resources' import ids. The backend service may be given by *name*: Google's reference
writes the resource as "projects/PROJECT_NUMBER/iap_web/compute/services/BACKEND_SERVICE_ID or
BACKEND_SERVICE_NAME" (quoted in hashicorp/terraform-provider-google#13537), and Terraform's examples
(``web_backend_service = google_compute_backend_service.default.name``) and terraformer
(``backendService.Name``) pass the name, so the name GKE writes into an Ingress's
``ingress.kubernetes.io/backends`` annotation (e.g. ``{"k8s-be-30167--01177f64ec764488": "HEALTHY"}``,
kubernetes/ingress-gce#762) is usable as it is. The project may be the project *id* (Terraform's provider
project; Config Connector formats ``project.ProjectID``; terraformer) or the *number* (Google's reference, and
GoogleCloudPlatform/cloud-foundation-fabric formats ``module.project.number``);
`mlworkload.builders.iam.iap_resource` takes
whichever the caller has, and the operator has the id.

A backend service that does not exist (yet: GKE creates it when the Ingress syncs) answers 404 ("it
gives an 404 error in terraform saying that the service doesn't exist", GoogleCloudPlatform/ai-on-gke#83),
which `errors.classify` makes `FailureKind.NOT_FOUND`: retried with backoff, not stalled, because the
Ingress controller creates the backend on its own.
"""

from collections.abc import Sequence
from typing import Final

from google.cloud import iap_v1

from mlworkload.gcp.errors import FailureKind, GcpError
from mlworkload.gcp.iam import Change, StandardPolicies
from mlworkload.gcp.plan import IamBinding

API: Final = "iap"  # label in mlworkload_gcp_api_errors_total


class IapPolicies(StandardPolicies):
    """IAM policies of IAP-secured backend services (google-cloud-iap, REST transport).

    `present` (inherited) reads as `update` does and classifies its errors the same way: a backend not synced
    yet is NOT_FOUND there too, retried with backoff, so no grant is recorded for a backend GKE has not made.
    """

    def __init__(self, client: iap_v1.IdentityAwareProxyAdminServiceClient) -> None:
        super().__init__(client, API)

    def update(self, changes: Sequence[Change]) -> set[IamBinding]:
        """As for any IAM policy, except that removing members from a backend service GKE has deleted (with
        its Ingress) is done: its IAP policy went with it, and a 404 would otherwise block release forever."""
        try:
            return super().update(changes)
        except GcpError as error:
            if error.kind is FailureKind.NOT_FOUND and not any(present for _, present in changes):
                return set()
            raise
