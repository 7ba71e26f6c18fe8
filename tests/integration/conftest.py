"""Fixtures shared by the integration modules: the fake GCP APIs, the KubeRay stand-in."""

from collections.abc import Iterator

import pytest

from tests.support.gcp import FakeGcp
from tests.support.kube import KubeEmulatorServer
from tests.support.kuberay import KubeRaySimulator


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGcp]:
    """One FakeGcp per module; each module sets up its own project in it."""
    with FakeGcp() as server:
        yield server


@pytest.fixture
def kuberay(server: KubeEmulatorServer) -> KubeRaySimulator:
    """The KubeRay stand-in on the module's API server (`server`, which each module defines)."""
    return KubeRaySimulator(server)
