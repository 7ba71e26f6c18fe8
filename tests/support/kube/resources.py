"""Which kinds the emulated API server serves: built-ins, GKE kinds, and CRDs read from YAML files.

A real API server derives discovery, URL scope and the ``/status`` subresource from its type registry and
from the stored CustomResourceDefinitions; the emulator does the same, so a CRD created through the API
becomes servable at once, and a kind that does not declare ``subresources.status`` has no ``/status``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from tests.support.kuberay_crds import cached_kuberay_crds_dir

Obj = dict[str, Any]

REPO_ROOT: Final = Path(__file__).resolve().parents[3]
OPERATOR_CRDS_DIR: Final = REPO_ROOT / "crds"

_VERSION_RE: Final = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


@dataclass(frozen=True)
class ResourceSpec:
    """One kind as the server knows it; ``versions`` are the served ones, the preferred (storage) one first."""

    group: str
    plural: str
    kind: str
    versions: tuple[str, ...]
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    custom: bool = False  # CRD-backed: no strategic merge patch, as on a real server

    @property
    def key(self) -> tuple[str, str]:
        return self.group, self.plural

    @property
    def storage_version(self) -> str:
        return self.versions[0]

    def api_version(self, version: str | None = None) -> str:
        version = version or self.storage_version
        return f"{self.group}/{version}" if self.group else version

    def discovery_entries(self) -> list[Obj]:
        """The APIResourceList entries: the kind itself, then ``<plural>/status`` when it exists."""
        main = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": list(self.short_names),
            "categories": list(self.categories),
        }
        status = {
            "name": f"{self.plural}/status",
            "singularName": "",
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["get", "patch", "update"],
        }
        return [main, status] if self.status_subresource else [main]


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version ordering for discovery: GA before beta before alpha, higher numbers first."""
    match = _VERSION_RE.match(version)
    if match is None:
        return (3, 0, 0)  # non-conventional versions sort last, as in the API server
    major, stage, minor = match.groups()
    stage_rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (stage_rank, -int(major), -int(minor or 0))


def spec_from_crd(crd: Mapping[str, Any]) -> ResourceSpec:
    """Translate a CustomResourceDefinition into a ResourceSpec (status from the storage version)."""
    spec = crd["spec"]
    names = spec["names"]
    served = [version for version in spec["versions"] if version.get("served", True)]
    storage = next((v for v in spec["versions"] if v.get("storage")), served[0])
    ordered = sorted((v["name"] for v in served), key=version_priority)
    return ResourceSpec(
        group=spec["group"],
        plural=names["plural"],
        kind=names["kind"],
        versions=tuple(ordered),
        namespaced=spec["scope"] == "Namespaced",
        singular=names.get("singular", ""),
        short_names=tuple(names.get("shortNames", ())),
        categories=tuple(names.get("categories", ())),
        status_subresource="status" in (storage.get("subresources") or {}),
        custom=True,
    )


def _core(plural: str, kind: str, *, namespaced: bool = True, status: bool = False) -> ResourceSpec:
    return ResourceSpec("", plural, kind, ("v1",), namespaced, status_subresource=status)


BUILTIN_RESOURCES: Final[tuple[ResourceSpec, ...]] = (
    _core("namespaces", "Namespace", namespaced=False, status=True),
    _core("serviceaccounts", "ServiceAccount"),
    _core("services", "Service", status=True),
    _core("events", "Event"),
    _core("configmaps", "ConfigMap"),
    _core("secrets", "Secret"),
    _core("pods", "Pod", status=True),
    ResourceSpec("networking.k8s.io", "networkpolicies", "NetworkPolicy", ("v1",), True),
    ResourceSpec("networking.k8s.io", "ingresses", "Ingress", ("v1",), True, status_subresource=True),
    ResourceSpec(
        "policy",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        ("v1",),
        True,
        short_names=("pdb",),
        status_subresource=True,
    ),
    ResourceSpec(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        ("v1",),
        False,
        short_names=("crd", "crds"),
        status_subresource=True,
    ),
    ResourceSpec("events.k8s.io", "events", "Event", ("v1",), True),
    ResourceSpec("coordination.k8s.io", "leases", "Lease", ("v1",), True),
    ResourceSpec(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        ("v1",),
        False,
    ),
    # GKE ships these as CRDs without public YAML; their scopes are as on GKE.
    ResourceSpec("cloud.google.com", "backendconfigs", "BackendConfig", ("v1", "v1beta1"), True, custom=True),
    ResourceSpec(
        "cloud.google.com", "computeclasses", "ComputeClass", ("v1",), False, status_subresource=True, custom=True
    ),
    # The public CRD (gke-managed-certs) declares no status subresource.
    ResourceSpec("networking.gke.io", "managedcertificates", "ManagedCertificate", ("v1",), True, custom=True),
)


class ResourceRegistry:
    """The served kinds by (group, plural), with lookups by URL parts and by apiVersion + kind."""

    def __init__(self, specs: Iterable[ResourceSpec] = ()) -> None:
        self._specs: dict[tuple[str, str], ResourceSpec] = {}
        for spec in specs:
            self.add(spec)

    def __iter__(self) -> Iterator[ResourceSpec]:
        return iter(list(self._specs.values()))

    def add(self, spec: ResourceSpec) -> None:
        self._specs[spec.key] = spec

    def remove(self, group: str, plural: str) -> None:
        self._specs.pop((group, plural), None)

    def get(self, key: tuple[str, str]) -> ResourceSpec | None:
        return self._specs.get(key)

    def lookup(self, group: str, version: str, plural: str) -> ResourceSpec | None:
        """The spec served at ``/apis/<group>/<version>/<plural>``, or None (an unknown URL is a 404)."""
        spec = self._specs.get((group, plural))
        return spec if spec is not None and version in spec.versions else None

    def resolve(self, api_version: str, kind_or_plural: str) -> ResourceSpec:
        """Find a spec by apiVersion plus either its Kind or its plural (for test helpers)."""
        group, _, version = api_version.rpartition("/")
        for spec in self._specs.values():
            if spec.group == group and version in spec.versions and kind_or_plural in (spec.kind, spec.plural):
                return spec
        raise LookupError(f"the emulator serves no {kind_or_plural!r} in {api_version!r}")

    def group_versions(self) -> dict[str, list[str]]:
        """Every non-core group with its versions, preferred first."""
        groups: dict[str, set[str]] = {}
        for spec in self._specs.values():
            if spec.group:
                groups.setdefault(spec.group, set()).update(spec.versions)
        return {group: sorted(versions, key=version_priority) for group, versions in sorted(groups.items())}

    def in_group_version(self, group: str, version: str) -> list[ResourceSpec]:
        return [spec for spec in self._specs.values() if spec.group == group and version in spec.versions]


def default_crd_paths() -> list[Path]:
    """The operator's own CRDs and the upstream KubeRay CRDs."""
    return sorted(OPERATOR_CRDS_DIR.glob("*.yaml")) + sorted(cached_kuberay_crds_dir().glob("*.yaml"))


def load_crds(paths: Iterable[Path]) -> list[Obj]:
    """Parsed CRD documents from the files; parsing is cached because the KubeRay CRDs are megabytes."""
    return [crd for path in paths for crd in _parse_crd_file(path.resolve(), path.stat().st_mtime_ns)]


@functools.cache
def _parse_crd_file(path: Path, mtime_ns: int) -> tuple[Obj, ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open(encoding="utf-8") as stream:
        documents = [doc for doc in yaml.load_all(stream, Loader=loader) if doc]
    return tuple(doc for doc in documents if doc.get("kind") == "CustomResourceDefinition")
