"""What the chart ships for observability, rendered by a real helm binary: the Grafana dashboard, the alert rules
(a PrometheusRule and a Managed Prometheus Rules object from one source) and the scrapes of Ray's own metrics.

Every PromQL expression, in the dashboard and in the rules, is parsed (promql-parser, the Python binding of the
Rust parser GreptimeDB uses, which also checks functions and argument types) and may name only metrics the
operator exports (read from its prometheus_client registry) or the few external ones listed in EXTERNAL_METRICS.

No package ships the CRDs of PrometheusRule, Rules, PodMonitor and ClusterPodMonitoring as schemas this
repository can use, so their structure is checked here against the upstream CRDs' rules (each check says which),
and the ClusterPodMonitoring's spec against the PodMonitoring schema of tests/support/addon_schemas (the same
ScrapeEndpoint and selector; ClusterTargetLabels only adds `namespace` to targetLabels.metadata, unused here).
"""

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY

from mlworkload import metrics
from mlworkload.api.load import parse_policy
from mlworkload.constants import PORT_METRICS
from tests.support import netflows
from tests.support.helm import CHART, helm, render
from tests.support.netflows import Isolation, Scenario, WorkloadType
from tests.support.schemas import validate_object
from tests.unit.test_docs import heading_anchors

ROOT: Final = Path(__file__).resolve().parents[2]
DASHBOARD_FILE: Final = CHART / "files" / "dashboards" / "mlworkload-operator.json"
DOCS_PAGE: Final = ROOT / "docs" / "platform" / "observability.md"
FULL: Final = ["-f", str(CHART / "ci" / "full-values.yaml")]
EVERYTHING: Final = [
    "--set", "metrics.dashboard.enabled=true",
    "--set", "metrics.alerts.prometheusRule.enabled=true",
    "--set", "metrics.alerts.gmpRules.enabled=true",
    "--set", "metrics.rayMetrics.clusterPodMonitoring.enabled=true",
    "--set", "metrics.rayMetrics.podMonitor.enabled=true",
]  # fmt: skip
OBSERVABILITY_KINDS: Final = {"PrometheusRule", "Rules", "PodMonitor", "ClusterPodMonitoring"}

# Metrics the expressions may name that the operator does not export, each with the reason.
EXTERNAL_METRICS: Final = {
    "up": "Prometheus's own series per scrape target (1: the last scrape answered): whether the pods run at all",
}
# What Grafana puts in for its interval variables before it sends a query.
GRAFANA_INTERVALS: Final = {"$__rate_interval": "5m", "$__range": "6h", "$__interval": "1m"}
# The exposition suffixes of each prometheus_client metric type (the family name is the name without them).
SUFFIXES: Final = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}
# The upstream CRDs: Prometheus Operator's monitoring.coreos.com_prometheusrules.yaml and Managed Prometheus'
# monitoring.googleapis.com_rules.yaml. The keys both accept (Rules has no group labels, limit or query_offset,
# no keep_firing_for); a duration as both spell it; rule labels Managed Prometheus refuses (it sets them).
GROUP_KEYS: Final = {"name", "interval", "rules"}
ALERT_KEYS: Final = {"alert", "expr", "for", "labels", "annotations"}
DURATION: Final = re.compile(
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
GMP_RESERVED_LABELS: Final = {"project_id", "location", "cluster", "namespace"}
SEVERITIES: Final = {"critical", "warning", "info"}
LABEL_NAME: Final = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [manifest for manifest in manifests if manifest["kind"] == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(manifests, kind)
    return found


@pytest.fixture(scope="module")
def full() -> list[dict[str, Any]]:
    return render(*FULL)


def exported_families() -> dict[str, set[str]]:
    """Every metric family the operator's /metrics can show, with the sample names it can show: its registry
    (prometheus_client's default one, which operator_main serves) with the workload inventory registered, as
    run_operator does."""
    metrics.register_inventory()
    return {family.name: {family.name + suffix for suffix in SUFFIXES[family.type]} for family in REGISTRY.collect()}


def exported_metric_names() -> set[str]:
    return {name for names in exported_families().values() for name in names}


def walk(node: promql_parser.Expr) -> Iterator[promql_parser.Expr]:
    found: list[promql_parser.Expr] = []
    promql_parser.walk(node, found.append)
    yield from found


def parse(expression: str) -> promql_parser.Expr:
    for variable, value in GRAFANA_INTERVALS.items():
        expression = expression.replace(variable, value)
    try:
        return promql_parser.parse(expression)
    except ValueError as error:
        pytest.fail(f"not PromQL ({error}): {expression}")


def metric_names(expression: str) -> set[str]:
    return {node.name for node in walk(parse(expression)) if isinstance(node, promql_parser.VectorSelector)}


# --- the dashboard --------------------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    """The queries of every panel, and the metric selectors of the query variables (`label_values(selector, label)`
    is Grafana's, not PromQL: its selector is)."""
    expressions = [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            assert found, f"variable {variable['name']}: {variable['definition']}"
            expressions.append(found[1])
    return expressions


def test_the_dashboard_is_json_with_unique_panel_ids_and_no_overlapping_panels() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids)), ids
    assert board["uid"] == "mlworkload-operator"
    assert board.get("id") is None  # provisioned dashboards get their id from Grafana
    taken: set[tuple[int, int]] = set()
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_query_goes_to_the_chosen_data_source() -> None:
    board = dashboard()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    chosen = {"type": "prometheus", "uid": "${datasource}"}
    queried = [panel for panel in panels(board) if panel["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["datasource"] == chosen, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"] == chosen for target in panel["targets"]), panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
    assert variables["cluster"]["datasource"] == chosen


def test_the_dashboard_has_the_panels_the_platform_team_needs() -> None:
    titles = {panel["title"] for panel in panels(dashboard())}
    assert {
        "Reconciles by result", "Reconcile latency", "Reconcile API failures by reason",
        "Admission refusals by reason", "GCP API errors by API and reason", "Workloads by type and phase",
        "GPUs requested by team and accelerator", "Policy GPUs in use and quota",
    } <= titles  # fmt: skip
    latency = next(panel for panel in panels(dashboard()) if panel["title"] == "Reconcile latency")
    quantiles = {float(parse(target["expr"]).args[0].val) for target in latency["targets"]}
    assert quantiles == {0.5, 0.95}


def test_every_metric_the_operator_exports_is_on_the_dashboard() -> None:
    """A metric added to mlworkload.metrics without a panel fails here."""
    shown = {name for expression in dashboard_expressions(dashboard()) for name in metric_names(expression)}
    own = {family: names for family, names in exported_families().items() if family.startswith("mlworkload_")}
    assert len(own) >= 11
    assert sorted(family for family, names in own.items() if not names & shown) == []


@pytest.mark.parametrize("source", ["dashboard", "rules"], ids=["dashboard", "rules"])
def test_every_expression_names_only_metrics_the_operator_exports(source: str, full: list[dict[str, Any]]) -> None:
    if source == "dashboard":
        expressions = dashboard_expressions(dashboard())
    else:
        expressions = [
            rule["expr"] for group in one(full, "PrometheusRule")["spec"]["groups"] for rule in group["rules"]
        ]
    assert expressions
    known = exported_metric_names() | set(EXTERNAL_METRICS)
    unknown = {expression: sorted(metric_names(expression) - known) for expression in expressions}
    assert {expression: names for expression, names in unknown.items() if names} == {}


def test_the_team_panel_reads_the_namespace_label_whatever_the_scrape_made_of_it() -> None:
    """mlworkload_gpus_requested has a `namespace` label of its own, which a scrape that does not honour labels
    (ServiceMonitor's default, Managed Prometheus always) renames exported_namespace: the panel takes either."""
    panel = next(panel for panel in panels(dashboard()) if panel["title"] == "GPUs requested by team and accelerator")
    (target,) = panel["targets"]
    replaced = [node for node in walk(parse(target["expr"]))
                if isinstance(node, promql_parser.Call) and node.func.name == "label_replace"]  # fmt: skip
    sources = {replace.args[3].val for replace in replaced}
    assert sources == {"namespace", "exported_namespace"}


def test_the_dashboard_configmap_is_labelled_for_the_grafana_sidecar(full: list[dict[str, Any]]) -> None:
    assert by_kind(render(), "ConfigMap") == []
    configmap = one(render("--set", "metrics.dashboard.enabled=true"), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["namespace"] == "mlworkload-system"
    assert json.loads(configmap["data"]["mlworkload-operator.json"]) == dashboard()
    assert validate_object(configmap) == []
    custom = one(render("--set", "metrics.dashboard.enabled=true", "--set", "metrics.dashboard.label=dashboards",
                        "--set", "metrics.dashboard.labelValue=grafana"), "ConfigMap")  # fmt: skip
    assert custom["metadata"]["labels"]["dashboards"] == "grafana"
    assert "grafana_dashboard" not in custom["metadata"]["labels"]
    shipped = one(full, "ConfigMap")
    assert shipped["metadata"]["namespace"] == "monitoring"
    assert shipped["metadata"]["annotations"] == {"grafana_folder": "Platform"}


# --- the alert rules ------------------------------------------------------------------------------------------


def alerts(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in manifest["spec"]["groups"] for rule in group["rules"]]


def kept_labels(node: promql_parser.Expr) -> set[str] | None:
    """The labels an expression's result keeps, where it is plain to see (None: those of the series)."""
    if isinstance(node, promql_parser.AggregateExpr):
        if node.modifier is None:
            return set()
        by = node.modifier.type == promql_parser.AggModifierType.By
        return set(node.modifier.labels) if by else None
    if isinstance(node, promql_parser.BinaryExpr):
        if isinstance(node.lhs, promql_parser.NumberLiteral):
            return kept_labels(node.rhs)
        return kept_labels(node.lhs)
    if isinstance(node, promql_parser.ParenExpr):
        return kept_labels(node.expr)
    return None


def test_both_kinds_carry_the_same_groups_and_are_off_by_default(full: list[dict[str, Any]]) -> None:
    assert {manifest["kind"] for manifest in render()} & OBSERVABILITY_KINDS == set()
    assert one(full, "PrometheusRule")["spec"]["groups"] == one(full, "Rules")["spec"]["groups"]
    only_gmp = render("--set", "metrics.alerts.gmpRules.enabled=true")
    assert by_kind(only_gmp, "PrometheusRule") == []
    assert one(only_gmp, "Rules")["metadata"]["namespace"] == "mlworkload-system"
    assert one(full, "PrometheusRule")["metadata"]["labels"]["release"] == "prometheus"


def test_the_rules_have_the_structure_both_crds_accept(full: list[dict[str, Any]]) -> None:
    for kind in ("PrometheusRule", "Rules"):
        manifest = one(full, kind)
        assert set(manifest["spec"]) == {"groups"}
        names = [group["name"] for group in manifest["spec"]["groups"]]
        assert len(names) == len(set(names))  # a map keyed by name in PrometheusRule
        assert all(names)
        for group in manifest["spec"]["groups"]:
            assert set(group) <= GROUP_KEYS, group["name"]
            assert group["rules"], "Rules: minItems 1"
            for rule in group["rules"]:
                assert set(rule) <= ALERT_KEYS, rule
                assert isinstance(rule["expr"], str)
                assert isinstance(rule["alert"], str)
                assert DURATION.match(rule["for"]), rule["alert"]
                for field in ("labels", "annotations"):
                    assert all(isinstance(value, str) for value in rule[field].values()), rule["alert"]
                assert not GMP_RESERVED_LABELS & set(rule["labels"]), rule["alert"]


def test_every_alert_says_how_bad_what_and_why(full: list[dict[str, Any]]) -> None:
    rules = alerts(one(full, "PrometheusRule"))
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["labels"]["team"] == "platform"  # metrics.alerts.labels of the full values
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
        assert rule["for"], rule["alert"]
        used = set(re.findall(r"\$labels\.(\w+)", " ".join(rule["annotations"].values())))
        kept = kept_labels(parse(rule["expr"]))
        assert kept is None or used <= kept, f"{rule['alert']}: the annotations use {used}, the result keeps {kept}"


def test_every_alert_the_issue_asks_for_is_there(full: list[dict[str, Any]]) -> None:
    rules = {rule["alert"]: rule for rule in alerts(one(full, "PrometheusRule"))}
    wanted = {
        "MLWorkloadsStalled": "mlworkload_workloads",
        "MLWorkloadsFailed": "mlworkload_workloads",
        "MLWorkloadReconcileAPIFailures": "mlworkload_reconcile_api_failures_total",
        "MLWorkloadWebhookErrors": "mlworkload_admission_refusals_total",
        "MLWorkloadWebhookDown": "up",
        "MLWorkloadGCPErrors": "mlworkload_gcp_api_errors_total",
        "MLWorkloadPolicyQuotaNearlyFull": "mlworkload_policy_gpu_quota",
        "MLWorkloadInvalidPolicies": "mlworkload_invalid_policies",
    }
    assert set(wanted) - set(rules) == set()
    assert {name for name, metric in wanted.items() if metric not in metric_names(rules[name]["expr"])} == set()


def test_the_webhook_error_counter_is_exported_before_the_first_error() -> None:
    """MLWorkloadWebhookErrors takes increase() of refusals with reason internal: a series that appeared with its
    first count would hide that count, so the operator exports it at 0 from the start."""
    assert REGISTRY.get_sample_value("mlworkload_admission_refusals_total", {"reason": "internal"}) is not None


def test_the_thresholds_come_from_values(full: list[dict[str, Any]]) -> None:
    rules = {rule["alert"]: rule for rule in alerts(one(full, "PrometheusRule"))}
    assert rules["MLWorkloadsStalled"]["for"] == "45m"

    def threshold(name: str) -> float:
        node = parse(rules[name]["expr"])
        assert isinstance(node, promql_parser.BinaryExpr)
        assert isinstance(node.rhs, promql_parser.NumberLiteral)
        assert str(node.op) == ">"
        return float(node.rhs.val)

    assert threshold("MLWorkloadsFailed") == 2
    assert threshold("MLWorkloadReconcileAPIFailures") == 3
    assert threshold("MLWorkloadGCPErrors") == 5
    assert threshold("MLWorkloadPolicyQuotaNearlyFull") == 0.85
    defaults = {rule["alert"]: rule for rule in alerts(one(render("--set", "metrics.alerts.gmpRules.enabled=true"),
                                                             "Rules"))}  # fmt: skip
    assert defaults["MLWorkloadsStalled"]["for"] == "30m"
    assert "runbook_url" not in defaults["MLWorkloadsStalled"]["annotations"]


def test_every_selector_stays_in_the_release_namespace(full: list[dict[str, Any]]) -> None:
    """Managed Prometheus scopes a Rules object to its namespace and refuses a selector naming another one; for a
    PrometheusRule the matcher keeps another installation's metrics out."""
    for rule in alerts(one(full, "Rules")):
        for node in walk(parse(rule["expr"])):
            if isinstance(node, promql_parser.VectorSelector):
                namespaces = [(m.op, m.value) for m in node.matchers.matchers if m.name == "namespace"]
                assert namespaces == [(promql_parser.MatchOp.Equal, "mlworkload-system")], (rule["alert"], str(node))


def test_the_down_alerts_tell_the_controller_from_the_webhook_pods() -> None:
    """The pod name patterns, for a release whose name has a dot (a regular expression character)."""
    result = helm("template", "ml.prod", str(CHART), "--namespace", "ml-ops",
                  "--set", "metrics.alerts.prometheusRule.enabled=true")  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    deployments = {d["metadata"]["name"] for d in by_kind(manifests, "Deployment")}
    assert deployments == {"ml.prod-mlworkload", "ml.prod-mlworkload-webhook"}
    pods = {name: f"{name}-7d9f8c6b5d-x2x9z" for name in deployments}
    rules = {rule["alert"]: rule for rule in alerts(one(manifests, "PrometheusRule"))}
    for alert, deployment in (("MLWorkloadControllerDown", "ml.prod-mlworkload"),
                              ("MLWorkloadWebhookDown", "ml.prod-mlworkload-webhook")):  # fmt: skip
        patterns = {m.value for node in walk(parse(rules[alert]["expr"]))
                    if isinstance(node, promql_parser.VectorSelector)
                    for m in node.matchers.matchers if m.name == "pod"}  # fmt: skip
        (pattern,) = patterns
        matched = {name for name, pod in pods.items() if re.fullmatch(pattern, pod)}
        assert matched == {deployment}, (alert, pattern)
        assert not re.fullmatch(pattern, pods[deployment].replace(".", "x"))  # the dot is a dot


def test_every_alert_has_a_section_in_the_docs_its_runbook_url_points_to(full: list[dict[str, Any]]) -> None:
    anchors = heading_anchors(DOCS_PAGE.read_text(encoding="utf-8"))
    for rule in alerts(one(full, "PrometheusRule")):
        url = rule["annotations"]["runbook_url"]
        page, _, anchor = url.partition("#")
        assert page.endswith("docs/platform/observability.md")
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"{rule['alert']}: no section in {DOCS_PAGE.name}"


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("metrics.alerts.quotaUsedRatio=1.5", "/metrics/alerts/quotaUsedRatio"),
        ("metrics.alerts.stalledFor=soon", "/metrics/alerts/stalledFor"),
        ("metrics.alerts.labels.namespace=x", "/metrics/alerts/labels"),
        ("metrics.rayMetrics.podMonitor.prometheusNamespace=Not_A_Namespace", "/metrics/rayMetrics/podMonitor"),
    ],
)
def test_bad_observability_values_are_refused_naming_the_field(setting: str, fragment: str) -> None:
    result = helm("template", "mlworkload", str(CHART), "--set", setting)
    assert result.returncode != 0
    assert fragment in result.stderr


# --- Ray's metrics --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", list(WorkloadType), ids=str)
def test_the_ray_scrapes_select_every_ray_pod_and_its_metrics_port(type_: WorkloadType) -> None:
    """Against the pods the operator's own builders render (plus what KubeRay adds, tests/support/netflows.py): the
    heads and workers of the workload are scraped on port `metrics` (8080), its submitter and nothing else."""
    manifests = render(*EVERYTHING)
    cluster_monitoring, pod_monitor = one(manifests, "ClusterPodMonitoring"), one(manifests, "PodMonitor")
    assert cluster_monitoring["spec"]["selector"] == pod_monitor["spec"]["selector"]
    assert pod_monitor["spec"]["namespaceSelector"] == {"any": True}
    (endpoint,) = cluster_monitoring["spec"]["endpoints"]
    (pod_endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == pod_endpoint["port"] == "metrics"
    scenario = Scenario(type_, Isolation.STRICT, exposed=False)
    world = netflows.world(scenario, netflows.render(scenario))
    selected = [pod for pod in world if netflows.selector_matches(pod_monitor["spec"]["selector"], pod.labels)]
    ray_nodes = [pod for pod in world if "ray.io/node-type" in pod.labels]
    assert sorted(pod.name for pod in selected) == sorted(pod.name for pod in ray_nodes)
    assert len(selected) >= 3  # head, a CPU and a GPU worker
    for pod in selected:
        assert {"name": endpoint["port"], "containerPort": PORT_METRICS} in pod.ports, pod.name
    assert PORT_METRICS == 8080


def test_the_ray_scrapes_have_the_structure_their_crds_accept() -> None:
    manifests = render(*EVERYTHING)
    cluster_monitoring = one(manifests, "ClusterPodMonitoring")
    assert "namespace" not in cluster_monitoring["metadata"]  # cluster-scoped
    as_namespaced = copy.deepcopy(cluster_monitoring)
    as_namespaced["kind"] = "PodMonitoring"
    assert validate_object(as_namespaced) == []
    assert set(cluster_monitoring["spec"]) <= {"selector", "endpoints", "targetLabels", "limits", "filterRunning"}
    for mapping in cluster_monitoring["spec"]["targetLabels"]["fromPod"]:
        assert LABEL_NAME.match(mapping["to"]), mapping
    pod_monitor = one(manifests, "PodMonitor")
    # Prometheus Operator's monitoring.coreos.com_podmonitors.yaml: the fields the chart sets.
    assert set(pod_monitor["spec"]) == {"namespaceSelector", "selector", "podMetricsEndpoints"}
    assert pod_monitor["metadata"]["namespace"] == "mlworkload-system"
    (endpoint,) = pod_monitor["spec"]["podMetricsEndpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "relabelings"}
    assert DURATION.match(endpoint["interval"])
    for relabeling in endpoint["relabelings"]:
        assert set(relabeling) <= {"sourceLabels", "targetLabel", "action", "regex", "replacement"}
        assert all(LABEL_NAME.match(label) for label in [*relabeling["sourceLabels"], relabeling["targetLabel"]])
    selector = pod_monitor["spec"]["selector"]
    assert set(selector) <= {"matchLabels", "matchExpressions"}


def test_the_default_policy_lets_in_the_enabled_scrapers_and_no_one_else() -> None:
    """The GMP collectors' peer is netflows.SCRAPER_PEER, whose flows tests/unit/test_network_flows.py has nca
    judge on the rendered NetworkPolicies: to Ray's metrics port (8080) on every Ray pod, and no other port."""

    def scrapers(*values: str) -> list[dict[str, Any]]:
        policy = one(render("--set", "defaultPolicy.enabled=true", *values), "MLWorkloadPolicy")
        parse_policy(policy)
        assert validate_object(policy) == []
        found: list[dict[str, Any]] = policy["spec"].get("network", {}).get("metricsScrapers", [])
        return found

    assert scrapers() == []
    assert scrapers("--set", "metrics.rayMetrics.clusterPodMonitoring.enabled=true") == [netflows.SCRAPER_PEER]
    assert scrapers("--set", "metrics.rayMetrics.podMonitor.enabled=true") == [
        {"namespaceSelector": {"matchLabels": {netflows.NAME_LABEL: "monitoring"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
    ]  # fmt: skip
    assert scrapers("--set", "metrics.rayMetrics.clusterPodMonitoring.enabled=true",
                    "--set", "metrics.rayMetrics.admitInDefaultPolicy=false") == []  # fmt: skip


def test_a_peer_the_default_policy_already_names_is_listed_once(full: list[dict[str, Any]]) -> None:
    policy = parse_policy(one(full, "MLWorkloadPolicy"))
    peers = [peer.to_dict() for peer in policy.spec.network.metrics_scrapers]
    assert peers[0] == netflows.SCRAPER_PEER
    assert peers.count(netflows.SCRAPER_PEER) == 1
    assert len(peers) == 2  # and the Prometheus Operator's
