"""Policy: which MLWorkloadPolicy governs a namespace, the defaults it sets, and its checks."""

from mlworkload.policy.admission import Admission, BrokenPolicy, ClusterView, WorkloadGpus, admit, admit_in, gpus_in_use
from mlworkload.policy.resolve import (
    BUILTIN_POLICY_NAME,
    PlatformDefaults,
    ResolvedEndpoint,
    ResolvedGroup,
    ResolvedWorkload,
    resolve,
)
from mlworkload.policy.selection import select_policy

__all__ = [
    "BUILTIN_POLICY_NAME",
    "Admission",
    "BrokenPolicy",
    "ClusterView",
    "PlatformDefaults",
    "ResolvedEndpoint",
    "ResolvedGroup",
    "ResolvedWorkload",
    "WorkloadGpus",
    "admit",
    "admit_in",
    "gpus_in_use",
    "resolve",
    "select_policy",
]
