"""The fake API server and a dry-run reconciler on the fixed clock, for the reconcile tests of this folder
(a module that needs them set up otherwise defines its own)."""

import pytest

from mlworkload.controller.reconcile import Reconciler
from mlworkload.gcp.provisioner import DryRunProvisioner
from tests.support.clock import NOW
from tests.support.fake_kube import FakeKubeApi


@pytest.fixture
def kube() -> FakeKubeApi:
    return FakeKubeApi()


@pytest.fixture
def reconciler(kube: FakeKubeApi) -> Reconciler:
    return Reconciler(kube=kube, gcp=DryRunProvisioner(), clock=lambda: NOW)
