"""The documentation is tested like code: every YAML block and every relative link in README.md and docs/.

Each fenced ```yaml block is split into its documents and each document is checked by one rule,
chosen by its kind (none is skipped; a kind without a rule fails):

- MLWorkloadPolicy: parsed as the operator parses it, and valid against the committed CRD.
- MLWorkload: parsed, valid against the committed CRD, and admitted by the policy code (the same
  code as the webhook). A page is applied top to bottom, as a reader would `kubectl apply` it: the
  policies are those shown on the page (examples/policy-team-nlp.yaml when it shows none), a
  namespace's labels come from a Namespace shown on the page (unknown otherwise, so every policy
  governs it and the highest priority wins, as in `mlworkload validate`), and the GPU quota counts
  the workloads admitted earlier on the page. A block right after the line
  `<!-- docs-test: refused -->` must instead be refused, and every problem the operator reports
  for it must be printed somewhere on the page, word for word.
- a mapping whose only key is `status`: an MLWorkload status, read by field alias as the API sends it.
- any other mapping without apiVersion and kind: a values snippet for the Helm chart.
- Argo CD Application: the fields Argo CD needs to sync.
- every other kind (Namespace, ServiceAccount, ComputeClass, RayJob, ...): the strict schemas of
  tests/support/schemas.py.
"""

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from mlworkload import constants
from mlworkload.api.load import parse_policy, parse_workload
from mlworkload.api.policy import MLWorkloadPolicy
from mlworkload.api.workload import MLWorkload, MLWorkloadStatus
from mlworkload.constants import API_VERSION, POLICY_KIND, WORKLOAD_KIND
from mlworkload.gcp.errors import STALLING, FailureKind
from mlworkload.gcp.live import REASON_PROVISIONING
from mlworkload.policy import Admission, ClusterView, WorkloadGpus, admit_in
from mlworkload.problems import Problem, Refused, problems_from_validation
from mlworkload.yamlio import load_all
from tests.support.schemas import validate_object

ROOT: Final = Path(__file__).resolve().parents[2]
DOCS: Final = ROOT / "docs"
PAGES: Final = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
FALLBACK_POLICY: Final = ROOT / "examples" / "policy-team-nlp.yaml"
CHART: Final = ROOT / "deploy" / "helm" / "mlworkload-operator"
VALUES_SCHEMA: Final = CHART / "values.schema.json"
# The chart's top-level values, used while the chart has no values.schema.json.
VALUES_KEYS: Final = frozenset(
    {"image", "serviceAccount", "operator", "webhook", "metrics", "crds", "defaultPolicy", "resources"}
)
REFUSED_MARKER: Final = "<!-- docs-test: refused -->"
ARGO_APPLICATION: Final = ("argoproj.io/v1alpha1", "Application")

_OPENING_FENCE: Final = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


# --- blocks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One fenced YAML block of a page."""

    page: Path
    index: int  # among the page's YAML blocks, from 0
    line: int  # of the opening fence, from 1
    text: str
    refused: bool  # preceded by REFUSED_MARKER

    @property
    def name(self) -> str:
        return f"{_relative(self.page)}[{self.index}]"

    def documents(self) -> list[Any]:
        try:
            return load_all(self.text)
        except yaml.YAMLError as error:
            pytest.fail(f"{self.name} (line {self.line}) is not valid YAML: {error}")


@dataclass(frozen=True)
class Fence:
    info: str  # the language, lower case ("" when none)
    line: int  # of the opening fence, from 1
    end: int  # of the closing fence (or the last line), from 1
    body: str
    before: str  # the last non-blank line before the fence


def fences(text: str) -> Iterator[Fence]:
    """Every fenced code block of a Markdown text (``` or ~~~, up to three spaces of indentation)."""
    lines = text.splitlines()
    previous = ""
    index = 0
    while index < len(lines):
        opening = _OPENING_FENCE.match(lines[index])
        if opening is None:
            if lines[index].strip():
                previous = lines[index].strip()
            index += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            stripped = lines[end].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            line = lines[end]
            body.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
            end += 1
        yield Fence(opening["info"].lower(), index + 1, min(end, len(lines) - 1) + 1, "\n".join(body) + "\n", previous)
        previous = ""
        index = end + 1


def yaml_blocks(page: Path) -> list[Block]:
    found = [fence for fence in fences(page.read_text(encoding="utf-8")) if fence.info in {"yaml", "yml"}]
    return [
        Block(page, index, fence.line, fence.body, refused=fence.before == REFUSED_MARKER)
        for index, fence in enumerate(found)
    ]


BLOCKS: Final = [block for page in PAGES for block in yaml_blocks(page)]


# --- a page, applied top to bottom -------------------------------------------------------------------


@dataclass(frozen=True)
class PageView:
    policies: list[MLWorkloadPolicy]
    namespace_labels: dict[str, dict[str, str]]
    # (block index, document index) -> the verdict, or the problems that kept it from parsing
    verdicts: dict[tuple[int, int], Admission | list[Problem]]
    text: str


def _kind_of(document: Any) -> tuple[Any, Any]:
    if not isinstance(document, dict):
        return None, None
    return document.get("apiVersion"), document.get("kind")


@functools.cache
def page_view(page: Path) -> PageView:
    blocks = yaml_blocks(page)
    documents = [(block, position, document) for block in blocks for position, document in enumerate(block.documents())]
    policies = [parse_policy(doc) for _, _, doc in documents if _kind_of(doc) == (API_VERSION, POLICY_KIND)]
    if not policies:
        policies = [parse_policy(doc) for doc in load_all(FALLBACK_POLICY.read_text(encoding="utf-8"))]
    namespace_labels = {
        doc["metadata"]["name"]: dict(doc["metadata"].get("labels") or {})
        for _, _, doc in documents
        if _kind_of(doc) == ("v1", "Namespace")
    }
    usage: dict[tuple[str, str], WorkloadGpus] = {}
    verdicts: dict[tuple[int, int], Admission | list[Problem]] = {}
    for block, position, document in documents:
        if _kind_of(document) != (API_VERSION, WORKLOAD_KIND):
            continue
        try:
            workload = parse_workload(document)
        except Refused as refused:
            verdicts[block.index, position] = refused.problems
            continue
        view = ClusterView(policies, namespace_labels, default_labels=None, usage=list(usage.values()))
        verdict = admit_in(view, workload)
        verdicts[block.index, position] = verdict
        if verdict.allowed:
            usage[workload.namespace, workload.name] = WorkloadGpus.of(workload)
    return PageView(policies, namespace_labels, verdicts, page.read_text(encoding="utf-8"))


# --- rules, one per kind of document -----------------------------------------------------------------

Rule = Callable[[Block, int, dict[str, Any]], list[str]]


def check_policy(block: Block, position: int, document: dict[str, Any]) -> list[str]:
    try:
        parse_policy(document)
    except Refused as refused:
        return refused.lines()
    return validate_object(document)


def _printed(view: PageView, workload: MLWorkload | None, problems: list[Problem]) -> list[str]:
    """The problems the page does not print word for word: policy refusals as `mlworkload validate` prints
    them (`namespace/name: path: message`), schema refusals as `path: message`."""
    missing = []
    for problem in problems:
        shown = str(problem)
        if workload is not None:
            shown = f"{workload.namespace}/{workload.name}: {shown}"
        if shown not in view.text:
            missing.append(f"the page does not show this refusal: {shown}")
    return missing


def check_workload(block: Block, position: int, document: dict[str, Any]) -> list[str]:
    view = page_view(block.page)
    verdict = view.verdicts[block.index, position]
    if isinstance(verdict, list):  # it did not parse
        if block.refused:
            return _printed(view, None, verdict)
        return [str(problem) for problem in verdict]
    schema_problems = validate_object(document)
    if block.refused:
        if verdict.allowed:
            return ["marked refused, but the policy admits it"]
        return schema_problems + _printed(view, verdict.resolved.workload, verdict.problems)
    return schema_problems + [f"refused by policy {verdict.policy_name}: {problem}" for problem in verdict.problems]


KNOWN_CONDITIONS: Final = frozenset(
    value for name, value in vars(constants).items() if name.startswith("CONDITION_") and isinstance(value, str)
)


def check_status(block: Block, position: int, document: dict[str, Any]) -> list[str]:
    try:
        # As the API server hands it over: camelCase only (by alias), unknown fields refused.
        status = MLWorkloadStatus.model_validate(document["status"], by_alias=True, by_name=False)
    except ValidationError as error:
        return [str(problem) for problem in problems_from_validation(error, prefix="status")]
    return [
        f"status.conditions: unknown condition type {condition.type!r}; known: {sorted(KNOWN_CONDITIONS)}"
        for condition in status.conditions
        if condition.type not in KNOWN_CONDITIONS
    ]


_DRAFTS: Final[Mapping[str, type[Any]]] = {
    "draft-04": jsonschema.Draft4Validator,
    "draft-06": jsonschema.Draft6Validator,
    "draft-07": jsonschema.Draft7Validator,
    "2019-09": jsonschema.Draft201909Validator,
    "2020-12": jsonschema.Draft202012Validator,
}


def merge_values(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values over the chart's: maps merge key by key, anything else replaces, null deletes."""
    merged = dict(base)
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_values(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_helm_values(block: Block, position: int, document: dict[str, Any]) -> list[str]:
    """A values file for the chart: what Helm would validate is the chart's values.yaml with it merged over."""
    problems: list[str] = []
    defaults_file = CHART / "values.yaml"
    defaults = yaml.safe_load(defaults_file.read_text(encoding="utf-8")) if defaults_file.is_file() else {}
    values = merge_values(defaults or {}, document)
    if VALUES_SCHEMA.is_file():
        schema = json.loads(VALUES_SCHEMA.read_text(encoding="utf-8"))
        draft = next((cls for key, cls in _DRAFTS.items() if key in str(schema.get("$schema", ""))), None)
        validator = (draft or jsonschema.Draft7Validator)(schema)
        problems += [
            f"{_relative(VALUES_SCHEMA)}: {'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
            for error in validator.iter_errors(values)
        ]
    else:
        unknown = sorted(set(document) - VALUES_KEYS)
        if unknown:
            problems.append(
                f"not Helm values of the chart: unknown top-level keys {unknown}; known: {sorted(VALUES_KEYS)}"
            )
    default_policy = values.get("defaultPolicy")
    if isinstance(default_policy, dict) and "spec" in default_policy:
        wrapped = {"apiVersion": API_VERSION, "kind": POLICY_KIND, "metadata": {"name": "default"}}
        try:
            parse_policy({**wrapped, "spec": default_policy["spec"]})
        except Refused as refused:
            problems += [f"defaultPolicy.{problem}" for problem in map(str, refused.problems)]
    return problems


def check_argo_application(block: Block, position: int, document: dict[str, Any]) -> list[str]:
    spec = document.get("spec") or {}
    problems = [] if (document.get("metadata") or {}).get("name") else ["metadata.name is required"]
    problems += [f"spec.{key} is required" for key in ("project", "destination") if not spec.get(key)]
    sources = spec.get("sources") or ([spec["source"]] if spec.get("source") else [])
    if not sources:
        problems.append("spec.source or spec.sources is required")
    problems += [
        f"spec.source[{i}].repoURL is required" for i, source in enumerate(sources) if not source.get("repoURL")
    ]
    return problems


def check_kubernetes_object(block: Block, position: int, document: dict[str, Any]) -> list[str]:
    problems = validate_object(document)
    api_version, kind = _kind_of(document)
    if problems == [f"no schema for {api_version}/{kind}"]:
        return [f"no rule for {api_version}/{kind}: give it one in tests/unit/test_docs.py, or change the docs"]
    return problems


def check_github_workflow(block: Block, position: int, document: dict[str, Any]) -> list[str]:
    """A GitHub Actions workflow, against the schema check-jsonschema vendors (`--builtin-schema
    vendor.github-workflows`, SchemaStore's)."""
    schema = json.loads(
        (resources.files("check_jsonschema") / "builtin_schemas/vendor/github-workflows.json").read_text()
    )
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(document)
    ]


def rule_for(document: dict[str, Any]) -> Rule:
    if {"on", "jobs"} <= set(document) and "apiVersion" not in document:
        return check_github_workflow
    kind = _kind_of(document)
    if kind == (API_VERSION, POLICY_KIND):
        return check_policy
    if kind == (API_VERSION, WORKLOAD_KIND):
        return check_workload
    if kind == ARGO_APPLICATION:
        return check_argo_application
    if kind == (None, None):
        return check_status if set(document) == {"status"} else check_helm_values
    return check_kubernetes_object


# --- tests -------------------------------------------------------------------------------------------


def test_the_docs_have_yaml_blocks_to_check() -> None:
    assert (DOCS / "README.md").is_file()
    assert len({block.page for block in BLOCKS}) >= 5, "the YAML blocks of the docs were not found"


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_yaml_block(block: Block) -> None:
    documents = block.documents()
    assert documents, f"{block.name} (line {block.line}) is empty"
    found: dict[str, list[str]] = {}
    for position, document in enumerate(documents):
        where = f"document {position + 1}"
        if not isinstance(document, dict):
            found[where] = [f"expected a mapping, got {type(document).__name__}"]
            continue
        if block.refused and _kind_of(document) != (API_VERSION, WORKLOAD_KIND):
            found[where] = [f"{REFUSED_MARKER} only applies to blocks of MLWorkloads"]
            continue
        problems = rule_for(document)(block, position, document)
        if problems:
            found[where] = problems
    if found:
        lines = [f"  {where}: {problem}" for where, problems in found.items() for problem in problems]
        pytest.fail(f"{block.name}, the block at line {block.line}:\n" + "\n".join(lines), pytrace=False)


_INLINE_LINK: Final = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_LINK: Final = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.MULTILINE)
_INLINE_CODE: Final = re.compile(r"(`+).*?\1", re.DOTALL)
_EXTERNAL: Final = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code, where link syntax is not a link."""
    lines = text.splitlines()
    for fence in fences(text):
        for number in range(fence.line - 1, fence.end):
            lines[number] = ""
    return _INLINE_CODE.sub("", "\n".join(lines))


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings of a page (lower case, punctuation dropped, spaces to dashes)."""
    anchors: set[str] = set()
    for line in _prose(text.replace("`", "")).splitlines():
        heading = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
        candidate, number = slug, 0
        while candidate in anchors:
            number += 1
            candidate = f"{slug}-{number}"
        anchors.add(candidate)
    return anchors


def broken_links(page: Path) -> list[str]:
    prose = _prose(page.read_text(encoding="utf-8"))
    broken = []
    for target in _INLINE_LINK.findall(prose) + _REFERENCE_LINK.findall(prose):
        if _EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: {_relative(linked)} does not exist")
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text(encoding="utf-8")):
            broken.append(f"{target}: {_relative(linked)} has no heading with anchor #{anchor}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[_relative(page) for page in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_the_docs_index_links_every_page() -> None:
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = {(DOCS / target.partition("#")[0]).resolve() for target in _INLINE_LINK.findall(_prose(index))}
    pages = [page for page in PAGES if page.is_relative_to(DOCS) and page != DOCS / "README.md"]
    assert [_relative(page) for page in pages if page.resolve() not in linked] == []


# Condition reasons that are literals in one module, with that module (checked, so none goes stale).
LITERAL_REASONS: Final[Mapping[str, tuple[str, ...]]] = {
    "operator/mlworkload/controller/raystatus.py": (
        "RayObjectMissing",
        "RayClusterSuspended",
        "ReplicaFailure",
        "RayClusterProvisioning",
        "RayJobStopped",
        "DeadlineExceeded",
        "PreRunningDeadlineExceeded",
        "JobStatusCheckTimeoutExceeded",
        "AppFailed",
        "SubmissionFailed",
        "ValidationFailed",
        "RayJobFailed",
        "RayJobSuspended",
        "RayJobRetrying",
        "RayJobStarting",
        "ServeApplicationsUnhealthy",
        "RayServiceStarting",
    ),
    "operator/mlworkload/controller/status.py": ("NotStarted",),
    "operator/mlworkload/gcp/provisioner.py": ("DryRun",),
}


def troubleshooting_reasons() -> set[str]:
    """Every reason a not-ready workload can show: the operator's constants, GCP failures, Ray's."""
    reasons = {
        value for name, value in vars(constants).items() if name.startswith("REASON_") and isinstance(value, str)
    }
    reasons -= {"Allowed", "UpToDate", "NoEndpoints", "Serving", "Enforced"}  # what all is well says
    reasons |= {kind.value for kind in STALLING} | {FailureKind.UNAVAILABLE.value, REASON_PROVISIONING}
    return reasons | {reason for literals in LITERAL_REASONS.values() for reason in literals}


def test_literal_reasons_are_still_in_the_code() -> None:
    stale = [
        f"{module}: {reason}"
        for module, reasons in LITERAL_REASONS.items()
        for reason in reasons
        if f'"{reason}"' not in (ROOT / module).read_text(encoding="utf-8")
    ]
    assert stale == []


def test_troubleshooting_has_a_section_per_reason() -> None:
    text = (DOCS / "users" / "troubleshooting.md").read_text(encoding="utf-8")
    headings = " ".join(re.findall(r"^#{2,4}\s+(.*)$", text, re.MULTILINE)).replace("`", "")
    covered = set(re.findall(r"\w+", headings))
    assert sorted(troubleshooting_reasons() - covered) == []
