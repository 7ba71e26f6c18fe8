"""The GitHub Actions workflows in .github/workflows, checked statically (nothing here reaches GitHub or a registry).

Every workflow validates against the GitHub workflow schema that check-jsonschema vendors (`check-jsonschema
--builtin-schema vendor.github-workflows`, no network), and what the workflows run agrees with the repository:
CI runs the README's test command, the e2e workflow installs the KubeRay whose CRDs the tests use on a kind that
enforces NetworkPolicies, the release pushes the chart to an OCI registry, and every command, module and path
a step names exists here.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from tests.support.kuberay_crds import KUBERAY_CHART_ENV, KUBERAY_CRDS_ENV, KUBERAY_HELM_REPO, KUBERAY_VERSION

ROOT: Final = Path(__file__).resolve().parents[2]
WORKFLOWS_DIR: Final = ROOT / ".github" / "workflows"
WORKFLOWS: Final = sorted([*WORKFLOWS_DIR.glob("*.yaml"), *WORKFLOWS_DIR.glob("*.yml")])
CHART: Final = ROOT / "deploy" / "helm" / "mlworkload-operator"
# kind's default CNI, kindnet, enforces NetworkPolicies from this release on (kubernetes-sigs/kind#3612).
KIND_NETWORK_POLICIES: Final = (0, 24, 0)
SEPARATORS: Final = frozenset({"&&", "||", "|", ";", "(", ")"})
REDIRECTS: Final = re.compile(r"^[0-9]*(?:>>?|<|>&|&>)$")


def load(path: Path) -> dict[str, Any]:
    workflow = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(workflow, dict), path
    return workflow


def workflow(name: str) -> dict[str, Any]:
    return load(WORKFLOWS_DIR / name)


@dataclass(frozen=True)
class Step:
    job: str
    index: int
    step: dict[str, Any]
    env: dict[str, str]  # workflow, job and step env, the innermost winning

    @property
    def name(self) -> str:
        return f"{self.job}[{self.index}] {self.step.get('name') or self.step.get('uses') or ''}".strip()

    @property
    def uses(self) -> str:
        return str(self.step.get("uses", ""))

    @property
    def with_(self) -> dict[str, Any]:
        return dict(self.step.get("with") or {})

    def resolve(self, text: str) -> str:
        """`${{ env.X }}`, `$X` and `${X}` replaced by the env the step sees (other expressions are left)."""
        text = re.sub(r"\$\{\{\s*env\.(\w+)\s*\}\}", lambda m: self.env.get(m[1], m[0]), text)
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m[1], m[0]), text)

    def commands(self) -> list[list[str]]:
        """The simple commands of the step's `run:` script, as a shell splits them (redirections left out)."""
        script = re.sub(r"\\\n\s*", " ", str(self.step.get("run", "")))
        found: list[list[str]] = []
        for line in script.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
            lexer.whitespace_split = True
            lexer.commenters = "#"
            command: list[str] = []
            skip = False
            for token in lexer:
                if skip:
                    skip = False
                elif token in SEPARATORS:
                    found.append(command)
                    command = []
                elif REDIRECTS.match(token):  # and its target
                    skip = True
                else:
                    command.append(token)
            found.append(command)
        return [self._unassign(c) for c in found if self._unassign(c)]

    @staticmethod
    def _unassign(command: list[str]) -> list[str]:
        """Without leading VAR=value assignments and trailing redirect file descriptors (`2` of `2>&1`)."""
        words = list(command)
        while words and re.match(r"^\w+=", words[0]):
            words.pop(0)
        while words and words[-1].isdigit():
            words.pop()
        return words


def steps(flow: dict[str, Any]) -> Iterator[Step]:
    for job_name, job in flow["jobs"].items():
        for index, step in enumerate(job.get("steps") or []):
            env = {**(flow.get("env") or {}), **(job.get("env") or {}), **(step.get("env") or {})}
            yield Step(job_name, index, step, {key: str(value) for key, value in env.items()})


def runs(flow: dict[str, Any], program: str, *args: str) -> list[tuple[Step, list[str]]]:
    """Every command of the workflow that starts with `program args...`."""
    head = [program, *args]
    return [(step, command) for step in steps(flow) for command in step.commands() if command[: len(head)] == head]


def option(command: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value` in a command."""
    for index, word in enumerate(command):
        if word == name and index + 1 < len(command):
            return command[index + 1]
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    return None


def sets(command: list[str]) -> dict[str, str]:
    """The `--set key=value` of a helm command."""
    pairs = [command[i + 1] for i, word in enumerate(command[:-1]) if word == "--set"]
    return dict(pair.split("=", 1) for pair in pairs)


def version_tuple(text: str) -> tuple[int, ...]:
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)", text)
    assert match, f"not a pinned version: {text!r}"
    return tuple(int(part) for part in match.groups())


def mlworkload_has(command: str) -> bool:
    """`mlworkload COMMAND -h` succeeds: the command line has that command."""
    cli = [sys.executable, "-c", "from mlworkload.cli import main; raise SystemExit(main())", command, "-h"]
    return subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False).returncode == 0


def readme_test_command() -> str:
    """The second of the README's two commands (the test command)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The two commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2, "the README's two commands moved: update this test"
    return str(blocks[1].strip())


# --- every workflow ------------------------------------------------------------------------------------------


def test_the_workflows_are_there() -> None:
    assert [path.name for path in WORKFLOWS] == ["ci.yaml", "e2e.yaml", "release.yaml"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def test_the_workflow_is_valid_against_the_github_workflow_schema(path: Path) -> None:
    result = check_jsonschema(path)
    assert result.returncode == 0, result.stdout + result.stderr


def check_jsonschema(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]
    return subprocess.run([*command, *map(str, paths)], capture_output=True, text=True, timeout=120, check=False)


def test_the_schema_check_refuses_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text('"on": push\njobs:\n  test:\n    timeout-minutes: soon\n    steps:\n      - run: true\n')
    result = check_jsonschema(broken)
    assert result.returncode == 1
    assert "runs-on" in result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def test_actions_are_pinned_by_major_version_and_permissions_are_given(path: Path) -> None:
    flow = load(path)
    assert "permissions" in flow, "without it the token gets the repository's default permissions"
    assert flow["permissions"].get("contents") == "read"
    for step in steps(flow):
        if step.uses:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step.uses), f"{step.name}: pin to a major version"
    for name, job in flow["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", name
        assert isinstance(job.get("timeout-minutes"), int), f"{name}: give it a timeout"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[path.name for path in WORKFLOWS])
def test_what_the_steps_run_exists_in_the_repository(path: Path) -> None:
    flow = load(path)
    for step in steps(flow):
        for command in step.commands():
            where = f"{path.name}: {step.name}: {shlex.join(command)}"
            if command[0].startswith("."):  # a script of the repository, e.g. .ci/run
                script = ROOT / command[0]
                assert script.is_file(), where
                assert script.stat().st_mode & 0o111, f"{where}: not executable"
            if command[:2] == ["python", "-m"] or command[:2] == ["python3", "-m"]:
                module = command[2]
                assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
                if module == "pytest":
                    targets = [word for word in command[3:] if not word.startswith("-")]
                    assert targets, f"{where}: name the tier"
                    assert all((ROOT / target.split("::")[0]).exists() for target in targets), where
            if command[0] == "mlworkload":
                assert mlworkload_has(command[1]), f"{where}: no mlworkload command {command[1]}"
            if command[:2] == ["docker", "build"]:
                dockerfile = option(command, "-f") or option(command, "--file") or "Dockerfile"
                assert (ROOT / dockerfile).is_file(), where
                assert command[-1] == ".", f"{where}: the build context is the repository"
            if command[0] == "helm" and command[1] in {"install", "upgrade", "lint", "package", "template"}:
                local = [w for w in command[2:] if w.startswith(("deploy/", "$CHART", "./"))]
                assert all((ROOT / step.resolve(w).strip('"')).is_dir() for w in local), where
        if step.uses.startswith("docker/build-push-action@"):
            assert (ROOT / step.with_.get("context", ".") / step.with_.get("file", "Dockerfile")).is_file()


# --- ci.yaml -------------------------------------------------------------------------------------------------


def test_ci_runs_the_readmes_test_command() -> None:
    flow = workflow("ci.yaml")
    assert set(flow["on"]) >= {"push", "pull_request"}
    command = readme_test_command()
    scripts = [str(step.step.get("run", "")).strip() for step in steps(flow)]
    assert ".ci/run" in scripts or command in scripts
    if ".ci/run" in scripts:  # .ci/run is the README's command, word for word
        assert (ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().splitlines()[-1] == command
    (job,) = flow["jobs"].values()
    assert job["timeout-minutes"] == 20
    (python,) = [step for step in steps(flow) if step.uses.startswith("actions/setup-python@")]
    assert python.with_["python-version"] == "3.11"
    assert flow["concurrency"]["cancel-in-progress"] is True
    assert flow["permissions"] == {"contents": "read"}


def test_ci_gives_the_tests_kuberays_crds() -> None:
    """Not in the repository: the tests' fetcher gets them from KubeRay's chart, and every tier reads them."""
    flow = workflow("ci.yaml")
    (fetch,) = [step for step, _ in runs(flow, "python", "-m", "tests.support.kuberay_crds")]
    assert f"{KUBERAY_CRDS_ENV}=" in str(fetch.step["run"])
    assert "GITHUB_ENV" in str(fetch.step["run"])
    assert KUBERAY_CHART_ENV not in fetch.env  # the default chart: KubeRay's, at the tests' version


# --- e2e.yaml ------------------------------------------------------------------------------------------------


def test_e2e_runs_the_tier_against_real_kuberay_and_the_installed_operator() -> None:
    flow = workflow("e2e.yaml")
    (tier,) = [(step, command) for step, command in runs(flow, "python", "-m", "pytest")]
    step, command = tier
    assert command[3] == "tests/e2e"
    assert step.env["MLW_E2E_REAL_KUBERAY"] == "1"
    assert step.env["MLW_E2E_OPERATOR"] == "in-cluster"
    assert step.env["MLW_E2E_CLUSTER"] == "kubeconfig"
    assert "KUBECONFIG" in "".join(str(s.step.get("run", "")) for s in steps(flow) if s.index < step.index)
    # The tier fetches KubeRay's CRDs itself, as from a clean clone.
    assert all(KUBERAY_CRDS_ENV not in s.env and KUBERAY_CRDS_ENV not in str(s.step) for s in steps(flow))


def test_e2e_installs_the_kuberay_of_the_tests_crds() -> None:
    flow = workflow("e2e.yaml")
    installs = [(s, c) for s, c in runs(flow, "helm", "install") if "kuberay-operator" in c[2:4]]
    (step, command), *_ = installs
    assert command[2:4] == ["kuberay-operator", "kuberay-operator"]
    assert step.resolve(option(command, "--version") or "") == KUBERAY_VERSION
    assert step.resolve(option(command, "--repo") or "") == KUBERAY_HELM_REPO
    # Where the chart's NetworkPolicies and bypass guard expect KubeRay's operator.
    assert option(command, "--namespace") == "kuberay-system"
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    assert values["operator"]["network"]["kuberayNamespace"] == "kuberay-system"


def test_e2e_pins_a_kind_that_enforces_network_policies() -> None:
    flow = workflow("e2e.yaml")
    (kind,) = [step for step in steps(flow) if step.uses.startswith("helm/kind-action@")]
    version = step_value(kind, kind.with_["version"])
    assert version_tuple(version) >= KIND_NETWORK_POLICIES
    node_image = step_value(kind, kind.with_.get("node_image", ""))
    if node_image:  # an image built for the pinned release: kind asks for the digest
        assert re.fullmatch(r"kindest/node:v\d+\.\d+\.\d+@sha256:[0-9a-f]{64}", node_image), node_image


def step_value(step: Step, value: Any) -> str:
    return step.resolve(str(value))


def test_e2e_installs_this_chart_with_the_image_it_built_and_gcp_dry_run() -> None:
    flow = workflow("e2e.yaml")
    ((build_step, build),) = runs(flow, "docker", "build")
    image = build_step.resolve(option(build, "-t") or "")
    ((load_step, load_),) = runs(flow, "kind", "load", "docker-image")
    assert load_step.resolve(load_[3]) == image
    ((step, install),) = [(s, c) for s, c in runs(flow, "helm", "install") if c[3] == "deploy/helm/mlworkload-operator"]
    values = {key: step.resolve(value) for key, value in sets(install).items()}
    assert f"{values['image.repository']}:{values['image.tag']}" == image
    assert values["image.pullPolicy"] == "Never"  # the loaded image, never one pulled from a registry
    assert values["operator.gcp.mode"] == "dry-run"
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    for key in values:  # every value set is one the chart has
        node = defaults
        for part in key.split("."):
            assert isinstance(node, dict), f"the chart has no value {key}"
            assert part in node, f"the chart has no value {key}"
            node = node[part]


def test_e2e_keeps_the_clusters_logs_when_it_fails() -> None:
    flow = workflow("e2e.yaml")
    collected = [s for s in steps(flow) if s.step.get("if") == "failure()"]
    assert any("kubectl" in str(s.step.get("run", "")) and " logs " in str(s.step["run"]) for s in collected)
    assert any(s.uses.startswith("actions/upload-artifact@") for s in collected)


# --- release.yaml --------------------------------------------------------------------------------------------


def test_release_builds_the_image_and_pushes_the_chart_to_an_oci_registry() -> None:
    flow = workflow("release.yaml")
    assert flow["on"] == {"push": {"tags": ["v*"]}}
    assert flow["permissions"] == {"contents": "read", "packages": "write"}
    uses = {step.uses.split("@")[0]: step for step in steps(flow) if step.uses}
    assert {"docker/login-action", "docker/metadata-action", "docker/build-push-action"} <= set(uses)
    assert uses["docker/login-action"].with_["registry"] == "ghcr.io"
    assert uses["docker/build-push-action"].with_["push"] is True
    ((package_step, package),) = runs(flow, "helm", "package")
    assert package_step.resolve(package[2]) == "deploy/helm/mlworkload-operator"
    assert option(package, "--version") == option(package, "--app-version") == "$VERSION"
    assert "GITHUB_REF_NAME#v" in "".join(str(s.step.get("run", "")) for s in steps(flow))
    ((_, push),) = runs(flow, "helm", "push")
    assert push[2].endswith(".tgz")
    assert re.fullmatch(r"oci://ghcr\.io/\S+/charts", push[3]), push
