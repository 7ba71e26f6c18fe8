"""The container image recipe, checked statically (no Docker engine here): what it runs, as whom, from what."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
CHART = ROOT / "deploy" / "helm" / "mlworkload-operator"


def instructions(name: str) -> list[str]:
    return [line.split(None, 1)[1] for line in DOCKERFILE.splitlines() if line.startswith(f"{name} ")]


def test_the_runtime_stage_is_slim_python_and_runs_as_a_non_root_user() -> None:
    stages = instructions("FROM")
    assert all(re.fullmatch(r"python:3\.11-slim( AS \w+)?", stage) for stage in stages)
    (user,) = instructions("USER")
    uid = user.split(":")[0]
    assert uid.isdigit()  # numeric, so the kubelet can verify runAsNonRoot
    assert int(uid) >= 10000
    assert f"runAsUser: {uid}" in (CHART / "templates" / "deployment.yaml").read_text()


def test_the_entrypoint_is_mlworkload_run() -> None:
    assert instructions("ENTRYPOINT") == ['["mlworkload"]']
    assert instructions("CMD") == ['["run"]']
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["mlworkload"] == "mlworkload.cli:main"


def test_only_runtime_dependencies_are_installed() -> None:
    assert "[dev]" not in DOCKERFILE
    assert any("pip wheel" in run and run.rstrip().endswith(" .") for run in instructions("RUN"))


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[0] == "*"  # nothing but what is listed below reaches the build
    allowed = {entry.removeprefix("!").rstrip("/") for entry in ignored if entry.startswith("!")}
    for copy in instructions("COPY"):
        if copy.startswith("--from"):
            continue
        *sources, _ = copy.split()
        assert set(sources) <= allowed, copy
        assert all((ROOT / source).exists() for source in sources)


def test_the_chart_version_follows_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert chart["appVersion"] == project["project"]["version"]
