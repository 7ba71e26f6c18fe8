"""Property tests of the whole offline path: parse -> admit -> build, on generated documents.

a) Random VALID MLWorkloads (all types, 0-4 worker groups, CPU and GPU groups from the machine
   catalogue, every capacity, autoscaling, storage, identity, isolation, exposure, env, suspend),
   each with a random MLWorkloadPolicy that admits it (or no policy): admitted, every rendered
   object valid against the upstream schemas, ownership labels everywhere, GKE-valid node pool
   names, deterministic output, GPU counts carried into the plan.
b) Random INVALID inputs, made by one mutation of a valid document: always a refusal (Refused
   from parsing, or admission problems), one single line per problem naming a field; never any
   other exception.
   Also: any single random edit of a valid document is either such a refusal or still renders
   schema-valid objects.
c) The CLI on the same documents written to files: exit 0 and the builders' output for valid
   input, exit 1 and one line per problem on stderr for invalid input, never a traceback.

At the end, the minimal inputs of the operator bugs these properties found, as plain test cases.
Deterministic (derandomized, no example database); about 30 s on 2 cores.
"""

import contextlib
import copy
import io
import ipaddress
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mlworkload import cli
from mlworkload.api.load import parse_documents, parse_policy, parse_workload
from mlworkload.api.meta import is_dns1035_label
from mlworkload.api.policy import MLWorkloadPolicy, PolicyGcp
from mlworkload.api.workload import ACCELERATOR_COUNTS, MAX_NAME_LENGTH
from mlworkload.builders import build_gcp_plan, build_objects
from mlworkload.constants import GPU_RESOURCE, LABEL_MANAGED_BY, LABEL_WORKLOAD, MANAGED_BY
from mlworkload.gcp.machines import KNOWN_ACCELERATORS, MACHINES, UnknownMachine, machines_for
from mlworkload.policy import Admission, PlatformDefaults, admit
from mlworkload.policy.resolve import default_image
from mlworkload.problems import Refused
from mlworkload.yamlio import dump_all
from tests.support.schemas import validate_object

API_VERSION = "mlworkload.io/v1alpha1"
GSA = "ray-nlp@my-proj.iam.gserviceaccount.com"
OTHER_GSA = "ray-vision@other-proj.iam.gserviceaccount.com"
# The operator's own GKE cluster setting (Helm values / MLW_GCP_*), used when no policy names one.
OPERATOR_GCP = PolicyGcp(project="op-project", location="europe-west4", cluster="op-cluster")
OPERATOR_DEFAULTS = PlatformDefaults(gcp=OPERATOR_GCP, api_server_cidrs=("172.16.0.2/32",))
OPERATOR_ENV = {"MLW_GCP_PROJECT": "op-project", "MLW_GCP_LOCATION": "europe-west4", "MLW_GKE_CLUSTER": "op-cluster",
                "MLW_API_SERVER_CIDRS": "172.16.0.2/32"}  # fmt: skip

GKE_POOL_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")
# A problem line names the field it is about: it starts with (or, behind the CLI's document prefix,
# contains) a path rooted at one of the document's top-level fields, or names an unknown one.
FIELD_PATH = re.compile(
    r"(?:^|[ (:])(?:(?:spec|metadata|apiVersion|kind)(?:[.\[:]| |$)"
    r"|(?:[A-Za-z][\w-]*|'[^']*'|\"[^\"]*\"): unknown field)"
)

# Deterministic: derandomized, no example database. One shrunk failure per property is enough (the
# minimal cases at the end pin down each bug found so far) and keeps a failing run short.
COMMON = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "report_multiple_bugs": False,
    "suppress_health_check": [HealthCheck.too_slow],
}
# The broad properties (single edits, the CLI) report their first failure unshrunk: shrinking them
# re-validates dozens of objects per step and would triple a failing run; the minimal cases at the end
# of the file are the reduced forms.
NO_SHRINK = {**COMMON, "phases": (Phase.explicit, Phase.generate)}

# (accelerator, count) -> machine types that carry it, default first; from the operator's catalogue.
ACCELERATOR_SHAPES: dict[tuple[str, int], tuple[str, ...]] = {}
for _accelerator in KNOWN_ACCELERATORS:
    for _count in ACCELERATOR_COUNTS:
        with contextlib.suppress(UnknownMachine):
            ACCELERATOR_SHAPES[(_accelerator, _count)] = machines_for(_accelerator, _count)
UNSUPPORTED_SHAPES = [
    (accelerator, count)
    for accelerator in KNOWN_ACCELERATORS
    for count in ACCELERATOR_COUNTS
    if (accelerator, count) not in ACCELERATOR_SHAPES
]
# Accelerators the catalogue does not know, usable with an explicit machineType.
CUSTOM_ACCELERATORS = ("nvidia-tesla-v100", "nvidia-tesla-p4", "nvidia-tesla-p100")  # GKE types not in the catalogue
INT32_EDGES = (2**31 - 1,)  # KubeRay's int32 time fields: the largest value still valid
CPU_MACHINES = ("n2-standard-8", "e2-standard-4", "c3-highmem-22", "n2d-standard-32", "g2-standard-4", "n1-standard-16")


# ------------------------------------------------------------------------------------------ basic pieces

dns1123_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
short_dns1123_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
label_name = st.from_regex(r"[a-zA-Z0-9]([-_.a-zA-Z0-9]{0,20}[a-zA-Z0-9])?", fullmatch=True)
label_key = st.one_of(
    label_name,
    st.builds(lambda prefix, name: f"{prefix}.example.com/{name}", short_dns1123_label, label_name),
)
label_value = st.one_of(st.just(""), label_name)
nonempty_label_value = label_name
host_name = st.lists(short_dns1123_label, min_size=1, max_size=4).map(".".join)


def workload_name(type_: str) -> st.SearchStrategy[str]:
    limit = MAX_NAME_LENGTH[type_]
    return st.from_regex(rf"[a-z]([-a-z0-9]{{0,{limit - 2}}}[a-z0-9])?", fullmatch=True)


@st.composite
def cidrs(draw: st.DrawFn, max_prefix: int = 32) -> str:
    address = draw(st.ip_addresses(v=4))
    prefix = draw(st.integers(8, max_prefix))
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@st.composite
def ip_blocks(draw: st.DrawFn) -> dict[str, Any]:
    """An IPBlock, sometimes with an `except` range inside its CIDR."""
    network = ipaddress.ip_network(draw(cidrs(max_prefix=31)))
    block: dict[str, Any] = {"cidr": str(network)}
    if draw(st.booleans()):
        inner_prefix = draw(st.integers(network.prefixlen + 1, 32))
        block["except"] = [str(next(network.subnets(new_prefix=inner_prefix)))]
    return block


@st.composite
def label_selectors(draw: st.DrawFn) -> dict[str, Any]:
    selector: dict[str, Any] = {}
    match_labels = draw(st.dictionaries(label_key, label_value, max_size=2))
    if match_labels:
        selector["matchLabels"] = match_labels
    expressions = []
    for _ in range(draw(st.integers(0, 2))):
        operator = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
        expression: dict[str, Any] = {"key": draw(label_key), "operator": operator}
        if operator in {"In", "NotIn"}:
            expression["values"] = draw(st.lists(label_value, min_size=1, max_size=3, unique=True))
        expressions.append(expression)
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


@st.composite
def network_peers(draw: st.DrawFn) -> dict[str, Any]:
    match draw(st.sampled_from(["pod", "namespace", "both", "ip"])):
        case "pod":
            return {"podSelector": draw(label_selectors())}
        case "namespace":
            return {"namespaceSelector": draw(label_selectors())}
        case "both":
            return {"podSelector": draw(label_selectors()), "namespaceSelector": draw(label_selectors())}
        case _:
            return {"ipBlock": draw(ip_blocks())}


@st.composite
def cpu_quantity(draw: st.DrawFn, max_millis: int = 64_000) -> str | int:
    """A CPU quantity of at most `max_millis` millicores, in one of the forms users write."""
    millis = draw(st.integers(1, max_millis))
    forms: list[str | int] = [f"{millis}m", str(Decimal(millis) / 1000)]
    if millis % 1000 == 0:
        forms += [str(millis // 1000), millis // 1000]
    return draw(st.sampled_from(forms))


@st.composite
def memory_quantity(draw: st.DrawFn, max_mib: int = 512 * 1024) -> str | int:
    """A memory quantity of at most `max_mib` MiB, in one of the forms users write."""
    mib = draw(st.integers(64, max_mib))
    forms: list[str | int] = [f"{mib}Mi", f"{mib * 1024}Ki", str(mib * 2**20), mib * 2**20, f"{mib * 1048576}"]
    if mib % 1024 == 0:
        forms.append(f"{mib // 1024}Gi")
    if mib % 1000 == 0:
        forms.append(f"{mib * 1048576 // 1000}k")
    return draw(st.sampled_from(forms))


def fitting_resources(machine: str | None) -> st.SearchStrategy[dict[str, Any]]:
    """Requests that fit a node of the machine type (anything, when it is not catalogued)."""
    spec = MACHINES.get(machine or "")
    if spec is None:
        return st.fixed_dictionaries({"cpu": cpu_quantity(), "memory": memory_quantity()})
    max_millis = int(spec.allocatable_cpu * 1000)
    max_mib = int(spec.allocatable_memory / 2**20)
    return st.fixed_dictionaries({"cpu": cpu_quantity(max_millis), "memory": memory_quantity(max_mib)})


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**31), 2**31), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)

ENV_NAME = st.one_of(
    st.from_regex(r"[-._a-zA-Z][-._a-zA-Z0-9]{0,20}", fullmatch=True),
    st.sampled_from(["HF_HOME", "RAY_worker_register_timeout_seconds", "PYTHONPATH", "HF_TOKEN"]),
)


@st.composite
def env_vars(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(ENV_NAME)
    match draw(st.sampled_from(["value", "secret", "configMap", "none"])):
        case "value":
            return {"name": name, "value": draw(st.text(max_size=30))}
        case "none":
            return {"name": name}
        case source:
            ref: dict[str, Any] = {"name": draw(dns1123_label), "key": draw(label_name)}
            if draw(st.booleans()):
                ref["optional"] = draw(st.booleans())
            return {"name": name, "valueFrom": {f"{source}KeyRef": ref}}


# --------------------------------------------------------------------------------------- valid scenarios


@dataclass
class Scenario:
    """A valid MLWorkload (wire form) and the policy that governs it (None: built-in defaults)."""

    workload: dict[str, Any]
    policy: dict[str, Any] | None

    @property
    def type(self) -> str:
        return str(self.workload["spec"]["type"])


@dataclass
class Rules:
    """What the drawn policy allows; the workload is drawn within it."""

    present: bool  # False: a policy with an empty spec (no policy at all is refused: default deny)
    spot: str = "Preferred"
    allow_external: bool = False
    require_iap: bool | None = None  # None: the policy does not say
    internal_certificates: bool = False  # expose.preSharedCertificates: Internal endpoints can be HTTPS
    gsa: str | None = None
    project_number: str | None = None
    bucket_patterns: list[str] = field(default_factory=list)


@st.composite
def rules(draw: st.DrawFn) -> Rules:
    if not draw(st.booleans()) and draw(st.booleans()):  # a quarter of scenarios: an empty policy's defaults
        return Rules(present=False)
    gsa = draw(st.sampled_from([GSA, GSA, None]))
    project_number = draw(st.sampled_from([None, "123456789012"]))
    return Rules(
        present=True,
        spot=draw(st.sampled_from(["Required", "Preferred", "Forbidden"])),
        allow_external=draw(st.booleans()),
        require_iap=draw(st.sampled_from([None, True, False])),
        internal_certificates=draw(st.booleans()),
        gsa=gsa,
        project_number=project_number,
        bucket_patterns=draw(st.sampled_from([["gs://*"], ["gs://team-nlp-*", "gs://shared-?"], []])),
    )


def capacities(spot: str) -> st.SearchStrategy[str | None]:
    allowed = {"Required": ["Spot"], "Forbidden": ["OnDemand"], "Preferred": ["Spot", "OnDemand", "SpotWithFallback"]}
    return st.sampled_from([None, *allowed[spot]])


@st.composite
def worker_groups(draw: st.DrawFn, name: str, spot: str) -> dict[str, Any]:
    group: dict[str, Any] = {"name": name}
    kind = draw(st.sampled_from(["cpu", "cpu-machine", "gpu", "gpu", "gpu-machine", "gpu-custom"]))
    machine: str | None = None
    if kind == "cpu-machine":
        machine = draw(st.sampled_from(CPU_MACHINES))
        group["machineType"] = machine
    elif kind in {"gpu", "gpu-machine"}:
        (accelerator, count) = draw(st.sampled_from(sorted(ACCELERATOR_SHAPES)))
        group["accelerator"] = {"type": accelerator, "count": count}
        machine = ACCELERATOR_SHAPES[(accelerator, count)][0]
        if kind == "gpu-machine":
            machine = draw(st.sampled_from(ACCELERATOR_SHAPES[(accelerator, count)]))
            group["machineType"] = machine
    elif kind == "gpu-custom":
        group["accelerator"] = {"type": draw(st.sampled_from(CUSTOM_ACCELERATORS)), "count": 1}
        machine = "n1-standard-8"
        group["machineType"] = machine
    replicas = draw(st.integers(0, 1000) | st.integers(0, 4))
    if draw(st.booleans()):
        group["replicas"] = replicas
    elif replicas != 1:
        replicas = 1  # the default
    if draw(st.booleans()):
        group["minReplicas"] = draw(st.integers(0, replicas))
    if draw(st.booleans()):
        group["maxReplicas"] = draw(st.integers(replicas, 1000))
    if draw(st.booleans()) or machine in MACHINES:
        group["resources"] = draw(fitting_resources(machine))
    capacity = draw(capacities(spot))
    if capacity is not None:
        group["capacity"] = capacity
    return group


# A name a Google-managed certificate can cover: fully qualified, at most 63 characters.
managed_domain = (
    st.lists(short_dns1123_label, min_size=1, max_size=3)
    .map(lambda labels: ".".join([*labels, "example.com"]))
    .filter(lambda host: len(host) <= 63)
)


@st.composite
def endpoints(draw: st.DrawFn, rules: Rules, which: str) -> dict[str, Any] | None:
    """An endpoint the rules admit: IAP only over HTTPS, the dashboard never External without IAP."""
    if draw(st.integers(0, 3)) == 0:
        return None
    endpoint: dict[str, Any] = {}
    if draw(st.integers(0, 3)) > 0:
        endpoint["enabled"] = draw(st.booleans())
    visibilities = ["Internal", "External"] if rules.allow_external else ["Internal"]
    visibility = draw(st.sampled_from(visibilities))
    if visibility == "External" or draw(st.booleans()):
        endpoint["visibility"] = visibility
    iap_by_default = which == "dashboard" or bool(rules.require_iap)
    may_skip_iap = not rules.require_iap and (
        which == "serve" or (visibility == "Internal" and rules.require_iap is False)
    )
    https = visibility == "External" or rules.internal_certificates
    iap_choices: list[bool | None] = [None, True] if https else []
    if may_skip_iap:
        iap_choices += [False] + ([None] if not iap_by_default else [])
    if not iap_choices:
        return None if endpoint.get("enabled", False) else endpoint  # a disabled endpoint is never judged
    iap = draw(st.sampled_from(iap_choices))
    if iap is not None:
        endpoint["iap"] = iap
    effective_iap = iap_by_default if iap is None else iap
    if visibility == "External" and (effective_iap or draw(st.booleans())):
        endpoint["host"] = draw(managed_domain)  # its managed certificate needs a fully qualified name
    elif visibility == "Internal" and draw(st.booleans()):
        endpoint["host"] = draw(host_name)
    return endpoint


def _gpus_at_max_scale(groups: list[dict[str, Any]]) -> int:
    total = 0
    for group in groups:
        if "accelerator" in group:
            replicas = group.get("replicas", 1)
            total += group["accelerator"]["count"] * group.get("maxReplicas", replicas)
    return total


@st.composite
def metadatas(draw: st.DrawFn, type_: str, cost_labels: dict[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": draw(workload_name(type_))}
    if draw(st.booleans()):
        metadata["namespace"] = draw(dns1123_label)
    labels = {**draw(st.dictionaries(label_key, label_value, max_size=3)), **cost_labels}
    if labels:
        metadata["labels"] = labels
    return metadata


@st.composite
def ray_specs(draw: st.DrawFn) -> dict[str, Any]:
    version = ".".join(str(draw(st.integers(0, 30))) for _ in range(3))
    ray: dict[str, Any] = {"version": version}
    if draw(st.booleans()):
        repository = draw(
            st.sampled_from(["rayproject/ray", "us-docker.pkg.dev/my-proj/ray/vllm", "localhost:5000/ray"])
        )
        variant = draw(st.sampled_from(["", "-py311", "-py311-gpu", "-py310-cu121", "@sha256:" + "a" * 64]))
        ray["image"] = f"{repository}:{version}{variant}"
    env = draw(st.lists(env_vars(), max_size=4, unique_by=lambda variable: variable["name"]))
    if env:
        ray["env"] = env
    return ray


@st.composite
def heads(draw: st.DrawFn) -> dict[str, Any]:
    head: dict[str, Any] = {}
    if draw(st.booleans()):
        head["resources"] = {"cpu": draw(cpu_quantity()), "memory": draw(memory_quantity())}
    if draw(st.booleans()):
        head["schedulable"] = draw(st.booleans())
    return head


@st.composite
def autoscalings(draw: st.DrawFn) -> dict[str, Any]:
    autoscaling: dict[str, Any] = {"enabled": draw(st.booleans())}
    if draw(st.booleans()):
        autoscaling["idleTimeoutSeconds"] = draw(st.integers(0, 86400))
    return autoscaling


@st.composite
def job_specs(draw: st.DrawFn) -> dict[str, Any]:
    job: dict[str, Any] = {"entrypoint": draw(st.text(min_size=1, max_size=80))}
    if draw(st.booleans()):
        job["runtimeEnv"] = draw(st.dictionaries(st.sampled_from(["pip", "working_dir", "env_vars"]), json_values))
    if draw(st.booleans()):
        # The API bounds it below only (gt=0): include the int32 boundary and beyond.
        job["activeDeadlineSeconds"] = draw(st.integers(1, 86400 * 7) | st.sampled_from(INT32_EDGES))
    if draw(st.booleans()):
        job["backoffLimit"] = draw(st.integers(0, 100))
    if draw(st.booleans()):
        # The API bounds it below only (ge=0): include the int32 boundary and beyond.
        job["ttlSecondsAfterFinished"] = draw(st.integers(0, 86400) | st.sampled_from(INT32_EDGES))
    return job


@st.composite
def serve_specs(draw: st.DrawFn) -> dict[str, Any]:
    applications = []
    for index in range(draw(st.integers(1, 3))):
        application: dict[str, Any] = {"name": f"app{index}", "import_path": f"serve_app{index}:app"}
        if draw(st.booleans()):
            application["route_prefix"] = f"/{index}"
        if draw(st.booleans()):
            application["args"] = draw(st.dictionaries(st.text(min_size=1, max_size=8), json_values, max_size=2))
        applications.append(application)
    return {"config": {"applications": applications}}


@st.composite
def storages(draw: st.DrawFn, allowed: Rules) -> dict[str, Any]:
    """A bucket the policy's patterns allow (the caller checks that an identity applies)."""
    candidates = (
        ["gs://team-nlp-ckpt", "gs://any-bucket.example.com", "gs://abc"]
        if allowed.bucket_patterns == ["gs://*"]
        else ["gs://team-nlp-ckpt", "gs://team-nlp-a.b_c-d", "gs://shared-1"]
    )
    bucket = draw(st.sampled_from([b for b in candidates if any(fnmatchcase(b, p) for p in allowed.bucket_patterns)]))
    storage: dict[str, Any] = {"bucket": bucket}
    if draw(st.booleans()):
        storage["access"] = draw(st.sampled_from(["ReadOnly", "ReadWrite"]))
    return storage


@st.composite
def networks(draw: st.DrawFn) -> dict[str, Any]:
    network: dict[str, Any] = {}
    if draw(st.booleans()):
        network["isolation"] = draw(st.sampled_from(["Strict", "Namespace", "None"]))
    peers = draw(st.lists(network_peers(), max_size=3))
    if peers:
        network["allowFrom"] = peers
    return network


@st.composite
def scenarios(draw: st.DrawFn, types: tuple[str, ...] = ("Cluster", "Job", "Service")) -> Scenario:
    """A valid MLWorkload together with a policy that admits it."""
    allowed = draw(rules())
    type_ = draw(st.sampled_from(types))
    cost_labels = draw(st.dictionaries(label_key, nonempty_label_value, max_size=2)) if allowed.present else {}
    spec: dict[str, Any] = {"type": type_, "ray": draw(ray_specs())}
    if draw(st.booleans()):
        spec["head"] = draw(heads())
    group_names = draw(st.lists(dns1123_label, max_size=4, unique=True))
    groups = [draw(worker_groups(group_name, allowed.spot)) for group_name in group_names]
    if groups or draw(st.booleans()):
        spec["workerGroups"] = groups
    if draw(st.booleans()):
        spec["autoscaling"] = draw(autoscalings())
    if type_ == "Job":
        spec["job"] = draw(job_specs())
    if type_ == "Service":
        spec["serve"] = draw(serve_specs())
    if type_ != "Service" and draw(st.booleans()):
        spec["suspend"] = draw(st.booleans())
    has_identity = allowed.gsa is not None or allowed.project_number is not None
    if allowed.bucket_patterns and has_identity and draw(st.booleans()):
        spec["storage"] = draw(storages(allowed))
    if draw(st.booleans()):
        spec["identity"] = {"gcpServiceAccount": allowed.gsa} if allowed.gsa and draw(st.booleans()) else {}
    if draw(st.booleans()):
        spec["network"] = draw(networks())
    expose = {}
    for which in ("dashboard", "serve"):
        endpoint = draw(endpoints(allowed, which))
        if endpoint is not None:
            expose[which] = endpoint
    if expose or draw(st.integers(0, 4)) == 0:
        spec["expose"] = expose
    metadata = draw(metadatas(type_, cost_labels))
    workload = {"apiVersion": API_VERSION, "kind": "MLWorkload", "metadata": metadata, "spec": spec}
    policy = draw(policies(allowed, workload, cost_labels)) if allowed.present else copy.deepcopy(EMPTY_POLICY)
    return Scenario(workload, policy)


@st.composite
def policy_gcps(draw: st.DrawFn, allowed: Rules) -> dict[str, Any] | None:
    if not allowed.project_number and draw(st.integers(0, 4)) == 0:  # projectNumber only comes with gcp
        return None
    gcp: dict[str, Any] = {"project": "my-proj", "location": "us-central1", "cluster": "ml-cluster"}
    if draw(st.booleans()):
        gcp["nodeLocations"] = draw(st.lists(st.sampled_from(["us-central1-a", "us-central1-b"]), unique=True))
    if allowed.project_number:
        gcp["projectNumber"] = allowed.project_number
    return gcp


@st.composite
def policy_gpu_rules(draw: st.DrawFn, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """accelerators and quota sections that admit the groups."""
    rules: dict[str, Any] = {}
    gpus = _gpus_at_max_scale(groups)
    accelerators: dict[str, Any] = {}
    if draw(st.booleans()):
        used = {group["accelerator"]["type"] for group in groups if "accelerator" in group}
        extra = draw(st.lists(st.sampled_from(KNOWN_ACCELERATORS), max_size=2))
        accelerators["allowed"] = sorted(used | set(extra))
    if draw(st.booleans()):
        accelerators["maxPerWorkload"] = gpus + draw(st.integers(0, 16))
    if accelerators:
        rules["accelerators"] = accelerators
    if draw(st.booleans()):
        rules["quota"] = {"maxGPUs": gpus + draw(st.integers(0, 64))}
    if draw(st.booleans()):
        rules["nodePools"] = {
            "maxNodesPerPool": draw(st.integers(1, 1000)),
            "locationPolicy": draw(st.sampled_from(["ANY", "BALANCED"])),
        }
    return rules


@st.composite
def policy_ray_rules(draw: st.DrawFn, spec: dict[str, Any]) -> dict[str, Any]:
    ray_rules: dict[str, Any] = {}
    version = spec["ray"]["version"]
    if draw(st.booleans()):
        major, minor, _ = version.split(".")
        ray_rules["allowedVersions"] = [draw(st.sampled_from([version, f"{major}.{minor}.*", "*"])), "0.0.*"]
    if draw(st.booleans()):
        has_gpu = any("accelerator" in group for group in spec.get("workerGroups", []))
        image = spec["ray"].get("image") or default_image(version, has_gpu)
        ray_rules["imageRepositories"] = [image[: draw(st.integers(1, len(image)))], "gcr.io/other/"]
    return ray_rules


@st.composite
def policy_networks(draw: st.DrawFn) -> dict[str, Any]:
    network: dict[str, Any] = {}
    if draw(st.booleans()):
        network["defaultIsolation"] = draw(st.sampled_from(["Strict", "Namespace", "None"]))
    if draw(st.booleans()):
        network["allowedEgress"] = draw(st.lists(network_peers(), max_size=2))
    if draw(st.booleans()):
        network["loadBalancerSourceRanges"] = draw(st.lists(cidrs(), min_size=1, max_size=3))
    return network


@st.composite
def policy_lifecycles(draw: st.DrawFn, spec: dict[str, Any]) -> dict[str, Any]:
    lifecycle: dict[str, Any] = {}
    if draw(st.booleans()):
        lifecycle["maxClusterIdleSeconds"] = draw(st.integers(1, 86400))
    if draw(st.booleans()):
        # The default of job.activeDeadlineSeconds; bounded below only, like the field itself.
        deadline = (spec.get("job") or {}).get("activeDeadlineSeconds", 1)
        lifecycle["maxJobRuntimeSeconds"] = max(
            deadline, draw(st.integers(1, 86400 * 7) | st.sampled_from(INT32_EDGES))
        )
    return lifecycle


@st.composite
def policies(draw: st.DrawFn, allowed: Rules, workload: dict[str, Any], cost_labels: dict[str, str]) -> dict[str, Any]:
    """A policy with the drawn rules, permissive enough for the drawn workload."""
    spec = workload["spec"]
    policy_spec: dict[str, Any] = {"priority": draw(st.integers(-100, 100))}
    if draw(st.booleans()):
        policy_spec["namespaceSelector"] = draw(label_selectors())
    gcp = draw(policy_gcps(allowed))
    if gcp is not None:
        policy_spec["gcp"] = gcp
    identity: dict[str, Any] = {"allowedBuckets": allowed.bucket_patterns}
    if allowed.gsa:
        identity["gcpServiceAccount"] = allowed.gsa
    policy_spec["identity"] = identity
    policy_spec.update(draw(policy_gpu_rules(spec.get("workerGroups", []))))
    policy_spec["capacity"] = {"spot": allowed.spot}
    sections = {
        "ray": draw(policy_ray_rules(spec)),
        "network": draw(policy_networks()),
        "expose": {
            "allowExternal": allowed.allow_external,
            **({} if allowed.require_iap is None else {"requireIAP": allowed.require_iap}),
            **({"preSharedCertificates": ["internal-cert"]} if allowed.internal_certificates else {}),
        },
        "labels": {"required": sorted(cost_labels)} if cost_labels else {},
        "lifecycle": draw(policy_lifecycles(spec)),
    }
    policy_spec.update({key: value for key, value in sections.items() if value})
    name = draw(st.sampled_from(["team-nlp", "permissive", "p"]))
    return {"apiVersion": API_VERSION, "kind": "MLWorkloadPolicy", "metadata": {"name": name}, "spec": policy_spec}


# --------------------------------------------------------------------------------------- shared helpers


def admission(workload_doc: dict[str, Any], policy_doc: dict[str, Any] | None) -> Admission:
    workload = parse_workload(copy.deepcopy(workload_doc))
    policies: list[MLWorkloadPolicy] = [] if policy_doc is None else [parse_policy(copy.deepcopy(policy_doc))]
    return admit(workload, policies, None, OPERATOR_DEFAULTS)


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pod template inside a Ray object."""
    spec = obj.get("spec", {})
    cluster = {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"), "RayService": spec.get("rayClusterConfig")}
    cluster_spec = cluster.get(obj["kind"]) or {}
    templates = []
    if cluster_spec:
        templates.append(cluster_spec["headGroupSpec"]["template"])
        templates += [group["template"] for group in cluster_spec.get("workerGroupSpecs", [])]
    if obj["kind"] == "RayJob":
        templates.append(spec["submitterPodTemplate"])
    return templates


def refusal_lines(workload_doc: Any, policy_doc: Any) -> list[str]:
    """Every problem of the input, one line each as Refused prints it; empty when it is admitted.

    Raises whatever the operator raises other than Refused (which the callers treat as a bug).
    """
    problems: list[str] = []
    workload = policy = None
    try:
        workload = parse_workload(copy.deepcopy(workload_doc))
    except Refused as refused:
        problems += refused.lines()
    if policy_doc is not None:
        try:
            policy = parse_policy(copy.deepcopy(policy_doc))
        except Refused as refused:
            problems += refused.lines()
    if problems or workload is None:
        return problems
    verdict = admit(workload, [] if policy is None else [policy], None, OPERATOR_DEFAULTS)
    return [str(problem) for problem in verdict.problems]


def assert_problem_lines(lines: list[str]) -> None:
    assert lines, "a refusal must carry at least one problem"
    for line in lines:
        assert line.strip(), f"empty problem line in {lines!r}"
        assert "\n" not in line, f"multi-line problem: {line!r}"
        assert "\r" not in line, f"multi-line problem: {line!r}"
        assert FIELD_PATH.search(line), f"problem does not name a spec/metadata field: {line!r}"


# ---------------------------------------------------------------------------------- a) valid documents


@settings(max_examples=200, **COMMON)
@given(scenario=scenarios())
def test_valid_workloads_render_schema_valid_owned_deterministic_objects(scenario: Scenario) -> None:
    verdict = admission(scenario.workload, scenario.policy)
    assert verdict.allowed, [str(problem) for problem in verdict.problems]
    resolved = verdict.resolved
    workload = resolved.workload
    name = workload.name

    # The wire form survives a round trip, and the multi-document loader agrees with the single parsers.
    assert parse_workload(workload.to_dict()) == workload
    documents = [scenario.workload] + ([scenario.policy] if scenario.policy else [])
    parsed = parse_documents(copy.deepcopy(documents), "generated")
    assert parsed.workloads == [workload]

    objects = build_objects(resolved)
    plan = build_gcp_plan(resolved)

    for obj in objects:
        errors = validate_object(obj)
        assert errors == [], f"{obj['kind']} {obj['metadata'].get('name')}: {errors}"

    cost_labels = {key: workload.metadata.labels[key] for key in resolved.policy.labels.required}
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get(LABEL_MANAGED_BY) == MANAGED_BY, obj["kind"]
        if obj["kind"] == "ComputeClass":  # cluster-scoped and shared by shape: no workload label
            assert "namespace" not in obj["metadata"]
            assert LABEL_WORKLOAD not in labels
        else:
            assert labels.get(LABEL_WORKLOAD) == name, obj["kind"]
            assert obj["metadata"]["namespace"] == workload.namespace
            assert cost_labels.items() <= labels.items(), obj["kind"]
    ray_objects = [obj for obj in objects if obj["apiVersion"] == "ray.io/v1"]
    assert [obj["kind"] for obj in ray_objects] == [
        {"Cluster": "RayCluster", "Job": "RayJob", "Service": "RayService"}[scenario.type]
    ]
    templates = pod_templates(ray_objects[0])
    assert len(templates) == 1 + len(workload.spec.worker_groups) + (scenario.type == "Job")
    for template in templates:
        labels = template["metadata"]["labels"]
        assert labels.get(LABEL_MANAGED_BY) == MANAGED_BY
        assert labels.get(LABEL_WORKLOAD) == name
        assert cost_labels.items() <= labels.items()

    # Node pools: GKE-valid names, unique, every GPU shape of the spec and nothing else.
    pool_names = [pool.name for pool in plan.node_pools]
    assert len(set(pool_names)) == len(pool_names)
    for pool_name in pool_names:
        assert GKE_POOL_NAME.match(pool_name), pool_name
    for obj in objects:
        if obj["kind"] == "ComputeClass":
            assert GKE_POOL_NAME.match(obj["metadata"]["name"])
            for priority in obj["spec"]["priorities"]:
                assert set(priority["nodepools"]) <= set(pool_names)
    spec_gpus = {(g.accelerator.type, g.accelerator.count) for g in workload.spec.worker_groups if g.accelerator}
    plan_gpus = {(p.accelerator.type, p.accelerator.count) for p in plan.node_pools if p.accelerator}
    assert plan_gpus == spec_gpus
    for pool in plan.node_pools:
        assert pool.min_nodes == 0
        assert pool.max_nodes == resolved.policy.node_pools.max_nodes_per_pool
    cluster_spec = templates[1 : 1 + len(workload.spec.worker_groups)]
    for group, template in zip(workload.spec.worker_groups, cluster_spec, strict=True):
        limits = template["spec"]["containers"][0]["resources"]["limits"]
        expected = str(group.accelerator.count) if group.accelerator else None
        assert limits.get(GPU_RESOURCE) == expected, group.name

    # Determinism: a fresh parse renders exactly the same objects and plan.
    again = admission(scenario.workload, scenario.policy)
    assert build_objects(again.resolved) == objects
    assert build_gcp_plan(again.resolved).to_dict() == plan.to_dict()
    assert json.dumps(objects, sort_keys=True) == json.dumps(build_objects(again.resolved), sort_keys=True)


# --------------------------------------------------------------------------------- b) invalid documents

Mutation = Callable[[st.DrawFn, Scenario], tuple[Any, Any]]
MUTATIONS: dict[str, Mutation] = {}


def mutation(function: Mutation) -> Mutation:
    MUTATIONS[function.__name__] = function
    return function


def _copy(scenario: Scenario) -> tuple[dict[str, Any], dict[str, Any] | None]:
    return copy.deepcopy(scenario.workload), copy.deepcopy(scenario.policy)


def _group(draw: st.DrawFn, workload: dict[str, Any], gpu: bool = False) -> dict[str, Any]:
    """A worker group of the workload (one is added when there is none, or no GPU group when wanted)."""
    groups = workload["spec"].setdefault("workerGroups", [])
    candidates = [g for g in groups if "accelerator" in g] if gpu else groups
    if not candidates:
        new: dict[str, Any] = {"name": f"added-{len(groups)}", "replicas": 1}
        if gpu:
            new["accelerator"] = {"type": "nvidia-l4", "count": 1}
        groups.append(new)
        candidates = [new]
    return draw(st.sampled_from(candidates))


def _permissive_policy(policy: dict[str, Any] | None) -> dict[str, Any]:
    if policy is not None:
        return policy
    return {
        "apiVersion": API_VERSION,
        "kind": "MLWorkloadPolicy",
        "metadata": {"name": "strict"},
        "spec": {"gcp": {"project": "my-proj", "location": "us-central1", "cluster": "ml-cluster"}},
    }


@mutation
def unknown_field(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    workload, policy = _copy(scenario)
    spec = workload["spec"]
    places: list[dict[str, Any]] = [workload, spec, spec["ray"]]
    for key in ("head", "autoscaling", "job", "storage", "identity", "network", "expose"):
        if isinstance(spec.get(key), dict):
            places.append(spec[key])
    for group in spec.get("workerGroups", []):
        places += [group] + [group[k] for k in ("resources", "accelerator") if k in group]
    places += spec["ray"].get("env", [])
    places += list(spec.get("expose", {}).values())
    places += spec.get("network", {}).get("allowFrom", [])
    if policy is not None:
        places += [policy, policy["spec"]] + [v for v in policy["spec"].values() if isinstance(v, dict)]
    place = draw(st.sampled_from(places))
    key = draw(
        st.sampled_from(["bogus", "replica", "Replicas", "image_pull_policy", "x-extra", "enable", "gpu"])
        | st.text(max_size=12).map(lambda text: f"x{text}")  # any characters, never a real field
    )
    place[key] = draw(json_scalars)
    return workload, policy


WRONG_TYPES: list[tuple[str, Any]] = [
    ("spec.type", 5),
    ("spec.suspend", []),
    ("spec.ray", "2.41.0"),
    ("spec.ray.version", 2.41),
    ("spec.ray.env", "HF_HOME=/tmp"),
    ("spec.head", ["cpu"]),
    ("spec.head.resources.cpu", True),
    ("spec.head.resources.memory", ["16Gi"]),
    ("spec.head.schedulable", {"yes": True}),
    ("spec.workerGroups", {"name": "gpu"}),
    ("spec.autoscaling.enabled", "maybe"),
    ("spec.autoscaling.idleTimeoutSeconds", "a minute"),
    ("spec.storage", "gs://team-nlp-ckpt"),
    ("spec.identity.gcpServiceAccount", 12),
    ("spec.network.allowFrom", {"podSelector": {}}),
    ("spec.expose.dashboard.enabled", "maybe"),
    ("spec.expose.serve", True),
    ("metadata.labels", ["cost-center"]),
    ("metadata.name", 42),
    ("spec", "Cluster"),
]


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = document
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = value


SNAKE_CASE_FIELDS = [
    ("spec", "worker_groups", []),
    ("spec", "worker_groups", [{"name": "snake"}]),
    ("group", "min_replicas", 0),
    ("group", "machine_type", "n2-standard-8"),
    ("autoscaling", "idle_timeout_seconds", 30),
    ("ray", "env_vars", []),
]


@mutation
def snake_case_field(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    """A field spelled in snake_case: not a field of the camelCase wire form, so unknown."""
    workload, policy = _copy(scenario)
    where, key, value = draw(st.sampled_from(SNAKE_CASE_FIELDS))
    spec = workload["spec"]
    place = {"spec": spec, "ray": spec["ray"]}.get(where)
    if where == "group":
        place = _group(draw, workload)
    elif where == "autoscaling":
        place = spec.setdefault("autoscaling", {})
    assert place is not None
    place[key] = value
    return workload, policy


@mutation
def wrong_type(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    workload, policy = _copy(scenario)
    choice = draw(st.sampled_from(["table", "group", "job", "serve"]))
    if choice == "group":
        group = _group(draw, workload)
        key, value = draw(
            st.sampled_from(
                [
                    ("replicas", "many"),
                    ("name", 7),
                    ("maxReplicas", [3]),
                    ("accelerator", "nvidia-l4"),
                    ("resources", 4),
                ]
            )
        )
        group[key] = value
    elif choice == "job" and scenario.type == "Job":
        key, value = draw(st.sampled_from([("entrypoint", ["python"]), ("runtimeEnv", "pip"), ("backoffLimit", "x")]))
        workload["spec"]["job"][key] = value
    elif choice == "serve" and scenario.type == "Service":
        workload["spec"]["serve"]["config"] = draw(st.sampled_from(["applications", [], 3]))
    else:
        path, value = draw(st.sampled_from(WRONG_TYPES))
        _set(workload, path, value)
    return workload, policy


@mutation
def bad_enum(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    workload, policy = _copy(scenario)
    bad = draw(st.sampled_from(["", "cluster", "SPOT", "Spot ", "Other", "external", "none"]))
    path = draw(st.sampled_from(["type", "capacity", "isolation", "visibility", "access", "policy-spot"]))
    if path == "type":
        workload["spec"]["type"] = bad
    elif path == "capacity":
        _group(draw, workload)["capacity"] = bad
    elif path == "isolation":
        _set(workload, "spec.network.isolation", bad)
    elif path == "visibility":
        _set(workload, "spec.expose.dashboard.visibility", bad)
    elif path == "access":
        _set(workload, "spec.storage", {"bucket": "gs://team-nlp-ckpt", "access": bad})
    else:
        policy = _permissive_policy(policy)
        policy["spec"]["capacity"] = {"spot": bad}
    return workload, policy


@mutation
def bad_replicas(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    workload, policy = _copy(scenario)
    group = _group(draw, workload)
    replicas = group.get("replicas", 1)
    match draw(st.sampled_from(["negative", "too-many", "min-above", "above-max"])):
        case "negative":
            group[draw(st.sampled_from(["replicas", "minReplicas", "maxReplicas"]))] = draw(st.integers(-(2**40), -1))
        case "too-many":
            group[draw(st.sampled_from(["replicas", "minReplicas", "maxReplicas"]))] = draw(st.integers(1001, 2**40))
        case "min-above":
            group.pop("maxReplicas", None)
            group["minReplicas"] = replicas + draw(st.integers(1, 10))
        case _:
            group.pop("minReplicas", None)
            group["replicas"] = draw(st.integers(1, 1000))
            group["maxReplicas"] = draw(st.integers(0, group["replicas"] - 1))
    return workload, policy


@mutation
def type_sections(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    """job iff Job, serve iff Service, suspend not on Service."""
    workload, policy = _copy(scenario)
    spec = workload["spec"]
    job = {"entrypoint": "python train.py"}
    serve = {"config": {"applications": [{"name": "app", "import_path": "serve_app:app"}]}}
    match draw(st.sampled_from(["job-on-other", "serve-on-other", "no-job", "no-serve", "suspend-service"])):
        case "job-on-other":
            spec["type"] = draw(st.sampled_from(["Cluster", "Service"]))
            spec["job"] = job
        case "serve-on-other":
            spec["type"] = draw(st.sampled_from(["Cluster", "Job"]))
            spec["serve"] = serve
        case "no-job":
            spec["type"] = "Job"
            spec.pop("job", None)
        case "no-serve":
            spec["type"] = "Service"
            spec.pop("serve", None)
            spec.pop("job", None)
        case _:
            spec["type"] = "Service"
            spec.pop("job", None)
            spec["serve"] = serve
            spec["suspend"] = True
    if len(workload["metadata"]["name"]) > MAX_NAME_LENGTH[spec["type"]]:
        workload["metadata"]["name"] = workload["metadata"]["name"][:40].rstrip("-")
    return workload, policy


@mutation
def duplicate_env_names(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    workload, policy = _copy(scenario)
    env = workload["spec"]["ray"].setdefault("env", [])
    variable = draw(st.sampled_from(env)) if env else {"name": "HF_HOME", "value": "/tmp/hf"}
    env.append({"name": variable["name"], "value": draw(st.text(max_size=5))})
    if len(env) == 1:
        env.append(dict(variable))
    return workload, policy


@mutation
def duplicate_group_names(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    workload, policy = _copy(scenario)
    group = _group(draw, workload)
    workload["spec"]["workerGroups"].append(copy.deepcopy(group))
    return workload, policy


@mutation
def bad_accelerator(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    workload, policy = _copy(scenario)
    group = _group(draw, workload, gpu=True)
    group.pop("machineType", None)
    match draw(st.sampled_from(["count", "shape", "machine", "type-pattern", "unknown-type"])):
        case "count":
            group["accelerator"]["count"] = draw(st.sampled_from([0, 3, 5, 6, 12, 32, -1, 2**40]))
        case "shape":  # an API-valid count no machine carries for this type
            accelerator, count = draw(st.sampled_from(UNSUPPORTED_SHAPES))
            group["accelerator"] = {"type": accelerator, "count": count}
        case "machine":  # a machine type that cannot carry these GPUs
            group["accelerator"] = {"type": "nvidia-l4", "count": 1}
            group["machineType"] = draw(st.sampled_from(["a2-highgpu-1g", "n1-standard-8", "g2-standard-24"]))
        case "type-pattern":
            group["accelerator"]["type"] = draw(st.sampled_from(["NVIDIA-L4", "nvidia_l4", "-l4", "l4-", ""]))
        case _:  # not in the catalogue and no machineType to place it
            group["accelerator"]["type"] = draw(st.sampled_from(CUSTOM_ACCELERATORS))
            if policy is not None:
                policy["spec"].pop("accelerators", None)
    return workload, policy


@mutation
def bad_ray_version(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    workload, policy = _copy(scenario)
    ray = workload["spec"]["ray"]
    if draw(st.booleans()):
        ray.pop("version")
    else:
        ray["version"] = draw(st.sampled_from(["2.41", "v2.41.0", "latest", "2.41.0-rc1", "", " 2.41.0", "2.41.0\n"]))
    ray.pop("image", None)
    return workload, policy


@mutation
def image_tag_mismatch(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    workload, policy = _copy(scenario)
    ray = workload["spec"]["ray"]
    major, minor, patch = (int(part) for part in ray["version"].split("."))
    other = f"{major}.{minor}.{patch + draw(st.integers(1, 9))}"
    ray["image"] = draw(
        st.sampled_from(
            [
                f"rayproject/ray:{other}",
                f"rayproject/ray:{other}-py311-gpu",
                "rayproject/ray",
                "rayproject/ray:latest",
                f"rayproject/ray:{ray['version']}0",
                f"rayproject/ray:py311-{ray['version']}",
                f"localhost:5000/ray@sha256:{'b' * 64}",
            ]
        )
    )
    return workload, policy


@mutation
def bad_name(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    workload, policy = _copy(scenario)
    limit = MAX_NAME_LENGTH[scenario.type]
    match draw(st.sampled_from(["too-long", "way-too-long", "not-dns1035", "not-dns1035", "missing"])):
        case "too-long":
            name = draw(st.from_regex(rf"[a-z][a-z0-9]{{{limit},{62}}}", fullmatch=True))
        case "way-too-long":
            name = "a" * draw(st.integers(64, 300))
        case "not-dns1035":
            name = draw(
                st.sampled_from(["1abc", "Abc", "a_b", "a-", "-a", "", "a.b", "a b", "é", "a\nb", "ab/c", "a\r"])
                | st.text(max_size=70).filter(lambda text: not is_dns1035_label(text))
            )
        case _:
            workload["metadata"].pop("name")
            return workload, policy
    workload["metadata"]["name"] = name
    return workload, policy


@mutation
def bad_values(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    """Values a field's pattern or bounds refuse."""
    workload, policy = _copy(scenario)
    spec = workload["spec"]
    match draw(st.sampled_from(["quantity", "bucket", "gsa", "host", "env", "serve", "idle", "deadline", "entry"])):
        case "quantity":
            where = draw(st.sampled_from(["head", "group"]))
            resources = spec.setdefault("head", {}) if where == "head" else _group(draw, workload)
            resources["resources"] = {"cpu": "1", "memory": "1Gi"}
            key = draw(st.sampled_from(["cpu", "memory"]))
            resources["resources"][key] = draw(st.sampled_from(["lots", "1.5.5", "", "16GB", "1e", "Gi", "-"]))
        case "bucket":
            spec["storage"] = {"bucket": draw(st.sampled_from(["s3://x", "team-nlp", "gs://A", "gs://a", "gs://-ab"]))}
        case "gsa":
            spec["identity"] = {"gcpServiceAccount": draw(st.sampled_from(["ray@gmail.com", "x", "ray-nlp@my-proj"]))}
        case "host":
            _set(
                workload,
                "spec.expose.dashboard",
                {"enabled": True, "host": draw(st.sampled_from(["Bad_Host", "-a.b", "a..b", "*.x"]))},
            )
        case "env":
            ref = {"name": "s", "key": "k"}
            bad_env = draw(
                st.sampled_from(
                    [
                        {"name": "1X", "value": "v"},
                        {"name": "", "value": "v"},
                        {"name": "A", "value": "v", "valueFrom": {"secretKeyRef": ref}},
                        {"name": "A", "valueFrom": {"secretKeyRef": ref, "configMapKeyRef": ref}},
                        {"name": "A", "valueFrom": {}},
                        {"value": "v"},
                    ]
                )
            )
            spec["ray"].setdefault("env", []).append(bad_env)
        case "serve" if scenario.type == "Service":
            spec["serve"]["config"] = draw(
                st.sampled_from([{}, {"applications": []}, {"applications": [{"name": "x"}]}, {"applications": ["x"]}])
            )
        case "idle":
            spec["autoscaling"] = {"enabled": True, "idleTimeoutSeconds": draw(st.sampled_from([-1, 86401, 2**40]))}
        case "deadline" if scenario.type == "Job":
            key, value = draw(
                st.sampled_from(
                    [
                        ("activeDeadlineSeconds", 0),
                        ("activeDeadlineSeconds", -5),
                        ("backoffLimit", 101),
                        ("ttlSecondsAfterFinished", -1),
                    ]
                )
            )
            spec["job"][key] = value
        case "entry" if scenario.type == "Job":
            spec["job"]["entrypoint"] = ""
        case _:
            _group(draw, workload)["name"] = draw(st.sampled_from(["Bad", "a_b", "-a", "a" * 64, ""]))
    return workload, policy


@mutation
def policy_violation_access(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    """A document the API accepts but its policy refuses: identity, exposure, labels, images."""
    workload, policy = _copy(scenario)
    policy = _permissive_policy(policy)
    rules = policy["spec"]
    spec = workload["spec"]
    match draw(st.sampled_from(["external", "iap", "gsa", "bucket", "no-identity", "label", "version", "image"])):
        case "external":
            _set(
                workload,
                f"spec.expose.{draw(st.sampled_from(['dashboard', 'serve']))}",
                {"enabled": True, "visibility": "External", "iap": True},
            )
            rules["expose"] = {"allowExternal": False}
        case "iap":
            _set(workload, "spec.expose.dashboard", {"enabled": True, "iap": False})
            rules["expose"] = {"allowExternal": True, "requireIAP": True}
        case "gsa":
            spec["identity"] = {"gcpServiceAccount": OTHER_GSA}
        case "bucket":
            spec["storage"] = {"bucket": "gs://vision-private"}
            rules["identity"] = {"gcpServiceAccount": GSA, "allowedBuckets": ["gs://team-nlp-*"]}
        case "no-identity":
            spec["storage"] = {"bucket": "gs://team-nlp-ckpt"}
            spec.pop("identity", None)
            rules["identity"] = {"allowedBuckets": ["gs://*"]}
            rules.get("gcp", {}).pop("projectNumber", None)
        case "label":
            rules["labels"] = {"required": ["cost-center-required"]}
            workload["metadata"].setdefault("labels", {})["cost-center-required"] = draw(st.sampled_from(["", None]))
            if workload["metadata"]["labels"]["cost-center-required"] is None:
                del workload["metadata"]["labels"]["cost-center-required"]
        case "version":
            rules["ray"] = {"allowedVersions": ["99.*"]}
        case _:
            rules["ray"] = {"imageRepositories": ["gcr.io/only-this/"]}
    if len(workload["metadata"]["name"]) > MAX_NAME_LENGTH[spec["type"]]:
        workload["metadata"]["name"] = workload["metadata"]["name"][:40].rstrip("-")
    return workload, policy


@mutation
def policy_violation_capacity(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    """A document the API accepts but its policy refuses: GPUs, capacity, runtime, sizes."""
    workload, policy = _copy(scenario)
    policy = _permissive_policy(policy)
    rules = policy["spec"]
    spec = workload["spec"]
    match draw(st.sampled_from(["accelerator", "capacity", "deadline", "per-workload", "quota", "fit"])):
        case "accelerator":
            group = _group(draw, workload, gpu=True)
            group.pop("machineType", None)
            group["accelerator"] = {"type": "nvidia-h100-80gb", "count": 8}
            group["resources"] = {"cpu": "1", "memory": "1Gi"}
            rules["accelerators"] = {"allowed": draw(st.sampled_from([[], ["nvidia-l4"], ["nvidia-tesla-t4"]]))}
        case "capacity":
            rule, capacity = draw(
                st.sampled_from(
                    [
                        ("Required", "OnDemand"),
                        ("Required", "SpotWithFallback"),
                        ("Forbidden", "Spot"),
                        ("Forbidden", "SpotWithFallback"),
                    ]
                )
            )
            rules["capacity"] = {"spot": rule}
            _group(draw, workload)["capacity"] = capacity
        case "deadline":
            spec["type"] = "Job"
            spec.pop("serve", None)
            spec["job"] = {"entrypoint": "python x.py", "activeDeadlineSeconds": 7200}
            rules["lifecycle"] = {"maxJobRuntimeSeconds": 3600}
        case "per-workload":
            group = _group(draw, workload, gpu=True)
            group["maxReplicas"] = max(group.get("replicas", 1), 2)
            rules["accelerators"] = {"maxPerWorkload": 1}
        case "quota":
            group = _group(draw, workload, gpu=True)
            group["maxReplicas"] = max(group.get("replicas", 1), 2)
            rules["quota"] = {"maxGPUs": 1}
        case _:
            group = _group(draw, workload, gpu=True)
            group["resources"] = {"cpu": draw(st.sampled_from(["500", "1000"])), "memory": "1Gi"}
    if len(workload["metadata"]["name"]) > MAX_NAME_LENGTH[spec["type"]]:
        workload["metadata"]["name"] = workload["metadata"]["name"][:40].rstrip("-")
    return workload, policy


@mutation
def bad_policy(draw: st.DrawFn, scenario: Scenario) -> tuple[Any, Any]:
    workload, policy = _copy(scenario)
    policy = _permissive_policy(policy)
    path, value = draw(
        st.sampled_from(
            [
                ("spec.quota.maxGPUs", -1),
                ("spec.gcp.project", "My_Project"),
                ("spec.gcp.cluster", "a" * 41),
                ("spec.nodePools.maxNodesPerPool", 0),
                ("spec.nodePools.locationPolicy", "ROUND_ROBIN"),
                ("spec.identity.gcpServiceAccount", "someone@example.com"),
                ("spec.accelerators.allowed", "nvidia-l4"),
                ("spec.lifecycle.maxJobRuntimeSeconds", 0),
                ("spec.priority", "high"),
                ("spec.network.defaultIsolation", "Total"),
            ]
        )
    )
    _set(policy, path, value)
    return workload, policy


@st.composite
def invalid_inputs(draw: st.DrawFn) -> tuple[str, Any, Any]:
    name = draw(st.sampled_from(sorted(MUTATIONS)))
    scenario = draw(scenarios())
    workload, policy = MUTATIONS[name](draw, scenario)
    return name, workload, policy


@settings(max_examples=400, **COMMON)
@given(case=invalid_inputs())
def test_invalid_inputs_are_refused_with_one_field_line_per_problem(case: tuple[str, Any, Any]) -> None:
    name, workload, policy = case
    lines = refusal_lines(workload, policy)  # any exception but Refused fails the test
    assert lines, f"mutation {name} was admitted"
    assert_problem_lines(lines)


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def single_edits(draw: st.DrawFn) -> tuple[Any, Any]:
    """A valid scenario with one value anywhere in it replaced by random JSON, or deleted."""
    scenario = draw(scenarios())
    documents = [copy.deepcopy(scenario.workload), copy.deepcopy(scenario.policy)]
    document = documents[draw(st.sampled_from([0, 1] if scenario.policy else [0]))]
    path = draw(st.sampled_from(_paths(document)))
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(json_values | st.floats() | st.text())
    return documents[0], documents[1]


@settings(max_examples=150, **NO_SHRINK)
@given(case=single_edits())
def test_any_single_edit_is_refused_cleanly_or_renders_valid_objects(case: tuple[Any, Any]) -> None:
    """Whatever one edit does, the outcome is a clean refusal or schema-valid output, never a crash."""
    workload, policy = case
    lines = refusal_lines(workload, policy)
    if lines:
        assert_problem_lines(lines)
        return
    verdict = admission(workload, policy)
    for obj in build_objects(verdict.resolved):
        errors = validate_object(obj)
        assert errors == [], f"{obj['kind']} {obj['metadata'].get('name')}: {errors}"
    build_gcp_plan(verdict.resolved)


# ---------------------------------------------------------------------------------------------- c) CLI


@st.composite
def cli_cases(draw: st.DrawFn) -> tuple[str, Any, Any]:
    if draw(st.booleans()):
        scenario = draw(scenarios())
        return "valid", scenario.workload, scenario.policy
    return draw(invalid_inputs())


def run_cli(
    workload: Any, policy: Any, command: str = "render", same_file: bool = False, output: str = "json"
) -> tuple[int, str, str]:
    """`mlworkload COMMAND -f workload.yaml [--policy policy.yaml]` on files; (exit code, stdout, stderr)."""
    with tempfile.TemporaryDirectory() as directory:
        workload_file = Path(directory, "workload.yaml")
        argv = [command, "-f", str(workload_file)]
        documents = [workload]
        if policy is not None and same_file:
            documents.append(policy)
        elif policy is not None:
            Path(directory, "policy.yaml").write_text(dump_all([policy]), encoding="utf-8")
            argv += ["--policy", str(Path(directory, "policy.yaml"))]
        workload_file.write_text(dump_all(documents), encoding="utf-8")
        if command == "render":
            argv += ["-o", output]
        elif command == "plan":
            argv += ["-o", "json"]
        out, err = io.StringIO(), io.StringIO()
        with mock.patch.dict(os.environ, OPERATOR_ENV):
            code = cli.main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=100, **NO_SHRINK)
@given(
    case=cli_cases(),
    same_file=st.booleans(),
    command=st.sampled_from(["render", "plan", "validate"]),
    output=st.sampled_from(["json", "yaml"]),
)
def test_cli_exit_codes_and_messages(case: tuple[str, Any, Any], same_file: bool, command: str, output: str) -> None:
    name, workload, policy = case
    expected = refusal_lines(workload, policy)
    code, out, err = run_cli(workload, policy, command, same_file, output)
    assert "Traceback" not in err
    if name == "valid":
        assert expected == []
        assert (code, err) == (0, ""), err
        verdict = admission(workload, policy)
        if command == "render":
            rendered = json.loads(out) if output == "json" else list(yaml.safe_load_all(out))
            assert rendered == build_objects(verdict.resolved)
        elif command == "plan":
            assert json.loads(out) == build_gcp_plan(verdict.resolved).to_dict()
        else:
            assert out.endswith(f"admitted by {verdict.policy_name}\n")
        return
    assert code == 1, (name, code, out, err)
    lines = err.splitlines()
    assert len(lines) == len(expected), (name, lines, expected)
    assert_problem_lines(lines)


# ------------------------------------------------------------------- minimal cases the properties found
# Operator bugs these properties found, each reduced to a minimal input. They fail until the operator
# is fixed; the properties above keep generating the same kinds of input.


def _workload(spec: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "MLWorkload",
        "metadata": {"name": "a", **metadata},
        "spec": {"ray": {"version": "2.41.0"}, **spec},
    }


_JOB = {"type": "Job", "job": {"entrypoint": "python train.py"}}
EMPTY_POLICY: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "MLWorkloadPolicy", "metadata": {"name": "empty"},
                                "spec": {}}  # fmt: skip
_MAX_RUNTIME_POLICY = {
    "apiVersion": API_VERSION,
    "kind": "MLWorkloadPolicy",
    "metadata": {"name": "p"},
    "spec": {"lifecycle": {"maxJobRuntimeSeconds": 2**31 - 1}},
}

MINIMAL_VALID = [
    pytest.param(
        _workload({**_JOB, "job": {"entrypoint": "python train.py", "activeDeadlineSeconds": 2**31 - 1}}),
        EMPTY_POLICY,
        id="activeDeadlineSeconds-int32-max",
    ),
    pytest.param(
        _workload({**_JOB, "job": {"entrypoint": "python train.py", "ttlSecondsAfterFinished": 2**31 - 1}}),
        EMPTY_POLICY,
        id="ttlSecondsAfterFinished-int32-max",
    ),
    pytest.param(_workload(_JOB), _MAX_RUNTIME_POLICY, id="policy-maxJobRuntimeSeconds-int32-max"),
]


@pytest.mark.parametrize(("workload", "policy"), MINIMAL_VALID)
def test_minimal_valid_workloads_render_schema_valid_objects(workload: Any, policy: Any) -> None:
    verdict = admission(workload, policy)
    assert verdict.allowed, [str(problem) for problem in verdict.problems]
    errors = {obj["kind"]: validate_object(obj) for obj in build_objects(verdict.resolved)}
    assert {kind: found for kind, found in errors.items() if found} == {}


MINIMAL_INVALID = [
    pytest.param(  # containers[].env is a list-map keyed by name in the KubeRay CRD (fixed in 45a01e4)
        _workload({"type": "Cluster", "ray": {"version": "2.41.0", "env": [{"name": "A"}, {"name": "A"}]}}),
        None,
        id="duplicate-env-names",
    ),
    pytest.param(_workload({"type": "Cluster"}, name="a\nb"), None, id="line-break-in-name"),
    pytest.param(_workload({"type": "Cluster", "x": 1}, namespace="team\nnlp"), None, id="line-break-in-namespace"),
    pytest.param(_workload({"type": "Cluster", "a\rb": 1}), None, id="line-break-in-unknown-field"),
    pytest.param(_workload({"type": "Cluster", "worker_groups": [{"name": "g"}]}), None, id="snake-case-field"),
    pytest.param(  # KubeRay declares these int32: a larger value would render a RayJob the API server refuses
        _workload({**_JOB, "job": {"entrypoint": "python train.py", "activeDeadlineSeconds": 2**31}}),
        None,
        id="activeDeadlineSeconds-beyond-int32",
    ),
    pytest.param(
        _workload({**_JOB, "job": {"entrypoint": "python train.py", "ttlSecondsAfterFinished": 2**31}}),
        None,
        id="ttlSecondsAfterFinished-beyond-int32",
    ),
]


@pytest.mark.parametrize(("workload", "policy"), MINIMAL_INVALID)
def test_minimal_invalid_inputs_are_refused_on_single_lines(workload: Any, policy: Any) -> None:
    lines = refusal_lines(workload, policy)
    assert_problem_lines(lines)
    code, _, err = run_cli(workload, policy, "validate")
    assert code == 1
    assert len(err.splitlines()) == len(lines), err
    assert_problem_lines(err.splitlines())


def test_generators_cover_the_api() -> None:
    """The generators reach every type, GPU and CPU groups, every capacity and policy shape, so the
    properties above are not vacuous."""
    seen: set[str] = set()

    @settings(max_examples=100, **COMMON)
    @given(scenario=scenarios())
    def collect(scenario: Scenario) -> None:
        spec = scenario.workload["spec"]
        seen.add(spec["type"])
        for group in spec.get("workerGroups", []):
            seen.add("gpu" if "accelerator" in group else "cpu")
            seen.add(group.get("capacity", "default-capacity"))
        seen.add("policy" if scenario.policy and scenario.policy["spec"] else "empty-policy")
        seen.add("storage" if "storage" in spec else "no-storage")
        seen.update(f"expose-{e.get('visibility', 'Internal')}" for e in spec.get("expose", {}).values())

    collect()
    wanted = {
        "Cluster", "Job", "Service", "gpu", "cpu", "Spot", "OnDemand", "SpotWithFallback", "default-capacity",
        "policy", "empty-policy", "storage", "no-storage", "expose-Internal", "expose-External",
    }  # fmt: skip
    assert wanted <= seen, wanted - seen


def test_yaml_round_trip_of_generated_documents() -> None:
    """The CLI tests write documents as YAML: make sure dump_all/load keeps them intact."""
    document = {"a": "2.41.0", "b": "yes", "c": "1e3", "d": "\n", "e": None}
    assert yaml.safe_load(dump_all([document]).removeprefix("---\n")) == document


def test_an_unknown_field_with_a_colon_is_quoted_in_the_problem_line() -> None:
    """Found by the property above: `x:` gave "x:: unknown field", which names no field clearly."""
    document = {"apiVersion": "mlworkload.io/v1alpha1", "kind": "MLWorkload", "metadata": {"name": "a"},
                "spec": {"type": "Cluster", "ray": {"version": "2.49.0"}}, "x:": None}  # fmt: skip
    with pytest.raises(Refused) as refused:
        parse_workload(document)
    assert "'x:': unknown field" in "\n".join(refused.value.lines())
