"""Each example renders and validates: admitted by the team policy, and every object it becomes is
accepted by the real schemas (upstream KubeRay CRDs, Kubernetes OpenAPI, GKE CRDs), undeclared
fields counted as errors because the API server would silently prune them."""

from pathlib import Path

import pytest

from mlworkload.api.crd import build_crds
from mlworkload.api.load import parse_documents
from mlworkload.builders import build_gcp_plan, build_objects
from mlworkload.policy import admit
from mlworkload.yamlio import load_all
from tests.support.schemas import validate_object

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
WORKLOADS = sorted(path for path in EXAMPLES.glob("*.yaml") if not path.name.startswith("policy"))
POLICIES = parse_documents(load_all((EXAMPLES / "policy-team-nlp.yaml").read_text()), "policy").policies


@pytest.mark.parametrize("path", WORKLOADS, ids=[path.stem for path in WORKLOADS])
def test_example_renders_objects_the_api_server_accepts(path: Path) -> None:
    (workload,) = parse_documents(load_all(path.read_text()), path.name).workloads
    verdict = admit(workload, POLICIES, {"team": "nlp"})
    assert verdict.allowed, [str(problem) for problem in verdict.problems]
    objects = build_objects(verdict.resolved)
    errors = {f"{o['kind']}/{o['metadata']['name']}": validate_object(o) for o in objects}
    assert {name: problems for name, problems in errors.items() if problems} == {}
    plan = build_gcp_plan(verdict.resolved)
    gpus = {(p.accelerator.type, p.accelerator.count) for p in plan.node_pools if p.accelerator}
    wanted = {(g.accelerator.type, g.accelerator.count) for g in workload.spec.worker_groups if g.accelerator}
    assert gpus == wanted


def test_the_examples_cover_every_type_and_capacity() -> None:
    workloads = [parse_documents(load_all(path.read_text()), path.name).workloads[0] for path in WORKLOADS]
    assert {w.spec.type.value for w in workloads} == {"Cluster", "Job", "Service"}
    capacities = {g.capacity.value for w in workloads for g in w.spec.worker_groups if g.capacity}
    assert capacities == {"Spot", "SpotWithFallback"}


def test_the_generated_crds_are_valid_crd_objects() -> None:
    for crd in build_crds():
        assert validate_object(crd) == []
