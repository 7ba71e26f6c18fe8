"""Which cluster and which operator the e2e tier picks, and what it refuses to run next to: the kubeconfig and kind
paths cannot run on every machine, their choice can."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import (
    Backend,
    BackendChoice,
    BackendUnavailable,
    OperatorMode,
    choose_backend,
    choose_operator,
    operator_problems,
)


def never() -> bool:
    return False


def always() -> bool:
    return True


@pytest.mark.parametrize(
    ("environ", "kind", "backend"),
    [
        ({}, never, "in-memory"),
        ({}, always, "kind"),
        ({"KUBECONFIG": "/home/me/.kube/config"}, always, "kubeconfig"),
        ({"KUBECONFIG": "/home/me/.kube/config", "MLW_E2E_CLUSTER": "in-memory"}, always, "in-memory"),
        ({"KUBECONFIG": "/home/me/.kube/config", "MLW_E2E_CLUSTER": "kind"}, always, "kind"),
        ({"KUBECONFIG": "", "MLW_E2E_CLUSTER": ""}, never, "in-memory"),
    ],
)
def test_the_first_available_backend_is_chosen(environ: dict[str, str], kind: Callable[[], bool], backend: str) -> None:
    assert choose_backend(environ, kind).backend == backend


def test_the_kubeconfig_backend_uses_the_users_files() -> None:
    choice = choose_backend({"KUBECONFIG": "/a/config:/b/config"}, never)
    assert choice == BackendChoice("kubeconfig", "KUBECONFIG=/a/config:/b/config", Path("/a/config:/b/config"))


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MLW_E2E_CLUSTER": "kubeconfig"}, "KUBECONFIG is not set"),
        ({"MLW_E2E_CLUSTER": "kind"}, "kind, docker or the Docker engine is missing"),
        ({"MLW_E2E_CLUSTER": "minikube"}, "expected one of kubeconfig, kind, in-memory"),
    ],
)
def test_an_explicit_backend_that_cannot_run_is_an_error_not_a_fallback(environ: dict[str, str], message: str) -> None:
    with pytest.raises(BackendUnavailable, match=message):
        choose_backend(environ, never)


@pytest.mark.parametrize(
    ("environ", "backend", "operator"),
    [
        ({}, "in-memory", "in-process"),
        ({}, "kind", "in-process"),
        ({"MLW_E2E_OPERATOR": ""}, "kubeconfig", "in-process"),
        ({"MLW_E2E_OPERATOR": "in-cluster"}, "kubeconfig", "in-cluster"),
        ({"MLW_E2E_OPERATOR": "in-cluster"}, "kind", "in-cluster"),
    ],
)
def test_the_operator_runs_in_process_unless_the_clusters_own_is_asked_for(
    environ: dict[str, str], backend: Backend, operator: str
) -> None:
    assert choose_operator(backend, environ) == operator


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MLW_E2E_OPERATOR": "in-cluster"}, "needs a real cluster running the operator"),
        ({"MLW_E2E_OPERATOR": "helm"}, "expected one of in-process, in-cluster"),
    ],
)
def test_an_operator_that_cannot_be_tested_is_an_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(BackendUnavailable, match=message):
        choose_operator("in-memory", environ)


def deployment(namespace: str, name: str, component: str = "", **env: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/component": component} if component else {}
    container = {"name": "c", "env": [{"name": k, "value": v} for k, v in env.items()]}
    return {"metadata": {"namespace": namespace, "name": name, "labels": labels},
            "spec": {"template": {"spec": {"containers": [container]}}}}  # fmt: skip


KUBERAY = deployment("kuberay-system", "kuberay-operator")
CONTROLLER = deployment("mlworkload-system", "mlworkload", "controller", MLW_GCP_MODE="dry-run")
WEBHOOK = deployment("mlworkload-system", "mlworkload-webhook", "webhook")


@pytest.mark.parametrize(
    ("operator", "real_kuberay", "ours", "kuberay"),
    [
        ("in-process", False, [], []),  # a fresh kind cluster
        ("in-cluster", True, [CONTROLLER, WEBHOOK], [KUBERAY]),  # the e2e workflow's cluster
        ("in-process", True, [], [KUBERAY]),
        ("in-cluster", True, [deployment("mlw", "mlw", "controller")], [KUBERAY]),  # no project: dry-run
    ],
)
def test_the_expected_operators_pass(
    operator: OperatorMode, real_kuberay: bool, ours: list[dict[str, Any]], kuberay: list[dict[str, Any]]
) -> None:
    assert operator_problems(operator, real_kuberay, ours, kuberay) == []


@pytest.mark.parametrize(
    ("operator", "real_kuberay", "ours", "kuberay", "message"),
    [
        ("in-process", True, [], [], "MLW_E2E_REAL_KUBERAY=1, but no KubeRay operator runs here"),
        ("in-process", False, [], [KUBERAY], "KubeRay's operator runs here (kuberay-system/kuberay-operator)"),
        ("in-process", False, [CONTROLLER], [], "set MLW_E2E_OPERATOR=in-cluster to test it, or uninstall it"),
        ("in-cluster", False, [WEBHOOK], [], "MLW_E2E_OPERATOR=in-cluster, but no mlworkload controller runs"),
        ("in-cluster", False, [deployment("m", "c", "controller", MLW_GCP_PROJECT="p")], [], "GCP mode live"),
        ("in-cluster", False, [deployment("m", "c", "controller", MLW_GCP_MODE="live")], [], "gcp.mode=dry-run"),
    ],
)
def test_unexpected_operators_are_named_with_the_fix(
    operator: OperatorMode, real_kuberay: bool, ours: list[dict[str, Any]], kuberay: list[dict[str, Any]], message: str
) -> None:
    (problem,) = operator_problems(operator, real_kuberay, ours, kuberay)
    assert message in problem
