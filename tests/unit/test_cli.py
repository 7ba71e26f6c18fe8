"""The `mlworkload` command line: outputs, exit codes, and one readable line per problem."""

import io
import json
from pathlib import Path

import pytest
import yaml

from mlworkload.cli import main
from tests.support.documents import policy, workload

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POLICY = str(EXAMPLES / "policy-team-nlp.yaml")
# Governs every namespace and says nothing about GCP: the plan comes from the workload and the environment.
BARE_POLICY = {
    "apiVersion": "mlworkload.io/v1alpha1",
    "kind": "MLWorkloadPolicy",
    "metadata": {"name": "bare"},
    "spec": {},
}


def run(*argv: str, stdin: str | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, *documents: object) -> str:
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    return str(path)


def test_render_prints_multi_document_yaml() -> None:
    code, out, err = run("render", "-f", str(EXAMPLES / "notebook-l4-spot.yaml"), "--policy", POLICY)
    assert (code, err) == (0, "")
    documents = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in documents] == [
        "ServiceAccount", "NetworkPolicy", "NetworkPolicy", "PodDisruptionBudget", "RayCluster", "Service",
        "BackendConfig", "Ingress",
    ]  # fmt: skip


def test_render_json_is_a_list() -> None:
    code, out, _ = run("render", "-f", str(EXAMPLES / "etl-cpu-job.yaml"), "--policy", POLICY, "-o", "json")
    assert code == 0
    assert [o["kind"] for o in json.loads(out)][-1] == "RayJob"


def test_plan_json_is_one_object_as_in_api_md() -> None:
    code, out, _ = run("plan", "-f", str(EXAMPLES / "train-a100-rayjob.yaml"), "--policy", POLICY, "-o", "json")
    assert code == 0
    plan = json.loads(out)
    assert sorted(plan) == ["iamBindings", "nodePools"]
    assert [pool["name"] for pool in plan["nodePools"]] == [
        "mlw-team-nlp-a100x4-swf-ondemand", "mlw-team-nlp-a100x4-swf-spot",
    ]  # fmt: skip
    assert {b["role"] for b in plan["iamBindings"]} == {"roles/iam.workloadIdentityUser", "roles/storage.objectUser"}


def test_plan_text_reads_as_a_change_list() -> None:
    code, out, _ = run("plan", "-f", str(EXAMPLES / "notebook-l4-spot.yaml"), "--policy", POLICY)
    assert code == 0
    assert "+ mlw-team-nlp-l4x1-spot  in projects/my-proj/locations/us-central1/clusters/ml-cluster" in out
    assert "(policy team-nlp's own)" in out
    assert "g2-standard-8, 1 x nvidia-l4, spot, 0..8 nodes, us-central1-a,us-central1-b" in out
    assert "+ roles/storage.objectViewer\n      on projects/_/buckets/team-nlp-datasets" in out
    assert (
        "nodes: service account gke-nodes-nlp@my-proj.iam.gserviceaccount.com, disk pd-balanced, 200 GB,"
        " image COS_CONTAINERD, secure boot on, image streaming on"
    ) in out  # the policy's nodePools


def test_plan_text_names_gkes_defaults_for_node_settings_the_policy_leaves_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "MLW_GCP_PROJECT": "ops-proj",
        "MLW_GCP_LOCATION": "us-east4",
        "MLW_GKE_CLUSTER": "ops",
    }.items():
        monkeypatch.setenv(name, value)
    code, out, err = run("plan", "-f", write(tmp_path, workload().gpu_group().doc, BARE_POLICY))
    assert code == 0, err
    assert (
        "nodes: service account Compute Engine default (GKE default), disk pd-balanced (GKE default), 100 GB,"
        " image COS_CONTAINERD (GKE default), secure boot off, image streaming off"
    ) in out


def test_plan_with_nothing_to_do(tmp_path: Path) -> None:
    code, out, _ = run("plan", "-f", write(tmp_path, workload().group().doc, BARE_POLICY))
    assert (code, out) == (0, "No GCP changes: no node pools and no IAM bindings are needed.\n")


def test_plan_names_the_missing_gke_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLW_GCP_PROJECT", "MLW_GCP_LOCATION", "MLW_GKE_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run("plan", "-f", write(tmp_path, workload().gpu_group().doc, BARE_POLICY))
    assert code == 1
    assert "no GKE cluster is known" in err
    monkeypatch.setenv("MLW_GCP_PROJECT", "ops-proj")
    monkeypatch.setenv("MLW_GCP_LOCATION", "us-east4")
    monkeypatch.setenv("MLW_GKE_CLUSTER", "ops")
    code, out, _ = run("plan", "-f", write(tmp_path, workload().gpu_group().doc, BARE_POLICY), "-o", "json")
    assert code == 0
    assert json.loads(out)["nodePools"][0]["project"] == "ops-proj"


def test_bad_operator_settings_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLW_GCP_PROJECT", "Not A Project")
    monkeypatch.delenv("MLW_GCP_LOCATION", raising=False)
    code, _, err = run("validate", "-f", write(tmp_path, workload().doc))
    assert code == 1
    assert "environment: MLW_GCP_PROJECT: 'Not A Project' does not match" in err
    assert "environment: MLW_GCP_LOCATION: required field is missing" in err


def test_validate_admits_every_example() -> None:
    files = [str(path) for path in sorted(EXAMPLES.glob("*.yaml")) if "policy" not in path.name]
    argv = ["validate", "--policy", POLICY, "--namespace-labels", "team=nlp"]
    for path in files:
        argv += ["-f", path]
    code, out, err = run(*argv)
    assert (code, err) == (0, "")
    assert out.count("admitted by team-nlp") == 4


def test_validate_refuses_with_one_line_per_problem(tmp_path: Path) -> None:
    doc = workload("llm").gpu_group(accelerator="nvidia-h100-80gb", count=8).expose("serve", iap=False)
    code, out, err = run("validate", "-f", write(tmp_path, doc.doc), "--policy", POLICY)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "team-nlp/llm: spec.workerGroups[0].accelerator.type: 'nvidia-h100-80gb' is not allowed by policy team-nlp;"
        " allowed: nvidia-l4, nvidia-tesla-a100",
        "team-nlp/llm: spec.expose.serve.iap: false is not allowed: policy team-nlp requires IAP",
    ]


def test_namespace_labels_decide_which_policy_governs(tmp_path: Path) -> None:
    cv = policy("team-cv").set("namespaceSelector", {"matchLabels": {"team": "cv"}}).doc
    doc = workload().gpu_group(accelerator="nvidia-h100-80gb", count=8).doc
    argv = ["validate", "-f", write(tmp_path, doc, cv), "--policy", POLICY, "--namespace-labels"]
    assert run(*argv, "team=cv")[:2] == (0, "MLWorkloadPolicy team-cv: valid\nteam-nlp/demo: admitted by team-cv\n")
    code, _, err = run(*argv, "team=nlp")
    assert (code, err.startswith("team-nlp/demo: spec.workerGroups[0].accelerator.type: ")) == (1, True)
    code, _, err = run(*argv, "team=vision")  # default deny: no policy governs the namespace
    assert (code, err.startswith("team-nlp/demo: metadata.namespace: no MLWorkloadPolicy governs")) == (1, True)


def test_quota_spans_the_workloads_of_one_input(tmp_path: Path) -> None:
    # The team policy allows 32 GPUs; three workloads of 16 GPUs at max scale exceed it together.
    docs = [workload(f"w{i}").gpu_group(count=8, maxReplicas=2).doc for i in range(3)]
    code, _, err = run("validate", "-f", write(tmp_path, *docs), "--policy", POLICY)
    assert code == 1
    assert "already use 32 of their quota of 32" in err


def test_policies_may_come_in_the_same_file_and_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (EXAMPLES / "policy-team-nlp.yaml").read_text() + "\n---\n" + (EXAMPLES / "etl-cpu-job.yaml").read_text()
    code, out, _ = run("validate", "-f", "-", stdin=text, monkeypatch=monkeypatch)
    assert (code, out) == (0, "MLWorkloadPolicy team-nlp: valid\nteam-nlp/features-etl: admitted by team-nlp\n")


def test_schema_errors_name_file_document_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, workload().doc, workload("b").set("spec.workerGroups", [{"name": "g", "replica": 2}]).doc)
    code, out, err = run("render", "-f", path)
    assert (code, out) == (1, "")
    assert (
        err == f"{path}, document 2 (MLWorkload team-nlp/b): spec.workerGroups[0].replica: unknown field;"
        " remove it (check the spelling against `kubectl explain`)\n"
    )


def test_broken_yaml_is_unreadable_with_a_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: mlworkload.io/v1alpha1\nkind: [MLWorkload\n")
    code, _, err = run("validate", "-f", str(path))
    assert (code, err) == (2, f"{path}:3:1: not valid YAML: did not find expected ',' or ']'\n")


def test_every_problem_of_every_file_at_once_unreadable_wins(tmp_path: Path) -> None:
    (tmp_path / "dup.yaml").write_text("a: 1\na: 2\nb: 1\nb: 2\n")
    (tmp_path / "bad.yaml").write_bytes(b"kind: \xff\n")
    schema = write(tmp_path, workload("b").set("spec.workerGroups", [{"name": "g", "replica": 2}]).doc)
    code, _, err = run(
        "validate", "-f", schema, "-f", str(tmp_path / "dup.yaml"), "--policy", str(tmp_path / "bad.yaml")
    )
    assert code == 2  # one file could not be read: no verdict at all, but every problem is listed
    assert [line.split(": ")[0] for line in err.splitlines()] == [
        f"{schema}, document 1 (MLWorkload team-nlp/b)", f"{tmp_path}/dup.yaml:2:1", f"{tmp_path}/dup.yaml:4:1",
        f"{tmp_path}/bad.yaml",
    ]  # fmt: skip


def test_a_file_of_policies_only_validates_the_policies(tmp_path: Path) -> None:
    code, out, err = run("validate", "-f", POLICY)
    assert (code, out, err) == (0, "MLWorkloadPolicy team-nlp: valid\n", "")
    broken = policy("p").set("quota", {"maxGPUs": "many"}).set("priorty", 1).doc
    code, out, err = run("validate", "-f", write(tmp_path, broken))
    assert (code, out) == (1, "")
    assert [line.split(": ")[1] for line in err.splitlines()] == ["spec.quota.maxGPUs", "spec.priorty"]
    assert run("render", "-f", POLICY)[::2] == (2, f"mlworkload: no MLWorkload in {POLICY}\n")


def test_an_internal_error_is_one_line_with_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_: object) -> None:
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr("mlworkload.cli.build_objects", broken)
    path = write(tmp_path, workload().doc)
    code, out, err = run("render", "-f", path, "--policy", POLICY, "--namespace-labels", "team=nlp")
    assert (code, out) == (3, "")
    assert err == (
        "mlworkload: internal error: ZeroDivisionError: division by zero\\nsecond line"
        " (run with --debug for the traceback)\n"
    )
    for argv in (["--debug", "render", "-f", path], ["render", "--debug", "-f", path]):
        code, _, err = run(*argv, "--policy", POLICY, "--namespace-labels", "team=nlp")
        assert code == 3
        assert err.startswith("Traceback (most recent call last):\n")
        assert err.splitlines()[-1] == "mlworkload: internal error: ZeroDivisionError: division by zero\\nsecond line"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["render", "-f", "/nonexistent.yaml"], "mlworkload: cannot read /nonexistent.yaml: No such file or directory"),
        (["validate", "-f", "{file}", "--namespace-labels", "team"], "is not key=value"),
        (["render", "-f", "{empty}"], "no MLWorkload in"),
        (["crds", "--output-dir", "/nonexistent"], "--output-dir /nonexistent is not a directory"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    argv = [a.format(file=write(tmp_path, workload().doc), empty=empty) for a in argv]
    code, _, err = run(*argv)
    assert code == 2
    assert message in err


def test_argparse_usage_errors_exit_2() -> None:
    for argv in (["render"], ["bogus"], ["render", "-f", "x", "-o", "xml"], ["--debug"]):
        code, out, err = run(*argv)
        assert (code, out) == (2, ""), argv
        assert err.startswith("usage: mlworkload"), argv
    code, out, err = run("validate", "--help")
    assert (code, err) == (0, "")
    assert out.startswith("usage: mlworkload validate")


def test_crds_print_and_write(tmp_path: Path) -> None:
    code, out, _ = run("crds")
    assert code == 0
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(out)] == [
        "mlworkloads.mlworkload.io", "mlworkloadpolicies.mlworkload.io"
    ]  # fmt: skip
    code, out, _ = run("crds", "--output-dir", str(tmp_path))
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mlworkload.io_mlworkloadpolicies.yaml", "mlworkload.io_mlworkloads.yaml"
    ]  # fmt: skip
