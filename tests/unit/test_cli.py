"""The `mlworkload` command line: outputs, exit codes, and one readable line per problem."""

import io
import json
from pathlib import Path

import pytest
import yaml

from mlworkload.cli import main
from tests.support.documents import workload

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POLICY = str(EXAMPLES / "policy-team-nlp.yaml")


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
        "ServiceAccount", "NetworkPolicy", "NetworkPolicy", "RayCluster", "Service", "BackendConfig", "Ingress"
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
    assert [pool["name"] for pool in plan["nodePools"]] == ["mlw-a100x4-swf-ondemand", "mlw-a100x4-swf-spot"]
    assert {b["role"] for b in plan["iamBindings"]} == {"roles/iam.workloadIdentityUser", "roles/storage.objectUser"}


def test_plan_text_reads_as_a_change_list() -> None:
    code, out, _ = run("plan", "-f", str(EXAMPLES / "notebook-l4-spot.yaml"), "--policy", POLICY)
    assert code == 0
    assert "+ mlw-l4x1-spot  in projects/my-proj/locations/us-central1/clusters/ml-cluster" in out
    assert "g2-standard-8, 1 x nvidia-l4, spot, 0..8 nodes, us-central1-a,us-central1-b" in out
    assert "+ roles/storage.objectViewer\n      on projects/_/buckets/team-nlp-datasets" in out


def test_plan_with_nothing_to_do(tmp_path: Path) -> None:
    code, out, _ = run("plan", "-f", write(tmp_path, workload().group().doc))
    assert (code, out) == (0, "No GCP changes: no node pools and no IAM bindings are needed.\n")


def test_plan_names_the_missing_gke_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLW_GCP_PROJECT", "MLW_GCP_LOCATION", "MLW_GKE_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run("plan", "-f", write(tmp_path, workload().gpu_group().doc))
    assert code == 1
    assert "no GKE cluster is known" in err
    monkeypatch.setenv("MLW_GCP_PROJECT", "ops-proj")
    monkeypatch.setenv("MLW_GCP_LOCATION", "us-east4")
    monkeypatch.setenv("MLW_GKE_CLUSTER", "ops")
    code, out, _ = run("plan", "-f", write(tmp_path, workload().gpu_group().doc), "-o", "json")
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
    doc = workload().gpu_group(accelerator="nvidia-h100-80gb", count=8).doc
    assert run("validate", "-f", write(tmp_path, doc), "--policy", POLICY, "--namespace-labels", "team=cv")[0] == 0
    assert run("validate", "-f", write(tmp_path, doc), "--policy", POLICY, "--namespace-labels", "team=nlp")[0] == 1


def test_quota_spans_the_workloads_of_one_input(tmp_path: Path) -> None:
    # The team policy allows 32 GPUs; three workloads of 16 GPUs at max scale exceed it together.
    docs = [workload(f"w{i}").gpu_group(count=8, maxReplicas=2).doc for i in range(3)]
    code, _, err = run("validate", "-f", write(tmp_path, *docs), "--policy", POLICY)
    assert code == 1
    assert "already use 32 of their quota of 32" in err


def test_policies_may_come_in_the_same_file_and_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    text = (EXAMPLES / "policy-team-nlp.yaml").read_text() + "\n---\n" + (EXAMPLES / "etl-cpu-job.yaml").read_text()
    code, out, _ = run("validate", "-f", "-", stdin=text, monkeypatch=monkeypatch)
    assert (code, out) == (0, "team-nlp/features-etl: admitted by team-nlp\n")


def test_schema_errors_name_file_document_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, workload().doc, workload("b").set("spec.workerGroups", [{"name": "g", "replica": 2}]).doc)
    code, out, err = run("render", "-f", path)
    assert (code, out) == (1, "")
    assert (
        err == f"{path}, document 2 (MLWorkload team-nlp/b): spec.workerGroups[0].replica: unknown field;"
        " remove it (check the spelling against `kubectl explain`)\n"
    )


def test_broken_yaml_is_a_refusal_with_a_position(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: mlworkload.io/v1alpha1\nkind: [MLWorkload\n")
    code, _, err = run("validate", "-f", str(path))
    assert code == 1
    assert err.startswith(f"{path}:3:1: not valid YAML:")


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


def test_argparse_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("render")[0] == 2
    assert run("bogus")[0] == 2
    assert run("render", "-f", "x", "-o", "xml")[0] == 2
    assert "usage: mlworkload" in capsys.readouterr().err


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
