"""Hostile input through the webhook's own handlers: never an exception other than a refusal, and every
refusal names a field.

The admission webhooks call `validate_workload` and `validate_policy` (controller/handlers.py) with the
object kopf received; here they are called the same way, with a filled cluster view, on 10,000 mutated
workloads and 2,000 mutated policies per run (seeded, so a failure replays). Mutated policies are also
stored into the view, so a workload is judged against a policy the operator cannot read. The CLI path
has its own suite (test_hostile_input.py); both draw on tests/support/mutations.py.
"""

import copy
import random
from collections import Counter
from pathlib import Path
from typing import Any

import kopf
import pytest

from mlworkload.controller.view import policy_entry
from mlworkload.settings import OperatorSettings
from mlworkload.yamlio import load_all
from tests.support.mutations import FIELD, mutate
from tests.support.operator import handlers_module

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKLOADS = [
    document
    for path in sorted(EXAMPLES.glob("*.yaml"))
    if "policy" not in path.name
    for document in load_all(path.read_text(encoding="utf-8"))
]
POLICY = load_all((EXAMPLES / "policy-team-nlp.yaml").read_text(encoding="utf-8"))[0]
WORKLOAD_RUNS = 10_000
POLICY_RUNS = 2_000
SEED = 20261206


def memo() -> kopf.Memo:
    state = kopf.Memo()
    state.view = handlers_module().ViewState(ready=True)
    state.config = OperatorSettings.load(environ={"MLW_API_SERVER_CIDRS": "172.16.0.2/32"})
    return state


def indexes(*policies: dict[str, Any]) -> dict[str, Any]:
    """kopf's indexes as the handlers read them: key -> a store of values (here a list of one), each policy's
    value made by the operator's own indexing step, as kopf stores it."""
    named = {str(p.get("metadata", {}).get("name")): p for p in policies if isinstance(p, dict)}
    return {
        "policy_index": {name: [policy_entry(name, p)] for name, p in named.items()},
        "namespace_index": {"team-nlp": [{"team": "nlp", "kubernetes.io/metadata.name": "team-nlp"}]},
        "gpu_index": {},
    }


def verdict(handler: Any, body: Any, **kwargs: Any) -> str:
    """'allowed', or 'refused' after checking the refusal; anything else raised fails the test."""
    refusal: kopf.AdmissionError | None = None
    try:
        handler(body=kopf.Body(body), **kwargs)
    except kopf.AdmissionError as error:
        refusal = error
    if refusal is None:
        return "allowed"
    lines = str(refusal).splitlines()
    assert refusal.code == 422, (refusal.code, lines)
    assert lines, "a refusal without a problem"
    for line in lines:
        assert FIELD.search(line), f"refusal does not name a field: {line!r}"
    return "refused"


def test_the_examples_are_admitted_as_they_are() -> None:
    """The baseline the mutations depart from: without mutation, everything is admitted."""
    for workload in WORKLOADS:
        assert (
            verdict(handlers_module().validate_workload, copy.deepcopy(workload), memo=memo(), **indexes(POLICY))
            == "allowed"
        )
    assert verdict(handlers_module().validate_policy, copy.deepcopy(POLICY)) == "allowed"


@pytest.mark.parametrize("seed", [SEED])
def test_mutated_workloads_are_refused_naming_a_field_never_crashing(seed: int) -> None:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    state, view = memo(), indexes(POLICY)
    for _ in range(WORKLOAD_RUNS):
        body = copy.deepcopy(rng.choice(WORKLOADS))
        mutate(body, rng)
        if not isinstance(body.get("metadata"), dict):
            body["metadata"] = {}  # the API server fills metadata in before any webhook sees the object
        outcomes[verdict(handlers_module().validate_workload, body, memo=state, **view)] += 1
    print(f"\n{WORKLOAD_RUNS} mutated workloads through the webhook (seed {seed}): {dict(outcomes)}")
    assert sum(outcomes.values()) == WORKLOAD_RUNS
    assert outcomes["refused"] > WORKLOAD_RUNS // 2  # the mutations do bite


@pytest.mark.parametrize("seed", [SEED])
def test_mutated_policies_are_refused_naming_a_field_and_never_govern_blind(seed: int) -> None:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    state = memo()
    for _ in range(POLICY_RUNS):
        policy = copy.deepcopy(POLICY)
        mutate(policy, rng)
        if not isinstance(policy.get("metadata"), dict) or not isinstance(policy["metadata"].get("name"), str):
            policy["metadata"] = {"name": "team-nlp"}
        outcome = verdict(handlers_module().validate_policy, policy)
        outcomes[f"policy {outcome}"] += 1
        # The same policy already stored (past the webhook): a workload it may govern is never judged blind.
        judged = verdict(
            handlers_module().validate_workload, copy.deepcopy(rng.choice(WORKLOADS)), memo=state, **indexes(policy)
        )
        outcomes[f"workload {judged}"] += 1
        if outcome == "refused":
            assert judged == "refused", "a workload was admitted under a policy the operator cannot read"
    print(f"\n{POLICY_RUNS} mutated policies through the webhook (seed {seed}): {dict(outcomes)}")
    assert outcomes["policy refused"] > POLICY_RUNS // 4
