"""GCP resource labels on node pools: which keys are the operator's or Google's, and what a policy may set.

GCP labels (https://cloud.google.com/compute/docs/labeling-resources#requirements): keys of 1 to 63
characters, lowercase letters, digits, `_` and `-`, starting with a letter; values of up to 63 characters of
the same alphabet (empty allowed). This module keeps to ASCII, which is what billing exports and gcloud
filters handle without surprises.

Keys the policy may never set, because something else owns them:

- `managed-by` and every `mlworkload-` key: the operator's ownership, installation and claim labels
  (`mlworkload.gcp.pools` decides who may delete a pool by them);
- every `goog-` key: Google's. GKE adds some to a pool's `config.resourceLabels` itself
  (`goog-gke-node-pool-provisioning-model`, which Terraform users learn to ignore in their diffs), and
  Google reserves the prefix. The operator keeps whatever of these a pool carries, untouched.
"""

import re
from collections.abc import Mapping
from typing import Final

from mlworkload.constants import GCP_LABEL_MANAGED_BY

GCP_LABEL_KEY: Final = re.compile(r"[a-z][a-z0-9_-]{0,62}")
GCP_LABEL_VALUE: Final = re.compile(r"[a-z0-9_-]{0,63}")
GCP_LABEL_VALUE_PATTERN: Final = f"^{GCP_LABEL_VALUE.pattern}$"
RESERVED_LABEL_PREFIXES: Final = ("mlworkload-", "goog-")
MAX_POLICY_LABELS: Final = 32  # of GCP's 64 per resource: the operator's own and GKE's need room too


def reserved_label(key: str) -> bool:
    """A key the operator or Google owns: kept as the pool has it, never set from a policy."""
    return key == GCP_LABEL_MANAGED_BY or key.startswith(RESERVED_LABEL_PREFIXES)


def policy_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels of a pool that are not reserved: those a policy sets."""
    return {key: value for key, value in labels.items() if not reserved_label(key)}


def label_problems(labels: Mapping[object, object]) -> list[str]:
    """What is wrong with labels a policy wants on its pools, each naming the key and how to fix it."""
    problems = []
    for key, value in labels.items():
        if not isinstance(key, str) or not GCP_LABEL_KEY.fullmatch(key):
            problems.append(
                f"{key!r} is not a GCP label key: 1-63 lowercase letters, digits, '_' or '-', starting with a letter"
            )
        elif reserved_label(key):
            owner = "Google's" if key.startswith("goog-") else "the operator's own (it marks the pools it owns)"
            problems.append(f"{key!r} is {owner}: choose a key that does not start with goog- or mlworkload-"
                            " and is not managed-by")  # fmt: skip
        if isinstance(value, str) and not GCP_LABEL_VALUE.fullmatch(value):
            problems.append(
                f"{key!r}: {value!r} is not a GCP label value: at most 63 lowercase letters, digits, '_' or '-'"
            )
    return problems
