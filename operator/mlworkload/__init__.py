"""mlworkload: one MLWorkload object -> a KubeRay cluster, job or service on GKE, under policy."""

__version__ = "0.1.0"
