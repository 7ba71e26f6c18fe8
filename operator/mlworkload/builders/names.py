"""Deterministic names of everything derived from one MLWorkload.

Names are a pure function of the workload, so a restarted operator finds what it created
instead of creating it twice. Ownership, though, is decided by labels and owner references.
"""

from mlworkload.policy.resolve import ResolvedWorkload

# KubeRay rewrites the head pod's serviceAccountName with `utils.CheckName` (keep the last 50
# characters; never start with a digit or punctuation). Naming our ServiceAccount the same way
# keeps the head, whose autoscaler KubeRay binds to this account, on the account we annotate.
_KUBERAY_MAX_NAME = 50


def kuberay_check_name(name: str) -> str:
    if len(name) > _KUBERAY_MAX_NAME:
        name = name[len(name) - _KUBERAY_MAX_NAME :]
    if not name[0].isalpha():
        name = "r" + name[1:]
    return name


def ray_object_name(resolved: ResolvedWorkload) -> str:
    return resolved.name


def service_account_name(resolved: ResolvedWorkload) -> str:
    return kuberay_check_name(resolved.name)


def endpoint_name(resolved: ResolvedWorkload, which: str) -> str:
    """Ingress, Service and BackendConfig of the `dashboard` or `serve` endpoint."""
    return f"{resolved.name}-{which}"


def head_network_policy_name(resolved: ResolvedWorkload) -> str:
    return f"{resolved.name}-head"


def worker_network_policy_name(resolved: ResolvedWorkload, group: str) -> str:
    return f"{resolved.name}-workers-{group}"


def submitter_network_policy_name(resolved: ResolvedWorkload) -> str:
    return f"{resolved.name}-submitter"
