"""Start the operator: logging, metrics, then kopf with the handlers in mlworkload.controller."""

import os

import kopf
from prometheus_client import start_http_server

from mlworkload.kopf_startup import wake_only_on_change
from mlworkload.metrics import register_inventory
from mlworkload.settings import LogFormat, OperatorSettings, WebhookCertificates


def run_operator(settings: OperatorSettings) -> None:
    """Blocks until the operator stops (SIGTERM / SIGINT)."""
    kopf.configure(log_format=kopf.LogFormat.JSON if settings.log_format is LogFormat.JSON else kopf.LogFormat.FULL)
    register_inventory()
    wake_only_on_change()  # a restart over thousands of indexed objects is otherwise quadratic in kopf
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    # The handlers module reads its timers' intervals when the decorators run, at import.
    os.environ["MLW_RESYNC_SECONDS"] = str(settings.resync_seconds)
    os.environ["MLW_GCP_POLL_SECONDS"] = str(settings.gcp_poll_seconds)
    from mlworkload.controller.handlers import registry_for  # noqa: PLC0415

    # The handlers of this process's role (MLW_ROLE / --role): the chart runs a controller and webhook replicas.
    keep_certificates = settings.effective_webhook_certificates is WebhookCertificates.OPERATOR
    kopf.run(
        registry=registry_for(settings.role, keep_certificates),
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz" if settings.health_port else None,
        memo=kopf.Memo(config=settings),
    )
