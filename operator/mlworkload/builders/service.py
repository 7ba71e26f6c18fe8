"""ClusterIP Services behind the Ingresses: KubeRay's head Service is headless, and GKE's load
balancer needs a NEG-annotated Service it can target."""

import json

from mlworkload.builders.endpoints import ExposedEndpoint
from mlworkload.builders.metadata import Manifest, object_meta
from mlworkload.policy.resolve import ResolvedWorkload

NEG_ANNOTATION = "cloud.google.com/neg"
BACKEND_CONFIG_ANNOTATION = "cloud.google.com/backend-config"


def build_endpoint_service(resolved: ResolvedWorkload, endpoint: ExposedEndpoint) -> Manifest:
    annotations = {
        NEG_ANNOTATION: json.dumps({"ingress": True}),
        BACKEND_CONFIG_ANNOTATION: json.dumps({"default": endpoint.name}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(resolved, endpoint.name, annotations),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(endpoint.pod_selector),
            "ports": [
                {
                    "name": endpoint.which,
                    "port": endpoint.port,
                    "targetPort": endpoint.port,
                    "protocol": "TCP",
                }
            ],
        },
    }
