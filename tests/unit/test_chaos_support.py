"""The chaos suite's plans, oracle and invariant checks (tests/support/chaos.py): each check is fed a world that
breaks it, and one that does not, so a green chaos run means something."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest

from tests.support import chaos
from tests.support.chaos import Json, PolicySpec, TrialNames, TrialResult, WorkloadSpec, World

NAMES = TrialNames(42)
POLICY = chaos.policy_document(NAMES, PolicySpec(max_nodes=4))
WI = chaos.WI_USER
OBJECT_USER = "roles/storage.objectUser"


def live(name: str, spec: WorkloadSpec, *, admitted: bool = True, generation: int = 1, observed: int = 1) -> Json:
    """A workload as the API server holds it once the operator reconciled it."""
    obj = chaos.workload_document(NAMES, name, spec)
    obj["metadata"]["generation"] = generation
    ready = {"type": "Ready", "status": "False"}
    obj["status"] = {
        "observedGeneration": observed,
        "conditions": [
            ready,
            {"type": "PolicyAdmitted", "status": "True" if admitted else "False"},
            {"type": "NodePoolsReady", "status": "True"},
            {"type": "IdentityReady", "status": "True"},
            {"type": "Stalled", "status": "False"},
        ],
    }
    return obj


def ksa(name: str) -> str:
    return f"serviceAccount:{chaos.PROJECT}.svc.id.goog[{NAMES.namespace}/{name}]"


def gsa_member() -> str:
    return f"serviceAccount:{NAMES.gsa}"


def pool_json(name: str, max_nodes: int, *, status: str = "RUNNING", accelerator: str = "nvidia-l4") -> Json:
    return {
        "name": name,
        "status": status,
        "autoscaling": {"enabled": True, "totalMaxNodeCount": max_nodes},
        "config": {
            "machineType": "g2-standard-4",
            "accelerators": [{"acceleratorType": accelerator, "acceleratorCount": "1"}],
            "spot": True,
            "resourceLabels": {"managed-by": "mlworkload"},
        },
    }


def policies(gsa: list[tuple[str, str]], bucket: list[tuple[str, str]]) -> dict[str, Json]:
    def as_policy(pairs: list[tuple[str, str]]) -> Json:
        roles: dict[str, list[str]] = {}
        for role, member in pairs:
            roles.setdefault(role, []).append(member)
        return {"bindings": [{"role": role, "members": members} for role, members in roles.items()]}

    return {NAMES.gsa_resource(): as_policy(gsa), NAMES.bucket_resource(): as_policy(bucket)}


L4 = WorkloadSpec("l4-spot", "ReadWrite")
L4_POOL = sorted(chaos.desired([chaos.workload_document(NAMES, "a", L4)], POLICY, NAMES).pools)[0]


def converged_world(**changes: Any) -> World:
    """One admitted L4 workload with a bucket, and everything it needs in place."""
    values: dict[str, Any] = {
        "workloads": [live("a", L4)],
        "policy": POLICY,
        "ray_objects": {"a": {"kind": "RayCluster"}},
        "children": [],
        "pools": [pool_json(L4_POOL, 4)],
        "iam_policies": policies([(WI, ksa("a"))], [(OBJECT_USER, gsa_member())]),
    }
    values.update(changes)
    return World(**values)


# --- plans ----------------------------------------------------------------------------------------------


def test_a_seed_always_gives_the_same_plan_and_seeds_differ() -> None:
    assert chaos.plan_trial(7) == chaos.plan_trial(7)
    assert len({chaos.plan_trial(seed) for seed in range(20)}) == 20


@pytest.mark.parametrize("seed", range(200))
def test_every_plan_is_a_valid_stream_that_ends_under_a_policy_admitting_the_bucket(seed: int) -> None:
    plan = chaos.plan_trial(seed)
    live: set[str] = set()
    allow_bucket = plan.initial_policy.allow_bucket
    assert plan.ops[0].kind == "create"
    for op in plan.ops:
        if op.kind == "create":
            assert op.name not in live
            assert op.spec is not None
            live.add(op.name)
        elif op.kind in ("update", "delete"):
            assert op.name in live  # never a step on a workload that is not there
            if op.kind == "delete":
                live.remove(op.name)
        else:
            assert op.policy is not None
            allow_bucket = op.policy.allow_bucket
        assert len(live) <= chaos.MAX_LIVE
        assert all(f.kind != "stockout" or (op.spec and chaos.SHAPES[op.spec.shape]) for f in op.faults)
    assert allow_bucket
    assert 1 <= len(plan.kills) <= 3


def test_the_plans_of_many_seeds_cover_every_operation_and_fault() -> None:
    plans = [chaos.plan_trial(seed) for seed in range(100)]
    kinds = Counter(op.kind for plan in plans for op in plan.ops)
    faults = Counter(fault.kind for plan in plans for op in plan.ops for fault in op.faults)
    assert set(kinds) == {"create", "update", "policy", "delete"}
    assert set(faults) == set(chaos.GCP_FAULT_KINDS)
    assert {kill.channel for plan in plans for kill in plan.kills} == {"kube", "gcp"}


def test_the_documents_are_what_the_operator_admits() -> None:
    want = chaos.desired([chaos.workload_document(NAMES, "a", L4)], POLICY, NAMES)
    assert want.admitted == {"a"}
    assert want.pools == {L4_POOL: 4}
    assert want.bindings == {(NAMES.gsa_resource(), WI, ksa("a")), (NAMES.bucket_resource(), OBJECT_USER, gsa_member())}
    narrowed = chaos.policy_document(NAMES, PolicySpec(allow_bucket=False))
    assert chaos.desired([chaos.workload_document(NAMES, "a", L4)], narrowed, NAMES).admitted == frozenset()


def test_two_workloads_of_one_shape_want_one_pool() -> None:
    docs = [chaos.workload_document(NAMES, name, L4) for name in ("a", "b")]
    assert list(chaos.desired(docs, POLICY, NAMES).pools) == [L4_POOL]


# --- convergence ----------------------------------------------------------------------------------------


def test_a_converged_world_passes() -> None:
    assert chaos.unconverged(converged_world(), NAMES) == []


def test_a_pool_left_running_with_error_by_a_stockout_counts_as_converged() -> None:
    assert chaos.unconverged(converged_world(pools=[pool_json(L4_POOL, 4, status="RUNNING_WITH_ERROR")]), NAMES) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"workloads": [live("a", L4, generation=2, observed=1)]}, "generation 2 not observed"),
        ({"workloads": [live("a", L4, admitted=False)]}, "PolicyAdmitted=False, the oracle says True"),
        ({"ray_objects": {}}, "a: no Ray object"),
        ({"pools": []}, "missing in GKE"),
        ({"pools": [pool_json(L4_POOL, 8)]}, "max nodes 8 in GKE, the policy says 4"),
        ({"pools": [pool_json(L4_POOL, 4, status="PROVISIONING")]}, "PROVISIONING in GKE"),
        ({"pools": [pool_json(L4_POOL, 4), pool_json("mlw-stale", 4)]}, "mlw-stale: in GKE, needed by no workload"),
        ({"iam_policies": policies([], [(OBJECT_USER, gsa_member())])}, f"{WI} for {ksa('a')} missing"),
        (
            {"iam_policies": policies([(WI, ksa("a")), (WI, ksa("gone"))], [(OBJECT_USER, gsa_member())])},
            f"{ksa('gone')} held, needed by no workload",
        ),
    ],
)
def test_each_way_of_not_converging_is_found(changes: dict[str, Any], expected: str) -> None:
    problems = chaos.unconverged(converged_world(**changes), NAMES)
    assert any(expected in problem for problem in problems), problems


def test_a_stalled_workload_has_not_converged() -> None:
    workload = live("a", L4)
    workload["status"]["conditions"][-1] = {"type": "Stalled", "status": "True", "reason": "Stockout", "message": "x"}
    assert chaos.unconverged(converged_world(workloads=[workload]), NAMES) == ["a: Stalled (Stockout: x)"]


def test_members_the_operator_does_not_manage_are_not_judged() -> None:
    others = policies([(WI, ksa("a")), (WI, "serviceAccount:my-proj.svc.id.goog[other-team/x]")],
                      [(OBJECT_USER, gsa_member()), ("roles/storage.admin", "user:alice@example.com")])  # fmt: skip
    assert chaos.unconverged(converged_world(iam_policies=others), NAMES) == []


# --- duplicates -----------------------------------------------------------------------------------------


def test_two_pools_of_one_shape_are_duplicates_and_two_shapes_are_not() -> None:
    assert chaos.duplicate_pools([pool_json("p1", 4), pool_json("p2", 4)]) == ["pools p1, p2 have one shape"]
    assert chaos.duplicate_pools([pool_json("p1", 4), pool_json("p2", 4, accelerator="nvidia-tesla-t4")]) == []


def test_a_pool_someone_else_made_is_no_duplicate_of_ours() -> None:
    theirs = pool_json("p2", 4)
    theirs["config"]["resourceLabels"] = {}
    assert chaos.duplicate_pools([pool_json("p1", 4), theirs]) == []


def test_a_role_listed_twice_or_a_member_twice_is_a_duplicate_binding() -> None:
    twice = {"bindings": [{"role": WI, "members": [ksa("a")]}, {"role": WI, "members": [ksa("b")]}]}
    assert chaos.duplicate_bindings("r", twice) == [f"r: role {WI} in 2 bindings"]
    repeated = {"bindings": [{"role": WI, "members": [ksa("a"), ksa("a")]}]}
    assert chaos.duplicate_bindings("r", repeated) == [f"r: {ksa('a')} 2 times in {WI}"]
    assert chaos.duplicate_bindings("r", {"bindings": [{"role": WI, "members": [ksa("a"), ksa("b")]}]}) == []


# --- orphans --------------------------------------------------------------------------------------------


def empty_world(**changes: Any) -> World:
    values: dict[str, Any] = {"workloads": [], "policy": POLICY, "ray_objects": {}, "children": [], "pools": [],
                              "iam_policies": policies([], [])}  # fmt: skip
    values.update(changes)
    return World(**values)


def test_nothing_left_is_no_orphan() -> None:
    foreign = policies([(WI, "serviceAccount:my-proj.svc.id.goog[other/x]")], [("roles/storage.admin", "user:a@b.c")])
    assert chaos.orphans(empty_world(iam_policies=foreign), NAMES) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"workloads": [live("a", L4)]}, "MLWorkload a still exists"),
        ({"children": [{"kind": "RayCluster", "metadata": {"name": "a"}}]}, "RayCluster a left behind"),
        ({"pools": [pool_json(L4_POOL, 4)]}, f"pool {L4_POOL} left in GKE"),
        ({"iam_policies": policies([(WI, ksa("a"))], [])}, f"{WI} for {ksa('a')} left behind"),
        ({"iam_policies": policies([], [("roles/storage.objectViewer", gsa_member())])}, "objectViewer"),
    ],
)
def test_each_kind_of_orphan_is_found(changes: dict[str, Any], expected: str) -> None:
    problems = chaos.orphans(empty_world(**changes), NAMES)
    assert any(expected in problem for problem in problems), problems


# --- revocations ----------------------------------------------------------------------------------------


def test_a_member_a_live_workload_relies_on_must_not_be_revoked() -> None:
    world = converged_world()
    claims = chaos.claimed(world, NAMES)
    before = world.iam_policies[NAMES.bucket_resource()]
    after: Json = {"bindings": []}
    assert chaos.wrongly_revoked(NAMES.bucket_resource(), before, after, claims) == [
        f"{NAMES.bucket_resource()}: {OBJECT_USER} for {gsa_member()} revoked while claimed"
    ]
    assert chaos.wrongly_revoked(NAMES.bucket_resource(), before, copy.deepcopy(before), claims) == []


@pytest.mark.parametrize(
    "world",
    [
        converged_world(
            workloads=[
                {
                    **live("a", L4),
                    "metadata": {**live("a", L4)["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"},
                }
            ]
        ),
        converged_world(ray_objects={}),  # no pod can run with the identity yet
        converged_world(workloads=[live("a", L4, generation=2, observed=1)]),  # the operator has not seen this spec
        converged_world(policy=chaos.policy_document(NAMES, PolicySpec(allow_bucket=False))),  # refused now
        converged_world(workloads=[live("a", WorkloadSpec("l4-spot", None))]),  # it dropped its bucket
    ],
    ids=["being-deleted", "no-ray-object", "unseen-generation", "refused-by-policy", "bucket-dropped"],
)
def test_a_member_no_live_workload_relies_on_may_be_revoked(world: World) -> None:
    claims = chaos.claimed(world, NAMES)
    before = {"bindings": [{"role": OBJECT_USER, "members": [gsa_member()]}]}
    assert chaos.wrongly_revoked(NAMES.bucket_resource(), before, {"bindings": []}, claims) == []


# --- figures --------------------------------------------------------------------------------------------


def test_the_summary_adds_up_the_trials() -> None:
    clean = TrialResult(1, operations=7, kills=2, gcp_faults=Counter({"429": 1}), kube_faults=Counter({500: 2}))
    broken = TrialResult(2, operations=5, kills=1, gcp_faults=Counter({"429": 1, "busy": 3}), orphans=["pool x left"])
    lines = chaos.summary([clean, broken], 1, 12.34)
    assert "trials 2, failed 1 [2]" in lines
    assert "operations 12, operator kills 3" in lines
    assert "GCP faults injected: 429: 2, busy: 3" in lines
    assert "Kubernetes faults injected: 500: 2" in lines
    assert any("orphans 1," in line for line in lines)
    assert lines[-1] == "wall time 12.3 s"
    assert broken.violations == ["orphan: pool x left"]
    assert clean.violations == []
