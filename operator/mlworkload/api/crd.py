"""CustomResourceDefinitions generated from the pydantic models, so the two can never drift.

pydantic emits JSON Schema (draft 2020-12); the API server wants a *structural* OpenAPI v3
schema: no $refs, no `anyOf` for optionals, int-or-string spelled its own way, no `title`. This
module translates one into the other and adds what only a CRD has (printer columns, status
subresource, CEL rules collected from the models' `x-kubernetes-validations`).
"""

from typing import Any

from pydantic import BaseModel

from mlworkload.api.base import cel_rules
from mlworkload.api.policy import MLWorkloadPolicy, MLWorkloadPolicySpec
from mlworkload.api.policy_status import MLWorkloadPolicyStatus
from mlworkload.api.workload import MLWorkload, MLWorkloadSpec, MLWorkloadStatus
from mlworkload.constants import GROUP, POLICY_KIND, POLICY_PLURAL, VERSION, WORKLOAD_KIND, WORKLOAD_PLURAL
from mlworkload.yamlio import dump

Schema = dict[str, Any]

# JSON Schema keywords with no place in a structural schema (defaults live in the policy code;
# a CRD default would be persisted and make GitOps diffs noisy).
_DROPPED = {"title", "default", "additionalProperties", "$defs", "examples"}


def _structural(schema: Schema, defs: dict[str, Schema]) -> Schema:
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{key: value for key, value in schema.items() if key != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option.get("type") != "null"]
        if len(options) == 1:
            siblings = {key: value for key, value in schema.items() if key != "anyOf"}
            return _structural({**options[0], **siblings}, defs)
        raise ValueError(f"a union cannot be expressed in a structural schema: {schema}")
    result: Schema = {}
    for key, value in schema.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            result[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            result[key] = _structural(value, defs)
        elif key == "exclusiveMinimum":
            result["minimum"] = value + 1  # every bounded number in this API is an integer
        elif key == "const":
            result["enum"] = [value]
        else:
            result[key] = value
    additional = schema.get("additionalProperties")
    if isinstance(additional, dict):
        if additional:
            result["additionalProperties"] = _structural(additional, defs)
        else:  # dict[str, Any]: arbitrary JSON kept as written
            result["x-kubernetes-preserve-unknown-fields"] = True
    if result.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if result.get("x-kubernetes-preserve-unknown-fields"):
        result["type"] = "object"
    return result


def model_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of one model, with every field's description."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(schema, schema.get("$defs", {}))


def _root_schema(model: type[BaseModel], spec: type[BaseModel], status: type[BaseModel] | None) -> Schema:
    properties: Schema = {
        "apiVersion": {"type": "string", "description": "API version of this object."},
        "kind": {"type": "string", "description": "Kind of this object."},
        "metadata": {"type": "object"},
        "spec": model_schema(spec),
    }
    if status is not None:
        properties["status"] = model_schema(status)
    root: Schema = {
        "type": "object",
        "description": (model.__doc__ or "").strip(),
        "properties": properties,
        "required": ["spec"],
    }
    rules = cel_rules(model)
    if rules:
        root["x-kubernetes-validations"] = rules
    return root


def _crd(
    *,
    kind: str,
    plural: str,
    short_name: str,
    scope: str,
    schema: Schema,
    columns: list[Schema],
    with_status: bool,
) -> Schema:
    version: Schema = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "additionalPrinterColumns": columns,
    }
    if with_status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "mlworkload"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                # Not "mlworkload": kubectl expands a category before a singular name, so `kubectl get
                # mlworkload NAME` would ask for both kinds. `kubectl get mlworkload-all` lists both.
                "categories": ["mlworkload-all"],
            },
            "scope": scope,
            "versions": [version],
        },
    }


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def build_crds() -> list[Schema]:
    """The two CRDs of the API, MLWorkload first."""
    workload = _crd(
        kind=WORKLOAD_KIND,
        plural=WORKLOAD_PLURAL,
        short_name="mlw",
        scope="Namespaced",
        schema=_root_schema(MLWorkload, MLWorkloadSpec, MLWorkloadStatus),
        columns=[
            {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Reason", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
            {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus.requested"},
            _AGE,
            # `kubectl get -o wide` adds where to reach it and what KubeRay says of its Ray object.
            {"name": "Dashboard", "type": "string", "jsonPath": ".status.dashboardURL", "priority": 1},
            {"name": "Serve", "type": "string", "jsonPath": ".status.serveURL", "priority": 1},
            {"name": "Ray", "type": "string", "jsonPath": ".status.ray.kind", "priority": 1},
            {"name": "Ray State", "type": "string", "jsonPath": ".status.ray.state", "priority": 1},
            {"name": "Workers", "type": "string", "jsonPath": ".status.ray.workers", "priority": 1},
            {"name": "Queue", "type": "string", "jsonPath": ".spec.queue.name", "priority": 1},
        ],
        with_status=True,
    )
    policy = _crd(
        kind=POLICY_KIND,
        plural=POLICY_PLURAL,
        short_name="mlwp",
        scope="Cluster",
        schema=_root_schema(MLWorkloadPolicy, MLWorkloadPolicySpec, MLWorkloadPolicyStatus),
        columns=[
            {"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"},
            {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
            {"name": "Namespaces", "type": "integer", "jsonPath": ".status.namespaceCount"},
            {"name": "Workloads", "type": "integer", "jsonPath": ".status.workloads.total"},
            {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpus.inUse"},
            {"name": "Quota", "type": "integer", "jsonPath": ".spec.quota.maxGPUs"},
            _AGE,
        ],
        with_status=True,
    )
    return [workload, policy]


CRD_FILE_HEADER = "# Generated by `mlworkload crds --output-dir crds` from operator/mlworkload/api; do not edit.\n"


def crd_files() -> dict[str, str]:
    """File name -> content of each CRD in crds/, named `<group>_<plural>.yaml` as kubebuilder does."""
    return {
        f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml": CRD_FILE_HEADER + dump(crd)
        for crd in build_crds()
    }
