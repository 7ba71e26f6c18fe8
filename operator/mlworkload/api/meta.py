"""Kubernetes shapes the API embeds: object metadata, label selectors, network peers."""

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StrictInt, field_validator

from mlworkload.api.base import ApiModel

DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DNS1035_RE = re.compile(DNS1035_LABEL)

DnsLabel = Annotated[str, Field(pattern=DNS1123_LABEL, min_length=1, max_length=63)]


class KubernetesShape(ApiModel):
    """A Kubernetes API shape embedded in ours: written back out without empty defaults."""

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True)


def is_dns1035_label(name: str, max_length: int = 63) -> bool:
    return len(name) <= max_length and bool(_DNS1035_RE.match(name))


_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS1123_SUBDOMAIN_RE = re.compile(DNS1123_SUBDOMAIN)
_DNS1123_LABEL_RE = re.compile(DNS1123_LABEL)


def label_problem(key: str, value: str) -> str | None:
    """Why a label cannot exist in Kubernetes (the API server's rules), or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN_RE.match(prefix)):
        return f"label key {key!r}: the prefix must be a DNS subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return f"label key {key!r}: the name must be 1-63 alphanumerics, '-', '_' or '.'"
    if len(value) > 63 or not _LABEL_NAME.match(value):
        return f"label {key}={value!r}: the value must be at most 63 alphanumerics, '-', '_' or '.'"
    return None


class ObjectMeta(ApiModel):
    """The parts of metadata the operator reads. Everything else the API server sets is ignored."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("namespace")
    @classmethod
    def _namespace_is_a_label(cls, namespace: str | None) -> str | None:
        if namespace is not None and (len(namespace) > 63 or not _DNS1123_LABEL_RE.match(namespace)):
            raise ValueError(f"{namespace!r} is not a DNS-1123 label (lowercase letters, digits and '-')")
        return namespace

    @field_validator("labels")
    @classmethod
    def _labels_are_valid(cls, labels: dict[str, str]) -> dict[str, str]:
        problems = [problem for key, value in labels.items() if (problem := label_problem(key, value))]
        if problems:
            raise ValueError("\n".join(problems))
        return labels

    name: str = ""
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    deletion_timestamp: str | None = None


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(KubernetesShape):
    """One matchExpressions entry, as in metav1.LabelSelectorRequirement."""

    key: str = Field(description="The label key the selector applies to.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] = Field(
        default_factory=list,
        description="Values for In and NotIn (non-empty there); empty for Exists and DoesNotExist.",
    )


class LabelSelector(KubernetesShape):
    """A Kubernetes label selector (metav1.LabelSelector). An empty selector matches everything."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels that must all be equal.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Requirements that must all hold."
    )

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        return all(_requirement_holds(requirement, labels) for requirement in self.match_expressions)


def _requirement_holds(requirement: LabelSelectorRequirement, labels: dict[str, str]) -> bool:
    present = requirement.key in labels
    match requirement.operator:
        case SelectorOperator.IN:
            return present and labels[requirement.key] in requirement.values
        case SelectorOperator.NOT_IN:
            return not present or labels[requirement.key] not in requirement.values
        case SelectorOperator.EXISTS:
            return present
        case SelectorOperator.DOES_NOT_EXIST:
            return not present


class IPBlock(KubernetesShape):
    """An IP range, as in networking.k8s.io/v1 IPBlock."""

    cidr: str = Field(description="A CIDR such as 10.0.0.0/8 or 2001:db8::/32.")
    except_: list[str] = Field(default_factory=list, alias="except", description="CIDRs inside `cidr` to leave out.")


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class PeerPort(KubernetesShape):
    """A port a peer may reach, as in networking.k8s.io/v1 NetworkPolicyPort (numbers only)."""

    port: StrictInt = Field(ge=1, le=65535, description="Port number.")
    protocol: Protocol = Field(default=Protocol.TCP, description="TCP, UDP or SCTP. Default TCP.")


class NetworkPolicyPeer(KubernetesShape):
    """A traffic peer, as in networking.k8s.io/v1 NetworkPolicyPeer."""

    pod_selector: LabelSelector | None = Field(default=None, description="Pods selected by labels.")
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Namespaces selected by labels (all pods in them, or those podSelector picks).",
    )
    ip_block: IPBlock | None = Field(default=None, description="An IP range; exclusive with the selectors.")
