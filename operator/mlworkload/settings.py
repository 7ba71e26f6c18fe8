"""Operator settings: environment variables (api.md's table), each also a `mlworkload run` flag."""

import os
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlworkload.api.meta import DNS1123_LABEL, valid_cidrs, valid_labels
from mlworkload.api.policy import PolicyGcp
from mlworkload.policy.resolve import (
    DEFAULT_KUBERAY_NAMESPACE,
    DEFAULT_KUBERAY_POD_LABELS,
    PlatformDefaults,
    kuberay_operator_peer,
)
from mlworkload.problems import Problem, Refused, problems_from_validation

GCP_VARIABLES = {"project": "MLW_GCP_PROJECT", "location": "MLW_GCP_LOCATION", "cluster": "MLW_GKE_CLUSTER"}


def gcp_from_env(environ: Mapping[str, str] | None = None) -> PolicyGcp | None:
    """The GKE cluster from MLW_GCP_PROJECT / MLW_GCP_LOCATION / MLW_GKE_CLUSTER, if any is set."""
    env = os.environ if environ is None else environ
    values = {field: env[variable] for field, variable in GCP_VARIABLES.items() if env.get(variable)}
    if not values:
        return None
    try:
        return PolicyGcp.model_validate(values)
    except ValidationError as error:
        problems = [Problem(GCP_VARIABLES.get(p.path, p.path), p.message) for p in problems_from_validation(error)]
        raise Refused(problems, subject="environment") from None


class GcpMode(StrEnum):
    LIVE = "live"
    DRY_RUN = "dry-run"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class Role(StrEnum):
    """What one process runs. The chart runs a controller and a webhook Deployment; `all` is both, in one
    process (a laptop, the tests). Split because kopf pauses every watch of a paused peer, indexes
    included, so a standby reconciler could never judge admission: the webhook scales out, the
    controller stays one replica."""

    ALL = "all"
    CONTROLLER = "controller"  # reconcile handlers and the indexes they read; no webhook server
    WEBHOOK = "webhook"  # the indexes, the validators, the readiness probe and the certificate; writes no workload


class WebhookCertificates(StrEnum):
    """Where the webhook's serving certificate comes from."""

    OPERATOR = "operator"  # a Secret the webhook keeps (CA, renewal) and the caBundle it patches
    FILES = "files"  # tls.crt/tls.key in MLW_WEBHOOK_CERT_DIR (cert-manager's Secret, mounted); reloaded on change
    SELF_SIGNED = "self-signed"  # made at start-up, trusted by hand (a laptop, the tests)


GCP_LABEL_VALUE = re.compile(r"[a-z0-9_-]{1,63}")

# Field name -> environment variable; the flag is the field name spelt `--like-this`.
SETTINGS_VARIABLES: dict[str, str] = {
    "namespaces": "MLW_NAMESPACES",
    "gcp_mode": "MLW_GCP_MODE",
    "gke_endpoint": "MLW_GKE_ENDPOINT",
    "iam_endpoint": "MLW_IAM_ENDPOINT",
    "storage_endpoint": "MLW_STORAGE_ENDPOINT",
    "iap_endpoint": "MLW_IAP_ENDPOINT",
    "kuberay_namespace": "MLW_KUBERAY_NAMESPACE",
    "kuberay_pod_labels": "MLW_KUBERAY_POD_LABELS",
    "api_server_cidrs": "MLW_API_SERVER_CIDRS",
    "pool_release_grace_seconds": "MLW_POOL_RELEASE_GRACE_SECONDS",
    "gcp_poll_seconds": "MLW_GCP_POLL_SECONDS",
    "metrics_port": "MLW_METRICS_PORT",
    "webhook_port": "MLW_WEBHOOK_PORT",
    "webhook_cert_dir": "MLW_WEBHOOK_CERT_DIR",
    "webhook_service": "MLW_WEBHOOK_SERVICE",
    "role": "MLW_ROLE",
    "webhook_certificates": "MLW_WEBHOOK_CERTIFICATES",
    "webhook_secret": "MLW_WEBHOOK_SECRET",
    "webhook_configuration": "MLW_WEBHOOK_CONFIGURATION",
    "webhook_certificate_check_seconds": "MLW_WEBHOOK_CERTIFICATE_CHECK_SECONDS",
    "operator_namespace": "POD_NAMESPACE",
    "installation": "MLW_INSTALLATION",
    "health_port": "MLW_HEALTH_PORT",
    "resync_seconds": "MLW_RESYNC_SECONDS",
    "policy_status_seconds": "MLW_POLICY_STATUS_SECONDS",
    "log_format": "MLW_LOG_FORMAT",
}


def _comma_separated(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _key_values(text: str) -> dict[str, str] | str:
    """`k=v,k2=v2` as a dict; left as text (and refused by validation) when an item has no '='."""
    items = _comma_separated(text)
    if not all("=" in item for item in items):
        return text
    return dict(item.partition("=")[::2] for item in items)


def flag_of(field: str) -> str:
    return "--" + field.replace("_", "-")


class OperatorSettings(BaseModel):
    """How `mlworkload run` behaves. Defaults are api.md's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty: all.")
    gcp: PolicyGcp | None = Field(default=None, description="GKE cluster used when no policy names one.")
    gcp_mode: GcpMode | None = Field(default=None, description="live or dry-run; default dry-run without a project.")
    gke_endpoint: str | None = None
    iam_endpoint: str | None = None
    storage_endpoint: str | None = None
    iap_endpoint: str | None = None
    kuberay_namespace: str = Field(
        default=DEFAULT_KUBERAY_NAMESPACE,
        description="Namespace of KubeRay's operator, allowed to the Ray head's dashboard (8265).",
        pattern=DNS1123_LABEL,
        max_length=63,
    )
    kuberay_pod_labels: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_KUBERAY_POD_LABELS),
        description="Labels of KubeRay's operator pods (as its Helm chart sets them), as key=value,...",
        min_length=1,
    )
    api_server_cidrs: list[str] = Field(
        default_factory=list,
        description="Where an autoscaled Ray head reaches the Kubernetes API (443), as CIDRs; empty: nowhere.",
    )
    pool_release_grace_seconds: float = Field(
        default=600, ge=0, description="How long an unused operator-owned node pool lives before deletion."
    )
    gcp_poll_seconds: float = Field(
        default=10, gt=0, description="GKE operation polling interval, and the first retry delay after a GCP failure."
    )
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="0 disables /metrics.")
    webhook_port: int = Field(default=9443, ge=0, le=65535, description="Admission webhook (TLS); 0: any free port.")
    webhook_cert_dir: str | None = Field(
        default=None,
        description="tls.crt/tls.key: read from here (files), written here (operator); none: a temporary directory.",
    )
    webhook_service: str = Field(default="mlworkload-webhook", description="Service in front of the webhook.")
    role: Role = Field(default=Role.ALL, description="all, controller (reconcile) or webhook (admission).")
    webhook_certificates: WebhookCertificates | None = Field(
        default=None,
        description="operator, files or self-signed; default files with MLW_WEBHOOK_CERT_DIR, else self-signed.",
    )
    webhook_secret: str = Field(
        default="mlworkload-webhook-ca", description="Secret the webhook keeps its CA and certificate in (operator)."
    )
    webhook_configuration: str = Field(
        default="mlworkload", description="ValidatingWebhookConfiguration whose caBundle the webhook keeps (operator)."
    )
    webhook_certificate_check_seconds: float = Field(
        default=600, gt=0, description="How often the webhook checks its certificate Secret and caBundle (operator)."
    )
    operator_namespace: str = Field(default="mlworkload-system", description="The operator's own namespace.")
    installation: str = Field(
        default="",
        description="This installation's identity on the GKE node pools it creates (a GCP label value); "
        "default: the operator namespace.",
    )
    health_port: int = Field(default=8081, ge=0, le=65535, description="Liveness probe /healthz; 0 disables.")
    resync_seconds: float = Field(default=300, gt=0, description="Periodic reconcile (drift, status refresh).")
    policy_status_seconds: float = Field(
        default=30,
        gt=0,
        description="How often MLWorkloadPolicy status is refreshed (written on change only).",
    )
    log_format: LogFormat = LogFormat.JSON

    @field_validator("kuberay_pod_labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        return valid_labels(labels)

    @field_validator("installation")
    @classmethod
    def _installation(cls, value: str) -> str:
        """Lowercased; then it must be a GCP label value ([a-z0-9_-], at most 63), as it labels node pools."""
        value = value.strip().lower()
        if value and not GCP_LABEL_VALUE.fullmatch(value):
            raise ValueError(f"{value!r} is not a GCP label value: at most 63 lowercase letters, digits, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _default_installation(self) -> "OperatorSettings":
        if not self.installation:  # a namespace name is always a valid label value (DNS-1123, <= 63)
            object.__setattr__(self, "installation", self.operator_namespace)
        return self

    @field_validator("api_server_cidrs")
    @classmethod
    def _cidrs(cls, cidrs: list[str]) -> list[str]:
        return valid_cidrs(cidrs)

    @model_validator(mode="after")
    def _live_needs_a_cluster(self) -> "OperatorSettings":
        if self.gcp_mode is GcpMode.LIVE and self.gcp is None:
            raise ValueError(
                "live GCP mode needs the GKE cluster: set MLW_GCP_PROJECT, MLW_GCP_LOCATION and MLW_GKE_CLUSTER"
                " (or MLW_GCP_MODE=dry-run)"
            )
        return self

    @model_validator(mode="after")
    def _files_need_a_directory(self) -> "OperatorSettings":
        if self.webhook_certificates is WebhookCertificates.FILES and not self.webhook_cert_dir:
            raise ValueError("webhook certificates from files need MLW_WEBHOOK_CERT_DIR (where tls.crt/tls.key are)")
        return self

    @property
    def platform_defaults(self) -> PlatformDefaults:
        """What these settings supply to workloads whose policy is silent."""
        return PlatformDefaults(
            gcp=self.gcp,
            kuberay_operator=kuberay_operator_peer(self.kuberay_namespace, self.kuberay_pod_labels),
            api_server_cidrs=tuple(self.api_server_cidrs),
        )

    @property
    def effective_gcp_mode(self) -> GcpMode:
        if self.gcp_mode is not None:
            return self.gcp_mode
        return GcpMode.LIVE if self.gcp is not None else GcpMode.DRY_RUN

    @property
    def effective_webhook_certificates(self) -> WebhookCertificates:
        if self.webhook_certificates is not None:
            return self.webhook_certificates
        return WebhookCertificates.FILES if self.webhook_cert_dir else WebhookCertificates.SELF_SIGNED

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> "OperatorSettings":
        """Settings from the environment, then flags (`overrides`, by field name) on top."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            field: env[variable] for field, variable in SETTINGS_VARIABLES.items() if env.get(variable)
        }
        values.update({key: value for key, value in (overrides or {}).items() if value is not None})
        for listed in ("namespaces", "api_server_cidrs"):
            if isinstance(values.get(listed), str):
                values[listed] = _comma_separated(values[listed])
        if isinstance(values.get("kuberay_pod_labels"), str):
            values["kuberay_pod_labels"] = _key_values(values["kuberay_pod_labels"])
        values["gcp"] = gcp_from_env(env)
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problems = [
                Problem(SETTINGS_VARIABLES.get(p.path.split(".")[0], p.path), p.message)
                for p in problems_from_validation(error)
            ]
            raise Refused(problems, subject="settings") from None
