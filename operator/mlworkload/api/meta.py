"""Kubernetes shapes the API embeds: object metadata, label selectors, network peers."""

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import ConfigDict, Field, StrictInt, field_validator, model_validator

from mlworkload.api.base import ApiModel, cel, with_cel

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


def valid_labels(labels: dict[str, str]) -> dict[str, str]:
    """The labels, if the API server takes every key and value; ValueError with a line per problem otherwise."""
    problems = [problem for key, value in labels.items() if (problem := label_problem(key, value))]
    if problems:
        raise ValueError("\n".join(problems))
    return labels


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
        return valid_labels(labels)

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

    model_config = with_cel(
        cel(
            "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0"
            " : !has(self.values) || size(self.values) == 0",
            "values: In and NotIn need at least one value; Exists and DoesNotExist take none",
        )
    )

    key: str = Field(description="The label key the selector applies to.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] = Field(
        default_factory=list,
        description="Values for In and NotIn (non-empty there); empty for Exists and DoesNotExist.",
    )

    @model_validator(mode="after")
    def _as_the_api_server_checks_it(self) -> Self:
        """metav1 ValidateLabelSelectorRequirement: values only with In/NotIn, and then at least one."""
        problems = [problem for value in self.values if (problem := label_problem(self.key, value))]
        if not self.values and (problem := label_problem(self.key, "")):
            problems.append(problem)
        with_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if with_values and not self.values:
            problems.append(f"operator {self.operator.value} needs at least one value")
        if not with_values and self.values:
            problems.append(f"operator {self.operator.value} takes no values")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class LabelSelector(KubernetesShape):
    """A Kubernetes label selector (metav1.LabelSelector). An empty selector matches everything."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels that must all be equal.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Requirements that must all hold."
    )

    @field_validator("match_labels")
    @classmethod
    def _labels_are_valid(cls, labels: dict[str, str]) -> dict[str, str]:
        return valid_labels(labels)

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


# Go's netip.ParsePrefix, which the API server uses: a decimal prefix length without leading zeros, no
# netmask, no IPv6 zone (Python's ip_network would take 10.0.0.0/255.0.0.0 and fe80::%eth0/64).
_PREFIX_LENGTH = re.compile(r"0|[1-9][0-9]{0,2}")


def cidr_problem(text: str) -> str | None:
    """Why `text` is not a CIDR as NetworkPolicies take it (address/prefix), or None."""
    address, _, length = text.partition("/")
    try:
        if "%" in address or not _PREFIX_LENGTH.fullmatch(length):
            raise ValueError(text)
        ipaddress.ip_network(f"{address}/{length}", strict=False)
    except ValueError:
        return f"{text!r} is not a CIDR: write it as address/prefix, e.g. 10.0.0.0/8 or 2001:db8::/32"
    return None


def valid_cidrs(cidrs: list[str]) -> list[str]:
    """The CIDRs, if each is one; ValueError with a line per problem otherwise."""
    problems = [problem for cidr in cidrs if (problem := cidr_problem(cidr))]
    if problems:
        raise ValueError("\n".join(problems))
    return cidrs


class IPBlock(KubernetesShape):
    """An IP range, as in networking.k8s.io/v1 IPBlock."""

    model_config = with_cel(
        cel("isCIDR(self.cidr)", "cidr must be a CIDR: address/prefix, e.g. 10.0.0.0/8", ".cidr"),
        cel("!has(self.except) || self.except.all(c, isCIDR(c))", "except: every entry must be a CIDR", ".except"),
    )

    cidr: str = Field(description="A CIDR such as 10.0.0.0/8 or 2001:db8::/32.", max_length=64)
    # Bounded, so the CRD's CEL over the list stays within the API server's cost limit.
    except_: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, alias="except", max_length=32, description="CIDRs inside `cidr` to leave out."
    )

    @model_validator(mode="after")
    def _as_the_api_server_checks_it(self) -> Self:
        """networking ValidateIPBlock: valid CIDRs, each `except` strictly inside `cidr`."""
        if problem := cidr_problem(self.cidr):
            raise ValueError(problem)
        outer = ipaddress.ip_network(self.cidr, strict=False)
        problems = []
        for text in self.except_:
            if problem := cidr_problem(text):
                problems.append(f"except: {problem}")
                continue
            inner = ipaddress.ip_network(text, strict=False)
            if inner.version != outer.version or not inner.subnet_of(outer) or inner == outer:  # type: ignore[arg-type]
                problems.append(f"except: {text!r} must lie strictly inside {self.cidr!r}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


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

    model_config = with_cel(
        cel(
            "has(self.podSelector) || has(self.namespaceSelector) || has(self.ipBlock)",
            "a peer needs podSelector, namespaceSelector or ipBlock (an empty peer selects nothing)",
        ),
        cel(
            "!has(self.ipBlock) || !(has(self.podSelector) || has(self.namespaceSelector))",
            "ipBlock cannot be combined with podSelector or namespaceSelector; use two peers",
        ),
    )

    pod_selector: LabelSelector | None = Field(default=None, description="Pods selected by labels.")
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Namespaces selected by labels (all pods in them, or those podSelector picks).",
    )
    ip_block: IPBlock | None = Field(default=None, description="An IP range; exclusive with the selectors.")

    @model_validator(mode="after")
    def _one_kind_of_peer(self) -> Self:
        """networking ValidateNetworkPolicyPeer: something must be named, and an ipBlock stands alone."""
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if self.ip_block is None and not selectors:
            raise ValueError("a peer needs podSelector, namespaceSelector or ipBlock (an empty peer selects nothing)")
        if self.ip_block is not None and selectors:
            raise ValueError("ipBlock cannot be combined with podSelector or namespaceSelector; use two peers")
        return self
