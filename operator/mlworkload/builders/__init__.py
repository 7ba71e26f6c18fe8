"""Pure builders: a resolved MLWorkload in, Kubernetes manifests and a GCP plan out."""

from mlworkload.builders.desired import build_gcp_plan, build_objects

__all__ = ["build_gcp_plan", "build_objects"]
