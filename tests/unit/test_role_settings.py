"""The role and webhook-certificate settings: defaults that keep `mlworkload run` on a laptop as it was, and
refusals that name the variable."""

import io

import pytest

from mlworkload.cli import main
from mlworkload.problems import Refused
from mlworkload.settings import OperatorSettings, Role, WebhookCertificates


def test_by_default_one_process_runs_both_roles_with_a_self_signed_certificate() -> None:
    settings = OperatorSettings.load(environ={})
    assert settings.role is Role.ALL
    assert settings.effective_webhook_certificates is WebhookCertificates.SELF_SIGNED
    mounted = OperatorSettings.load(environ={"MLW_WEBHOOK_CERT_DIR": "/etc/tls"})
    assert mounted.effective_webhook_certificates is WebhookCertificates.FILES  # as the chart mounted it before


def test_the_webhook_role_and_its_certificate_from_the_environment_then_flags() -> None:
    environ = {"MLW_ROLE": "webhook", "MLW_WEBHOOK_CERTIFICATES": "operator", "MLW_WEBHOOK_SECRET": "x-webhook-ca",
               "MLW_WEBHOOK_CONFIGURATION": "x", "MLW_WEBHOOK_CERTIFICATE_CHECK_SECONDS": "30"}  # fmt: skip
    settings = OperatorSettings.load({"role": "controller"}, environ)
    assert settings.role is Role.CONTROLLER  # the flag wins
    assert settings.effective_webhook_certificates is WebhookCertificates.OPERATOR
    assert (settings.webhook_secret, settings.webhook_configuration) == ("x-webhook-ca", "x")
    assert settings.webhook_certificate_check_seconds == 30


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"MLW_ROLE": "leader"}, "MLW_ROLE: 'leader' is not one of the allowed values"),
        ({"MLW_WEBHOOK_CERTIFICATES": "certManager"}, "MLW_WEBHOOK_CERTIFICATES: 'certManager' is not one of"),
        ({"MLW_WEBHOOK_CERTIFICATES": "files"}, "need MLW_WEBHOOK_CERT_DIR"),
        ({"MLW_WEBHOOK_CERTIFICATE_CHECK_SECONDS": "0"}, "MLW_WEBHOOK_CERTIFICATE_CHECK_SECONDS: Input should be"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(Refused) as refused:
        OperatorSettings.load(environ=environ)
    assert expected in "\n".join(refused.value.lines())


def test_run_has_a_role_flag() -> None:
    out = io.StringIO()
    assert main(["run", "--help"], out=out) == 0
    assert "--role VALUE" in out.getvalue()
    assert "[MLW_ROLE]" in out.getvalue()


def test_run_refuses_an_unknown_role_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--role", "leader"]) == 1
    assert "MLW_ROLE: 'leader' is not one of the allowed values" in capsys.readouterr().err
