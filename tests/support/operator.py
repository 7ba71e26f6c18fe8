"""Run the real operator (kopf, the mlworkload handlers) in its own thread against a cluster.

kopf.operator() cancels tasks it did not start, so it runs in KopfRunner's thread, never in the
test's event loop. Settings come from the same MLW_* environment variables a deployment sets.
"""

import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from kopf.testing import KopfRunner

from tests.support.documents import permissive_policy
from tests.support.kube import KubeEmulatorServer

if TYPE_CHECKING:
    from tests.support.gcp import FakeGcp

OPERATOR_ENV = {
    "MLW_GCP_MODE": "dry-run",
    # Read when the handlers module is first imported, like MLW_RESYNC_SECONDS: one value per process.
    "MLW_GCP_POLL_SECONDS": "0.3",
    "MLW_METRICS_PORT": "0",
    "MLW_HEALTH_PORT": "0",
    "MLW_LOG_FORMAT": "text",
    "MLW_POLICY_STATUS_SECONDS": "0.3",
}


def live_gcp_settings(
    fake: "FakeGcp", project: str = "my-proj", location: str = "us-central1", cluster: str = "ml-cluster"
) -> dict[str, str]:
    """MLW_* variables for live GCP mode against `fake` (pools released 1 s after their last user)."""
    return {
        "MLW_GCP_MODE": "live",
        "MLW_GCP_PROJECT": project,
        "MLW_GCP_LOCATION": location,
        "MLW_GKE_CLUSTER": cluster,
        "MLW_GKE_ENDPOINT": fake.endpoint,
        "MLW_IAM_ENDPOINT": f"http://{fake.grpc_target}",
        "MLW_IAP_ENDPOINT": fake.endpoint,
        "MLW_STORAGE_ENDPOINT": fake.endpoint,
        "MLW_POOL_RELEASE_GRACE_SECONDS": "1",
    }


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# The resync interval of every in-process operator of a test run: the handlers module reads MLW_RESYNC_SECONDS
# when first imported, so the first import in a process fixes it for the rest, whichever test makes it.
RESYNC_SECONDS = 2.0


def handlers_module() -> ModuleType:
    """mlworkload.controller.handlers, imported (if this is the first import) with the tier's settings."""
    with environment({**OPERATOR_ENV, "MLW_RESYNC_SECONDS": str(RESYNC_SECONDS)}):
        from mlworkload.controller import handlers  # noqa: PLC0415
    return handlers


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def running_operator(
    kubeconfig: Path,
    resync_seconds: float = RESYNC_SECONDS,
    webhook_port: int = 0,
    settings: Mapping[str, str] | None = None,
    namespaces: Sequence[str] = (),
) -> Iterator[KopfRunner]:
    """The operator, watching all namespaces (or only `namespaces`, as a deployment with operator.namespaces set
    runs: kopf's `--namespace` for each, and MLW_NAMESPACES for the operator's own listings), until the block
    ends; its exit must be clean.

    `settings`: more MLW_* variables, e.g. live GCP mode against a FakeGcp (see `live_gcp_settings`).
    """
    env = {
        **OPERATOR_ENV,
        "KUBECONFIG": str(kubeconfig),
        "MLW_RESYNC_SECONDS": str(resync_seconds),
        "MLW_WEBHOOK_PORT": str(webhook_port),
        **({"MLW_NAMESPACES": ",".join(namespaces)} if namespaces else {}),
        **(settings or {}),
    }
    scope = [arg for namespace in namespaces for arg in ("--namespace", namespace)] or ["--all-namespaces"]
    args = ["run", "--standalone", *scope]
    with environment(env):
        # The handlers module reads MLW_RESYNC_SECONDS when first imported: the first run in a
        # process fixes the resync interval for the rest (every test uses the same value).
        from mlworkload.controller.handlers import registry_for  # noqa: PLC0415
        from mlworkload.settings import Role  # noqa: PLC0415

        runner = KopfRunner(args, timeout=60, registry=registry_for(Role(env.get("MLW_ROLE") or Role.ALL)))
    with environment(env), runner:
        yield runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output


@contextmanager
def emulated_cluster(*namespaces: str) -> Iterator[KubeEmulatorServer]:
    """An in-memory API server with these namespaces and one policy that admits anything reasonable."""
    with KubeEmulatorServer() as server:
        for namespace in namespaces:
            server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        server.put_object(permissive_policy("all").doc)
        yield server
