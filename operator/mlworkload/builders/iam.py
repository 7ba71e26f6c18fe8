"""IAM bindings: Workload Identity on the Google service account, and bucket access."""

from mlworkload.api.workload import BucketAccess
from mlworkload.builders.names import service_account_name
from mlworkload.gcp.plan import IamBinding
from mlworkload.policy.resolve import ResolvedWorkload

WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"
BUCKET_ROLES = {
    BucketAccess.READ_ONLY: "roles/storage.objectViewer",
    BucketAccess.READ_WRITE: "roles/storage.objectUser",
}
_GSA_DOMAIN = ".iam.gserviceaccount.com"


def service_account_resource(email: str) -> str:
    """projects/PROJECT/serviceAccounts/EMAIL ('-' for the project when the email does not say)."""
    local_domain = email.split("@", 1)[1]
    project = local_domain.removesuffix(_GSA_DOMAIN) if local_domain.endswith(_GSA_DOMAIN) else "-"
    return f"projects/{project}/serviceAccounts/{email}"


def kubernetes_member(resolved: ResolvedWorkload, project: str) -> str:
    """The Kubernetes ServiceAccount as an IAM member of the cluster's workload identity pool."""
    return f"serviceAccount:{project}.svc.id.goog[{resolved.namespace}/{service_account_name(resolved)}]"


def direct_principal(resolved: ResolvedWorkload, project: str, project_number: str) -> str:
    """The KSA as a Workload Identity Federation principal, for access without a GSA."""
    return (
        f"principal://iam.googleapis.com/projects/{project_number}/locations/global/workloadIdentityPools/"
        f"{project}.svc.id.goog/subject/ns/{resolved.namespace}/sa/{service_account_name(resolved)}"
    )


def build_iam_bindings(resolved: ResolvedWorkload, project: str) -> list[IamBinding]:
    """Bindings the workload needs: KSA -> GSA impersonation, and the bucket role for its identity."""
    bindings = []
    gsa = resolved.gcp_service_account
    bucket_member: str | None = None
    if gsa is not None:
        bindings.append(
            IamBinding(
                resource=service_account_resource(gsa),
                role=WORKLOAD_IDENTITY_USER,
                member=kubernetes_member(resolved, project),
            )
        )
        bucket_member = f"serviceAccount:{gsa}"
    elif resolved.gcp is not None and resolved.gcp.project_number is not None:
        bucket_member = direct_principal(resolved, project, resolved.gcp.project_number)
    storage = resolved.workload.spec.storage
    if storage is not None and bucket_member is not None:
        bindings.append(
            IamBinding(
                resource=f"projects/_/buckets/{storage.bucket_name}",
                role=BUCKET_ROLES[storage.access],
                member=bucket_member,
            )
        )
    return bindings
