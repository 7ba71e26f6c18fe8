"""Operator settings: environment variables, flags on top, and errors that name the variable."""

import pytest

from mlworkload.cli import main
from mlworkload.problems import Refused
from mlworkload.settings import GcpMode, LogFormat, OperatorSettings


def test_defaults_are_api_mds() -> None:
    settings = OperatorSettings.load(environ={})
    assert (settings.metrics_port, settings.webhook_port, settings.resync_seconds) == (8080, 9443, 300)
    assert settings.log_format is LogFormat.JSON
    assert settings.namespaces == []
    assert settings.effective_gcp_mode is GcpMode.DRY_RUN  # no project known


def test_environment_then_flags() -> None:
    environ = {"MLW_NAMESPACES": "team-a, team-b,", "MLW_METRICS_PORT": "9000", "MLW_GCP_PROJECT": "my-proj",
               "MLW_GCP_LOCATION": "us-central1", "MLW_GKE_CLUSTER": "ml", "MLW_LOG_FORMAT": "text"}  # fmt: skip
    settings = OperatorSettings.load({"metrics_port": "9100", "webhook_port": None}, environ)
    assert settings.namespaces == ["team-a", "team-b"]
    assert settings.metrics_port == 9100  # the flag wins
    assert settings.webhook_port == 9443  # an unset flag leaves the default
    assert settings.log_format is LogFormat.TEXT
    assert settings.gcp is not None
    assert settings.effective_gcp_mode is GcpMode.LIVE  # a project is known
    assert OperatorSettings.load({"gcp_mode": "dry-run"}, environ).effective_gcp_mode is GcpMode.DRY_RUN


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"MLW_METRICS_PORT": "http"}, "MLW_METRICS_PORT: Input should be a valid integer"),
        ({"MLW_LOG_FORMAT": "xml"}, "MLW_LOG_FORMAT: 'xml' is not one of the allowed values"),
        ({"MLW_GCP_MODE": "maybe"}, "MLW_GCP_MODE: 'maybe' is not one of the allowed values"),
        ({"MLW_RESYNC_SECONDS": "0"}, "MLW_RESYNC_SECONDS: Input should be greater than 0"),
        ({"MLW_API_SERVER_CIDRS": "172.16.0.2"}, "MLW_API_SERVER_CIDRS: '172.16.0.2' is not a CIDR"),
        ({"MLW_KUBERAY_NAMESPACE": "Kube Ray"}, "MLW_KUBERAY_NAMESPACE: 'Kube Ray' does not match"),
        ({"MLW_KUBERAY_POD_LABELS": "app"}, "MLW_KUBERAY_POD_LABELS: Input should be a valid dictionary"),
        ({"MLW_KUBERAY_POD_LABELS": "bad key=x"}, "MLW_KUBERAY_POD_LABELS: label key 'bad key'"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(Refused) as caught:
        OperatorSettings.load(environ=environ)
    assert any(line.startswith(f"settings: {expected}") for line in caught.value.lines()), caught.value.lines()


def test_run_refuses_bad_settings_before_starting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLW_HEALTH_PORT", "99999")
    assert main(["run", "--log-format", "text"]) == 1
    assert "settings: MLW_HEALTH_PORT: Input should be less than or equal to 65535" in capsys.readouterr().err


def test_live_gcp_mode_without_a_cluster_is_refused_naming_the_variables() -> None:
    with pytest.raises(Refused) as refused:
        OperatorSettings.load(environ={"MLW_GCP_MODE": "live"})
    assert "MLW_GCP_PROJECT, MLW_GCP_LOCATION and MLW_GKE_CLUSTER" in "\n".join(refused.value.lines())


def test_network_settings_become_platform_defaults() -> None:
    settings = OperatorSettings.load(environ={"MLW_KUBERAY_NAMESPACE": "ray-system",
                                              "MLW_KUBERAY_POD_LABELS": "app=kuberay,tier=ops",
                                              "MLW_API_SERVER_CIDRS": "172.16.0.2/32, 10.0.0.0/28"})  # fmt: skip
    defaults = settings.platform_defaults
    assert defaults.api_server_cidrs == ("172.16.0.2/32", "10.0.0.0/28")
    assert defaults.kuberay_operator.to_dict() == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ray-system"}},
        "podSelector": {"matchLabels": {"app": "kuberay", "tier": "ops"}},
    }
