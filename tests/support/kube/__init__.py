"""An in-memory Kubernetes API server for the integration tier, built on kmock's Kubernetes scaffold.

See ``server.KubeEmulatorServer`` for the entry point and the modules for what is emulated and how.
"""

from tests.support.kube.emulator import KubeEmulator, Route, parse_route
from tests.support.kube.faults import (
    APPLY_PATCH,
    MERGE_PATCH,
    WRITES,
    FaultHandle,
    FaultMatch,
    KubeCall,
    KubeFault,
    RandomFaultHandle,
    RandomFaults,
    Status,
)
from tests.support.kube.polling import wait_until
from tests.support.kube.resources import ResourceRegistry, ResourceSpec, default_crd_paths
from tests.support.kube.server import KubeEmulatorServer, RequestRecord
from tests.support.kube.store import ObjectStore

__all__ = [
    "APPLY_PATCH",
    "MERGE_PATCH",
    "WRITES",
    "FaultHandle",
    "FaultMatch",
    "KubeCall",
    "KubeEmulator",
    "KubeEmulatorServer",
    "KubeFault",
    "ObjectStore",
    "RandomFaultHandle",
    "RandomFaults",
    "RequestRecord",
    "ResourceRegistry",
    "ResourceSpec",
    "Route",
    "Status",
    "default_crd_paths",
    "parse_route",
    "wait_until",
]
