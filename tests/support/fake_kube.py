"""An in-memory KubeApi for unit tests of the reconciler (the integration tier uses a real HTTP server)."""

import copy
import itertools
import uuid
from collections.abc import Mapping
from typing import Any

from mlworkload.controller.kube import KubeError, Manifest, Resource, resource_of
from tests.support.kube.patches import merge_patch

Key = tuple[str, str | None, str]  # kind, namespace, name


class FakeKubeApi:
    def __init__(self) -> None:
        self.objects: dict[Key, Manifest] = {}
        self.writes: list[str] = []
        self.reads: list[str] = []  # "get RayCluster/demo", "list RayCluster": round trips a real API would serve
        self._versions = itertools.count(1)
        # "apply RayCluster/demo" (as in `writes`) -> the error the API answers instead, until removed.
        self.refusals: dict[str, KubeError] = {}

    def _refuse(self, write: str) -> None:
        if write in self.refusals:
            raise self.refusals[write]

    def put(self, manifest: Manifest) -> Manifest:
        """Store an object as if someone else created it."""
        stored = copy.deepcopy(manifest)
        meta = stored["metadata"]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._versions))
        self.objects[self._key(resource_of(stored), meta.get("namespace"), meta["name"])] = stored
        return stored

    @staticmethod
    def _key(resource: Resource, namespace: str | None, name: str) -> Key:
        return resource.kind, namespace if resource.namespaced else None, name

    async def get(self, resource: Resource, namespace: str | None, name: str) -> Manifest | None:
        self.reads.append(f"get {resource.kind}/{name}")
        found = self.objects.get(self._key(resource, namespace, name))
        return copy.deepcopy(found) if found else None

    async def list(
        self,
        resource: Resource,
        namespace: str | None,
        labels: Mapping[str, str],
        fields: Mapping[str, str] | None = None,
    ) -> list[Manifest]:
        self.reads.append(f"list {resource.kind}")
        return [
            copy.deepcopy(obj)
            for (kind, ns, _), obj in self.objects.items()
            if kind == resource.kind and (namespace is None or ns == namespace)
            and labels.items() <= (obj["metadata"].get("labels") or {}).items()
            and all(_field(obj, path) == value for path, value in (fields or {}).items())
        ]  # fmt: skip

    async def apply(self, manifest: Manifest) -> Manifest:
        resource = resource_of(manifest)
        meta = manifest["metadata"]
        self._refuse(f"apply {resource.kind}/{meta['name']}")
        self.writes.append(f"apply {resource.kind}/{meta['name']}")
        existing = self.objects.get(self._key(resource, meta.get("namespace"), meta["name"]))
        merged = copy.deepcopy(manifest)
        if existing is not None:
            merged["metadata"]["uid"] = existing["metadata"]["uid"]
            if "status" in existing:
                merged["status"] = existing["status"]
        return copy.deepcopy(self.put(merged))

    async def delete(self, resource: Resource, namespace: str | None, name: str, uid: str) -> None:
        key = self._key(resource, namespace, name)
        if key not in self.objects:
            return
        if self.objects[key]["metadata"]["uid"] != uid:
            raise KubeError(409, "Conflict", "uid precondition failed")
        self._refuse(f"delete {resource.kind}/{name}")
        self.writes.append(f"delete {resource.kind}/{name}")
        del self.objects[key]

    async def patch_metadata(self, resource: Resource, namespace: str, name: str, metadata: Manifest) -> Manifest:
        self._refuse(f"metadata {resource.kind}/{name}")
        self.writes.append(f"metadata {resource.kind}/{name}")
        stored = self.objects[self._key(resource, namespace, name)]
        expected = metadata.get("resourceVersion")
        if expected is not None and expected != stored["metadata"].get("resourceVersion"):
            raise KubeError(409, "Conflict", f"the object {name} has been modified")
        stored["metadata"].update(
            {key: copy.deepcopy(value) for key, value in metadata.items() if key != "resourceVersion"}
        )
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(stored)

    async def patch_status(self, resource: Resource, namespace: str, name: str, status: Manifest) -> Manifest:
        self._refuse(f"status {resource.kind}/{name}")
        self.writes.append(f"status {resource.kind}/{name}")
        stored = self.objects[self._key(resource, namespace, name)]
        stored["status"] = merge_patch(stored.get("status", {}), status)
        stored["metadata"]["resourceVersion"] = str(next(self._versions))
        return copy.deepcopy(stored)

    def status_of(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.objects[kind, namespace, name].get("status", {})
        return status


def _field(obj: Manifest, path: str) -> Any:
    """A field selector's dotted path (involvedObject.kind, metadata.name) in an object."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value
