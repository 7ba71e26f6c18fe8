"""The operator: kopf handlers that orchestrate policy, builders and the Kubernetes/GCP adapters."""
