"""An in-memory Kubernetes API server for the integration tier, built on kmock's Kubernetes scaffold.

See ``server.KubeEmulatorServer`` for the entry point and the modules for what is emulated and how.
"""

from tests.support.kube.emulator import KubeEmulator, Route, parse_route
from tests.support.kube.polling import wait_until
from tests.support.kube.resources import ResourceRegistry, ResourceSpec, default_crd_paths, kuberay_crds_dir
from tests.support.kube.server import KubeEmulatorServer, RequestRecord
from tests.support.kube.store import ObjectStore

__all__ = [
    "KubeEmulator",
    "KubeEmulatorServer",
    "ObjectStore",
    "RequestRecord",
    "ResourceRegistry",
    "ResourceSpec",
    "Route",
    "default_crd_paths",
    "kuberay_crds_dir",
    "parse_route",
    "wait_until",
]
