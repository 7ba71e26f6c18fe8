"""The operator's cluster view (controller/view.py): what one admission costs, counted, never timed, and
that it judges exactly as the plain view built from every workload does."""

import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from kopf._cogs.structs.references import NamespaceName
from kopf._core.engines.indexing import Index

import mlworkload.controller.view as view_module
import mlworkload.policy.admission as admission_module
import mlworkload.policy.selection as selection_module
from mlworkload.controller.view import NamespaceGpus, WorkloadKey, governance, policy_entry, readmission_scope
from mlworkload.policy import BrokenPolicy, ClusterView, WorkloadGpus, admit_in
from tests.support.documents import PolicyDoc, WorkloadDoc, permissive_policy, workload
from tests.support.operator import handlers_module


class CountingIndex(Index[Any, Any]):
    """kopf's own index, counting full scans (iterations over its keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.scans = 0

    def __iter__(self) -> Iterator[Any]:
        self.scans += 1
        return super().__iter__()


class Fleet:
    """kopf's three indexes, filled by the operator's indexing functions the way kopf fills them: the
    function's value is stored under the object's key; a DELETED event discards it without a call."""

    def __init__(self) -> None:
        self.policies = CountingIndex()
        self.namespaces = CountingIndex()
        self.gpus = CountingIndex()
        self.indexes = {"policy_index": self.policies, "namespace_index": self.namespaces, "gpu_index": self.gpus}

    async def namespace(self, name: str, **labels: str) -> None:
        value = await handlers_module().namespace_index(name=name, labels=labels, **self.indexes)
        self.namespaces._replace((None, name, name), value)

    async def policy(self, doc: PolicyDoc, version: str = "1") -> None:
        name = doc.doc["metadata"]["name"]
        body = {**doc.doc, "metadata": {"name": name, "uid": f"uid-{name}", "resourceVersion": version}}
        value = await handlers_module().policy_index(name=name, body=body, **self.indexes)
        self.policies._replace((None, name, f"uid-{name}"), value)

    async def workload(self, doc: WorkloadDoc, status: Mapping[str, Any] | None = None) -> None:
        meta = doc.doc["metadata"]
        body = {**doc.doc, "status": dict(status or {})}
        value = await handlers_module().gpu_index(
            namespace=meta["namespace"], name=meta["name"], body=body, **self.indexes
        )
        self.gpus._replace((meta["namespace"], meta["name"], "uid"), value)

    def delete(self, namespace: str, name: str) -> None:
        self.gpus._discard((NamespaceName(namespace), name, "uid"))

    def view(self) -> ClusterView:
        built: ClusterView = handlers_module().cluster_view(self.indexes)
        return built

    def plain_view(self) -> ClusterView:
        """The view as it was built before: every policy parsed, every workload listed in `usage`."""
        policies = [entry for _, entry in (next(iter(store)) for store in self.policies.values())]
        return ClusterView(
            policies=[p for p in policies if not isinstance(p, BrokenPolicy)],
            namespace_labels={name: next(iter(store)) for name, store in self.namespaces.items()},
            default_labels={},
            usage=[WorkloadGpus(ns, name, next(iter(store))) for (ns, name), store in self.gpus.items()],
            broken=[p for p in policies if isinstance(p, BrokenPolicy)],
        )


def gpu_workload(name: str, namespace: str, gpus: int) -> WorkloadDoc:
    """A workload holding `gpus` GPUs at max scale (1 per replica of an nvidia-l4 x1 group)."""
    return workload(name, namespace).gpu_group(count=1, replicas=0, maxReplicas=gpus)


class Calls:
    """Counts calls of module-level functions, replacing them where the code under test looks them up."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts: Counter[str] = Counter()
        self._monkeypatch = monkeypatch

    def count(self, module: Any, name: str, label: str | None = None) -> None:
        original: Callable[..., Any] = getattr(module, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.counts[label or name] += 1
            return original(*args, **kwargs)

        self._monkeypatch.setattr(module, name, counted)


TEAM_QUOTA = permissive_policy("team-a").set("priority", 10).set("quota.maxGPUs", 100_000)
TEAM_QUOTA = TEAM_QUOTA.set("namespaceSelector", {"matchLabels": {"team": "a"}})
CATCH_ALL = permissive_policy("catch-all").set("quota.maxGPUs", 100_000)
OTHER_NAMESPACES = [f"ns-{number}" for number in range(9)]
NAMESPACES_WITH_GPUS = ["team-a2", *OTHER_NAMESPACES]  # where the workloads elsewhere go, in turn


async def admission_costs(monkeypatch: pytest.MonkeyPatch, workloads_elsewhere: int) -> tuple[Counter[str], ...]:
    """What judging one workload costs, cold (first admission after the fleet was listed) and warm (the
    next one), with `workloads_elsewhere` GPU workloads in other namespaces, some under the same policy."""
    fleet = Fleet()
    await fleet.policy(TEAM_QUOTA)
    await fleet.policy(CATCH_ALL)
    await fleet.namespace("team-a", team="a")
    await fleet.namespace("team-a2", team="a")
    for namespace in OTHER_NAMESPACES:
        await fleet.namespace(namespace)
    for number in range(workloads_elsewhere):
        namespace = NAMESPACES_WITH_GPUS[number % len(NAMESPACES_WITH_GPUS)]
        await fleet.workload(gpu_workload(f"w{number}", namespace, gpus=2))
    await fleet.workload(gpu_workload("mine", "team-a", gpus=4))
    calls = Calls(monkeypatch)
    calls.count(selection_module, "select_policy")
    calls.count(admission_module, "select_policy")
    calls.count(view_module, "parse_policy")
    calls.count(admission_module, "gpus_in_use")
    costs = []
    for _ in ("cold", "warm"):
        calls.counts.clear()
        for index in (fleet.policies, fleet.namespaces, fleet.gpus):
            index.scans = 0
        verdict = admit_in(fleet.view(), gpu_workload("mine", "team-a", gpus=8).obj())
        assert verdict.allowed, verdict.problems
        scans = {"policy index scans": fleet.policies.scans, "namespace index scans": fleet.namespaces.scans}
        costs.append(calls.counts + Counter({**scans, "gpu index scans": fleet.gpus.scans}))
    return tuple(costs)


async def test_one_admission_costs_the_same_whatever_the_number_of_workloads_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cold_10, warm_10 = await admission_costs(monkeypatch, 10)
    monkeypatch.undo()
    cold_1000, warm_1000 = await admission_costs(monkeypatch, 1000)
    assert cold_1000 == cold_10
    assert warm_1000 == warm_10
    # Cold: one selection per namespace that matters (the workload's, and the 10 others holding GPUs);
    # warm: none at all, nothing parsed, and no index walked but the policy index (one entry per policy).
    assert cold_1000["select_policy"] == 1 + len(NAMESPACES_WITH_GPUS)
    assert warm_1000 == Counter({"gpus_in_use": 1, "policy index scans": 1})


async def test_no_usage_is_summed_when_the_governing_policy_has_no_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = Fleet()
    await fleet.policy(permissive_policy("no-quota"))
    await fleet.namespace("team-a")
    await fleet.workload(gpu_workload("other", "team-a", gpus=4))
    calls = Calls(monkeypatch)
    calls.count(NamespaceGpus, "by_namespace")
    assert admit_in(fleet.view(), gpu_workload("mine", "team-a", gpus=8).obj()).allowed
    assert calls.counts["by_namespace"] == 0
    await fleet.policy(permissive_policy("no-quota").set("quota.maxGPUs", 10), version="2")
    verdict = admit_in(fleet.view(), gpu_workload("mine", "team-a", gpus=8).obj())
    assert calls.counts["by_namespace"] == 1
    assert [str(problem) for problem in verdict.problems] == [
        "spec.workerGroups: the workload needs 8 GPUs at max scale and the namespaces governed by policy no-quota"
        " already use 4 of their quota of 10 (quota.maxGPUs)"
    ]


async def test_the_sums_follow_creates_updates_refusals_and_deletions_and_judge_as_the_plain_view() -> None:
    rng = random.Random(20261212)
    fleet = Fleet()
    await fleet.policy(permissive_policy("team").set("priority", 5).set("quota.maxGPUs", 40)
                       .set("namespaceSelector", {"matchLabels": {"team": "a"}}))  # fmt: skip
    await fleet.policy(permissive_policy("rest").set("quota.maxGPUs", 30))
    namespaces = ["a-1", "a-2", "b-1", "unlabelled"]
    await fleet.namespace("a-1", team="a")
    await fleet.namespace("a-2", team="a")
    await fleet.namespace("b-1", team="b")  # "unlabelled" is in no index: default labels
    live: set[tuple[str, str]] = set()
    refused_status = {"conditions": [{"type": "PolicyAdmitted", "status": "False"}]}
    verdicts: Counter[bool] = Counter()
    for step in range(300):
        namespace, name = rng.choice(namespaces), f"w{rng.randrange(12)}"
        action = rng.random()
        if action < 0.2 and (namespace, name) in live:
            fleet.delete(namespace, name)
            live.discard((namespace, name))
        else:
            status = refused_status if action > 0.9 else None
            await fleet.workload(gpu_workload(name, namespace, gpus=rng.choice([1, 2, 4])), status)
            live.add((namespace, name))
        candidate = gpu_workload(f"w{rng.randrange(14)}", rng.choice(namespaces), gpus=rng.choice([1, 4, 8])).obj()
        indexed, plain = fleet.view(), fleet.plain_view()
        sums = Counter[str]()
        for (ns, _), store in fleet.gpus.items():
            sums[ns] += next(iter(store))
        assert dict(indexed.gpu_totals().by_namespace()) == {ns: gpus for ns, gpus in sums.items() if gpus}, step
        judged, expected = admit_in(indexed, candidate), admit_in(plain, candidate)
        assert [str(p) for p in judged.problems] == [str(p) for p in expected.problems], step
        assert judged.policy_name == expected.policy_name
        verdicts[judged.allowed] += 1
    assert verdicts[True]  # both answers were compared, not only admissions
    assert verdicts[False]


async def test_a_new_policy_version_or_new_namespace_labels_choose_again(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = Fleet()
    await fleet.policy(permissive_policy("catch-all"))
    await fleet.policy(permissive_policy("team").set("priority", 5).set("namespaceSelector",
                                                                         {"matchLabels": {"team": "a"}}))  # fmt: skip
    await fleet.namespace("ns")
    calls = Calls(monkeypatch)
    calls.count(view_module, "parse_policy")
    mine = workload("mine", "ns").obj()
    assert admit_in(fleet.view(), mine).policy_name == "catch-all"
    await fleet.namespace("ns", team="a")
    assert admit_in(fleet.view(), mine).policy_name == "team"
    await fleet.policy(permissive_policy("team").set("priority", 5))  # the same version: not even parsed again
    assert calls.counts["parse_policy"] == 0
    assert admit_in(fleet.view(), mine).policy_name == "team"
    await fleet.policy(permissive_policy("team").set("namespaceSelector", {"matchLabels": {"team": "z"}}), "2")
    assert calls.counts["parse_policy"] == 1
    assert admit_in(fleet.view(), mine).policy_name == "catch-all"


def test_a_policy_is_parsed_once_per_version_and_an_unreadable_one_is_kept_as_broken() -> None:
    body = {**permissive_policy("p").doc, "metadata": {"name": "p", "uid": "u", "resourceVersion": "7"}}
    first = policy_entry("p", body)
    assert policy_entry("p", body, [first]) is first
    assert policy_entry("p", {**body, "metadata": {"name": "p", "uid": "u", "resourceVersion": "8"}}, [first]) != first
    broken = policy_entry("p", {**body, "spec": {"priority": 3, "ray": {"allowedVersions": 5}}})[1]
    assert isinstance(broken, BrokenPolicy)
    assert (broken.name, broken.priority) == ("p", 3)


def test_a_failure_other_than_a_refusal_still_leaves_the_policy_in_the_view(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(document: Any) -> Any:
        raise RecursionError("too deep")

    monkeypatch.setattr(view_module, "parse_policy", explode)
    _, broken = policy_entry("p", permissive_policy("p").doc)
    assert broken == BrokenPolicy("p", "RecursionError: too deep", selector=None)


class Stores(dict[WorkloadKey, list[int]]):
    """kopf's GPU index as `NamespaceGpus.sync` reads it: key -> the values of the objects under it."""


def test_a_key_read_before_kopf_stored_it_is_taken_back_and_a_deletion_is_still_seen() -> None:
    """The webhook's thread may read between the indexing function and kopf storing its value: the key
    looks deleted and is dropped; later, even when a deletion makes the counts agree again, the next
    read compares the keys in full instead of trusting the counts."""
    gpus, index = NamespaceGpus(), Stores()
    for key, value in ((("a", "x"), 2), (("a", "y"), 3)):
        gpus.put(key, value)
        index[key] = [value]
    gpus.sync(index)
    assert gpus.full_syncs == 0  # counts agree: nothing walked
    gpus.put(("b", "pending"), 4)  # the indexing function ran; kopf has not stored it yet
    gpus.sync(index)
    assert dict(gpus.by_namespace()) == {"a": 5}
    index[("b", "pending")] = [4]  # kopf stores it
    gpus.put(("a", "gone"), 1)
    index[("a", "gone")] = [1]
    del index[("a", "gone")]  # and a DELETED event discards another: 3 keys on both sides, not the same ones
    gpus.sync(index)
    assert dict(gpus.by_namespace()) == {"a": 5, "b": 4}
    assert gpus.of("b", "pending") == 4
    assert gpus.of("a", "gone") == 0
    # "a/gone", put and discarded between two reads, may have been read early too: one more comparison...
    gpus.sync(index)
    syncs = gpus.full_syncs
    gpus.sync(index)
    assert gpus.full_syncs == syncs  # ...then, consistent again, back to comparing counts
    assert dict(gpus.by_namespace()) == {"a": 5, "b": 4}


async def test_each_gpu_index_keeps_its_own_sums() -> None:
    first, second = Fleet(), Fleet()
    await first.namespace("ns")
    await second.namespace("ns")
    await first.workload(gpu_workload("w", "ns", gpus=4))
    assert dict(first.view().gpu_totals().by_namespace()) == {"ns": 4}
    assert dict(second.view().gpu_totals().by_namespace()) == {}


async def test_workloads_unreadable_refused_or_being_deleted_hold_no_gpus() -> None:
    fleet = Fleet()
    await fleet.workload(gpu_workload("counted", "ns", gpus=2))
    await fleet.workload(gpu_workload("unreadable", "ns", gpus=3).set("spec.workerGroups", "nonsense"))
    await fleet.workload(gpu_workload("refused", "ns", gpus=5), {"conditions": [{"type": "PolicyAdmitted",
                                                                                  "status": "False"}]})  # fmt: skip
    await fleet.workload(
        gpu_workload("deleting", "ns", gpus=7).set("metadata.deletionTimestamp", "2026-01-01T00:00:00Z")
    )
    totals = fleet.view().gpu_totals()
    assert dict(totals.by_namespace()) == {"ns": 2}
    assert [totals.of("ns", name) for name in ("counted", "unreadable", "refused", "deleting")] == [2, 0, 0, 0]


# --- which namespaces a policy change re-admits -----------------------------------------------------------


def test_a_policy_change_re_admits_only_the_namespaces_it_governs_before_or_after_or_moves() -> None:
    before = {"team-a": "a", "team-b": "b", "shared": "a", "idle": None}
    after = {"team-a": "a", "team-b": "b", "shared": "b", "idle": None, "new": "a"}
    assert readmission_scope(before, after, "a", unreadable=False) == {"team-a", "shared", "new"}
    assert readmission_scope(before, after, "b", unreadable=False) == {"team-b", "shared", "new"}
    assert readmission_scope(before, before, "c", unreadable=False) == set()  # a policy that governs nothing


def test_a_policy_change_re_admits_everything_without_an_earlier_picture_or_with_an_unreadable_policy() -> None:
    picture = {"team-a": "a"}
    assert readmission_scope(None, picture, "a", unreadable=False) is None
    assert readmission_scope(picture, picture, "z", unreadable=True) is None


def test_governance_names_the_governing_policy_per_namespace() -> None:
    team = permissive_policy("team").set("namespaceSelector", {"matchLabels": {"team": "a"}}).obj()
    view = ClusterView(policies=[team], namespace_labels={"team-a": {"team": "a"}, "other": {"team": "b"}})
    assert governance(view, ["team-a", "other"]) == {"team-a": "team", "other": None}
