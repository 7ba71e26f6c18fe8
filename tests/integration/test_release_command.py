"""`mlworkload release`: after the operator was removed first, deleted workloads stop hanging.

The operator grants a workload its identity and bucket access (live GCP mode against FakeGcp), then stops for
good. Deleting the workload then waits on its finalizer; `mlworkload release` (the real CLI, the real Google
clients) revokes what the operator added, exactly as its delete handler would, and removes the finalizer.
"""

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlworkload.cli import main
from tests.support.documents import GSA, workload
from tests.support.gcp import FakeGcp
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.operator import OPERATOR_ENV, emulated_cluster, environment, live_gcp_settings, running_operator

NS = "orphaned"
MLW = "mlworkload.io/v1alpha1"
WI_USER = "roles/iam.workloadIdentityUser"
OBJECT_USER = "roles/storage.objectUser"
WAIT = 30.0
MEMBER = f"serviceAccount:my-proj.svc.id.goog[{NS}/left]"


@pytest.fixture(scope="module")
def cluster(fake: FakeGcp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeEmulatorServer, Path]]:
    """A workload the operator bound to its GSA and bucket, then the operator gone, then the workload deleted."""
    fake.gke.add_cluster("my-proj", "us-central1", "ml-cluster")
    fake.iam.add_service_account(GSA)
    fake.storage.add_bucket("ckpt-orphan")
    with emulated_cluster(NS) as server:
        kubeconfig = server.kubeconfig(tmp_path_factory.mktemp("kube") / "config")
        storage = {"bucket": "gs://ckpt-orphan", "access": "ReadWrite"}
        server.put_object(workload("left", NS).set("spec.storage", storage).doc)
        with running_operator(kubeconfig, settings=live_gcp_settings(fake)):
            # The status records a binding before it is granted: wait for GCP's side of both.
            wait_until(lambda: granted(fake), timeout=WAIT, what="both granted")
            assert len(bindings(server)) == 2
        server.delete_object(MLW, "MLWorkload", "left", NS)
        yield server, kubeconfig


def granted(fake: FakeGcp) -> bool:
    return MEMBER in fake.iam.members(GSA, WI_USER) and bool(fake.storage.members("ckpt-orphan", OBJECT_USER))


def bindings(server: KubeEmulatorServer) -> list[dict[str, object]]:
    found = server.get_object(MLW, "MLWorkload", "left", NS) or {}
    return list((found.get("status") or {}).get("iamBindings") or [])


def release(kubeconfig: Path, fake: FakeGcp, *flags: str) -> tuple[int, str]:
    out = io.StringIO()
    with environment({**OPERATOR_ENV, **live_gcp_settings(fake), "KUBECONFIG": str(kubeconfig)}):
        code = main(["release", *flags], out=out, err=out)
    return code, out.getvalue()


def test_a_deleted_workload_hangs_without_the_operator(cluster: tuple[KubeEmulatorServer, Path]) -> None:
    server, _ = cluster
    stuck = server.get_object(MLW, "MLWorkload", "left", NS)
    assert stuck is not None
    assert stuck["metadata"]["deletionTimestamp"]
    assert stuck["metadata"]["finalizers"] == ["mlworkload.io/cleanup"]


def test_a_recent_deletion_and_a_dry_run_change_nothing(
    cluster: tuple[KubeEmulatorServer, Path], fake: FakeGcp
) -> None:
    server, kubeconfig = cluster
    mark = server.request_count

    code, out = release(kubeconfig, fake)  # --min-age 60 by default: a running operator may be on it
    assert code == 0
    assert "orphaned/left: left alone: deleted" in out

    code, out = release(kubeconfig, fake, "--min-age", "0", "--dry-run")
    assert code == 0
    assert "dry run; would revoke roles/iam.workloadIdentityUser" in out
    assert not server.writes(mark)
    assert f"serviceAccount:{GSA}" in fake.storage.members("ckpt-orphan", OBJECT_USER)


def test_release_revokes_what_the_operator_added_and_removes_the_finalizer(
    cluster: tuple[KubeEmulatorServer, Path], fake: FakeGcp
) -> None:
    server, kubeconfig = cluster
    assert MEMBER in fake.iam.members(GSA, WI_USER)

    code, out = release(kubeconfig, fake, "--min-age", "0", "-o", "json")

    assert code == 0, out
    [result] = json.loads(out)["results"]
    assert (result["namespace"], result["name"], result["released"], result["error"]) == (NS, "left", True, "")
    assert {b["role"] for b in result["revoked"]} == {WI_USER, OBJECT_USER}
    assert MEMBER not in fake.iam.members(GSA, WI_USER)
    assert fake.storage.members("ckpt-orphan", OBJECT_USER) == []
    wait_until(lambda: server.get_object(MLW, "MLWorkload", "left", NS) is None, timeout=WAIT, what="deleted")

    code, out = release(kubeconfig, fake, "--min-age", "0")  # nothing left: a second run is a no-op
    assert (code, out) == (0, "no MLWorkload is waiting for its finalizer\n")
