"""Fixtures of the e2e tier: one cluster (see tests/e2e/cluster.py for which) and the operator on it.

Package scope, not session scope: the whole test command runs in one pytest process and this
package is collected before tests/integration and tests/unit. A session-scoped operator would keep
running (and keep KUBECONFIG and the MLW_* variables of running_operator set in os.environ) through
those tiers; package scope stops it after this package's last test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.e2e.cluster import Cluster, choose_backend, choose_operator, connected, provision
from tests.e2e.kuberay import RayDriver, ray_driver_for, uses_real_kuberay
from tests.support.kuberay_crds import KUBERAY_CRDS_ENV, kuberay_crds_dir
from tests.support.operator import environment, running_operator

BACKEND = pytest.StashKey[str]()


@pytest.fixture(scope="package")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster with the operator running against it (in this process, unless MLW_E2E_OPERATOR=in-cluster)
    until the package's tests are done.

    KubeRay's CRDs: ``$KUBERAY_CRDS_DIR``, the shared test data, or else fetched from KubeRay's Helm chart
    (``$KUBERAY_CHART``; tests/support/kuberay_crds.py), so the tier runs from a clean clone. The directory is
    ``$KUBERAY_CRDS_DIR`` for the package's duration, for everything that reads it.

    Tear-down order: the in-process operator stops, the workloads the tests left go (finalizers included),
    then the run's namespace and policies, then the cluster itself when it was made for the run.
    """
    choice = choose_backend()
    operator = choose_operator(choice.backend)
    real_kuberay = uses_real_kuberay()
    with ExitStack() as stack:
        crds = kuberay_crds_dir()
        stack.enter_context(environment({KUBERAY_CRDS_ENV: str(crds)}))
        kubeconfig, emulator = stack.enter_context(provision(choice, tmp_path_factory.mktemp("e2e")))
        if emulator is not None:  # checked last: an emulator failure would otherwise show as a mere timeout
            stack.callback(lambda: _assert_no_emulator_errors(emulator.internal_errors))
        connected_cluster = stack.enter_context(connected(choice.backend, kubeconfig, operator, real_kuberay))
        stack.callback(connected_cluster.remove_workloads)
        if operator == "in-process":
            stack.enter_context(running_operator(kubeconfig))  # dry-run GCP, resync 2 s
        kuberay = "real KubeRay" if real_kuberay else "simulated KubeRay"
        request.config.stash[BACKEND] = (
            f"{choice.backend} ({choice.reason}); {kuberay}; operator {operator}; KubeRay CRDs from {crds}"
        )
        yield connected_cluster


def _assert_no_emulator_errors(errors: list[BaseException]) -> None:
    assert errors == [], errors


@pytest.fixture
def ray_driver(cluster: Cluster) -> RayDriver:
    return ray_driver_for(cluster)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Say which cluster the e2e tier ran against, so that a CI log shows it."""
    if BACKEND in config.stash:
        terminalreporter.write_sep("-", "mlworkload e2e")
        terminalreporter.write_line(f"e2e cluster backend: {config.stash[BACKEND]}")
