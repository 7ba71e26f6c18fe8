"""What Kueue's admission adds to a queued Ray object is Kueue's: kept, never seen as drift (controller/apply.py)."""

import copy
from typing import Any

from mlworkload.builders import build_objects
from mlworkload.controller.apply import contains, with_kueue_admission
from mlworkload.controller.observe import sketch
from tests.support.documents import permissive_policy, resolved, workload
from tests.support.kueue import pod_templates

FLAVOR = {"cloud.google.com/gke-nodepool": "l4-flavor"}
TOLERATION = {"key": "flavor", "operator": "Exists", "effect": "NoSchedule"}


def queued_job() -> dict[str, Any]:
    doc = workload("train").job().gpu_group().set("spec.queue", {"name": "urgent"})
    return next(o for o in build_objects(resolved(doc, permissive_policy())) if o["kind"] == "RayJob")


def admitted(desired: dict[str, Any], suspend: bool = False) -> dict[str, Any]:
    """The live object as Kueue leaves it: podset.Merge of the flavor into every template, suspend as given."""
    live = copy.deepcopy(desired)
    for template in pod_templates("RayJob", live["spec"]):
        spec = template["spec"]
        spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **FLAVOR}
        spec["tolerations"] = [*spec.get("tolerations", []), TOLERATION]
    live["spec"]["suspend"] = suspend
    return live


def test_an_admitted_objects_injections_are_kept_and_are_no_drift() -> None:
    desired = queued_job()
    live = admitted(desired)
    assert not contains(live, desired)  # the tolerations list grew: without the carry-over, a write fight
    merged = with_kueue_admission(desired, live)
    assert contains(live, merged)
    assert "suspend" not in merged["spec"]
    worker = merged["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert FLAVOR.items() <= worker["nodeSelector"].items()
    assert worker["tolerations"][-1] == TOLERATION


def test_the_operators_own_fields_win_and_a_held_object_carries_nothing() -> None:
    desired = queued_job()
    live = admitted(desired)
    key = next(iter(desired["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["nodeSelector"]))
    live["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["nodeSelector"][key] = "theirs"
    merged = with_kueue_admission(desired, live)
    ours = desired["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["nodeSelector"][key]
    assert merged["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["nodeSelector"][key] == ours
    assert with_kueue_admission(desired, admitted(desired, suspend=True)) == desired
    unqueued = copy.deepcopy(desired)
    del unqueued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"]
    assert with_kueue_admission(unqueued, live) == unqueued


def test_the_sketch_keeps_a_ray_objects_suspend() -> None:
    live = admitted(queued_job(), suspend=True)
    assert sketch(live)["spec"]["suspend"] is True
    assert "suspend" not in sketch(queued_job())["spec"]
