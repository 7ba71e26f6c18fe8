"""When kopf's copy of a workload may be reconciled without reading it again (controller/freshness.py)."""

from typing import Any

from mlworkload.controller.freshness import RELEASED_REMEMBERED, WorkloadVersions


def copy(uid: str = "u1", version: str | None = "10") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "resourceVersion": version}}


def test_a_workload_this_process_never_changed_is_used_as_kopf_saw_it() -> None:
    assert WorkloadVersions().usable(copy())


def test_only_the_version_of_its_own_last_write_is_used_after_a_write() -> None:
    versions = WorkloadVersions()
    versions.reconciled("u1", "11")  # the status write returned version 11
    assert versions.usable(copy(version="11"))
    assert not versions.usable(copy(version="10"))  # the watch has not delivered the write yet
    assert not versions.usable(copy(version="12"))  # someone changed it since: read it
    assert versions.usable(copy(uid="u2", version="10"))  # other workloads are unaffected


def test_a_reconcile_that_stopped_halfway_makes_the_next_one_read() -> None:
    versions = WorkloadVersions()
    versions.reconciled("u1", "11")
    versions.unsure("u1")
    assert not versions.usable(copy(version="11"))
    versions.reconciled("u1", "12")  # the next reconcile read version 12 and finished
    assert versions.usable(copy(version="12"))


def test_a_write_whose_answer_carried_no_version_makes_the_next_one_read() -> None:
    versions = WorkloadVersions()
    versions.reconciled("u1", None)
    assert not versions.usable(copy(version="10"))


def test_after_a_release_every_copy_is_read_again() -> None:
    """A reconcile that waited behind the deletion holds a copy from before it: acting on it would grant again
    what the release revoked."""
    versions = WorkloadVersions()
    assert versions.usable(copy(version="10"))
    versions.released("u1")
    assert not versions.usable(copy(version="10"))
    versions.reconciled("u1", "10")  # even a reconcile finishing late does not make it trusted again
    assert not versions.usable(copy(version="10"))


def test_copies_without_identity_are_read() -> None:
    versions = WorkloadVersions()
    assert not versions.usable({"metadata": {"namespace": "team-nlp", "name": "demo"}})  # an event handler's stub
    assert not versions.usable(copy(version=None))


def test_released_workloads_are_remembered_up_to_a_bound() -> None:
    versions = WorkloadVersions()
    for index in range(RELEASED_REMEMBERED + 5):
        versions.released(f"u{index}")
    assert versions.usable(copy(uid="u0"))  # the oldest fell out; a copy this old cannot be waiting any more
    assert not versions.usable(copy(uid=f"u{RELEASED_REMEMBERED + 4}"))
    assert len(versions) == 0  # released workloads hold no version
