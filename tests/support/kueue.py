"""A small Kueue stand-in: holds queued Ray objects and admits them the way Kueue (kubernetes-sigs/kueue) does.

What it copies from Kueue, for RayJob and RayCluster (pkg/controller/jobs/rayjob/rayjob_controller.go,
pkg/controller/jobs/raycluster/raycluster_controller.go):

- its mutating webhook suspends every new Ray object that carries the label `kueue.x-k8s.io/queue-name`
  (rayjob_webhook.go, Default -> ApplyDefaultForSuspend; `func (j *RayJob) Suspend() { j.Spec.Suspend = true }`);
- on admission, RunWithPodSetsInfo sets `j.Spec.Suspend = false` and podset.Merge()s the ResourceFlavor's node
  labels and tolerations into every pod template (head, each worker group, the submitter): node selector keys
  added, tolerations appended.

Its writes are server-side applies with the field manager "kueue" (force, as a controller's write is final), so
the emulator records who owns what (tests/support/kube/ssa.py: only appliers own fields). Real Kueue writes with
Update, which takes ownership of the fields it changes the same way. They go to the store directly, never
through HTTP, so that every request the server logs for a Ray object is the operator's.
"""

import copy
import datetime
from typing import Any, Final

from tests.support.kube import KubeEmulatorServer, ssa

QUEUE_LABEL: Final = "kueue.x-k8s.io/queue-name"
MANAGER: Final = "kueue"
RAY: Final = "ray.io/v1"
RAY_KINDS: Final = ("RayJob", "RayCluster")
# What the stand-in's ResourceFlavor injects on admission (a flavor's spec.nodeLabels and spec.tolerations).
FLAVOR_NODE_LABELS: Final = {"cloud.google.com/gke-nodepool": "kueue-l4-flavor"}
FLAVOR_TOLERATIONS: Final = [{"key": "kueue.example.com/flavor", "operator": "Equal", "value": "l4",
                              "effect": "NoSchedule"}]  # fmt: skip


def _cluster_spec(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return spec["rayClusterSpec"] if kind == "RayJob" else spec


def pod_templates(kind: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod templates Kueue makes pod sets of: head, each worker group, the RayJob's submitter."""
    cluster = _cluster_spec(kind, spec)
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster.get("workerGroupSpecs", []))]
    if kind == "RayJob" and "submitterPodTemplate" in spec:
        templates.append(spec["submitterPodTemplate"])
    return templates


class KueueStandIn:
    def __init__(
        self,
        server: KubeEmulatorServer,
        node_labels: dict[str, str] | None = None,
        tolerations: list[dict[str, str]] | None = None,
    ) -> None:
        self.server = server
        self.node_labels = dict(FLAVOR_NODE_LABELS if node_labels is None else node_labels)
        self.tolerations = copy.deepcopy(FLAVOR_TOLERATIONS if tolerations is None else tolerations)
        self._original_create: Any = None

    # --- the webhook ------------------------------------------------------------------------------------------

    def install(self) -> None:
        """Kueue's mutating webhook: a queued Ray object is created suspended, the field owned by "kueue"."""
        store = self.server.store
        original = store.create

        def create(spec: Any, namespace: str | None, body: dict[str, Any], **options: Any) -> Any:
            labels = (body.get("metadata") or {}).get("labels") or {}
            if spec.group == "ray.io" and spec.kind in RAY_KINDS and QUEUE_LABEL in labels:
                body = copy.deepcopy(body)
                body.setdefault("spec", {})["suspend"] = True
                stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                options["managed_fields"] = [*(options.get("managed_fields") or []), {
                    "manager": MANAGER, "operation": "Apply", "apiVersion": RAY, "time": stamp,
                    "fieldsType": "FieldsV1", "fieldsV1": ssa.encode_fields([("spec", "suspend")])}]  # fmt: skip
            return original(spec, namespace, body, **options)

        self.server.call(lambda: setattr(store, "create", create))
        self._original_create = original

    def uninstall(self) -> None:
        if self._original_create is not None:
            store, original = self.server.store, self._original_create
            self.server.call(lambda: setattr(store, "create", original))
            self._original_create = None

    # --- the controller ---------------------------------------------------------------------------------------

    def _apply(self, kind: str, name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
        resource = self.server.store.registry.get(("ray.io", kind.lower() + "s"))
        assert resource is not None
        config = {"apiVersion": RAY, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        result: dict[str, Any] = self.server.call(
            lambda: self.server.store.apply(resource, namespace, name, config, manager=MANAGER, force=True)
        )
        return result

    def admit(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        """The ClusterQueue has quota: unsuspend, and merge the flavor into every pod template (podset.Merge)."""
        live = self.server.get_object(RAY, kind, name, namespace)
        assert live is not None, f"no {kind} {namespace}/{name} to admit"
        spec = copy.deepcopy(live["spec"])
        for template in pod_templates(kind, spec):
            pod = template.setdefault("spec", {})
            pod["nodeSelector"] = {**pod.get("nodeSelector", {}), **self.node_labels}
            pod["tolerations"] = [*pod.get("tolerations", []), *copy.deepcopy(self.tolerations)]
        spec["suspend"] = False
        # What Kueue changes: the suspend flag and the pod templates (the worker groups are an atomic list).
        cluster = _cluster_spec(kind, spec)
        changed: dict[str, Any] = {"headGroupSpec": cluster["headGroupSpec"],
                                   "workerGroupSpecs": cluster.get("workerGroupSpecs", [])}  # fmt: skip
        config: dict[str, Any] = {"suspend": False}
        if kind == "RayJob":
            config["rayClusterSpec"] = changed
            if "submitterPodTemplate" in spec:
                config["submitterPodTemplate"] = spec["submitterPodTemplate"]
        else:
            config.update(changed)
        return self._apply(kind, name, namespace, config)
