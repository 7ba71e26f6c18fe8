"""The object store with the API server's write semantics, independent of HTTP.

Everything here runs on the emulator's event loop only (no locks needed: writes never await), and every
path that changes an object, HTTP or test helper, ends in ``_commit``/``_remove``, so resourceVersion,
generation, watch events and garbage collection behave the same whoever wrote.

What it does like a real server: uid/creationTimestamp on create; one cluster-wide resourceVersion bumped
only by writes that change something; generation +1 on changes outside metadata (and outside status for
kinds with a status subresource, whose writes are isolated both ways); 409 on stale resourceVersions and
duplicate names; finalizers and deletionTimestamp; owner-reference garbage collection with Background,
Foreground and Orphan propagation; deleting a Namespace deletes what is in it; a few server defaults
(Service clusterIP/type/ports, Namespace phase and name label, CRD Established status).
"""

from __future__ import annotations

import bisect
import copy
import datetime
import random
import string
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

import kmock

from tests.support.kube import patches, ssa
from tests.support.kube.resources import Obj, ResourceRegistry, ResourceSpec, spec_from_crd
from tests.support.kube.selectors import FieldSelector, LabelSelector
from tests.support.kube.watching import Change, ChangeLog

Key = tuple[str, str, str | None, str]  # group, plural, namespace, name
Schedule = Callable[[Callable[[], None]], object]

SERVER_OWNED_METADATA: Final = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "generation",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
)
PATCH_TYPES: Final = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}
PROPAGATION_POLICIES: Final = ("Background", "Foreground", "Orphan")
FOREGROUND: Final = "foregroundDeletion"
ORPHAN: Final = "orphan"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """A failure rendered as a ``kind: Status`` body, with the real server's reasons and codes."""
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details)


def _resource_name(spec: ResourceSpec) -> str:
    return f"{spec.plural}.{spec.group}" if spec.group else spec.plural


def not_found(spec: ResourceSpec, name: str) -> kmock.KubernetesError:
    return api_error(
        404, "NotFound", f'{_resource_name(spec)} "{name}" not found', name=name, group=spec.group, kind=spec.plural
    )


def already_exists(spec: ResourceSpec, name: str) -> kmock.KubernetesError:
    message = f'{_resource_name(spec)} "{name}" already exists'
    return api_error(409, "AlreadyExists", message, name=name, group=spec.group, kind=spec.plural)


def conflict(spec: ResourceSpec, name: str, why: str) -> kmock.KubernetesError:
    return api_error(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_resource_name(spec)} "{name}": {why}',
        name=name,
        group=spec.group,
        kind=spec.plural,
    )


def invalid(spec: ResourceSpec, name: str, why: str) -> kmock.KubernetesError:
    return api_error(
        422, "Invalid", f'{spec.kind} "{name}" is invalid: {why}', name=name, group=spec.group, kind=spec.kind
    )


def bad_request(message: str) -> kmock.KubernetesError:
    return api_error(400, "BadRequest", message)


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def _label_pairs(obj: Obj) -> set[tuple[str, str]]:
    # Values as text: the index only proposes candidates, and LabelSelector.matches has the last word.
    labels = meta(obj).get("labels")
    return {(str(key), str(value)) for key, value in labels.items()} if isinstance(labels, dict) else set()


def _owner_uids(obj: Obj) -> set[str]:
    references = meta(obj).get("ownerReferences")
    if not isinstance(references, list):
        return set()
    return {str(ref["uid"]) for ref in references if isinstance(ref, dict) and ref.get("uid")}


class _Namespace:
    """One kind's objects in one namespace: by name, the names in list order, the names by label."""

    __slots__ = ("by_label", "names", "objects")

    def __init__(self) -> None:
        self.objects: dict[str, Obj] = {}
        self.names: list[str] = []  # sorted: a LIST answers in name order without sorting
        self.by_label: dict[tuple[str, str], dict[str, None]] = {}  # (key, value) -> names (an ordered set)

    def put(self, name: str, obj: Obj) -> None:
        old = self.objects.get(name)
        if old is None:
            bisect.insort(self.names, name)
        labels = _label_pairs(obj)
        stale = _label_pairs(old) if old is not None else set()
        self._unlabel(name, stale - labels)
        for pair in labels - stale:
            self.by_label.setdefault(pair, {})[name] = None
        self.objects[name] = obj

    def pop(self, name: str) -> None:
        old = self.objects.pop(name, None)
        if old is None:
            return
        del self.names[bisect.bisect_left(self.names, name)]
        self._unlabel(name, _label_pairs(old))

    def _unlabel(self, name: str, pairs: Iterable[tuple[str, str]]) -> None:
        for pair in pairs:
            names = self.by_label.get(pair)
            if names is not None:
                names.pop(name, None)
                if not names:
                    del self.by_label[pair]

    def candidates(self, labels: LabelSelector, fields: FieldSelector) -> Iterator[Obj]:
        """Objects that may match, in name order: every one, or only those a name or label term allows."""
        name = fields.required("metadata.name")
        if name is not None:
            names: Iterable[str] = [name] if name in self.objects else []
        elif labels.equalities:
            postings: list[dict[str, None]] = [self.by_label.get(pair, {}) for pair in labels.equalities]
            rarest = min(postings, key=len)
            names = sorted(rarest)
        else:
            names = self.names
        for candidate in names:
            yield self.objects[candidate]


class _Kind:
    """All objects of one resource, by namespace (None for cluster-scoped kinds), namespaces in order."""

    __slots__ = ("namespaces", "order")

    def __init__(self) -> None:
        self.namespaces: dict[str | None, _Namespace] = {}
        self.order: list[str | None] = []  # sorted; a kind is all namespaced or all cluster-scoped

    def get(self, namespace: str | None, name: str) -> Obj | None:
        bucket = self.namespaces.get(namespace)
        return bucket.objects.get(name) if bucket is not None else None

    def put(self, namespace: str | None, name: str, obj: Obj) -> None:
        bucket = self.namespaces.get(namespace)
        if bucket is None:
            bucket = self.namespaces[namespace] = _Namespace()
            bisect.insort(self.order, namespace, key=lambda ns: ns or "")
        bucket.put(name, obj)

    def pop(self, namespace: str | None, name: str) -> None:
        bucket = self.namespaces.get(namespace)
        if bucket is None:
            return
        bucket.pop(name)
        if not bucket.objects:  # no empty buckets: namespaces come and go with tests
            del self.namespaces[namespace]
            self.order.remove(namespace)

    def in_namespace(self, namespace: str | None) -> list[Obj]:
        bucket = self.namespaces.get(namespace)
        return list(bucket.objects.values()) if bucket is not None else []


class ObjectStore:
    """All objects of the emulated cluster, keyed by (group, plural, namespace, name)."""

    def __init__(self, registry: ResourceRegistry, *, schedule: Schedule, history_limit: int = 10_000) -> None:
        self.registry = registry
        self.changes = ChangeLog(history_limit)
        self._schedule = schedule
        # Indexed so that a request costs what it touches, not what is stored: a LIST walks one
        # namespace (or one label's objects), GC finds dependents by their owner's uid.
        self._kinds: dict[tuple[str, str], _Kind] = {}
        self._uids: dict[str, Key] = {}
        self._dependents_of: dict[str, dict[Key, None]] = {}  # owner uid -> keys of objects it owns
        self._rv = 0
        self._cluster_ips = 0

    # --- reads --------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def key(self, spec: ResourceSpec, namespace: str | None, name: str) -> Key:
        return spec.group, spec.plural, namespace if spec.namespaced else None, name

    def find(self, spec: ResourceSpec, namespace: str | None, name: str) -> Obj | None:
        kind = self._kinds.get(spec.key)
        return kind.get(namespace if spec.namespaced else None, name) if kind is not None else None

    def _find_key(self, key: Key) -> Obj | None:
        kind = self._kinds.get(key[:2])
        return kind.get(key[2], key[3]) if kind is not None else None

    def get(self, spec: ResourceSpec, namespace: str | None, name: str) -> Obj:
        obj = self.find(spec, namespace, name)
        if obj is None:
            raise not_found(spec, name)
        return obj

    def select(
        self,
        spec: ResourceSpec,
        namespace: str | None = None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> list[Obj]:
        """Matching objects in key order (namespace, then name), as etcd returns them.

        Costs the objects of the namespaces asked for, or fewer: only the candidates of a name
        (``metadata.name=``) or of the rarest ``k=v`` label term are tested."""
        labels, fields = labels or LabelSelector(), fields or FieldSelector()
        kind = self._kinds.get(spec.key)
        if kind is None:
            return []
        wanted = fields.required("metadata.namespace") or None  # "=" alone: cluster-scoped objects match it
        if namespace is not None and wanted is not None and wanted != namespace:
            return []
        namespace = namespace if namespace is not None else wanted
        namespaces = kind.order if namespace is None else [namespace] if spec.namespaced else []
        return [
            obj
            for obj_namespace in namespaces
            if (bucket := kind.namespaces.get(obj_namespace)) is not None
            for obj in bucket.candidates(labels, fields)
            if labels.matches(obj) and fields.matches(obj)
        ]

    # --- writes -------------------------------------------------------------------------------------

    def create(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        body: Obj,
        *,
        managed_fields: list[Obj] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        obj = copy.deepcopy(body)
        metadata = obj["metadata"] = meta(obj)
        name = metadata.get("name") or self._generate_name(spec, metadata)
        namespace = self._namespace_for(spec, namespace, metadata)
        key = self.key(spec, namespace, name)
        if self._find_key(key) is not None:
            raise already_exists(spec, name)
        for field in SERVER_OWNED_METADATA:
            metadata.pop(field, None)
        metadata.update({"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": now(), "generation": 1})
        if namespace is not None:
            metadata["namespace"] = namespace
        if managed_fields:
            metadata["managedFields"] = managed_fields
        obj["apiVersion"], obj["kind"] = spec.api_version(), spec.kind
        if spec.status_subresource:
            obj.pop("status", None)  # status is written only through /status
        self._default(spec, obj, None)
        self._validate(spec, obj)
        if dry_run:
            return obj
        self._rv += 1
        metadata["resourceVersion"] = str(self._rv)
        self._put(key, obj)
        self._uids[metadata["uid"]] = key
        self.changes.record(Change(self._rv, "ADDED", spec, obj))
        self._after_store(spec, obj)
        return obj

    def replace(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Obj:
        """PUT: unconditional when the body carries no resourceVersion (allowed for all kinds here)."""
        old = self.get(spec, namespace, name)
        if meta(body).get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta(body)['name']}) does not match the name on the URL ({name})"
            )
        self._check_resource_version(spec, old, body)
        return self._update(spec, old, body, subresource=subresource, dry_run=dry_run)

    def patch(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        name: str,
        content_type: str,
        body: Any,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Obj:
        old = self.get(spec, namespace, name)
        patch_type = PATCH_TYPES.get(content_type)
        if patch_type is None or (patch_type == "strategic" and spec.custom):
            raise api_error(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - "
                f"accepted media types include: {', '.join(sorted(PATCH_TYPES))}",
            )
        try:
            candidate = self._patched(old, patch_type, body)
        except patches.PatchError as error:
            raise invalid(spec, name, str(error)) from error
        self._check_resource_version(spec, old, candidate)
        return self._update(spec, old, candidate, subresource=subresource, dry_run=dry_run)

    def apply(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        name: str,
        config: Obj,
        *,
        manager: str,
        force: bool,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Obj:
        """Server-side apply: creates when absent; ownership and removals as described in ``ssa``."""
        if not manager:
            raise invalid(spec, name, "fieldManager: Required value: is required for apply patch")
        group, _, version = str(config.get("apiVersion", "")).rpartition("/")
        if (group, config.get("kind")) != (spec.group, spec.kind) or version not in spec.versions:
            raise bad_request(f"apiVersion and kind of the applied object must be {spec.api_version()} {spec.kind}")
        if meta(config).get("name") != name:
            raise bad_request(f"the name of the applied object must be {name!r}")
        old = self.find(spec, namespace, name)
        config = self._restrict_to(spec, config, subresource)
        if old is not None:
            self._check_resource_version(spec, old, config)
        try:
            result = ssa.server_side_apply(old, config, manager=manager, subresource=subresource, force=force)
        except ssa.ApplyConflict as error:
            raise conflict(spec, name, str(error)) from error
        managed = ssa.write_owners(old, result.owners, spec.api_version())
        if old is None:
            if subresource:
                raise not_found(spec, name)
            return self.create(spec, namespace, result.obj, managed_fields=managed, dry_run=dry_run)
        return self._update(spec, old, result.obj, subresource=subresource, managed_fields=managed, dry_run=dry_run)

    def delete(
        self,
        spec: ResourceSpec,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Remove at once, or mark with deletionTimestamp while finalizers remain (then generation +1)."""
        old = self.get(spec, namespace, name)
        self._check_preconditions(spec, old, preconditions or {})
        policy = propagation or "Background"
        if policy not in PROPAGATION_POLICIES:
            raise bad_request(f"propagationPolicy {policy!r} is not one of {', '.join(PROPAGATION_POLICIES)}")
        if dry_run:
            return old
        finalizers = list(meta(old).get("finalizers") or [])
        gc_finalizer = {"Foreground": FOREGROUND, "Orphan": ORPHAN}.get(policy)
        if gc_finalizer and gc_finalizer not in finalizers and any(self._dependents(old)):
            finalizers.append(gc_finalizer)
        if not finalizers:
            return self._remove(spec, old)
        new = copy.deepcopy(old)
        new["metadata"]["finalizers"] = finalizers
        if not meta(old).get("deletionTimestamp"):
            new["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
            new["metadata"]["generation"] = meta(old).get("generation", 0) + 1
        result = self._commit(spec, old, new) if new != old else old
        if gc_finalizer in finalizers:
            self._schedule(lambda: self._run_gc_finalizers(spec, self.key(spec, namespace, name)))
        return result

    # --- the write pipeline -------------------------------------------------------------------------

    def _update(
        self,
        spec: ResourceSpec,
        old: Obj,
        candidate: Obj,
        *,
        subresource: str = "",
        managed_fields: list[Obj] | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Isolate status, keep server-owned fields, detect no-ops, compute generation, then commit."""
        new = self._isolate_status(spec, old, candidate, subresource)
        new["metadata"] = metadata = meta(new)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        for field in SERVER_OWNED_METADATA:
            if field in meta(old):
                metadata[field] = copy.deepcopy(meta(old)[field])
            else:
                metadata.pop(field, None)
        if managed_fields:
            metadata["managedFields"] = managed_fields
        elif managed_fields is not None:
            metadata.pop("managedFields", None)
        self._check_finalizers(spec, old, new)
        self._default(spec, new, old)
        self._validate(spec, new)
        if new == old:
            return old  # a no-op write: no new resourceVersion, no event
        if self._spec_part(spec, new) != self._spec_part(spec, old):
            metadata["generation"] = meta(old).get("generation", 0) + 1
        return new if dry_run else self._commit(spec, old, new)

    def _isolate_status(self, spec: ResourceSpec, old: Obj, candidate: Obj, subresource: str) -> Obj:
        """With a status subresource, /status writes change only status and other writes never do."""
        if not spec.status_subresource:
            return copy.deepcopy(candidate)
        body, status_source = (old, candidate) if subresource == "status" else (candidate, old)
        new = {key: copy.deepcopy(value) for key, value in body.items() if key != "status"}
        if status_source.get("status") is not None:
            new["status"] = copy.deepcopy(status_source["status"])
        return new

    def _commit(self, spec: ResourceSpec, old: Obj, new: Obj) -> Obj:
        if meta(new).get("deletionTimestamp") and not meta(new).get("finalizers"):
            return self._remove(spec, new)
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        self._put(self.key(spec, meta(new).get("namespace"), meta(new)["name"]), new)
        self.changes.record(Change(self._rv, "MODIFIED", spec, new, old))
        self._after_store(spec, new)
        return new

    def _remove(self, spec: ResourceSpec, obj: Obj) -> Obj:
        """Final removal: a DELETED event with a new resourceVersion, then prompt asynchronous GC."""
        final = copy.deepcopy(obj)
        self._rv += 1
        final["metadata"]["resourceVersion"] = str(self._rv)
        self._pop(self.key(spec, meta(final).get("namespace"), meta(final)["name"]))
        self._uids.pop(meta(final)["uid"], None)
        self.changes.record(Change(self._rv, "DELETED", spec, final, obj))
        self._schedule(lambda: self._collect_garbage(spec, final))
        return final

    def _put(self, key: Key, obj: Obj) -> None:
        """Store an object under its key and keep the dependents index in step with its ownerReferences."""
        kind = self._kinds.get(key[:2])
        if kind is None:
            kind = self._kinds[key[:2]] = _Kind()
        previous = kind.get(key[2], key[3])
        kind.put(key[2], key[3], obj)
        before, after = (_owner_uids(previous) if previous is not None else set()), _owner_uids(obj)
        self._unlink(key, before - after)
        for uid in after - before:
            self._dependents_of.setdefault(uid, {})[key] = None

    def _pop(self, key: Key) -> None:
        obj = self._find_key(key)
        if obj is None:
            return
        self._kinds[key[:2]].pop(key[2], key[3])
        self._unlink(key, _owner_uids(obj))

    def _unlink(self, key: Key, uids: Iterable[str]) -> None:
        for uid in uids:
            dependents = self._dependents_of.get(uid)
            if dependents is not None:
                dependents.pop(key, None)
                if not dependents:
                    del self._dependents_of[uid]

    def _patched(self, old: Obj, patch_type: str, body: Any) -> Obj:
        if patch_type == "json":
            result = patches.json_patch(old, body)
        elif not isinstance(body, dict):
            raise patches.PatchError("a merge patch must be a JSON object")
        elif patch_type == "strategic":
            result = patches.strategic_merge_patch(old, body)
        else:
            result = patches.merge_patch(old, body)
        if not isinstance(result, dict):
            raise patches.PatchError("the patched object is not a JSON object")
        return result

    # --- checks and defaults ------------------------------------------------------------------------

    def _check_resource_version(self, spec: ResourceSpec, old: Obj, new: Obj) -> None:
        wanted = meta(new).get("resourceVersion")
        if wanted and wanted != meta(old).get("resourceVersion"):
            why = "the object has been modified; please apply your changes to the latest version and try again"
            raise conflict(spec, meta(old)["name"], why)

    def _check_preconditions(self, spec: ResourceSpec, old: Obj, preconditions: Mapping[str, Any]) -> None:
        for field in ("uid", "resourceVersion"):
            wanted, actual = preconditions.get(field), meta(old).get(field)
            if wanted and wanted != actual:
                why = f"Precondition failed: {field} in precondition: {wanted}, {field} in object meta: {actual}"
                raise conflict(spec, meta(old)["name"], why)

    def _check_finalizers(self, spec: ResourceSpec, old: Obj, new: Obj) -> None:
        added = set(meta(new).get("finalizers") or []) - set(meta(old).get("finalizers") or [])
        if meta(old).get("deletionTimestamp") and added:
            why = (
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, "
                f"found new finalizers {sorted(added)}"
            )
            raise invalid(spec, meta(old)["name"], why)

    def _validate(self, spec: ResourceSpec, obj: Obj) -> None:
        if spec.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            try:
                spec_from_crd(obj)
            except (KeyError, TypeError, IndexError, StopIteration) as error:
                raise invalid(spec, meta(obj)["name"], f"spec is not a valid CRD: missing {error}") from error

    def _spec_part(self, spec: ResourceSpec, obj: Obj) -> Obj:
        skipped = {"metadata", "apiVersion", "kind"} | ({"status"} if spec.status_subresource else set())
        return {key: value for key, value in obj.items() if key not in skipped}

    def _restrict_to(self, spec: ResourceSpec, config: Obj, subresource: str) -> Obj:
        """An apply to the main resource ignores status; an apply to /status sees only status."""
        if not spec.status_subresource:
            return config
        if subresource == "status":
            identity = {"name": meta(config).get("name"), "namespace": meta(config).get("namespace")}
            return {
                "apiVersion": config["apiVersion"],
                "kind": config["kind"],
                "metadata": identity,
                "status": config.get("status") or {},
            }
        return {key: value for key, value in config.items() if key != "status"}

    def _namespace_for(self, spec: ResourceSpec, namespace: str | None, metadata: Obj) -> str | None:
        """Objects may live in namespaces that do not exist (lenient, unlike a real server's 404)."""
        if not spec.namespaced:
            metadata.pop("namespace", None)
            return None
        body_namespace = metadata.get("namespace")
        if namespace and body_namespace and body_namespace != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if not (namespace or body_namespace):
            raise bad_request(f"a namespace is required for {spec.kind}")
        return namespace or body_namespace

    def _generate_name(self, spec: ResourceSpec, metadata: Obj) -> str:
        prefix = metadata.get("generateName")
        if not prefix:
            raise invalid(spec, "", "metadata.name: Required value: name or generateName is required")
        return str(prefix) + "".join(random.choices(string.ascii_lowercase + string.digits, k=5))

    def _default(self, spec: ResourceSpec, obj: Obj, old: Obj | None) -> None:
        """The few server-side defaults that make objects look as a real cluster returns them."""
        if spec.key == ("", "namespaces"):
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")
        elif spec.key == ("", "services"):
            self._default_service(obj, old)

    def _default_service(self, obj: Obj, old: Obj | None) -> None:
        service = obj.setdefault("spec", {})
        service.setdefault("type", "ClusterIP")
        service.setdefault("sessionAffinity", "None")
        if service["type"] != "ExternalName":
            old_ip = ((old or {}).get("spec") or {}).get("clusterIP")
            service.setdefault("clusterIP", old_ip or self._allocate_cluster_ip())
            service.setdefault("clusterIPs", [service["clusterIP"]])
            service.setdefault("ipFamilies", ["IPv4"])
            service.setdefault("ipFamilyPolicy", "SingleStack")
            service.setdefault("internalTrafficPolicy", "Cluster")
        for port in service.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))
        obj.setdefault("status", {"loadBalancer": {}})

    def _allocate_cluster_ip(self) -> str:
        self._cluster_ips += 1
        return f"10.96.{self._cluster_ips // 250}.{self._cluster_ips % 250 + 2}"

    def _after_store(self, spec: ResourceSpec, obj: Obj) -> None:
        """Orphans are collected; a stored CRD makes its kind servable at once and is marked Established."""
        if spec.key != ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._collect_if_orphaned(spec, obj)
            return
        self.registry.add(spec_from_crd(obj))
        crd_spec = obj.get("spec") or {}
        status = {
            "acceptedNames": crd_spec.get("names", {}),
            "storedVersions": [v["name"] for v in crd_spec.get("versions", []) if v.get("storage")],
            "conditions": [
                {"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": now()}
                for kind, reason, message in (
                    ("NamesAccepted", "NoConflicts", "no conflicts found"),
                    ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
                )
            ],
        }
        current = obj.get("status") or {}
        if {k: current.get(k) for k in ("acceptedNames", "storedVersions")} != {
            k: status[k] for k in ("acceptedNames", "storedVersions")
        }:
            self._update(spec, obj, {**obj, "status": status}, subresource="status")

    # --- garbage collection -------------------------------------------------------------------------

    def _dependents(self, owner: Obj) -> Iterator[tuple[ResourceSpec, Obj]]:
        """Objects listing the owner's uid in ownerReferences, in a namespace the owner can own."""
        uid, namespace = meta(owner).get("uid"), meta(owner).get("namespace")
        for key in list(self._dependents_of.get(str(uid), ())):  # a copy: GC deletes while iterating
            obj, spec = self._find_key(key), self.registry.get(key[:2])
            if obj is not None and spec is not None and (namespace is None or key[2] == namespace):
                yield spec, obj

    def _collect_if_orphaned(self, spec: ResourceSpec, obj: Obj) -> None:
        """The real GC also deletes an object written after all its owners were gone (a controller that
        raced its owner's deletion); without this, such a child would live forever here."""
        references = meta(obj).get("ownerReferences") or []
        orphaned = references and not any(ref.get("uid") in self._uids for ref in references)
        if orphaned and not meta(obj).get("deletionTimestamp"):
            self._delete_quietly(spec, obj)

    def _collect_garbage(self, spec: ResourceSpec, removed: Obj) -> None:
        """After a final removal: delete orphaned dependents, finish foreground owners, empty namespaces."""
        for dep_spec, dep in self._dependents(removed):
            live_owners = [ref for ref in meta(dep).get("ownerReferences") or [] if ref.get("uid") in self._uids]
            if not live_owners and not meta(dep).get("deletionTimestamp"):
                self._delete_quietly(dep_spec, dep)
        for ref in meta(removed).get("ownerReferences") or []:
            owner_key = self._uids.get(ref.get("uid", ""))
            owner_spec = self.registry.get(owner_key[:2]) if owner_key else None
            if owner_key and owner_spec:
                self._run_gc_finalizers(owner_spec, owner_key)
        if spec.key == ("", "namespaces"):
            for kind_key, kind in list(self._kinds.items()):
                obj_spec = self.registry.get(kind_key)
                for obj in kind.in_namespace(meta(removed)["name"]):
                    if obj_spec and not meta(obj).get("deletionTimestamp"):
                        self._delete_quietly(obj_spec, obj)

    def _run_gc_finalizers(self, spec: ResourceSpec, key: Key) -> None:
        """Foreground: delete dependents, release when none remain. Orphan: unlink dependents, release."""
        owner = self._find_key(key)
        finalizers = list(meta(owner or {}).get("finalizers") or [])
        if owner is None or not meta(owner).get("deletionTimestamp"):
            return
        if ORPHAN in finalizers:
            for dep_spec, dep in list(self._dependents(owner)):
                refs = [ref for ref in meta(dep).get("ownerReferences") or [] if ref.get("uid") != meta(owner)["uid"]]
                self._update(dep_spec, dep, {**dep, "metadata": {**meta(dep), "ownerReferences": refs}})
            finalizers.remove(ORPHAN)
        if FOREGROUND in finalizers:
            for dep_spec, dep in list(self._dependents(owner)):
                if not meta(dep).get("deletionTimestamp"):
                    self._delete_quietly(dep_spec, dep)
            if not any(self._dependents(owner)):
                finalizers.remove(FOREGROUND)
        owner = self._find_key(key)
        if owner is not None and finalizers != meta(owner).get("finalizers"):
            self._update(spec, owner, {**owner, "metadata": {**meta(owner), "finalizers": finalizers}})

    def _delete_quietly(self, spec: ResourceSpec, obj: Obj) -> None:
        """A GC deletion: the object may have vanished meanwhile, which is fine."""
        if self.find(spec, meta(obj).get("namespace"), meta(obj)["name"]) is not None:
            self.delete(spec, meta(obj).get("namespace"), meta(obj)["name"])
