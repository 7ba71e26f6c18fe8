"""The Kubernetes ServiceAccount every Ray pod runs as, bound to GCP by Workload Identity."""

from mlworkload.builders.metadata import Manifest, object_meta
from mlworkload.builders.names import service_account_name
from mlworkload.policy.resolve import ResolvedWorkload

WORKLOAD_IDENTITY_ANNOTATION = "iam.gke.io/gcp-service-account"


def build_service_account(resolved: ResolvedWorkload) -> Manifest:
    """A ServiceAccount annotated with the workload's Google service account, when it has one."""
    annotations = {}
    if resolved.gcp_service_account:
        annotations[WORKLOAD_IDENTITY_ANNOTATION] = resolved.gcp_service_account
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": object_meta(resolved, service_account_name(resolved), annotations),
    }
