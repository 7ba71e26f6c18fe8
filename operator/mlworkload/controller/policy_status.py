"""The status of an MLWorkloadPolicy, from the cluster view: pure, so that the writer can compare it with
what is stored and write only a change (a second pass writes nothing)."""

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mlworkload.api.policy import MLWorkloadPolicy
from mlworkload.api.policy_status import (
    MAX_LISTED_NAMESPACES,
    MLWorkloadPolicyStatus,
    PolicyGpus,
    PolicyProblem,
    PolicyWorkloads,
)
from mlworkload.api.workload import Condition
from mlworkload.constants import CONDITION_READY, REASON_INVALID_POLICY
from mlworkload.controller.status import ConditionFactory
from mlworkload.controller.timestamps import rfc3339
from mlworkload.policy import BrokenPolicy, ClusterView
from mlworkload.problems import Problem

REASON_VALID = "Valid"
PhaseCounts = Mapping[str, Mapping[str, int]]
"""Namespace -> phase -> workloads, as the reconciler last saw them (`metrics.WorkloadInventory.phases`)."""


def policy_status(
    policy: MLWorkloadPolicy | BrokenPolicy,
    *,
    generation: int | None,
    problems: Sequence[Problem],
    view: ClusterView,
    namespaces: Iterable[str],
    phases: PhaseCounts,
    previous: Mapping[str, Any] | None,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The status to store, as its JSON. A policy the operator cannot read governs no namespace; it lists those
    whose workloads it blocks (`BrokenPolicy.may_govern`, as admission refuses them) and why, in `problems`."""
    if isinstance(policy, BrokenPolicy):
        ruled = sorted(ns for ns in namespaces if policy.may_govern(view.labels_of(ns), view.governing(ns)))
        quota = None
    else:
        ruled = sorted(ns for ns in namespaces if _governed_by(view, ns, policy.name))
        quota = policy.spec.quota.max_gpus
    in_ruled = set(ruled)
    by_phase: dict[str, int] = {}
    for namespace in ruled:
        for phase, count in phases.get(namespace, {}).items():
            by_phase[phase] = by_phase.get(phase, 0) + count
    in_use = 0 if isinstance(policy, BrokenPolicy) else sum(
        gpus for namespace, gpus in view.gpu_totals().by_namespace() if namespace in in_ruled
    )  # fmt: skip
    status = MLWorkloadPolicyStatus(
        observed_generation=generation,
        conditions=[_ready(policy, problems, generation, previous, now)],
        namespace_count=len(ruled),
        namespaces=ruled[:MAX_LISTED_NAMESPACES],
        workloads=PolicyWorkloads(total=sum(by_phase.values()), by_phase=dict(sorted(by_phase.items()))),
        gpus=PolicyGpus(in_use=in_use, quota=quota),
        problems=[PolicyProblem(field=p.path, message=p.message) for p in problems],
    )
    return status.model_dump(by_alias=True, exclude_none=True, mode="json")


def _governed_by(view: ClusterView, namespace: str, name: str) -> bool:
    governing = view.governing(namespace)
    return governing is not None and governing.name == name


def _ready(
    policy: MLWorkloadPolicy | BrokenPolicy,
    problems: Sequence[Problem],
    generation: int | None,
    previous: Mapping[str, Any] | None,
    now: datetime.datetime,
) -> Condition:
    before = {}
    for stored in (previous or {}).get("conditions") or []:
        try:
            condition = Condition.model_validate(stored, by_alias=True, by_name=False)
        except ValueError:  # a report another version wrote: a new transition time, nothing worse
            continue
        before[condition.type] = condition
    factory = ConditionFactory(generation or 0, before, rfc3339(now))
    if isinstance(policy, BrokenPolicy):
        detail = "; ".join(str(p) for p in problems) or policy.problem
        message = f"the operator cannot read this policy, and refuses the workloads it may govern: {detail}"
        return factory(CONDITION_READY, False, REASON_INVALID_POLICY, message)
    return factory(CONDITION_READY, True, REASON_VALID, "the operator reads this policy and enforces it")
