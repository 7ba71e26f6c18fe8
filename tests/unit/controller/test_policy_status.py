"""MLWorkloadPolicy status: what it governs, its workloads and quota use, written only when it changes."""

import asyncio
import datetime
from typing import Any

import kopf
import pytest
from prometheus_client import REGISTRY

from mlworkload.api.policy_status import MAX_LISTED_NAMESPACES
from mlworkload.controller.kube import merge_patch
from mlworkload.controller.policy_status import policy_status
from mlworkload.controller.reconcile import Reconciler
from mlworkload.controller.view import cluster_view, policy_entry, spec_version
from mlworkload.metrics import INVENTORY
from mlworkload.problems import Problem
from tests.support.clock import NOW
from tests.support.documents import PolicyDoc, policy, resolved, workload
from tests.support.fake_kube import FakeKubeApi
from tests.support.operator import handlers_module

LATER = NOW + datetime.timedelta(minutes=5)


def team_policy(name: str = "team-a", team: str = "a", quota: int | None = 8) -> PolicyDoc:
    doc = policy(name).set("namespaceSelector", {"matchLabels": {"team": team}})
    return doc.set("quota", {"maxGPUs": quota}) if quota is not None else doc


def indexes(policies: list[PolicyDoc], namespaces: dict[str, dict[str, str]], gpus: dict[tuple[str, str], int]) -> Any:
    stored = [{**doc.doc, "metadata": {**doc.doc["metadata"], "uid": "u", "generation": 1}} for doc in policies]
    return {
        "policy_index": {body["metadata"]["name"]: [policy_entry(body["metadata"]["name"], body)] for body in stored},
        "namespace_index": {namespace: [labels] for namespace, labels in namespaces.items()},
        "gpu_index": {key: [count] for key, count in gpus.items()},
    }


def status_of(doc: PolicyDoc, found: Any, phases: Any = None, previous: Any = None, now: Any = NOW) -> dict[str, Any]:
    view = cluster_view(found["policy_index"], found["namespace_index"], found["gpu_index"])
    entry = found["policy_index"][doc.doc["metadata"]["name"]][0][1]
    return policy_status(entry, generation=1, problems=(), view=view, namespaces=list(found["namespace_index"]),
                         phases=phases or {}, previous=previous, now=now)  # fmt: skip


def test_a_policy_reports_the_namespaces_it_governs_their_workloads_and_its_gpus_against_the_quota() -> None:
    a, b = team_policy("team-a", "a", quota=8), team_policy("team-b", "b", quota=None)
    found = indexes(
        [a, b],
        {"a-1": {"team": "a"}, "a-2": {"team": "a"}, "b-1": {"team": "b"}, "other": {}},
        {("a-1", "w1"): 2, ("a-2", "w2"): 4, ("b-1", "w3"): 1},
    )
    phases = {"a-1": {"Running": 1}, "a-2": {"Pending": 1, "Running": 2}, "b-1": {"Running": 1}}

    status = status_of(a, found, phases)

    assert status["namespaceCount"] == 2
    assert status["namespaces"] == ["a-1", "a-2"]
    assert status["workloads"] == {"total": 4, "byPhase": {"Pending": 1, "Running": 3}}
    assert status["gpus"] == {"inUse": 6, "quota": 8}
    assert status["observedGeneration"] == 1
    assert status["problems"] == []
    [ready] = status["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Valid")
    # No quota: the use is still reported, the quota is absent (unlimited), not 0.
    assert status_of(b, found, phases)["gpus"] == {"inUse": 1}


def test_a_namespace_a_higher_priority_policy_takes_is_not_reported_by_the_lower_one() -> None:
    low = team_policy("low", "a")
    high = team_policy("high", "a").set("priority", 10)
    found = indexes([low, high], {"a-1": {"team": "a"}}, {("a-1", "w"): 3})

    assert status_of(low, found)["namespaceCount"] == 0
    assert status_of(low, found)["gpus"]["inUse"] == 0
    assert status_of(high, found)["namespaces"] == ["a-1"]
    assert status_of(high, found)["gpus"]["inUse"] == 3


def test_the_namespace_list_is_cut_but_the_count_is_whole() -> None:
    doc = team_policy()
    found = indexes([doc], {f"a-{i:03}": {"team": "a"} for i in range(MAX_LISTED_NAMESPACES + 7)}, {})

    status = status_of(doc, found)

    assert status["namespaceCount"] == MAX_LISTED_NAMESPACES + 7
    assert len(status["namespaces"]) == MAX_LISTED_NAMESPACES
    assert status["namespaces"][0] == "a-000"


def test_the_ready_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    doc = team_policy()
    found = indexes([doc], {"a-1": {"team": "a"}}, {})
    first = status_of(doc, found)

    again = status_of(doc, found, previous=first, now=LATER)

    assert again == first  # same content, same time: nothing to write


def test_an_unreadable_policy_is_not_ready_lists_the_namespaces_it_blocks_and_why() -> None:
    body = {**team_policy("broken").doc}
    body["spec"] = {**body["spec"], "quota": {"maxGPUs": "lots"}}
    body["metadata"] = {"name": "broken", "uid": "u", "generation": 2}
    entry = policy_entry("broken", body)
    found = indexes([], {"a-1": {"team": "a"}, "b-1": {"team": "b"}}, {})
    found["policy_index"]["broken"] = [entry]
    view = cluster_view(found["policy_index"], found["namespace_index"], found["gpu_index"])
    problems = [Problem("spec.quota.maxGPUs", "Input should be a valid integer")]

    status = policy_status(entry[1], generation=2, problems=problems, view=view, namespaces=["a-1", "b-1"],
                           phases={}, previous=None, now=NOW)  # fmt: skip

    [ready] = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidPolicy")
    assert "spec.quota.maxGPUs" in ready["message"]
    assert status["problems"] == [{"field": "spec.quota.maxGPUs", "message": "Input should be a valid integer"}]
    assert status["namespaces"] == ["a-1"]  # its selector still reads: the namespaces whose workloads it blocks
    assert "quota" not in status["gpus"]


# --- the reporter: one pass writes what changed, a second writes nothing -----------------------------------


@pytest.fixture
def memo(kube: FakeKubeApi, reconciler: Reconciler) -> Any:
    handlers = handlers_module()
    doc = team_policy()
    stored = kube.put({**doc.doc, "metadata": {**doc.doc["metadata"], "generation": 1}})
    found = indexes([doc], {"a-1": {"team": "a"}}, {("a-1", "w"): 2})
    memo = kopf.Memo()
    memo.reconciler = reconciler
    memo.view = handlers.ViewState(ready=True, indexes=found, heard=None)  # every workload reconciled once
    memo.view.policies["team-a"] = handlers.StoredPolicy(1, stored.get("status") or {})
    return memo


def test_the_reporter_writes_a_changed_status_once_and_an_unchanged_one_never(kube: FakeKubeApi, memo: Any) -> None:
    handlers = handlers_module()

    assert asyncio.run(handlers.report_policies(memo)) == 1
    written = kube.status_of("MLWorkloadPolicy", None, "team-a")
    assert written["gpus"] == {"inUse": 2, "quota": 8}
    assert written["namespaces"] == ["a-1"]
    assert REGISTRY.get_sample_value("mlworkload_policy_gpus_in_use", {"policy": "team-a"}) == 2
    assert REGISTRY.get_sample_value("mlworkload_policy_gpu_quota", {"policy": "team-a"}) == 8

    assert asyncio.run(handlers.report_policies(memo)) == 0  # the same view: not a single request
    assert kube.writes == ["status MLWorkloadPolicy/team-a"]


def test_after_a_start_nothing_is_reported_until_every_workload_was_reconciled(kube: FakeKubeApi, memo: Any) -> None:
    """Counts come from reconciles: a restart must not write the partial counts of a resume pass in progress."""
    handlers = handlers_module()
    memo.view.heard = set()

    assert asyncio.run(handlers.report_policies(memo)) == 0
    memo.view.heard.add(("a-1", "w"))  # the only stored workload, reconciled
    assert asyncio.run(handlers.report_policies(memo)) == 1
    assert memo.view.heard is None  # settled: later workloads are real changes, reported as they come
    assert kube.writes == ["status MLWorkloadPolicy/team-a"]


def test_a_phase_that_empties_is_removed_from_the_stored_status(kube: FakeKubeApi, memo: Any) -> None:
    handlers = handlers_module()
    INVENTORY.record(resolved(workload("w", "a-1"), team_policy()), "Pending")
    try:
        asyncio.run(handlers.report_policies(memo))
        assert kube.status_of("MLWorkloadPolicy", None, "team-a")["workloads"]["byPhase"] == {"Pending": 1}
        INVENTORY.record(resolved(workload("w", "a-1"), team_policy()), "Running")

        asyncio.run(handlers.report_policies(memo))

        # A merge patch keeps keys it does not mention: the emptied phase was nulled, not left behind.
        assert kube.status_of("MLWorkloadPolicy", None, "team-a")["workloads"]["byPhase"] == {"Running": 1}
    finally:
        INVENTORY.forget("a-1", "w")


def test_merge_patch_nulls_what_went_and_sends_only_what_changed() -> None:
    before = {"a": 1, "gone": 2, "map": {"keep": 1, "drop": 2, "change": 3}, "list": [1, 2]}
    after = {"a": 1, "map": {"keep": 1, "change": 4}, "list": [1], "new": {"x": 1}}

    assert merge_patch(before, after) == {"gone": None, "map": {"drop": None, "change": 4}, "list": [1],
                                          "new": {"x": 1}}  # fmt: skip
    assert merge_patch(after, after) == {}


def test_a_status_write_does_not_change_the_spec_version_a_spec_change_does() -> None:
    body = {"metadata": {"uid": "u", "generation": 3, "resourceVersion": "10"}}
    status_written = {"metadata": {"uid": "u", "generation": 3, "resourceVersion": "11"}}
    spec_changed = {"metadata": {"uid": "u", "generation": 4, "resourceVersion": "12"}}

    assert spec_version(body) == spec_version(status_written) != spec_version(spec_changed)
    assert spec_version({"metadata": {"uid": "u", "resourceVersion": "7"}}) == "u/7"  # no generation: every write


def test_only_a_new_spec_re_admits_the_operators_own_status_write_does_not() -> None:
    handlers = handlers_module()
    memo = kopf.Memo()
    memo.view = handlers.ViewState()

    def event(change: str | None, generation: int, status: dict[str, Any] | None = None) -> bool:
        body = kopf.Body({"metadata": {"name": "p", "uid": "u", "generation": generation}, "status": status or {}})
        return bool(handlers._spec_changed(change, body, "p", memo))

    assert event(None, 1)  # the initial listing
    assert not event("MODIFIED", 1, {"namespaceCount": 2})  # a status write: same generation
    assert event("MODIFIED", 2)  # the platform team changed the rules
    assert not event("MODIFIED", 2)
    assert event("DELETED", 2)
    assert event("ADDED", 1)  # created again under the same name
