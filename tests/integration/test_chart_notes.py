"""The chart's NOTES.txt, as the real `helm install` prints it: names from the release, not hard-coded; every
file it points to exists; the onboarding steps in the order that works (docs/platform/onboarding.md)."""

import re
from pathlib import Path

import pytest
import yaml

from tests.support.helm import helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "mlworkload-operator"


def install_dry_run(release: str, namespace: str, *values: str) -> tuple[str, list[dict[str, object]]]:
    """NOTES.txt and the manifests of a client-side dry-run install (no cluster needed)."""
    args = ["install", release, str(CHART), "-n", namespace, "--dry-run=client"]
    for value in values:
        args += ["--set", value]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    manifest, _, notes = result.stdout.partition("NOTES:\n")
    documents = [doc for doc in yaml.safe_load_all(manifest.split("MANIFEST:", 1)[-1]) if isinstance(doc, dict)]
    return notes, documents


@pytest.mark.parametrize(("release", "namespace"), [("mlworkload", "mlworkload-system"), ("ml-prod", "ops")])
def test_the_notes_name_the_deployments_this_release_made(release: str, namespace: str) -> None:
    notes, documents = install_dry_run(release, namespace)

    deployments = {str(doc["metadata"]["name"]) for doc in documents if doc.get("kind") == "Deployment"}  # type: ignore[index]
    named = set(re.findall(r"deployment/(\S+)", notes))
    assert named == deployments
    assert f"-n {namespace} " in notes


def test_every_file_the_notes_point_to_exists() -> None:
    notes, _ = install_dry_run("mlworkload", "mlworkload-system")

    paths = set(re.findall(r"\b((?:docs|examples)/[\w./-]+\.(?:md|yaml))", notes))
    assert paths, notes
    assert sorted(path for path in paths if not (ROOT / path).is_file()) == []


def test_the_onboarding_steps_come_in_the_order_that_works() -> None:
    notes, _ = install_dry_run("mlworkload", "mlworkload-system")

    order = ["kubectl label namespace team-nlp team=nlp", "kubectl apply -f policy-team-nlp.yaml",
             "kubectl get mlwp team-nlp", "kubectl create rolebinding", "kubectl apply -f examples/"]  # fmt: skip
    positions = [notes.find(step) for step in order]
    assert -1 not in positions, notes
    assert positions == sorted(positions)


def test_without_the_aggregated_roles_the_notes_say_edit_does_not_include_mlworkloads() -> None:
    with_roles, _ = install_dry_run("mlworkload", "mlworkload-system")
    without, _ = install_dry_run("mlworkload", "mlworkload-system", "rbac.createAggregateClusterRoles=false")

    assert "only with rbac.createAggregateClusterRoles=true" in without
    assert "only with" not in with_roles
