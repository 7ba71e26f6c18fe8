"""Strict schema validation of rendered Kubernetes objects, for tests.

``validate_object(obj)`` answers the question "would the API server accept this object exactly as rendered,
with nothing in it silently pruned?".  It returns human-readable error strings, each starting with the JSON
path it is about (``spec.headGroupSpec.bogus: unknown field ...``); an empty list means valid.

Dispatch on ``apiVersion``/``kind``:

* ``ray.io/v1`` RayCluster, RayJob, RayService: the ``v1`` ``openAPIV3Schema`` of the upstream KubeRay CRDs,
  read from the directory in ``$KUBERAY_CRDS_DIR`` (default ``<repo>/../shared/testdata/kuberay-crds``; the
  files are never copied into this repository).  The structural schema is converted to a strict JSON Schema
  (see ``_convert``): an object node that declares no ``additionalProperties`` and is not
  ``x-kubernetes-preserve-unknown-fields`` rejects undeclared keys, because the API server would prune them.
  ``nullable``, ``x-kubernetes-int-or-string``, ``x-kubernetes-list-type`` (set/map uniqueness), ``format``
  (int32/int64 ranges, date-time, byte) and defaulting of ``required`` fields are honoured, ``metadata`` is
  checked against the strict Kubernetes ``ObjectMeta`` schema, and the CRD's CEL ``x-kubernetes-validations``
  rules are evaluated with cel-python (see ``CelRuleUnsupportedError``).
* ``cloud.google.com/v1`` BackendConfig, ComputeClass, ``networking.gke.io/v1`` ManagedCertificate: the
  hand-written schemas in ``gke_schemas/`` (GKE
  ships no public CRD file for them), through the same pipeline.
* The Helm chart's add-on kinds (cert-manager Certificate/Issuer, ServiceMonitor, PodMonitoring): hand-written
  subsets of their CRDs in ``addon_schemas/`` (the fields the chart can set, strictly), the same way.
* Built-in kinds (``v1`` Service, ``apps/v1`` Deployment, ``networking.k8s.io/v1`` Ingress, ...): the strict
  schemas shipped by the ``kubernetes-validate`` package for Kubernetes ``K8S_VERSION``.  That package's own
  ``validate()`` re-reads its 1.8 MB definitions file on every call, so only its schema files are used here,
  with one cached validator per kind.
* Anything else: ``no schema for <apiVersion>/<kind>``, so a builder emitting an unexpected kind is caught.

On top of the schemas, top-level ``metadata`` is checked the way the API server does it: ``name`` is required
and must be a valid object name for the kind; label keys/values and annotation keys must be well formed.

Speed (the validator runs thousands of times in property tests): everything expensive is cached at module
level (``functools.cache``), so only the first validation of a kind loads its schema (about 0.3-0.7 s for a
KubeRay CRD).  Each schema is also compiled into a plain-Python yes/no predicate with jsonschema's semantics
(``_FastCompiler``); jsonschema itself only runs when that predicate says "invalid", to produce the messages
(a typical RayCluster: ~150 us valid, ~1 ms invalid).  cel-python interprets a rule in 0.2-1 ms, so rule
outcomes are memoised per (self, oldSelf) value.
"""

from __future__ import annotations

import base64
import binascii
import copy
import datetime as dt
import functools
import importlib.resources
import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

import celpy
import celpy.celtypes
import jsonschema
import lark
import yaml
from celpy.adapter import json_to_cel
from celpy.celparser import CELParseError
from celpy.evaluation import CELEvalError, base_functions
from jsonschema import FormatChecker
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from referencing import Registry, Resource

from tests.support.kuberay_crds import KUBERAY_CRDS_ENV, SHARED_KUBERAY_CRDS_DIR, cached_kuberay_crds_dir

__all__ = [
    "GKE_SCHEMAS_DIR",
    "K8S_VERSION",
    "KUBERAY_CRDS_ENV",
    "CelRuleUnsupportedError",
    "assert_valid",
    "kuberay_crds_dir",
    "unsupported_cel_rules",
    "validate_object",
]

#: Kubernetes version whose built-in API schemas are used (newest that kubernetes-validate 1.37.0 ships).
K8S_VERSION: Final = "1.37"
_REPO_ROOT: Final = Path(__file__).resolve().parents[2]
SUPPORT_DIR: Final = Path(__file__).resolve().parent
GKE_SCHEMAS_DIR: Final = SUPPORT_DIR / "gke_schemas"
OWN_CRDS_DIR: Final = _REPO_ROOT / "crds"
# mlworkload's own CRDs, as committed in crds/ (a unit test keeps them equal to the models).
_OWN_CRD_FILES: Final[Mapping[tuple[str, str], str]] = {
    ("mlworkload.io/v1alpha1", "MLWorkload"): "mlworkload.io_mlworkloads.yaml",
    ("mlworkload.io/v1alpha1", "MLWorkloadPolicy"): "mlworkload.io_mlworkloadpolicies.yaml",
}

_KUBERAY_CRD_FILES: Final[Mapping[tuple[str, str], str]] = {
    ("ray.io/v1", "RayCluster"): "ray.io_rayclusters.yaml",
    ("ray.io/v1", "RayJob"): "ray.io_rayjobs.yaml",
    ("ray.io/v1", "RayService"): "ray.io_rayservices.yaml",
}
_GKE_SCHEMA_FILES: Final[Mapping[tuple[str, str], str]] = {
    ("cloud.google.com/v1", "BackendConfig"): "gke_schemas/backendconfig.json",
    ("cloud.google.com/v1", "ComputeClass"): "gke_schemas/computeclass.json",
    ("networking.gke.io/v1", "ManagedCertificate"): "gke_schemas/managedcertificate.json",
    # Add-ons the Helm chart can target (cert-manager, Prometheus Operator, Managed Prometheus).
    ("cert-manager.io/v1", "Certificate"): "addon_schemas/certificate.json",
    ("cert-manager.io/v1", "Issuer"): "addon_schemas/issuer.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "addon_schemas/servicemonitor.json",
    ("monitoring.googleapis.com/v1", "PodMonitoring"): "addon_schemas/podmonitoring.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "addon_schemas/podmonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "addon_schemas/prometheusrule.json",
    ("monitoring.googleapis.com/v1", "ClusterPodMonitoring"): "addon_schemas/clusterpodmonitoring.json",
    ("monitoring.googleapis.com/v1", "Rules"): "addon_schemas/rules.json",
}
_OBJECT_META_REF: Final = (
    "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
)
# Private keyword carrying x-kubernetes-list-map-keys into the converted CRD schemas.  Built-in schemas keep
# their own x-kubernetes-list-* annotations, which the API server does not enforce uniformly for them.
_LIST_MAP_KEYS: Final = "x-mlworkload-list-map-keys"
_PASSTHROUGH_KEYWORDS: Final = (
    "enum",
    "const",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "format",
)


class CelRuleUnsupportedError(RuntimeError):
    """An ``x-kubernetes-validations`` rule applies to the object but cel-python cannot evaluate it.

    Raised (never turned into a pass) when the rule would be evaluated: the message names the schema that
    declares it, its location in that schema and the rule text.  Either teach this module the missing CEL
    function or change the test; do not swallow it.
    """


# --------------------------------------------------------------------------------------------- public API


def validate_object(obj: dict[str, Any], *, old: dict[str, Any] | None = None) -> list[str]:
    """Return every reason the API server would reject or prune ``obj`` (empty list: valid).

    ``old`` is the previous version of the object, for update semantics: CEL transition rules (those that
    use ``oldSelf``, e.g. KubeRay's "managedBy is immutable") are only evaluated when it is given, exactly as
    the API server skips them on create.
    """
    if not isinstance(obj, dict):
        return [f"(root): expected a JSON object, got {_json_type(obj)}"]
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(api_version, str) or not api_version or not isinstance(kind, str) or not kind:
        return ["(root): apiVersion and kind must be non-empty strings"]
    bundle = _bundle_for(api_version, kind)
    if bundle is None:
        return [f"no schema for {api_version}/{kind}"]
    errors: list[str] = []
    if bundle.fast is None or not bundle.fast(obj):
        for error in bundle.validator.iter_errors(obj):
            errors.extend(_describe(error))
        errors.sort()
    errors.extend(_metadata_problems(obj, kind))
    if bundle.cel is not None:
        _evaluate_cel(bundle.cel, obj, old, (), errors)
    return list(dict.fromkeys(errors))


def assert_valid(obj: dict[str, Any], *, old: dict[str, Any] | None = None) -> None:
    """Raise ``AssertionError`` listing every problem ``validate_object`` finds in ``obj``."""
    errors = validate_object(obj, old=old)
    if errors:
        name = obj.get("metadata", {}).get("name") if isinstance(obj.get("metadata"), dict) else None
        what = f"{obj.get('apiVersion')}/{obj.get('kind')} {name!r}"
        raise AssertionError(f"{what} is not valid ({len(errors)} problem(s)):\n  " + "\n  ".join(errors))


def kuberay_crds_dir() -> Path:
    """Directory holding the upstream KubeRay CRDs: ``$KUBERAY_CRDS_DIR``, the shared test data, or KubeRay's chart
    (tests/support/kuberay_crds.py, the one lookup every tier uses)."""
    return cached_kuberay_crds_dir()


def unsupported_cel_rules(api_version: str, kind: str) -> list[str]:
    """Describe each CEL rule in the schema of ``api_version``/``kind`` that cel-python cannot evaluate.

    An empty list means every rule of that schema is evaluated when it applies.  Raises ``KeyError`` for a
    kind without a schema.  Built-in kinds have no CEL rules in their schemas.
    """
    bundle = _bundle_for(api_version, kind)
    if bundle is None:
        raise KeyError(f"no schema for {api_version}/{kind}")
    problems: list[str] = []
    for rule in _iter_rules(bundle.cel):
        try:
            rule.program()
        except CelRuleUnsupportedError as exc:
            problems.append(str(exc))
    return problems


# ------------------------------------------------------------------------------------------- dispatching


@dataclass(frozen=True)
class _Bundle:
    validator: Validator
    cel: _CelNode | None
    # Compiled yes/no predicate with the same semantics as ``validator`` (None: schema uses keywords it does
    # not implement).  Valid objects only pay for this; jsonschema runs when it says "invalid", for messages.
    fast: Callable[[Any], bool] | None


def _bundle_for(api_version: str, kind: str) -> _Bundle | None:
    crd_file = _KUBERAY_CRD_FILES.get((api_version, kind))
    if crd_file is not None:
        path = kuberay_crds_dir() / crd_file
        if not path.is_file():
            raise FileNotFoundError(
                f"KubeRay CRD {path} not found: set {KUBERAY_CRDS_ENV} to the directory holding the upstream "
                f"KubeRay CRDs (default {SHARED_KUBERAY_CRDS_DIR})"
            )
        return _crd_bundle(str(path), kind, api_version.rpartition("/")[2])
    own_file = _OWN_CRD_FILES.get((api_version, kind))
    if own_file is not None:
        return _crd_bundle(str(OWN_CRDS_DIR / own_file), kind, api_version.rpartition("/")[2])
    gke_file = _GKE_SCHEMA_FILES.get((api_version, kind))
    if gke_file is not None:
        return _gke_bundle(gke_file)
    return _builtin_bundle(api_version, kind)


_GROUP_PATTERN: Final = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
_API_VERSION_RE: Final = re.compile(rf"^(?:({_GROUP_PATTERN})/)?(v[0-9]+(?:(?:alpha|beta)[0-9]+)?)$")
_KIND_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


@functools.lru_cache(maxsize=1)
def _builtin_schema_dir() -> Path:
    root = Path(str(importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"))
    path = root / f"v{K8S_VERSION}.0-local-strict"
    if not path.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.name.endswith("-local-strict"))
        raise RuntimeError(f"kubernetes-validate has no strict schemas for {K8S_VERSION}; it has {available}")
    return path


@functools.lru_cache(maxsize=1)
def _builtin_registry() -> Registry[Any]:
    """Registry holding kubernetes-validate's ``_definitions.json`` (also used for ObjectMeta of CRDs)."""
    definitions = json.loads((_builtin_schema_dir() / "_definitions.json").read_text(encoding="utf-8"))
    return Resource.from_contents(definitions) @ Registry()


@functools.cache
def _builtin_bundle(api_version: str, kind: str) -> _Bundle | None:
    match = _API_VERSION_RE.match(api_version)
    if match is None or _KIND_RE.match(kind) is None:
        return None
    group, version = match.group(1) or "", match.group(3)
    # kubernetes-validate file names: <kind>-<first label of group>-<version>.json or <kind>-<version>.json
    stem = f"{kind.lower()}-{group.split('.', 1)[0]}-{version}" if group else f"{kind.lower()}-{version}"
    path = _builtin_schema_dir() / f"{stem}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text(encoding="utf-8"))
    # The file name drops most of the group: make sure it really is this group/version/kind.
    gvk = {"group": group, "version": version, "kind": kind}
    if gvk not in schema.get("x-kubernetes-group-version-kind", []):
        return None
    return _Bundle(_new_validator(schema), None, _fast_predicate(schema))


@functools.cache
def _crd_bundle(path: str, kind: str, version: str) -> _Bundle:
    with open(path, "rb") as fh:
        crd = yaml.load(fh, Loader=_YAML_LOADER)
    if crd.get("kind") != "CustomResourceDefinition" or crd["spec"]["names"]["kind"] != kind:
        raise ValueError(f"{path} is not the CustomResourceDefinition of {kind}")
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return _structural_bundle(entry["schema"]["openAPIV3Schema"], f"{Path(path).name} ({version})")
    raise ValueError(f"{path} has no version {version}")


@functools.cache
def _gke_bundle(filename: str) -> _Bundle:
    """A hand-written structural schema under tests/support (GKE's kinds, and the chart's add-on kinds)."""
    schema = json.loads((SUPPORT_DIR / filename).read_text(encoding="utf-8"))
    return _structural_bundle(schema, filename)


_YAML_LOADER: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# ----------------------------------------------------------------------------- structural -> JSON Schema


def _structural_bundle(structural: Mapping[str, Any], source: str) -> _Bundle:
    schema = _convert(structural)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema.setdefault("properties", {})["metadata"] = {"$ref": _OBJECT_META_REF}
    cel = _build_cel(structural, source, "openAPIV3Schema")
    return _Bundle(_new_validator(schema), cel, _fast_predicate(schema))


def _convert(node: Mapping[str, Any]) -> dict[str, Any]:
    """Convert one Kubernetes structural-schema node into a strict JSON Schema (draft 2020-12) node."""
    out: dict[str, Any] = {}
    types = _convert_scalar_keywords(node, out)
    _convert_object_keywords(node, out, strict="object" in types)
    items = node.get("items")
    if isinstance(items, Mapping):
        out["items"] = _convert(items)
    if node.get("x-kubernetes-int-or-string") is not True:  # its anyOf only restates the type
        for combinator in ("allOf", "anyOf", "oneOf"):
            if isinstance(node.get(combinator), list):
                out[combinator] = [_convert(sub) for sub in node[combinator]]
    if isinstance(node.get("not"), Mapping):
        out["not"] = _convert(node["not"])
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        out["uniqueItems"] = True
    elif list_type == "map" and node.get("x-kubernetes-list-map-keys"):
        out[_LIST_MAP_KEYS] = list(node["x-kubernetes-list-map-keys"])
    return out


def _convert_scalar_keywords(node: Mapping[str, Any], out: dict[str, Any]) -> list[str]:
    """type (with nullable and int-or-string), value keywords and exclusive bounds; returns the types."""
    nullable = node.get("nullable") is True
    types: list[str]
    if node.get("x-kubernetes-int-or-string") is True:
        types = ["integer", "string"]
    elif isinstance(node.get("type"), str):
        types = [node["type"]]
    elif isinstance(node.get("type"), list):
        types = list(node["type"])
    else:
        types = []
    if types:
        if nullable and "null" not in types:
            types.append("null")
        out["type"] = types[0] if len(types) == 1 else types
    for keyword in _PASSTHROUGH_KEYWORDS:
        if keyword in node:
            out[keyword] = node[keyword]
    if nullable and "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    # OpenAPI v3.0 spells exclusive bounds as booleans next to minimum/maximum.
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = node.get(exclusive)
        if value is True and bound in out:
            out[exclusive] = out.pop(bound)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[exclusive] = value
    return types


def _convert_object_keywords(node: Mapping[str, Any], out: dict[str, Any], *, strict: bool) -> None:
    """properties, required (minus defaulted fields) and additionalProperties (False unless declared)."""
    properties = node.get("properties")
    if isinstance(properties, Mapping):
        out["properties"] = {name: _convert(sub) for name, sub in properties.items()}
        # The API server applies defaults before validating: a required field with a default may be omitted.
        required = [r for r in node.get("required", ()) if "default" not in properties.get(r, {})]
    else:
        required = list(node.get("required", ()))
    if required:
        out["required"] = required
    additional = node.get("additionalProperties")
    if isinstance(additional, Mapping):
        out["additionalProperties"] = _convert(additional)
    elif isinstance(additional, bool):
        out["additionalProperties"] = additional
    elif strict and node.get("x-kubernetes-preserve-unknown-fields") is not True:
        out["additionalProperties"] = False  # undeclared fields would be pruned


def _list_map_keys(
    validator: Validator, keys: Sequence[str], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """``x-kubernetes-list-type: map``: no two items may share the same values of the map keys."""
    if not isinstance(instance, list):
        return
    seen: dict[str, int] = {}
    for index, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        key = json.dumps([item.get(k) for k in keys], sort_keys=True)
        if key in seen:
            shown = ", ".join(f"{k}={item.get(k)!r}" for k in keys)
            yield ValidationError(f"duplicate entry ({shown}); first at index {seen[key]}", path=[index])
        else:
            seen[key] = index


_FORMAT_CHECKER: Final = FormatChecker(formats=())
_INT_RANGES: Final = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_RFC3339_RE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _register_int_format(name: str) -> None:
    low, high = _INT_RANGES[name]

    def check(value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return True  # wrong types are reported by the "type" keyword
        return low <= value <= high

    _FORMAT_CHECKER.checks(name)(check)


for _name in _INT_RANGES:
    _register_int_format(_name)


@_FORMAT_CHECKER.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if _RFC3339_RE.match(value) is None:
        return False
    try:
        dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return False
    return True


@_FORMAT_CHECKER.checks("byte")
def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _is_integer(checker: object, instance: object) -> bool:
    """JSON Schema calls 2.0 an integer; Kubernetes' Go decoders reject it for integer fields of built-in
    types, and in rendered manifests it is a bug anyway (``json.dumps`` writes ``2.0``).  So: ints only."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_StrictValidator: Final = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.validators.Draft202012Validator,
    {_LIST_MAP_KEYS: _list_map_keys},
    type_checker=jsonschema.validators.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer),
)


def _new_validator(schema: Mapping[str, Any]) -> Validator:
    validator = _StrictValidator(schema, registry=_builtin_registry(), format_checker=_FORMAT_CHECKER)
    return cast(Validator, validator)


# ------------------------------------------------------------------------------------- error formatting

_SIMPLE_KEY_RE: Final = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$-]*$")


def _fmt_path(path: Sequence[str | int]) -> str:
    parts: list[str] = []
    for element in path:
        if isinstance(element, int):
            parts.append(f"[{element}]")
        elif _SIMPLE_KEY_RE.match(element):
            parts.append(f".{element}" if parts else element)
        else:
            parts.append(f"[{json.dumps(element)}]")
    return "".join(parts) or "(root)"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _short(value: object, limit: int = 60) -> str:
    try:
        text = json.dumps(value, sort_keys=True, default=repr)
    except ValueError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(error: ValidationError) -> Iterator[str]:
    path = tuple(error.absolute_path)
    where = _fmt_path(path)
    keyword = error.validator
    instance = error.instance
    if keyword == "additionalProperties" and error.validator_value is False and isinstance(instance, dict):
        declared = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
        for key in instance:
            if key not in declared:
                yield (
                    f"{_fmt_path((*path, key))}: unknown field (not declared in the schema; "
                    "the API server would prune it)"
                )
    elif keyword == "required" and isinstance(instance, dict) and isinstance(error.validator_value, list):
        for name in error.validator_value:
            if name not in instance:
                yield f"{_fmt_path((*path, name))}: required field is missing"
    elif keyword == "type":
        expected = error.validator_value
        wanted = " or ".join(expected) if isinstance(expected, list) else str(expected)
        yield f"{where}: expected {wanted}, got {_json_type(instance)} {_short(instance)}"
    elif keyword == "enum":
        yield f"{where}: {_short(instance)} is not one of {_short(error.validator_value, 200)}"
    elif keyword == "format":
        yield f"{where}: {_short(instance)} is not a valid {error.validator_value}"
    elif keyword in ("oneOf", "anyOf"):
        yield f"{where}: {_short(instance)} matches none of the allowed alternatives ({keyword})"
    else:
        message = error.message if len(error.message) <= 300 else error.message[:299] + "…"
        yield f"{where}: {message}"


# ----------------------------------------------------------------------------------------------- metadata

_DNS1123_LABEL_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL_PATTERN: Final = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_RE: Final = re.compile(rf"^{_DNS1123_LABEL_PATTERN}(\.{_DNS1123_LABEL_PATTERN})*$")
_DNS1035_LABEL_RE: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME_RE: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_ANNOTATIONS_MAX_BYTES: Final = 256 * 1024


def _is_dns1123_label(name: str) -> bool:
    return len(name) <= 63 and _DNS1123_LABEL_RE.match(name) is not None


def _is_dns1123_subdomain(name: str) -> bool:
    return len(name) <= 253 and _DNS1123_SUBDOMAIN_RE.match(name) is not None


def _is_dns1035_label(name: str) -> bool:
    return len(name) <= 63 and _DNS1035_LABEL_RE.match(name) is not None


def _is_path_segment(name: str) -> bool:
    return name not in (".", "..") and "/" not in name and "%" not in name


# How the API server validates metadata.name per kind (default: DNS-1123 subdomain).
_NAME_RULES: Final[Mapping[str, tuple[str, Callable[[str], bool]]]] = {
    "Service": ("a DNS-1035 label (lowercase alphanumerics and '-', leading letter)", _is_dns1035_label),
    "Namespace": ("a DNS-1123 label", _is_dns1123_label),
    "Role": ("a path segment (no '/' or '%')", _is_path_segment),
    "ClusterRole": ("a path segment (no '/' or '%')", _is_path_segment),
    "RoleBinding": ("a path segment (no '/' or '%')", _is_path_segment),
    "ClusterRoleBinding": ("a path segment (no '/' or '%')", _is_path_segment),
}
_DEFAULT_NAME_RULE: Final = (
    "a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', at most 253 characters)",
    _is_dns1123_subdomain,
)


# Kinds served at cluster scope, whose metadata.namespace the API server silently clears.
_CLUSTER_SCOPED_KINDS: Final = frozenset(
    {
        "ComputeClass",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PriorityClass",
        "StorageClass",
        "IngressClass",
        "RuntimeClass",
        "CSIDriver",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "APIService",
    }
)


def _qualified_name_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and not _is_dns1123_subdomain(prefix):
        return "its prefix (before '/') must be a DNS-1123 subdomain"
    if len(name) > 63 or _QUALIFIED_NAME_RE.match(name) is None:
        return "its name part must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
    return None


def _is_bad_label_value(value: str) -> bool:
    return len(value) > 63 or _QUALIFIED_NAME_RE.match(value) is None


def _metadata_problems(obj: Mapping[str, Any], kind: str) -> Iterator[str]:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        yield "metadata: required object is missing"
        return
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        yield "metadata.name: required field is missing"
    else:
        description, is_valid = _NAME_RULES.get(kind, _DEFAULT_NAME_RULE)
        if not is_valid(name):
            yield f"metadata.name: {name!r} is not valid for a {kind}: it must be {description}"
    namespace = metadata.get("namespace")
    if isinstance(namespace, str) and kind in _CLUSTER_SCOPED_KINDS:
        yield f"metadata.namespace: {kind} is cluster-scoped; the API server would drop the namespace"
    elif isinstance(namespace, str) and not _is_dns1123_label(namespace):
        yield f"metadata.namespace: {namespace!r} is not a DNS-1123 label"
    labels = metadata.get("labels")
    if isinstance(labels, dict):
        for key, value in labels.items():
            where = _fmt_path(("metadata", "labels", key))
            problem = _qualified_name_problem(key)
            if problem is not None:
                yield f"{where}: invalid label key: {problem}"
            if isinstance(value, str) and value and _is_bad_label_value(value):
                yield (
                    f"{where}: invalid label value {_short(value)}: at most 63 alphanumerics, '-', '_' "
                    "or '.', starting and ending alphanumeric"
                )
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict):
        total = 0
        for key, value in annotations.items():
            problem = _qualified_name_problem(key.lower())
            if problem is not None:
                yield f"{_fmt_path(('metadata', 'annotations', key))}: invalid annotation key: {problem}"
            total += len(key) + (len(value) if isinstance(value, str) else 0)
        if total > _ANNOTATIONS_MAX_BYTES:
            yield f"metadata.annotations: total size {total} exceeds {_ANNOTATIONS_MAX_BYTES} bytes"


# ---------------------------------------------------------------------------------------------------- CEL

# Functions and macros cel-python implements.  Kubernetes adds libraries (strings ext: split, lowerAscii,
# indexOf, ...; lists ext; regex find; url, ip, cidr, quantity, format, optionals) that it does not: rules
# calling them are detected statically and raise CelRuleUnsupportedError instead of being guessed at.
_CEL_MACROS: Final = frozenset({"has", "dyn", "all", "exists", "exists_one", "map", "filter"})


def _k8s_is_cidr(text: Any) -> celpy.celtypes.BoolType:
    """Kubernetes' CEL `isCIDR` (library `net`, Kubernetes 1.31): address/prefix as Go's netip.ParsePrefix reads
    it, IPv4 or IPv6, host bits allowed, a decimal prefix length only."""
    address, _, length = str(text).partition("/")
    if "%" in address or not re.fullmatch(r"0|[1-9][0-9]{0,2}", length):  # no netmask, zone or leading zero
        return celpy.celtypes.BoolType(False)
    try:
        ipaddress.ip_network(f"{address}/{length}", strict=False)
    except ValueError:
        return celpy.celtypes.BoolType(False)
    return celpy.celtypes.BoolType(True)


def _k8s_is_ip(text: Any) -> celpy.celtypes.BoolType:
    """Kubernetes' CEL `isIP` (library `net`, Kubernetes 1.31): an IPv4 or IPv6 address, no zone."""
    try:
        ipaddress.ip_address(str(text))
    except ValueError:
        return celpy.celtypes.BoolType(False)
    return celpy.celtypes.BoolType(True)


# The Kubernetes CEL library functions this module implements beyond cel-python's own, from their documented
# semantics (https://kubernetes.io/docs/reference/using-api/cel/#kubernetes-ip-address-library).
_K8S_FUNCTIONS: Final[dict[str, Any]] = {"isCIDR": _k8s_is_cidr, "isIP": _k8s_is_ip}


@functools.lru_cache(maxsize=1)
def _cel_env() -> celpy.Environment:
    return celpy.Environment()


@functools.lru_cache(maxsize=1)
def _cel_functions() -> frozenset[str]:
    return frozenset(name for name in base_functions if name[:1].isalpha()) | _CEL_MACROS | set(_K8S_FUNCTIONS)


def _called_functions(tree: lark.Tree[Any]) -> set[str]:
    names: set[str] = set()
    for sub in tree.iter_subtrees():
        if sub.data in ("ident_arg", "dot_ident_arg") and sub.children:
            token = sub.children[0]
        elif sub.data == "member_dot_arg" and len(sub.children) > 1:
            token = sub.children[1]
        else:
            continue
        if isinstance(token, lark.Token):
            names.add(str(token))
    return names


@dataclass
class _CelRule:
    rule: str
    message: str
    field_path: str
    location: str  # where it is declared, e.g. "ray.io_rayjobs.yaml (v1) openAPIV3Schema.properties.spec"
    transition: bool  # uses oldSelf: only evaluated on update
    optional_old_self: bool
    _program: celpy.Runner | None = field(default=None, repr=False)
    # Memo of outcomes by the JSON text of (self, oldSelf): cel-python's interpreter needs 0.2-1 ms per rule.
    _outcomes: dict[tuple[str, str | None], _Outcome] = field(default_factory=dict, repr=False)

    def _unsupported(self, why: str) -> CelRuleUnsupportedError:
        where = f"x-kubernetes-validations rule at {self.location}"
        return CelRuleUnsupportedError(f"{where} cannot be evaluated: {why}; rule: {self.rule!r}")

    def program(self) -> celpy.Runner:
        if self._program is None:
            if self.optional_old_self:
                raise self._unsupported("optionalOldSelf needs CEL optional types, which cel-python lacks")
            try:
                tree = _cel_env().compile(self.rule)
            except CELParseError as exc:
                raise self._unsupported(f"cel-python cannot parse it ({exc})") from exc
            missing = sorted(_called_functions(tree) - _cel_functions())
            if missing:
                raise self._unsupported(f"cel-python lacks the function(s) {', '.join(missing)}")
            self._program = _cel_env().program(tree, functions=_K8S_FUNCTIONS)
        return self._program


@dataclass
class _CelNode:
    """The part of a structural schema that leads to CEL rules (subtrees without rules are dropped)."""

    schema: Mapping[str, Any]
    rules: tuple[_CelRule, ...]
    properties: dict[str, _CelNode]
    additional: _CelNode | None
    items: _CelNode | None
    list_map_keys: tuple[str, ...]


def _build_cel(node: Mapping[str, Any], source: str, location: str) -> _CelNode | None:
    rules = tuple(
        _CelRule(
            rule=entry["rule"],
            message=entry.get("message") or f"failed rule: {entry['rule']}",
            field_path=entry.get("fieldPath", ""),
            location=f"{source} {location}",
            transition=re.search(r"\boldSelf\b", entry["rule"]) is not None,
            optional_old_self=entry.get("optionalOldSelf") is True,
        )
        for entry in node.get("x-kubernetes-validations", ())
    )
    properties: dict[str, _CelNode] = {}
    for name, sub in (node.get("properties") or {}).items():
        child = _build_cel(sub, source, f"{location}.properties.{name}")
        if child is not None:
            properties[name] = child
    additional_schema = node.get("additionalProperties")
    additional = (
        _build_cel(additional_schema, source, f"{location}.additionalProperties")
        if isinstance(additional_schema, Mapping)
        else None
    )
    items_schema = node.get("items")
    items = None
    if isinstance(items_schema, Mapping):
        items = _build_cel(items_schema, source, f"{location}.items")
    if not rules and not properties and additional is None and items is None:
        return None
    keys = node.get("x-kubernetes-list-map-keys") if node.get("x-kubernetes-list-type") == "map" else None
    return _CelNode(node, rules, properties, additional, items, tuple(keys or ()))


def _iter_rules(node: _CelNode | None) -> Iterator[_CelRule]:
    if node is None:
        return
    yield from node.rules
    for child in node.properties.values():
        yield from _iter_rules(child)
    yield from _iter_rules(node.additional)
    yield from _iter_rules(node.items)


def _with_defaults(schema: Mapping[str, Any] | None, value: Any) -> Any:
    """``value`` with the schema's defaults filled in, as the API server does before running CEL rules."""
    if schema is None:
        return value
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        additional_schema = additional if isinstance(additional, Mapping) else None
        out = {}
        for key, item in value.items():
            out[key] = _with_defaults(properties.get(key, additional_schema), item)
        for key, sub in properties.items():
            if key not in out and "default" in sub:
                out[key] = _with_defaults(sub, copy.deepcopy(sub["default"]))
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_with_defaults(schema["items"], item) for item in value]
    return value


def _evaluate_cel(
    node: _CelNode,
    value: Any,
    old: Any,
    path: tuple[str | int, ...],
    errors: list[str],
) -> None:
    if value is None:
        return
    self_key: str | None = None
    for rule in node.rules:
        if rule.transition and old is None:
            continue  # transition rules only run on update, against a correlatable old value
        if self_key is None:
            self_key = _cel_key(value)
        memo_key = (self_key, _cel_key(old) if rule.transition else None)
        outcome = rule._outcomes.get(memo_key, _MISSING)
        if outcome is _MISSING:
            outcome = _rule_outcome(rule, node.schema, value, old)
            if len(rule._outcomes) >= _CEL_MEMO_LIMIT:
                rule._outcomes.clear()
            rule._outcomes[memo_key] = outcome
        if outcome is not None:
            errors.append(_format_outcome(rule, outcome, path))
    if isinstance(value, dict):
        old_map = old if isinstance(old, dict) else {}
        for key, child in node.properties.items():
            if key in value:
                _evaluate_cel(child, value[key], old_map.get(key), (*path, key), errors)
        if node.additional is not None:
            declared = node.schema.get("properties") or {}
            for key, item in value.items():
                if key not in declared:
                    _evaluate_cel(node.additional, item, old_map.get(key), (*path, key), errors)
    elif isinstance(value, list) and node.items is not None:
        # Only items of x-kubernetes-list-type=map lists are correlated with the old list (by their keys).
        old_items: dict[str, Any] = {}
        if node.list_map_keys and isinstance(old, list):
            old_items = {_map_key(item, node.list_map_keys): item for item in old if isinstance(item, dict)}
        for index, item in enumerate(value):
            old_item = old_items.get(_map_key(item, node.list_map_keys)) if isinstance(item, dict) else None
            _evaluate_cel(node.items, item, old_item, (*path, index), errors)


def _map_key(item: Mapping[str, Any], keys: tuple[str, ...]) -> str:
    return json.dumps([item.get(k) for k in keys], sort_keys=True)


# None: the rule holds.  Otherwise (kind, detail) with kind "failed" (rule returned false), "error" (runtime
# error, which the API server also reports as invalid) or "not-bool".
_Outcome = tuple[str, str] | None
_MISSING: Final[Any] = object()
_CEL_MEMO_LIMIT: Final = 10_000


def _cel_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def _rule_outcome(rule: _CelRule, schema: Mapping[str, Any], value: Any, old: Any) -> _Outcome:
    program = rule.program()
    activation: dict[str, Any] = {"self": json_to_cel(_with_defaults(schema, value))}
    if rule.transition:
        activation["oldSelf"] = json_to_cel(_with_defaults(schema, old))
    try:
        result = program.evaluate(activation)
    except CELEvalError as exc:
        return ("error", str(exc.args[0] if exc.args else exc))
    except Exception as exc:  # cel-python itself broke on this rule: do not guess, fail loudly
        raise rule._unsupported(f"cel-python raised {type(exc).__name__}: {exc}") from exc
    if isinstance(result, CELEvalError):
        return ("error", str(result.args[0] if result.args else result))
    if not isinstance(result, celpy.celtypes.BoolType):
        return ("not-bool", _short(repr(result)))
    return None if result else ("failed", "")


def _format_outcome(rule: _CelRule, outcome: tuple[str, str], path: tuple[str | int, ...]) -> str:
    kind, detail = outcome
    where = _fmt_path(path)
    if kind == "error":
        return f"{where}: CEL rule {rule.rule!r} failed to evaluate: {detail}"
    if kind == "not-bool":
        return f"{where}: CEL rule {rule.rule!r} returned {detail}, not a bool"
    if rule.field_path:
        where = f"{where}{rule.field_path}" if path else rule.field_path.lstrip(".")
    return f"{where}: {rule.message} (x-kubernetes-validations rule: {rule.rule})"


# ------------------------------------------------------------------------------------ compiled fast path

_Check = Callable[[Any], bool]


class _FastPathUnsupportedError(Exception):
    """The schema uses a keyword the fast path does not implement: use jsonschema only."""


# Assertion/applicator keywords of draft 2020-12 that _FastCompiler does not implement.  Any other unknown
# key is an annotation (description, default, x-kubernetes-*, ...) that jsonschema ignores as well.
_FAST_UNSUPPORTED: Final = frozenset(
    {
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "patternProperties",
        "propertyNames",
        "prefixItems",
        "additionalItems",
        "contains",
        "minContains",
        "maxContains",
        "unevaluatedItems",
        "unevaluatedProperties",
        "$dynamicRef",
        "$recursiveRef",
        "multipleOf",
    }
)
_TYPE_PREDICATES: Final[Mapping[str, _Check]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _canonical(value: Any) -> str:
    """Text equal for values jsonschema considers equal (1 == 1.0, but True != 1)."""

    def normalize(item: Any) -> Any:
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {k: normalize(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [normalize(v) for v in item]
        return item

    return json.dumps(normalize(value), sort_keys=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _FastCompiler:
    """Compile a JSON Schema (the keyword subset used by Kubernetes schemas) into one yes/no predicate."""

    def __init__(self, registry: Registry[Any]) -> None:
        self._registry = registry
        self._refs: dict[int, _Check] = {}

    def compile(self, schema: Any, resolver: Any) -> _Check:  # resolver: referencing.Resolver
        if schema is True:
            return lambda _v: True
        if schema is False:
            return lambda _v: False
        if not isinstance(schema, Mapping):
            raise _FastPathUnsupportedError(f"schema {schema!r}")
        unsupported = _FAST_UNSUPPORTED.intersection(schema)
        if unsupported:
            raise _FastPathUnsupportedError(", ".join(sorted(unsupported)))
        checks: list[_Check] = []
        if "$ref" in schema:
            checks.append(self._ref(schema["$ref"], resolver))
        if "type" in schema:
            checks.append(self._type(schema["type"]))
        if "enum" in schema:
            allowed = frozenset(_canonical(v) for v in schema["enum"])
            checks.append(lambda v: _canonical(v) in allowed)
        if "const" in schema:
            constant = _canonical(schema["const"])
            checks.append(lambda v: _canonical(v) == constant)
        checks.extend(self._string_checks(schema))
        checks.extend(self._number_checks(schema))
        if "format" in schema and schema["format"] in _FORMAT_CHECKER.checkers:
            fmt = schema["format"]
            checks.append(lambda v: _FORMAT_CHECKER.conforms(v, fmt))
        object_check = self._object(schema, resolver)
        if object_check is not None:
            checks.append(object_check)
        array_check = self._array(schema, resolver)
        if array_check is not None:
            checks.append(array_check)
        checks.extend(self._combinators(schema, resolver))
        return _all_of(checks)

    def _ref(self, ref: str, resolver: Any) -> _Check:
        resolved = resolver.lookup(ref)
        key = id(resolved.contents)
        if key not in self._refs:
            self._refs[key] = lambda _v: True  # placeholder while compiling recursive definitions
            self._refs[key] = self.compile(resolved.contents, resolved.resolver)
        refs = self._refs

        def check(v: Any) -> bool:  # late binding: the entry may still be the placeholder right now
            return refs[key](v)

        return check

    @staticmethod
    def _type(spec: str | list[str]) -> _Check:
        names = [spec] if isinstance(spec, str) else list(spec)
        predicates = tuple(_TYPE_PREDICATES[name] for name in names)
        if len(predicates) == 1:
            return predicates[0]
        return lambda v: any(p(v) for p in predicates)

    @staticmethod
    def _string_checks(schema: Mapping[str, Any]) -> list[_Check]:
        checks: list[_Check] = []
        if "pattern" in schema:
            regex = re.compile(schema["pattern"])
            checks.append(lambda v: not isinstance(v, str) or regex.search(v) is not None)
        if "minLength" in schema:
            low = schema["minLength"]
            checks.append(lambda v: not isinstance(v, str) or len(v) >= low)
        if "maxLength" in schema:
            high = schema["maxLength"]
            checks.append(lambda v: not isinstance(v, str) or len(v) <= high)
        return checks

    @staticmethod
    def _number_checks(schema: Mapping[str, Any]) -> list[_Check]:
        checks: list[_Check] = []
        if "minimum" in schema:
            low = schema["minimum"]
            checks.append(lambda v: not _is_number(v) or v >= low)
        if "maximum" in schema:
            high = schema["maximum"]
            checks.append(lambda v: not _is_number(v) or v <= high)
        if "exclusiveMinimum" in schema:
            xlow = schema["exclusiveMinimum"]
            checks.append(lambda v: not _is_number(v) or v > xlow)
        if "exclusiveMaximum" in schema:
            xhigh = schema["exclusiveMaximum"]
            checks.append(lambda v: not _is_number(v) or v < xhigh)
        return checks

    def _object(self, schema: Mapping[str, Any], resolver: Any) -> _Check | None:
        keys = ("properties", "additionalProperties", "required", "minProperties", "maxProperties")
        if not any(k in schema for k in keys):
            return None
        properties = {name: self.compile(sub, resolver) for name, sub in schema.get("properties", {}).items()}
        raw_additional = schema.get("additionalProperties", True)
        forbid_additional = raw_additional is False
        additional = None if isinstance(raw_additional, bool) else self.compile(raw_additional, resolver)
        required = tuple(schema.get("required", ()))
        min_props = schema.get("minProperties", 0)
        max_props = schema.get("maxProperties")

        def check(v: Any) -> bool:
            if not isinstance(v, dict):
                return True
            for key, item in v.items():
                sub = properties.get(key)
                if sub is None:
                    if forbid_additional or (additional is not None and not additional(item)):
                        return False
                elif not sub(item):
                    return False
            for name in required:
                if name not in v:
                    return False
            return len(v) >= min_props and (max_props is None or len(v) <= max_props)

        return check

    def _array(self, schema: Mapping[str, Any], resolver: Any) -> _Check | None:
        keys = ("items", "minItems", "maxItems", "uniqueItems", _LIST_MAP_KEYS)
        if not any(k in schema for k in keys):
            return None
        raw_items = schema.get("items", True)
        if not isinstance(raw_items, Mapping | bool):
            raise _FastPathUnsupportedError("array-form items")
        items = self.compile(raw_items, resolver)
        min_items = schema.get("minItems", 0)
        max_items = schema.get("maxItems")
        unique = schema.get("uniqueItems") is True
        map_keys = tuple(schema.get(_LIST_MAP_KEYS, ()))

        def check(v: Any) -> bool:
            if not isinstance(v, list):
                return True
            if len(v) < min_items or (max_items is not None and len(v) > max_items):
                return False
            for item in v:
                if not items(item):
                    return False
            if unique and len({_canonical(item) for item in v}) != len(v):
                return False
            if map_keys:
                seen = [_map_key(item, map_keys) for item in v if isinstance(item, dict)]
                if len(set(seen)) != len(seen):
                    return False
            return True

        return check

    def _combinators(self, schema: Mapping[str, Any], resolver: Any) -> list[_Check]:
        checks: list[_Check] = []
        if "allOf" in schema:
            checks.append(_all_of([self.compile(sub, resolver) for sub in schema["allOf"]]))
        if "anyOf" in schema:
            any_of = tuple(self.compile(sub, resolver) for sub in schema["anyOf"])
            checks.append(lambda v: any(c(v) for c in any_of))
        if "oneOf" in schema:
            one_of = tuple(self.compile(sub, resolver) for sub in schema["oneOf"])
            checks.append(lambda v: sum(1 for c in one_of if c(v)) == 1)
        if "not" in schema:
            negated = self.compile(schema["not"], resolver)
            checks.append(lambda v: not negated(v))
        return checks


def _all_of(checks: Sequence[_Check]) -> _Check:
    if not checks:
        return lambda _v: True
    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)

    def check(v: Any) -> bool:
        return all(c(v) for c in frozen)

    return check


def _fast_predicate(schema: Mapping[str, Any]) -> _Check | None:
    registry = _builtin_registry()
    base_uri = schema.get("$id", "")
    if base_uri:
        registry = Resource.from_contents(schema) @ registry
    try:
        return _FastCompiler(registry).compile(schema, registry.resolver(base_uri=base_uri))
    except _FastPathUnsupportedError:
        return None
