"""The mlworkload.io/v1alpha1 API: pydantic models, the CRDs generated from them, and loading."""
