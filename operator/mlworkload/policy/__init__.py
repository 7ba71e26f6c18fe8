"""Policy: which MLWorkloadPolicy governs a namespace, the defaults it sets, and its checks."""

from mlworkload.policy.admission import Admission, admit, gpus_in_use
from mlworkload.policy.resolve import (
    BUILTIN_POLICY_NAME,
    ResolvedEndpoint,
    ResolvedGroup,
    ResolvedWorkload,
    resolve,
)
from mlworkload.policy.selection import select_policy

__all__ = [
    "BUILTIN_POLICY_NAME",
    "Admission",
    "ResolvedEndpoint",
    "ResolvedGroup",
    "ResolvedWorkload",
    "admit",
    "gpus_in_use",
    "resolve",
    "select_policy",
]
