"""Which cluster the e2e tier picks: the kubeconfig and kind paths cannot run on every machine, their choice can."""

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.cluster import BackendChoice, BackendUnavailable, choose_backend


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
