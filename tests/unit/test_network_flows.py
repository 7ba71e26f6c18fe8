"""The rendered NetworkPolicies judged by an independent analyzer, flow by flow.

For each workload type x isolation x exposure (`netflows.SCENARIOS`), the operator's own code renders the
objects; `tests/support/netflows.py` models the pods and namespaces they meet at run time and asks IBM's
network-config-analyzer (nca, run as `nca --scheme`, no cluster and no network) whether each flow of the
table `netflows.FLOWS` is permitted or forbidden, as the contract requires. Every flow is also judged
against a control (deny-all for a required flow, allow-all for a forbidden one) that must give the opposite
answer, so a flow that nca reads as empty fails here instead of passing for nothing.

A failure names the flow, the pods or addresses on both sides, the ports, and nca's counterexample
connections. To change what is required, edit the table in `netflows.FLOWS`, not this file.
"""

import copy

import pytest

from mlworkload.constants import LABEL_ROLE, LABEL_WORKLOAD
from tests.support import netflows
from tests.support.netflows import Case, Control, Isolation, Judgement, Scenario, WorkloadType

FLOW_CASES = [
    pytest.param(scenario, index, id=f"{scenario.id}-{index:02d}-{netflows.slug(rule.name)}")
    for scenario in netflows.SCENARIOS
    for index, rule in netflows.applicable(scenario)
]


@pytest.fixture(scope="module")
def cases() -> dict[Scenario, Case]:
    return {scenario: Case.of(scenario) for scenario in netflows.SCENARIOS}


@pytest.fixture(scope="module")
def judgement(cases: dict[Scenario, Case], tmp_path_factory: pytest.TempPathFactory) -> Judgement:
    """One nca run (a scheme per CPU, in parallel) for every flow of every scenario."""
    return netflows.judge(tmp_path_factory.mktemp("netflows"), list(cases.values()))


@pytest.mark.parametrize(("scenario", "index"), FLOW_CASES)
def test_flow(scenario: Scenario, index: int, cases: dict[Scenario, Case], judgement: Judgement) -> None:
    (flow,) = [f for f in cases[scenario].flows if f.index == index]
    control = judgement.verdicts[flow.id, netflows.control_of(flow)]
    assert not control.holds, f"nca reads this flow as empty (it holds under {netflows.control_of(flow)}), " \
                              f"so it proves nothing: {flow.describe()}\n{control.detail}"  # fmt: skip
    verdict = judgement.verdicts[flow.id, Control.RENDERED]
    assert verdict.holds, f"{flow.describe()}\n{verdict.detail}"


def test_every_applicable_row_of_the_table_was_judged(cases: dict[Scenario, Case], judgement: Judgement) -> None:
    """The parametrization and the judged flows come from the same table: none is dropped on the way."""
    judged = {flow_id for flow_id, against in judgement.verdicts if against is Control.RENDERED}
    expected = {f"{scenario.id}.{index:03d}" for scenario in netflows.SCENARIOS
                for index, _ in netflows.applicable(scenario)}  # fmt: skip
    assert judged == expected
    assert judgement.queries == 2 * len(expected)


@pytest.mark.parametrize("scenario", netflows.SCENARIOS, ids=lambda s: s.id)
def test_no_selector_is_vacuous(scenario: Scenario, cases: dict[Scenario, Case]) -> None:
    """Every NetworkPolicy's podSelector, and every pod/namespace selector of its rules, selects something
    in the modelled cluster: a mistyped label would otherwise make a rule allow nothing, silently."""
    case = cases[scenario]
    assert case.policies, "isolation Strict/Namespace must render NetworkPolicies"
    findings = [finding for policy in case.policies for finding in netflows.vacuous_selectors(policy, case.pods)]
    assert findings == []


def test_the_vacuity_check_catches_a_mistyped_label(cases: dict[Scenario, Case]) -> None:
    """The check above can fail: a typo in the policy's podSelector, in a rule's namespaceSelector, or in a
    rule's podSelector (here a matchExpression) is reported, each with where it is."""
    case = cases[Scenario(WorkloadType.SERVICE, Isolation.STRICT, exposed=True)]
    (head,) = [p for p in case.policies if p["spec"]["podSelector"]["matchLabels"].get(LABEL_ROLE) == "head"]
    assert netflows.vacuous_selectors(head, case.pods) == []
    broken = copy.deepcopy(head)
    broken["spec"]["podSelector"]["matchLabels"][LABEL_ROLE] = "haed"
    peers = [peer for rule in broken["spec"]["ingress"] for peer in rule.get("from", [])]
    namespaced = next(peer for peer in peers if {"namespaceSelector", "podSelector"} <= set(peer))
    namespaced["namespaceSelector"] = {"matchLabels": {netflows.NAME_LABEL: "kuberay-sytem"}}
    own = next(peer for peer in peers if set(peer) == {"podSelector"})
    own["podSelector"] = {"matchExpressions": [{"key": LABEL_WORKLOAD, "operator": "In", "values": ["dmeo"]}]}
    findings = netflows.vacuous_selectors(broken, case.pods)
    assert len(findings) == 3, findings
    assert [f for f in findings if "spec.podSelector" in f and "selects no pod" in f]
    assert [f for f in findings if "kuberay-sytem" in f and "selects no namespace" in f]
    assert [f for f in findings if "dmeo" in f and "selects no pod" in f]


@pytest.mark.parametrize("type_", list(WorkloadType), ids=str)
def test_the_model_is_the_rendered_templates_plus_kuberays_labels(
    type_: WorkloadType, cases: dict[Scenario, Case]
) -> None:
    """The modelled Ray pods carry every label of the rendered pod templates (so a label the operator
    forgets is missing in the model too), plus what KubeRay and the Job controller add at run time."""
    scenario = Scenario(type_, Isolation.STRICT, exposed=False)
    ray = netflows.ray_object(netflows.render(scenario))
    spec = netflows.cluster_spec(ray)
    pods = {pod.name: pod for pod in cases[scenario].pods}
    templates = {"head": spec["headGroupSpec"]["template"], "worker-cpu-1": spec["workerGroupSpecs"][0]["template"],
                 "worker-gpu-0": spec["workerGroupSpecs"][1]["template"]}  # fmt: skip
    if type_ is WorkloadType.JOB:
        templates["submitter"] = ray["spec"]["submitterPodTemplate"]
    for name, template in templates.items():
        assert template["metadata"]["labels"].items() <= pods[name].labels.items(), name
    kuberay = {"ray.io/is-ray-node": "yes", "ray.io/cluster": scenario.cluster_name, "ray.io/node-type": "head",
               "ray.io/group": "headgroup"}  # fmt: skip
    assert kuberay.items() <= pods["head"].labels.items()
    assert pods["worker-gpu-0"].labels["ray.io/group"] == "gpu"
    assert ("ray.io/serve" in pods["worker-cpu-0"].labels) is (type_ is WorkloadType.SERVICE)
    assert {"name": "metrics", "containerPort": 8080} in pods["worker-cpu-0"].ports
    if type_ is WorkloadType.JOB:
        assert pods["submitter"].labels["job-name"] == netflows.WORKLOAD
        assert "ray.io/node-type" not in pods["submitter"].labels


def test_the_metrics_scraper_reaches_ray_metrics_and_nothing_else(
    cases: dict[Scenario, Case], judgement: Judgement
) -> None:
    """The peer the Helm chart adds to its default policy for Managed Prometheus (metrics.rayMetrics; the chart's
    tests check it equal to SCRAPER_PEER): in every scenario, the GMP collector reaches port 8080 on the head and
    every worker, and no other port of theirs."""
    assert netflows.policy_document()["spec"]["network"]["metricsScrapers"] == [netflows.SCRAPER_PEER]
    for scenario, case in cases.items():
        scraped = {flow.name: flow for flow in case.flows if flow.name.startswith("scraper ")}
        assert set(scraped) == {"scraper to Ray metrics", "scraper to any port but metrics"}, scenario.id
        for flow in scraped.values():
            assert isinstance(flow.source, netflows.PodGroup)
            assert isinstance(flow.destination, netflows.PodGroup)
            assert (flow.source.namespace, flow.source.expected) == ("gmp-system", ("collector",))
            assert {"head", "worker-cpu-0", "worker-gpu-0"} <= set(flow.destination.expected), flow.describe()
            assert not judgement.verdicts[flow.id, netflows.control_of(flow)].holds, flow.describe()
            verdict = judgement.verdicts[flow.id, Control.RENDERED]
            assert verdict.holds, f"{flow.describe()}\n{verdict.detail}"
