"""Fixtures shared by the integration modules: the fake GCP APIs, the KubeRay stand-in."""

from collections.abc import Callable, Iterator

import pytest

from tests.support.documents import WorkloadDoc, created_workloads
from tests.support.gcp import FakeGcp
from tests.support.kube import KubeEmulatorServer
from tests.support.kuberay import KubeRaySimulator
from tests.support.observed import MLW


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGcp]:
    """One FakeGcp per module; each module sets up its own project in it."""
    with FakeGcp() as server:
        yield server


@pytest.fixture
def kuberay(server: KubeEmulatorServer) -> KubeRaySimulator:
    """The KubeRay stand-in on the module's API server (`server`, which each module defines)."""
    return KubeRaySimulator(server)


@pytest.fixture
def create(server: KubeEmulatorServer, request: pytest.FixtureRequest) -> Iterator[Callable[[WorkloadDoc], str]]:
    """Create workloads in the module's namespace (its `NS`); each is deleted after the test. A module that needs
    more around it (faults cleared, pools released) defines its own."""
    namespace: str = request.module.NS
    yield from created_workloads(
        server.put_object, lambda name: server.delete_object(MLW, "MLWorkload", name, namespace)
    )
