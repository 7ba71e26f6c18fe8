"""A GitOps repository judged offline: `mlworkload validate -f DIR`, with the webhook's own code.

A repository holds many teams' manifests side by side. Each MLWorkload is judged under the labels of its own
namespace, taken from the `Namespace` documents in the tree (falling back to `--namespace-labels`), against
the policies in the tree and those given with `--policy`; the policies are checked too. Other kinds
(Deployments, Services, Kustomizations, ...) are not ours: they are listed as ignored, never refused.
A document that is not a Kubernetes object at all stays unreadable input (exit 2), as kubectl has it.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlworkload.api.load import parse_document
from mlworkload.api.policy import MLWorkloadPolicy
from mlworkload.api.workload import MLWorkload
from mlworkload.constants import GROUP, POLICY_KIND, WORKLOAD_KIND
from mlworkload.policy import ClusterView, WorkloadGpus, admit_in
from mlworkload.policy.resolve import PlatformDefaults
from mlworkload.problems import Problem, Refused
from mlworkload.yamlio import UNREADABLE

MANIFEST_SUFFIXES = (".yaml", ".yml")


def expand(paths: Iterable[str]) -> list[str]:
    """Files as given; directories as every *.yaml and *.yml under them, recursively, in a stable order."""
    expanded: list[str] = []
    for path in paths:
        directory = Path(path)
        if path != "-" and directory.is_dir():
            expanded += sorted(
                str(found) for found in directory.rglob("*") if found.is_file() and found.suffix in MANIFEST_SUFFIXES
            )
        else:
            expanded.append(path)
    return expanded


@dataclass(frozen=True)
class Result:
    """One verdict: a workload admitted or refused (and by which policy), or a policy valid or not."""

    kind: str
    namespace: str | None
    name: str
    allowed: bool
    policy: str | None = None
    problems: Sequence[Problem] = ()
    where: str = ""  # the file and document, for a document that did not parse

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "allowed": self.allowed,
            "policy": self.policy,
            "problems": [{"field": problem.path, "message": problem.message} for problem in self.problems],
        }

    @property
    def subject(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def lines(self) -> list[Problem]:
        """Its problems as the webhook words them: the workload and the field; for a document that did not
        parse, the file and document too."""
        if not self.where:
            return [Problem(self.subject, str(problem)) for problem in self.problems]
        name = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return [Problem(f"{self.where} ({self.kind} {name})", str(problem)) for problem in self.problems]


@dataclass
class Tree:
    """What a set of files holds, document by document."""

    workloads: list[MLWorkload] = field(default_factory=list)
    policies: list[MLWorkloadPolicy] = field(default_factory=list)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)  # Namespace documents' labels
    refused: list[Result] = field(default_factory=list)  # documents of our kinds that do not parse
    ignored: list[str] = field(default_factory=list)  # "file, document N: apps/v1 Deployment web"
    problems: list[Problem] = field(default_factory=list)  # the refusals' and unreadable input's, in file order

    @property
    def unreadable(self) -> bool:
        """Some input is not manifests at all: no verdict is given (exit 2)."""
        return any(problem.rule == UNREADABLE for problem in self.problems)

    def unreadable_file(self, problems: Sequence[Problem]) -> None:
        self.problems += problems

    def add(self, documents: Sequence[Any], source: str) -> None:
        for index, document in enumerate(documents):
            self._add_one(document, f"{source}, document {index + 1}")

    def _add_one(self, document: Any, where: str) -> None:
        kind, api_version = _kind_of(document)
        if kind is not None and api_version is not None:
            if (api_version, kind) == ("v1", "Namespace"):
                metadata = document.get("metadata")
                labels = metadata.get("labels") if isinstance(metadata, dict) else None
                name = _name_of(document)
                if name is not None:
                    self.namespaces[name] = {
                        str(k): str(v) for k, v in (labels if isinstance(labels, dict) else {}).items()
                    }
                return
            if api_version.partition("/")[0] != GROUP:  # another API's object: not ours to judge
                self.ignored.append(f"{where}: {api_version} {kind} {_name_of(document) or ''}".rstrip())
                return
        try:
            parsed = parse_document(document, where)
        except Refused as refused:
            if any(problem.rule == UNREADABLE for problem in refused.problems):
                self.unreadable_file(refused.problems)
            else:
                # Field problems of an object of ours; or one of our group in an unknown version or kind, whose
                # problem names the document (the result names it already).
                problems = refused.problems if refused.subject else [Problem("", p.message) for p in refused.problems]
                self.refused.append(_refusal(document, kind or "object", problems, where))
                self.problems += self.refused[-1].lines()
            return
        if isinstance(parsed, MLWorkload):
            self.workloads.append(parsed)
        else:
            self.policies.append(parsed)


def judge(
    tree: Tree,
    policies: Sequence[MLWorkloadPolicy],
    fallback_labels: Mapping[str, str] | None,
    defaults: PlatformDefaults,
) -> list[Result]:
    """Every verdict of the tree: its policies (valid, having parsed), then its workloads, then what did not
    parse. Workloads of one namespace share its quota with each other, as they would in the cluster. While a
    policy of the tree does not parse, no workload is judged: any verdict could change once it is fixed."""
    view = ClusterView(
        policies=[*tree.policies, *policies],
        namespace_labels=tree.namespaces,
        default_labels=fallback_labels,
        usage=[WorkloadGpus.of(workload) for workload in tree.workloads],
    )
    results = [Result(POLICY_KIND, None, policy.name, True) for policy in tree.policies]
    if any(refused.kind == POLICY_KIND for refused in tree.refused):
        return results + tree.refused
    for workload in tree.workloads:
        verdict = admit_in(view, workload, defaults)
        results.append(Result(WORKLOAD_KIND, workload.namespace, workload.name, verdict.allowed,
                              verdict.policy_name, list(verdict.problems)))  # fmt: skip
    return results + tree.refused


def _kind_of(document: Any) -> tuple[str | None, str | None]:
    if not isinstance(document, dict):
        return None, None
    kind, api_version = document.get("kind"), document.get("apiVersion")
    return (kind if isinstance(kind, str) else None), (api_version if isinstance(api_version, str) else None)


def _name_of(document: Mapping[str, Any]) -> str | None:
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return name if isinstance(name, str) else None


def _refusal(document: Any, kind: str, problems: Sequence[Problem], where: str) -> Result:
    metadata = document.get("metadata") if isinstance(document, dict) else None
    metadata = metadata if isinstance(metadata, dict) else {}
    namespace = metadata.get("namespace") if isinstance(metadata.get("namespace"), str) else None
    name = _name_of(document) or "<unnamed>"
    return Result(kind, namespace if kind == WORKLOAD_KIND else None, name, False, None, list(problems), where)
