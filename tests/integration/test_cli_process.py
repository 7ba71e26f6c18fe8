"""The installed `mlworkload` executable, run as a user runs it: a separate process, real pipes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def mlworkload(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("mlworkload", path=str(Path(sys.executable).parent))
    assert executable is not None, "the console script is installed by `pip install -e .`"
    return subprocess.run(
        [executable, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False, cwd=ROOT
    )


def test_readme_command_renders_and_plans_the_example_service() -> None:
    policy = str(EXAMPLES / "policy-team-nlp.yaml")
    rendered = mlworkload("render", "-f", str(EXAMPLES / "vllm-rayservice-l4.yaml"), "--policy", policy)
    assert (rendered.returncode, rendered.stderr) == (0, "")
    kinds = [document["kind"] for document in yaml.safe_load_all(rendered.stdout)]
    assert kinds.count("RayService") == 1
    assert kinds.count("Ingress") == 2
    planned = mlworkload("plan", "-f", str(EXAMPLES / "vllm-rayservice-l4.yaml"), "--policy", policy, "-o", "json")
    assert planned.returncode == 0
    assert [pool["name"] for pool in json.loads(planned.stdout)["nodePools"]] == [
        "mlw-team-nlp-l4x1-swf-ondemand",
        "mlw-team-nlp-l4x1-swf-spot",
    ]


def test_stdin_and_exit_codes() -> None:
    text = (EXAMPLES / "policy-team-nlp.yaml").read_text() + "---\n" + (EXAMPLES / "etl-cpu-job.yaml").read_text()
    assert mlworkload("validate", "-f", "-", stdin=text).returncode == 0
    refused = mlworkload("validate", "-f", "-", stdin=text.replace("replicas: 4", "replicas: -4"))
    assert refused.returncode == 1
    assert refused.stderr.startswith("<stdin>, document 2 (MLWorkload team-nlp/features-etl): spec.workerGroups[0]")
    assert "Traceback" not in refused.stderr
    assert mlworkload("render").returncode == 2


@pytest.mark.parametrize("args", [("crds",), ("--help",)])
def test_python_dash_m_matches_the_console_script(args: tuple[str, ...]) -> None:
    module = subprocess.run(
        [sys.executable, "-m", "mlworkload", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert module.returncode == 0
    assert module.stdout == mlworkload(*args).stdout
