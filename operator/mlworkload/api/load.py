"""Turning untrusted documents (files, stdin, admission requests) into API objects.

Every problem of every document is collected before refusing, so a user fixes a file in one go.
"""

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from mlworkload.api.policy import MLWorkloadPolicy
from mlworkload.api.workload import MLWorkload
from mlworkload.constants import API_VERSION, POLICY_KIND, WORKLOAD_KIND
from mlworkload.problems import Problem, Refused, printable, problems_from_validation
from mlworkload.yamlio import UNREADABLE, short_repr


def parse_workload(document: Any) -> MLWorkload:
    """An MLWorkload from its wire form; Refused with field-path problems otherwise."""
    try:
        # By alias only: the wire form is camelCase, as in the CRD; `worker_groups` is an unknown field.
        return MLWorkload.model_validate(document, by_alias=True, by_name=False)
    except ValidationError as error:
        raise Refused(problems_from_validation(error), subject=_describe(document)) from None


def parse_policy(document: Any) -> MLWorkloadPolicy:
    """The policy's rules. Its status is the operator's report, never input: it is not read (a report written
    by another version of the operator must not make the policy unreadable)."""
    if isinstance(document, dict) and "status" in document:
        document = {key: value for key, value in document.items() if key != "status"}
    try:
        return MLWorkloadPolicy.model_validate(document, by_alias=True, by_name=False)
    except ValidationError as error:
        raise Refused(problems_from_validation(error), subject=_describe(document)) from None


def _describe(document: Any) -> str:
    if not isinstance(document, dict):
        return "document"
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    name = metadata.get("name", "<unnamed>") if metadata else "<unnamed>"
    namespace = metadata.get("namespace") if metadata else None
    kind = document.get("kind", "object")
    described = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    return printable(described)


@dataclass
class Documents:
    workloads: list[MLWorkload] = field(default_factory=list)
    policies: list[MLWorkloadPolicy] = field(default_factory=list)


def parse_documents(documents: list[Any], source: str) -> Documents:
    """MLWorkloads and MLWorkloadPolicies from a list of documents, all problems at once.

    A document that cannot be told apart as a Kubernetes object (not a mapping; apiVersion or kind
    missing or not a string) is marked UNREADABLE, as kubectl refuses to decode it at all; one of
    another kind is an ordinary refusal naming apiVersion and kind.
    """
    parsed = Documents()
    lines: list[Problem] = []
    for index, document in enumerate(documents):
        where = f"{source}, document {index + 1}"
        try:
            found = parse_document(document, where)
        except Refused as refused:
            if not refused.subject:  # not an object of ours: the problems name the document already
                lines.extend(refused.problems)
            else:
                lines.extend(Problem(f"{where} ({refused.subject})", str(problem)) for problem in refused.problems)
            continue
        if isinstance(found, MLWorkload):
            parsed.workloads.append(found)
        else:
            parsed.policies.append(found)
    if lines:
        raise Refused(lines)
    return parsed


def parse_document(document: Any, where: str) -> MLWorkload | MLWorkloadPolicy:
    """One document: an MLWorkload or an MLWorkloadPolicy. Refused otherwise: with field paths and the object
    as subject when it is one of ours and invalid; naming `where` (UNREADABLE when it is not a Kubernetes
    object at all) when it is not one of ours."""
    unreadable = _unreadable(document)
    if unreadable:
        raise Refused([Problem(where, message, rule=UNREADABLE) for message in unreadable])
    kind, api_version = document["kind"], document["apiVersion"]
    if api_version != API_VERSION or kind not in {WORKLOAD_KIND, POLICY_KIND}:
        raise Refused([
            Problem(where, f"apiVersion {short_repr(api_version)} kind {short_repr(kind)} is not an {API_VERSION}"
                           f" {WORKLOAD_KIND} or {POLICY_KIND}")
        ])  # fmt: skip
    return parse_workload(document) if kind == WORKLOAD_KIND else parse_policy(document)


def _unreadable(document: Any) -> list[str]:
    """Why a document is not a Kubernetes object at all; empty when apiVersion and kind are strings."""
    if not isinstance(document, dict):
        return ["expected a Kubernetes object (a mapping with apiVersion and kind)"]
    expected = {"apiVersion": API_VERSION, "kind": f"{WORKLOAD_KIND} or {POLICY_KIND}"}
    problems = []
    for name, example in expected.items():
        value = document.get(name)
        if name not in document:
            problems.append(f"{name}: required field is missing (expected {example})")
        elif not isinstance(value, str):
            problems.append(f"{name}: {short_repr(value)} is not a string (expected {example})")
    return problems
