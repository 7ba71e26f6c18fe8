"""The chaos suite's pure half: seeded plans of operations and faults, the oracle, and the invariant checks.

A trial is one seed. `plan_trial(seed)` turns it into a stream of operations on one namespace (creates,
updates, policy changes, deletes), the GCP faults injected before each operation, the rate of Kubernetes
API faults, and the points at which the operator is killed (its n-th write since it started, to GKE, IAM
or Kubernetes). The same seed always gives the same plan; only the operator's timing differs between runs.

What the world should look like is computed by the oracle (`desired`): the operator's own pure admission
and planning code (`admit`, `build_gcp_plan`, what `mlworkload plan` prints), applied to the workloads and
the policy as the test wrote them. The checks compare that with the fakes' own state (GKE node pools, IAM
and bucket policies, the emulator's objects), never with what the operator says in status alone.

Nothing here talks to a server: the trials (tests/integration/test_chaos.py) take snapshots
and feed them in, and tests/unit/test_chaos_support.py feeds in violating states to show each check fails.
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mlworkload.api.load import parse_policy, parse_workload
from mlworkload.builders import build_gcp_plan
from mlworkload.gcp.plan import NodePoolPlan
from mlworkload.policy import admit
from mlworkload.problems import Refused

Json = dict[str, Any]

PROJECT: Final = "my-proj"
LOCATION: Final = "us-central1"
MLW: Final = "mlworkload.io/v1alpha1"
RAY_VERSION: Final = "2.41.0"
WI_USER: Final = "roles/iam.workloadIdentityUser"
MANAGED_LABEL: Final = ("managed-by", "mlworkload")  # the GCP label on every pool the operator creates
WORKLOAD_LABEL: Final = "mlworkload.io/workload"  # on every Kubernetes object the operator creates
TRIAL_LABEL: Final = "mlworkload.io/chaos-trial"  # on the trial's namespace; its policy selects it

# Worker-group shapes a workload can take: two GPU pools of different shapes, and none (no pool at all).
SHAPES: Final[dict[str, Json | None]] = {
    "l4-spot": {"accelerator": {"type": "nvidia-l4", "count": 1}, "capacity": "Spot"},
    "t4x2": {"accelerator": {"type": "nvidia-tesla-t4", "count": 2}, "capacity": "OnDemand"},
    "none": None,
}
ACCESSES: Final = (None, "ReadWrite", "ReadOnly")  # the workload's bucket: none, or the trial bucket with a role
MAX_NODES: Final = (2, 4, 8)  # the policy's nodePools.maxNodesPerPool
MAX_LIVE: Final = 4  # workloads alive at once in one trial

# GCP faults by kind. `rpc` faults answer one call with an error; busy starts an operation GKE itself runs on
# the cluster (the operator's next pool operation is refused until it ends); stockout makes the next create
# of a pool end RUNNING_WITH_ERROR.
GcpFaultKind = Literal["429", "503", "busy", "stockout"]
GCP_FAULT_KINDS: Final[tuple[GcpFaultKind, ...]] = ("429", "503", "busy", "stockout")
FAULTABLE_RPCS: Final[tuple[tuple[str, str], ...]] = (
    ("container", "CreateNodePool"),
    ("container", "DeleteNodePool"),
    ("container", "UpdateNodePool"),
    ("container", "SetNodePoolAutoscaling"),
    ("container", "ListNodePools"),
    ("container", "GetOperation"),
    ("container", "GetNodePool"),
    ("iam", "GetIamPolicy"),
    ("iam", "SetIamPolicy"),
    ("storage", "GetIamPolicy"),
    ("storage", "SetIamPolicy"),
)
KUBE_FAULT_STATUSES: Final = (409, 500)
KillChannel = Literal["kube", "gcp"]
CHANNELS: Final[tuple[KillChannel, ...]] = ("kube", "gcp")


# --- names --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialNames:
    """Everything one trial owns, disjoint from every other trial's: they share the emulator and the fake."""

    seed: int

    @property
    def tag(self) -> str:
        return f"chaos-{self.seed}"

    @property
    def namespace(self) -> str:
        return self.tag

    @property
    def policy(self) -> str:
        return self.tag

    @property
    def cluster(self) -> str:
        return self.tag

    @property
    def cluster_path(self) -> str:
        return f"projects/{PROJECT}/locations/{LOCATION}/clusters/{self.cluster}"

    @property
    def gsa(self) -> str:
        return f"ray-chaos-{self.seed % 10**8}@{PROJECT}.iam.gserviceaccount.com"

    @property
    def bucket(self) -> str:
        return f"ckpt-{self.tag}"

    @property
    def installation(self) -> str:
        return self.tag

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {TRIAL_LABEL: str(self.seed), "kubernetes.io/metadata.name": self.namespace}

    def gsa_resource(self) -> str:
        return f"projects/{PROJECT}/serviceAccounts/{self.gsa}"

    def bucket_resource(self) -> str:
        return f"projects/_/buckets/{self.bucket}"


# --- the plan -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadSpec:
    """What the test controls of one workload."""

    shape: str
    access: str | None  # the trial bucket's access, or no bucket
    max_replicas: int = 2


@dataclass(frozen=True)
class PolicySpec:
    max_nodes: int = 8
    allow_bucket: bool = True


@dataclass(frozen=True)
class GcpFault:
    kind: GcpFaultKind
    service: str = ""  # for 429/503: which RPC
    rpc: str = ""
    times: int = 1


@dataclass(frozen=True)
class Op:
    """One step of the stream. `kind` create/update: `spec` is the workload's new spec; policy: `policy`."""

    kind: Literal["create", "update", "policy", "delete"]
    name: str = ""
    spec: WorkloadSpec | None = None
    policy: PolicySpec | None = None
    faults: tuple[GcpFault, ...] = ()
    progress: int = 0  # operator writes to let happen before the next step (0: none, a burst)

    def describe(self) -> str:
        what = {"create": f"create {self.name} {self.spec}", "update": f"update {self.name} {self.spec}",
                "policy": f"policy {self.policy}", "delete": f"delete {self.name}"}[self.kind]  # fmt: skip
        faults = ", ".join(f"{f.kind} {f.service}.{f.rpc}".rstrip(". ") for f in self.faults)
        return what + (f" [faults: {faults}]" if faults else "")


@dataclass(frozen=True)
class KillPoint:
    """Kill the operator (SIGKILL) at its `nth` write on `channel` since it (re)started; `lands`: the write
    still reaches the server (the process dies before it hears the answer) or is lost with the process."""

    channel: KillChannel
    nth: int
    lands: bool


@dataclass(frozen=True)
class TrialPlan:
    seed: int
    ops: tuple[Op, ...]
    kills: tuple[KillPoint, ...]
    kube_fault_rate: float
    initial_policy: PolicySpec = PolicySpec()

    @property
    def names(self) -> TrialNames:
        return TrialNames(self.seed)


def _gcp_fault(rng: random.Random, creates_a_pool: bool) -> GcpFault:
    kinds = [kind for kind in GCP_FAULT_KINDS if kind != "stockout" or creates_a_pool]
    kind = rng.choice(kinds)
    if kind in ("429", "503"):
        service, rpc = rng.choice(FAULTABLE_RPCS)
        return GcpFault(kind, service, rpc, times=rng.randint(1, 2))
    return GcpFault(kind)


def plan_trial(seed: int) -> TrialPlan:
    """The trial of `seed`: 6 to 9 operations, 1 to 3 kills, GCP faults on about half the operations.

    The stream ends with the policy allowing the bucket again (a refused workload keeps its pools while it is
    refused, so convergence is judged under a policy that admits everything the stream made)."""
    rng = random.Random(seed)
    ops: list[Op] = []
    live: dict[str, WorkloadSpec] = {}
    policy = PolicySpec()
    made = 0
    for step in range(rng.randint(6, 9)):
        choices = ["create"] if step == 0 else []
        if not choices:
            choices = (["create"] * 3 if len(live) < MAX_LIVE else []) + (
                ["update"] * 3 + ["delete"] * 2 if live else []
            )
            choices += ["policy"] * 2
        kind = rng.choice(choices)
        name, spec, new_policy = "", None, None
        if kind == "create":
            name, made = f"w{made}", made + 1
            spec = WorkloadSpec(rng.choice(list(SHAPES)), rng.choice(ACCESSES), rng.randint(1, 3))
            live[name] = spec
        elif kind == "update":
            name = rng.choice(sorted(live))
            old = live[name]
            change = rng.choice(["shape", "access", "replicas"])
            spec = WorkloadSpec(
                rng.choice([s for s in SHAPES if s != old.shape]) if change == "shape" else old.shape,
                rng.choice([a for a in ACCESSES if a != old.access]) if change == "access" else old.access,
                rng.choice([r for r in (1, 2, 3) if r != old.max_replicas])
                if change == "replicas"
                else old.max_replicas,
            )
            live[name] = spec
        elif kind == "delete":
            name = rng.choice(sorted(live))
            del live[name]
        else:
            if rng.random() < 0.5:
                new_policy = PolicySpec(
                    rng.choice([m for m in MAX_NODES if m != policy.max_nodes]), policy.allow_bucket
                )
            else:
                new_policy = PolicySpec(policy.max_nodes, not policy.allow_bucket)
            policy = new_policy
        creates_a_pool = spec is not None and SHAPES[spec.shape] is not None
        faults = (_gcp_fault(rng, creates_a_pool),) if rng.random() < 0.6 else ()
        ops.append(Op(kind, name, spec, new_policy, faults, rng.choice([0, 0, 2, 4, 8])))  # type: ignore[arg-type]
    if not policy.allow_bucket:
        ops.append(Op("policy", policy=PolicySpec(policy.max_nodes, True)))
    kills = tuple(
        KillPoint(rng.choice(CHANNELS), rng.randint(1, 10), rng.random() < 0.5) for _ in range(rng.choice([1, 2, 2, 3]))
    )
    return TrialPlan(seed, tuple(ops), kills, rng.choice([0.02, 0.05, 0.1]))


# --- documents ----------------------------------------------------------------------------------------


def workload_document(names: TrialNames, name: str, spec: WorkloadSpec) -> Json:
    document: Json = {
        "apiVersion": MLW,
        "kind": "MLWorkload",
        "metadata": {"name": name, "namespace": names.namespace, "labels": {"cost-center": "chaos"}},
        "spec": {"type": "Cluster", "ray": {"version": RAY_VERSION}},
    }
    group = SHAPES[spec.shape]
    if group is not None:
        document["spec"]["workerGroups"] = [
            {"name": "gpu", "replicas": 1, "minReplicas": 0, "maxReplicas": spec.max_replicas, **copy.deepcopy(group)}
        ]
    if spec.access is not None:
        document["spec"]["storage"] = {"bucket": f"gs://{names.bucket}", "access": spec.access}
    return document


def policy_document(names: TrialNames, spec: PolicySpec) -> Json:
    return {
        "apiVersion": MLW,
        "kind": "MLWorkloadPolicy",
        "metadata": {"name": names.policy},
        "spec": {
            "namespaceSelector": {"matchLabels": {TRIAL_LABEL: str(names.seed)}},
            "gcp": {"project": PROJECT, "location": LOCATION, "cluster": names.cluster},
            "identity": {
                "gcpServiceAccount": names.gsa,
                "allowedBuckets": [f"gs://{names.bucket}"] if spec.allow_bucket else [],
            },
            "nodePools": {"maxNodesPerPool": spec.max_nodes},
        },
    }


# --- the oracle ---------------------------------------------------------------------------------------

Binding = tuple[str, str, str]  # resource, role, member


@dataclass(frozen=True)
class Desired:
    """What the operator should have made for a set of workloads under a policy."""

    admitted: frozenset[str]
    pools: Mapping[str, int]  # pool name -> max nodes (the strictest of its users)
    pools_of: Mapping[str, frozenset[str]]  # workload -> its pools
    bindings_of: Mapping[str, frozenset[Binding]]  # workload -> its IAM bindings

    @property
    def bindings(self) -> frozenset[Binding]:
        return frozenset(b for wanted in self.bindings_of.values() for b in wanted)


def spec_document(obj: Mapping[str, Any]) -> Json:
    """An object from the API server reduced to what admission reads (metadata a user writes, and spec)."""
    meta = obj.get("metadata", {})
    metadata = {key: meta[key] for key in ("name", "namespace", "labels", "annotations") if key in meta}
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": metadata,
            "spec": copy.deepcopy(obj.get("spec", {}))}  # fmt: skip


def desired(workloads: Iterable[Mapping[str, Any]], policy: Mapping[str, Any], names: TrialNames) -> Desired:
    """The pools and bindings of every admitted workload (as `mlworkload plan` computes them)."""
    parsed_policy = parse_policy(spec_document(policy))
    admitted: set[str] = set()
    plans: dict[str, list[NodePoolPlan]] = {}
    bindings_of: dict[str, frozenset[Binding]] = {}
    for obj in workloads:
        document = spec_document(obj)
        name = str(document["metadata"]["name"])
        try:
            verdict = admit(parse_workload(document), [parsed_policy], names.namespace_labels)
        except Refused:
            continue
        if not verdict.allowed:
            continue
        plan = build_gcp_plan(verdict.resolved)
        admitted.add(name)
        plans[name] = plan.node_pools
        bindings_of[name] = frozenset((b.resource, b.role, b.member) for b in plan.iam_bindings)
    pools: dict[str, int] = {}
    for pool_plans in plans.values():
        for pool in pool_plans:
            pools[pool.name] = min(pools.get(pool.name, pool.max_nodes), pool.max_nodes)
    return Desired(
        frozenset(admitted),
        pools,
        {name: frozenset(p.name for p in pool_plans) for name, pool_plans in plans.items()},
        bindings_of,
    )


# --- snapshots of the world ---------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """One trial's part of the fakes and the emulator, read at one moment."""

    workloads: Sequence[Json]  # MLWorkload objects in the namespace (status included)
    policy: Json
    ray_objects: Mapping[str, Json]  # RayCluster/RayJob/RayService by name
    children: Sequence[Json]  # every namespaced object carrying the operator's workload label
    pools: Sequence[Json]  # GKE node pools of the trial's cluster (REST JSON)
    iam_policies: Mapping[str, Json]  # resource (GSA, bucket) -> its IAM policy


def conditions(obj: Mapping[str, Any]) -> dict[str, Json]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def policy_bindings(policy: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(role, member) pairs of an IAM policy (either API's JSON)."""
    return {(b["role"], m) for b in policy.get("bindings", []) for m in b.get("members", [])}


def _managed(pool: Mapping[str, Any]) -> bool:
    labels = pool.get("config", {}).get("resourceLabels", {})
    return bool(labels.get(MANAGED_LABEL[0]) == MANAGED_LABEL[1])


def _max_nodes(pool: Mapping[str, Any]) -> int | None:
    autoscaling = pool.get("autoscaling", {})
    value = autoscaling.get("totalMaxNodeCount", autoscaling.get("maxNodeCount"))
    return int(value) if value is not None else None


def _ours(names: TrialNames, binding: tuple[str, str], resource: str) -> bool:
    """A member the operator can have added in this trial (the trial's KSAs, or its GSA on the bucket)."""
    role, member = binding
    if resource == names.gsa_resource():
        return role == WI_USER and f"[{names.namespace}/" in member
    return member == f"serviceAccount:{names.gsa}" and role.startswith("roles/storage.object")


# --- the invariants -----------------------------------------------------------------------------------


def unconverged(world: World, names: TrialNames) -> list[str]:
    """Why the trial has not converged; [] when it has.

    Converged: every workload's current generation was reconciled and its admission matches the oracle's;
    an admitted one has its Ray object, ready pools and identity, and is not stalled; GKE holds exactly the
    pools the admitted workloads need (RUNNING, or RUNNING_WITH_ERROR after a stockout, with the strictest
    limit), and the IAM policies hold exactly the members they need of those the operator manages."""
    live = [w for w in world.workloads if not w["metadata"].get("deletionTimestamp")]
    want = desired(live, world.policy, names)
    problems: list[str] = []
    for obj in world.workloads:
        name = obj["metadata"]["name"]
        if obj["metadata"].get("deletionTimestamp"):
            problems.append(f"{name}: still being deleted")
            continue
        status, conds = obj.get("status") or {}, conditions(obj)
        if status.get("observedGeneration") != obj["metadata"].get("generation"):
            problems.append(f"{name}: generation {obj['metadata'].get('generation')} not observed "
                            f"(observed {status.get('observedGeneration')})")  # fmt: skip
            continue
        admitted = conds.get("PolicyAdmitted", {}).get("status") == "True"
        if admitted != (name in want.admitted):
            problems.append(f"{name}: PolicyAdmitted={admitted}, the oracle says {name in want.admitted}")
            continue
        if not admitted:
            continue
        if name not in world.ray_objects:
            problems.append(f"{name}: no Ray object")
        for kind in ("NodePoolsReady", "IdentityReady"):
            if conds.get(kind, {}).get("status") != "True":
                problems.append(f"{name}: {kind} is {conds.get(kind)}")
        if conds.get("Stalled", {}).get("status") == "True":
            problems.append(f"{name}: Stalled ({conds['Stalled'].get('reason')}: {conds['Stalled'].get('message')})")
    gke = {pool["name"]: pool for pool in world.pools}
    for pool, max_nodes in sorted(want.pools.items()):
        found = gke.get(pool)
        if found is None:
            problems.append(f"pool {pool}: missing in GKE")
        elif found.get("status") not in ("RUNNING", "RUNNING_WITH_ERROR"):
            problems.append(f"pool {pool}: {found.get('status')} in GKE")
        elif _max_nodes(found) != max_nodes:
            problems.append(f"pool {pool}: max nodes {_max_nodes(found)} in GKE, the policy says {max_nodes}")
    problems += [f"pool {name}: in GKE, needed by no workload" for name in sorted(set(gke) - set(want.pools))]
    for resource, policy in sorted(world.iam_policies.items()):
        held = {b for b in policy_bindings(policy) if _ours(names, b, resource)}
        needed = {(role, member) for res, role, member in want.bindings if res == resource}
        problems += [f"{resource}: {role} for {member} missing" for role, member in sorted(needed - held)]
        problems += [f"{resource}: {role} for {member} held, needed by no workload"
                     for role, member in sorted(held - needed)]  # fmt: skip
    return problems


def shape_key(pool: Mapping[str, Any]) -> tuple[Any, ...]:
    """What makes two pools interchangeable: machine, accelerators, spot, and the nodes' labels and taints."""
    config = pool.get("config", {})
    accelerators = tuple(sorted((a.get("acceleratorType", ""), str(a.get("acceleratorCount", "")))
                                for a in config.get("accelerators", [])))  # fmt: skip
    taints = tuple(
        sorted((t.get("key", ""), t.get("value", ""), str(t.get("effect", ""))) for t in config.get("taints", []))
    )
    labels = tuple(sorted(config.get("labels", {}).items()))
    return config.get("machineType"), accelerators, bool(config.get("spot")), labels, taints


def duplicate_pools(pools: Sequence[Json]) -> list[str]:
    """Operator-managed pools of one shape under two names (the fake refuses two pools of one name)."""
    by_shape: dict[tuple[Any, ...], list[str]] = {}
    for pool in pools:
        if _managed(pool):
            by_shape.setdefault(shape_key(pool), []).append(pool["name"])
    return [f"pools {', '.join(sorted(found))} have one shape" for found in by_shape.values() if len(found) > 1]


def duplicate_bindings(resource: str, policy: Mapping[str, Any]) -> list[str]:
    """A role listed twice without a condition, or a member twice in one role, in one IAM policy."""
    problems = []
    roles = Counter(b["role"] for b in policy.get("bindings", []) if "condition" not in b)
    problems += [f"{resource}: role {role} in {count} bindings" for role, count in sorted(roles.items()) if count > 1]
    for binding in policy.get("bindings", []):
        members = Counter(binding.get("members", []))
        problems += [f"{resource}: {member} {count} times in {binding['role']}"
                     for member, count in sorted(members.items()) if count > 1]  # fmt: skip
    return problems


def orphans(world: World, names: TrialNames) -> list[str]:
    """What is left after every workload was deleted: workloads, their objects, pools, and members the
    operator added (the trial's KSAs on its GSA, its GSA on its bucket)."""
    problems = [f"MLWorkload {w['metadata']['name']} still exists" for w in world.workloads]
    problems += [f"{o['kind']} {o['metadata']['name']} left behind" for o in world.children]
    problems += [f"pool {p['name']} left in GKE ({p.get('status')})" for p in world.pools if _managed(p)]
    for resource, policy in sorted(world.iam_policies.items()):
        left = [
            (role, member) for role, member in sorted(policy_bindings(policy)) if _ours(names, (role, member), resource)
        ]
        problems += [f"{resource}: {role} for {member} left behind" for role, member in left]
    return problems


def claimed(world: World, names: TrialNames) -> set[Binding]:
    """The members live workloads rely on right now: the oracle's bindings of each workload that is not being
    deleted, is admitted (by the oracle, and by the operator for its current generation, so the operator has
    seen what it wants) and has its Ray object (its pods may run with that identity)."""
    live = [w for w in world.workloads if not w["metadata"].get("deletionTimestamp")]
    want = desired(live, world.policy, names)
    result: set[Binding] = set()
    for obj in live:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        seen = status.get("observedGeneration") == obj["metadata"].get("generation")
        admitted = conditions(obj).get("PolicyAdmitted", {}).get("status") == "True"
        if seen and admitted and name in want.admitted and name in world.ray_objects:
            result |= want.bindings_of.get(name, frozenset())
    return result


def wrongly_revoked(
    resource: str, before: Mapping[str, Any], after: Mapping[str, Any], claims: set[Binding]
) -> list[str]:
    """Members a SetIamPolicy from `before` to `after` removes while a live workload claims them."""
    removed = policy_bindings(before) - policy_bindings(after)
    return [f"{resource}: {role} for {member} revoked while claimed"
            for role, member in sorted(removed) if (resource, role, member) in claims]  # fmt: skip


# --- figures ------------------------------------------------------------------------------------------


@dataclass
class TrialResult:
    seed: int
    operations: int = 0
    kills: int = 0
    restarts: int = 0
    gcp_faults: Counter[str] = field(default_factory=Counter)
    kube_faults: Counter[int] = field(default_factory=Counter)
    unconverged: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    wrongly_revoked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the operator's exit, the fakes' own errors
    seconds: float = 0.0
    log: str = ""

    @property
    def violations(self) -> list[str]:
        return [*(f"unconverged: {p}" for p in self.unconverged), *(f"duplicate: {p}" for p in self.duplicates),
                *(f"orphan: {p}" for p in self.orphans), *(f"revoked: {p}" for p in self.wrongly_revoked),
                *self.errors]  # fmt: skip


def summary(results: Sequence[TrialResult], seed: int, wall_seconds: float) -> list[str]:
    """The closing figures of a run, one line each."""
    gcp: Counter[str] = Counter()
    kube: Counter[int] = Counter()
    for result in results:
        gcp.update(result.gcp_faults)
        kube.update(result.kube_faults)
    failed = [r.seed for r in results if r.violations]

    def counted(counter: Mapping[Any, int]) -> str:
        return ", ".join(f"{key}: {value}" for key, value in sorted(counter.items(), key=str)) or "none"

    return [
        f"seed {seed} (replay one trial: MLW_CHAOS_SEED=<trial seed> MLW_CHAOS_TRIALS=1)",
        f"trials {len(results)}, failed {len(failed)}{' ' + str(failed) if failed else ''}",
        f"operations {sum(r.operations for r in results)}, operator kills {sum(r.kills for r in results)}",
        f"GCP faults injected: {counted(gcp)}",
        f"Kubernetes faults injected: {counted(kube)}",
        f"duplicate pools or bindings {sum(len(r.duplicates) for r in results)}, "
        f"orphans {sum(len(r.orphans) for r in results)}, "
        f"members revoked while claimed {sum(len(r.wrongly_revoked) for r in results)}, "
        f"unconverged {sum(1 for r in results if r.unconverged)}",
        f"wall time {wall_seconds:.1f} s",
    ]
