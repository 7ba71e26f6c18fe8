"""`mlworkload validate -f DIR`: a GitOps repository of several teams, judged namespace by namespace."""

import json
from pathlib import Path
from typing import Any

import yaml

from tests.support.documents import policy, workload
from tests.unit.test_cli import run


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "team-nlp"}}


def repository(root: Path, cv_accelerator: str = "nvidia-tesla-a100") -> Path:
    """Two teams, each with its namespace, policy and a workload, plus a file that is not ours."""
    teams = {
        "nlp": (policy("team-nlp").set("namespaceSelector", {"matchLabels": {"team": "nlp"}}), "nvidia-tesla-a100"),
        "cv": (policy("team-cv").set("namespaceSelector", {"matchLabels": {"team": "cv"}})
               .set("accelerators", {"allowed": ["nvidia-l4"], "maxPerWorkload": 8}), cv_accelerator),
    }  # fmt: skip
    for team, (team_policy, accelerator) in teams.items():
        folder = root / "teams" / team
        folder.mkdir(parents=True)
        (folder / "namespace.yml").write_text(yaml.safe_dump(namespace(f"team-{team}", team=team)))
        (folder / "policy.yaml").write_text(yaml.safe_dump(team_policy.doc))
        doc = workload(f"{team}-train", f"team-{team}").gpu_group(accelerator=accelerator).doc
        (folder / "workloads.yaml").write_text(yaml.safe_dump_all([doc, DEPLOYMENT]))
    (root / "README.md").write_text("not a manifest")
    return root


def test_each_workload_is_judged_under_its_own_namespace_and_other_kinds_are_ignored(tmp_path: Path) -> None:
    root = repository(tmp_path)
    code, out, err = run("validate", "-f", str(root))
    assert code == 1
    assert "team-nlp/nlp-train: admitted by team-nlp" in out.splitlines()
    assert "MLWorkloadPolicy team-cv: valid" in out.splitlines()
    ignored = [line for line in out.splitlines() if "ignored" in line]
    assert len(ignored) == 2
    assert all("apps/v1 Deployment web" in line for line in ignored)
    assert err.startswith("team-cv/cv-train: spec.workerGroups[0].accelerator.type")  # team-cv's rule, not nlp's
    assert err.count("\n") == 1

    fixed = repository(tmp_path / "fixed", cv_accelerator="nvidia-l4")
    assert run("validate", "-f", str(fixed))[0] == 0


def test_json_gives_one_result_per_verdict(tmp_path: Path) -> None:
    code, out, _ = run("validate", "-f", str(repository(tmp_path)), "-o", "json")
    assert code == 1
    report = json.loads(out)
    results = {(r["kind"], r["namespace"], r["name"]): r for r in report["results"]}
    assert set(results) == {
        ("MLWorkloadPolicy", None, "team-cv"), ("MLWorkloadPolicy", None, "team-nlp"),
        ("MLWorkload", "team-cv", "cv-train"), ("MLWorkload", "team-nlp", "nlp-train"),
    }  # fmt: skip
    refused = results["MLWorkload", "team-cv", "cv-train"]
    assert (refused["allowed"], refused["policy"]) == (False, "team-cv")
    assert [p["field"] for p in refused["problems"]] == ["spec.workerGroups[0].accelerator.type"]
    assert results["MLWorkload", "team-nlp", "nlp-train"] == {
        "kind": "MLWorkload", "namespace": "team-nlp", "name": "nlp-train", "allowed": True, "policy": "team-nlp",
        "problems": [],
    }  # fmt: skip
    assert len(report["ignored"]) == 2


def test_a_document_that_does_not_parse_is_a_refused_result_naming_its_file(tmp_path: Path) -> None:
    root = repository(tmp_path, cv_accelerator="nvidia-l4")
    broken = workload("typo", "team-cv").set("spec.workerGroups", [{"name": "g", "replica": 2}]).doc
    (root / "teams" / "cv" / "typo.yaml").write_text(yaml.safe_dump(broken))
    code, out, err = run("validate", "-f", str(root))
    assert code == 1
    assert err.splitlines() == [
        f"{root}/teams/cv/typo.yaml, document 1 (MLWorkload team-cv/typo): spec.workerGroups[0].replica: unknown"
        " field; remove it (check the spelling against `kubectl explain`)"
    ]
    code, out, _ = run("validate", "-f", str(root), "-o", "json")
    (typo,) = [r for r in json.loads(out)["results"] if r["name"] == "typo"]
    assert (code, typo["allowed"], typo["problems"][0]["field"]) == (1, False, "spec.workerGroups[0].replica")


def test_namespaces_without_a_document_fall_back_to_the_flag(tmp_path: Path) -> None:
    root = repository(tmp_path, cv_accelerator="nvidia-l4")
    (root / "teams" / "cv" / "namespace.yml").unlink()
    code, out, _ = run("validate", "-f", str(root), "--namespace-labels", "team=nlp")
    assert "team-cv/cv-train: admitted by team-nlp" in out.splitlines()  # judged as if labelled team=nlp
    assert code == 0


def test_an_unreadable_file_in_the_tree_gives_no_verdict(tmp_path: Path) -> None:
    root = repository(tmp_path, cv_accelerator="nvidia-l4")
    (root / "teams" / "cv" / "dup.yaml").write_text("a: 1\na: 2\n")
    code, out, err = run("validate", "-f", str(root))
    assert (code, out) == (2, "")
    assert err.startswith(f"{root}/teams/cv/dup.yaml:2:1")


def test_while_a_policy_of_the_tree_is_broken_no_workload_is_judged(tmp_path: Path) -> None:
    root = repository(tmp_path, cv_accelerator="nvidia-l4")
    broken = policy("team-cv").set("namespaceSelector", {"matchLabels": {"team": "cv"}}).set("quota", {"maxGPU": 4})
    (root / "teams" / "cv" / "policy.yaml").write_text(yaml.safe_dump(broken.doc))
    code, out, _ = run("validate", "-f", str(root), "-o", "json")
    assert code == 1
    judged = {(r["kind"], r["name"], r["allowed"]) for r in json.loads(out)["results"]}
    assert judged == {("MLWorkloadPolicy", "team-nlp", True), ("MLWorkloadPolicy", "team-cv", False)}
