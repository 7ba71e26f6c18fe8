"""Operator settings from the environment (each also a `mlworkload run` flag, later)."""

import os
from collections.abc import Mapping

from pydantic import ValidationError

from mlworkload.api.policy import PolicyGcp
from mlworkload.problems import Problem, Refused, problems_from_validation


def gcp_from_env(environ: Mapping[str, str] | None = None) -> PolicyGcp | None:
    """The GKE cluster from MLW_GCP_PROJECT / MLW_GCP_LOCATION / MLW_GKE_CLUSTER, if all are set."""
    env = os.environ if environ is None else environ
    names = {"project": "MLW_GCP_PROJECT", "location": "MLW_GCP_LOCATION", "cluster": "MLW_GKE_CLUSTER"}
    values = {field: env[variable] for field, variable in names.items() if env.get(variable)}
    if not values:
        return None
    try:
        return PolicyGcp.model_validate(values)
    except ValidationError as error:
        problems = [Problem(names.get(p.path, p.path), p.message) for p in problems_from_validation(error)]
        raise Refused(problems, subject="environment") from None
