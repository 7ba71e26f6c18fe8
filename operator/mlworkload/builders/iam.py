"""IAM bindings: Workload Identity on the Google service account, bucket access, and who may pass IAP."""

from collections.abc import Mapping, Sequence

from mlworkload.api.workload import BucketAccess, Visibility
from mlworkload.builders.endpoints import exposed_endpoints
from mlworkload.builders.ingress import is_backend_of
from mlworkload.builders.names import endpoint_name, kuberay_check_name, service_account_name
from mlworkload.constants import PORT_DASHBOARD, PORT_SERVE
from mlworkload.gcp.plan import IamBinding
from mlworkload.policy.resolve import ResolvedWorkload

WORKLOAD_IDENTITY_USER = "roles/iam.workloadIdentityUser"
BUCKET_ROLES = {
    BucketAccess.READ_ONLY: "roles/storage.objectViewer",
    BucketAccess.READ_WRITE: "roles/storage.objectUser",
}
IAP_ACCESSOR_ROLE = "roles/iap.httpsResourceAccessor"
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


def region_of(location: str) -> str:
    """us-central1-a -> us-central1; a region stays as it is."""
    return "-".join(location.split("-")[:2])


def iap_resource(project: str, backend_service: str, region: str | None) -> str:
    """The IAP resource of a backend service: global for External Ingresses, regional (compute-REGION)
    for gce-internal ones, whose load balancer is regional (terraform's iap_web_backend_service and
    iap_web_region_backend_service IAM ids)."""
    compute = f"compute-{region}" if region else "compute"
    return f"projects/{project}/iap_web/{compute}/services/{backend_service}"


def pending_backend(namespace: str, ingress: str) -> str:
    """What `plan` shows for a backend service GKE has not made yet."""
    return f"<backend of Ingress {namespace}/{ingress}>"


def build_iap_bindings(
    resolved: ResolvedWorkload, project: str, location: str, backends: Mapping[str, Sequence[str]] | None
) -> list[IamBinding]:
    """roles/iap.httpsResourceAccessor for the policy's iapAccessors on every IAP endpoint's backend services.

    GKE names a backend service only once it has made the load balancer (the Ingress's
    `ingress.kubernetes.io/backends` annotation): `backends` maps an endpoint's Ingress name to the
    services it names. Offline (`None`) the plan shows a placeholder; an endpoint missing from the
    mapping gets no binding yet.
    """
    accessors = resolved.policy.expose.iap_accessors
    bindings = []
    for endpoint in exposed_endpoints(resolved):
        if not endpoint.endpoint.iap or not accessors:
            continue
        region = region_of(location) if endpoint.endpoint.visibility is Visibility.INTERNAL else None
        services = (
            [pending_backend(resolved.namespace, endpoint.name)]
            if backends is None
            else backends.get(endpoint.name, ())
        )
        bindings += [
            IamBinding(resource=iap_resource(project, service, region), role=IAP_ACCESSOR_ROLE, member=member)
            for service in services
            for member in accessors
        ]
    return bindings


def _iap_backend(resource: str) -> tuple[str, str] | None:
    """(project, backend service) of an IAP resource name; None for anything else."""
    parts = resource.split("/")
    if len(parts) != 6 or parts[0] != "projects" or parts[2] != "iap_web" or parts[4] != "services":
        return None
    if parts[3] != "compute" and not parts[3].startswith("compute-"):
        return None
    return parts[1], parts[5]


def is_identity_of(namespace: str, workload: str, member: str) -> bool:
    """Whether `member` is this workload's Kubernetes identity, in any project's pool: as a Workload Identity
    member or a direct principal. Needs no policy: a workload whose policy changed or went still has it."""
    ksa = kuberay_check_name(workload)
    return (member.startswith("serviceAccount:") and member.endswith(f".svc.id.goog[{namespace}/{ksa}]")) or (
        member.startswith("principal://iam.googleapis.com/projects/")
        and member.endswith(f".svc.id.goog/subject/ns/{namespace}/sa/{ksa}")
    )


def _is_own_identity(resolved: ResolvedWorkload, member: str) -> bool:
    return is_identity_of(resolved.namespace, resolved.name, member)


def could_have_granted(resolved: ResolvedWorkload, binding: IamBinding) -> bool:
    """Whether the operator could have added `binding` for this workload: to its own Kubernetes identity
    (whatever the policy says now), the policy's GSA on a bucket, or IAP on a backend GKE made for one of its
    endpoints. Status can be written by others; a recorded binding outside this is never revoked."""
    if binding.role == WORKLOAD_IDENTITY_USER:
        return _is_own_identity(resolved, binding.member)
    if binding.role in BUCKET_ROLES.values():
        gsa = resolved.policy.identity.gcp_service_account
        policy_gsa = gsa is not None and binding.member == f"serviceAccount:{gsa}"
        own = _is_own_identity(resolved, binding.member)
        return binding.resource.startswith("projects/_/buckets/") and (own or policy_gsa)
    backend = _iap_backend(binding.resource)
    if binding.role != IAP_ACCESSOR_ROLE or backend is None:
        return False
    ports = {"dashboard": PORT_DASHBOARD, "serve": PORT_SERVE}
    return any(
        is_backend_of(backend[1], resolved.namespace, endpoint_name(resolved, which), port)
        for which, port in ports.items()
    )
