"""What the operator reports on an MLWorkloadPolicy: what it governs and how much of its quota is used."""

from pydantic import Field, StrictInt

from mlworkload.api.base import ApiModel
from mlworkload.api.workload import Condition

# A policy may govern hundreds of namespaces: the list is cut here (the count is always whole), so that the
# status stays small and a write never approaches etcd's object size limit.
MAX_LISTED_NAMESPACES = 50


class PolicyProblem(ApiModel):
    """One reason the policy cannot be read, as admission reports it."""

    field: str = Field(description="The policy field at fault (a JSON path under the object).")
    message: str = Field(description="What is wrong and how to fix it.")


class PolicyWorkloads(ApiModel):
    """MLWorkloads in the namespaces the policy governs, as the operator last reconciled them."""

    total: StrictInt = Field(default=0, description="All of them.")
    by_phase: dict[str, StrictInt] = Field(
        default_factory=dict, description="Count per status.phase (Pending, Provisioning, Running, ...)."
    )


class PolicyGpus(ApiModel):
    """GPUs at max scale of the workloads the policy governs, against its quota."""

    in_use: StrictInt = Field(default=0, description="GPUs at max scale the quota counts now.")
    quota: StrictInt | None = Field(default=None, description="spec.quota.maxGPUs; absent when unlimited.")


class MLWorkloadPolicyStatus(ApiModel):
    """What the operator observed. Written by the operator only, and only when it changes."""

    observed_generation: StrictInt | None = Field(default=None, description="The spec generation last read.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready: True when the operator can read the policy, False (reason InvalidPolicy) when not.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    namespace_count: StrictInt = Field(default=0, description="Namespaces this policy governs.")
    namespaces: list[str] = Field(
        default_factory=list,
        description=f"The namespaces it governs, sorted; the first {MAX_LISTED_NAMESPACES} when there are more.",
    )
    workloads: PolicyWorkloads = Field(default_factory=PolicyWorkloads, description="Workloads it governs.")
    gpus: PolicyGpus = Field(default_factory=PolicyGpus, description="GPU quota usage.")
    problems: list[PolicyProblem] = Field(
        default_factory=list, description="Why the policy cannot be read (empty when it can)."
    )
