"""The strict schema validator in tests/support/schemas.py is not vacuous: it accepts real objects and rejects
unknown fields, wrong types, bad metadata, CEL-rule violations and unknown kinds, naming the JSON path."""

from __future__ import annotations

import copy
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support import schemas
from tests.support.schemas import CelRuleUnsupportedError, assert_valid, validate_object

# ------------------------------------------------------------------------------------------------ fixtures


def raycluster() -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {
            "name": "demo",
            "namespace": "team-a",
            "labels": {"app.kubernetes.io/name": "ray", "mlworkload.io/workload": "demo"},
            "annotations": {"mlworkload.io/spec-hash": "abc123"},
        },
        "spec": {
            "rayVersion": "2.49.0",
            "enableInTreeAutoscaling": True,
            "headGroupSpec": {
                "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
                "serviceType": "ClusterIP",
                "template": {
                    "metadata": {"labels": {"ray.io/role": "head"}},
                    "spec": {
                        "serviceAccountName": "ray",
                        "containers": [
                            {
                                "name": "ray-head",
                                "image": "rayproject/ray:2.49.0",
                                "ports": [
                                    {"containerPort": 6379, "name": "gcs"},
                                    {"containerPort": 8265, "name": "dashboard"},
                                ],
                                "resources": {
                                    "requests": {"cpu": "2", "memory": "8Gi"},
                                    "limits": {"cpu": 2, "memory": "8Gi"},
                                },
                                "env": [{"name": "RAY_LOG_TO_STDERR", "value": "1"}],
                                "volumeMounts": [{"name": "logs", "mountPath": "/tmp/ray"}],
                            }
                        ],
                        "volumes": [{"name": "logs", "emptyDir": {}}],
                        "nodeSelector": {"cloud.google.com/compute-class": "ml-gpu"},
                        "tolerations": [
                            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        ],
                    },
                },
            },
            "workerGroupSpecs": [
                {
                    "groupName": "gpu",
                    "replicas": 1,
                    "minReplicas": 0,
                    "maxReplicas": 4,
                    "rayStartParams": {},
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "ray-worker",
                                    "image": "rayproject/ray:2.49.0-gpu",
                                    "resources": {
                                        "requests": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": 1},
                                        "limits": {"nvidia.com/gpu": 1},
                                    },
                                }
                            ]
                        }
                    },
                }
            ],
        },
    }


def minimal_raycluster() -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "mini"},
        "spec": {
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {
                    "spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.49.0"}]},
                },
            }
        },
    }


def rayjob() -> dict[str, Any]:
    cluster = raycluster()
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": "train", "namespace": "team-a"},
        "spec": {
            "entrypoint": "python train.py",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 600,
            "rayClusterSpec": cluster["spec"],
        },
    }


def service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "demo-head", "namespace": "team-a", "labels": {"app": "ray"}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"ray.io/cluster": "demo", "ray.io/node-type": "head"},
            "ports": [{"name": "dashboard", "port": 8265, "targetPort": "dashboard", "protocol": "TCP"}],
        },
    }


def network_policy() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "demo-ray", "namespace": "team-a"},
        "spec": {
            "podSelector": {"matchLabels": {"ray.io/cluster": "demo"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"ray.io/cluster": "demo"}}}],
                    "ports": [{"protocol": "TCP", "port": 6379}, {"port": "dashboard"}],
                }
            ],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
        },
    }


def ingress() -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "demo-dashboard", "namespace": "team-a"},
        "spec": {
            "ingressClassName": "gce",
            "rules": [
                {
                    "host": "demo.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "demo-head", "port": {"number": 8265}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def service_account() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "ray",
            "namespace": "team-a",
            "annotations": {"iam.gke.io/gcp-service-account": "ray@proj.iam.gserviceaccount.com"},
        },
        "automountServiceAccountToken": False,
    }


def backend_config() -> dict[str, Any]:
    return {
        "apiVersion": "cloud.google.com/v1",
        "kind": "BackendConfig",
        "metadata": {"name": "demo-dashboard", "namespace": "team-a"},
        "spec": {
            "iap": {"enabled": True, "oauthclientCredentials": {"secretName": "iap-oauth"}},
            "healthCheck": {
                "checkIntervalSec": 15,
                "timeoutSec": 5,
                "healthyThreshold": 1,
                "unhealthyThreshold": 2,
                "type": "HTTP",
                "requestPath": "/api/version",
                "port": 8265,
            },
            "timeoutSec": 3600,
            "connectionDraining": {"drainingTimeoutSec": 60},
            "securityPolicy": {"name": "platform-armor"},
            "logging": {"enable": True, "sampleRate": 0.5},
        },
    }


def compute_class() -> dict[str, Any]:
    return {
        "apiVersion": "cloud.google.com/v1",
        "kind": "ComputeClass",
        "metadata": {"name": "ml-gpu"},
        "spec": {
            "priorities": [
                {"machineFamily": "g2", "spot": True, "gpu": {"type": "nvidia-l4", "count": 1}},
                {
                    "machineType": "a2-highgpu-1g",
                    "gpu": {"type": "nvidia-tesla-a100", "count": 1, "driverVersion": "latest"},
                },
                {"machineFamily": "n4", "minCores": 16, "minMemoryGb": 64},
                {"nodepools": ["reserved-gpu-pool"]},
            ],
            "nodePoolAutoCreation": {"enabled": True},
            "whenUnsatisfiable": "DoNotScaleUp",
            "activeMigration": {"optimizeRulePriority": True},
        },
    }


def errors_of(obj: dict[str, Any], **kwargs: Any) -> str:
    errors = validate_object(obj, **kwargs)
    assert errors, "expected the validator to reject the object"
    return "\n".join(errors)


# ------------------------------------------------------------------------------------------------ KubeRay


def test_minimal_raycluster_is_valid() -> None:
    assert validate_object(minimal_raycluster()) == []


def test_typical_raycluster_and_rayjob_are_valid() -> None:
    assert validate_object(raycluster()) == []
    assert validate_object(rayjob()) == []


def test_raycluster_undeclared_field_fails_naming_its_path() -> None:
    obj = raycluster()
    obj["spec"]["headGroupSpec"]["bogus"] = True
    assert validate_object(obj) == [
        "spec.headGroupSpec.bogus: unknown field (not declared in the schema; the API server would prune it)"
    ]


def test_raycluster_undeclared_field_deep_in_pod_template_fails() -> None:
    obj = raycluster()
    obj["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["gpuCount"] = 1
    assert "spec.workerGroupSpecs[0].template.spec.containers[0].gpuCount: unknown field" in errors_of(obj)


def test_raycluster_undeclared_top_level_and_metadata_fields_fail() -> None:
    obj = minimal_raycluster()
    obj["extra"] = {}
    obj["metadata"]["labelz"] = {"a": "b"}
    text = errors_of(obj)
    assert "extra: unknown field" in text
    assert "metadata.labelz: unknown field" in text


def test_raycluster_wrong_type_fails() -> None:
    obj = raycluster()
    obj["spec"]["workerGroupSpecs"][0]["replicas"] = "3"
    obj["spec"]["enableInTreeAutoscaling"] = "true"
    text = errors_of(obj)
    assert 'spec.workerGroupSpecs[0].replicas: expected integer, got string "3"' in text
    assert 'spec.enableInTreeAutoscaling: expected boolean, got string "true"' in text


def test_float_is_not_an_integer() -> None:
    obj = raycluster()
    obj["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 4.0
    assert "spec.workerGroupSpecs[0].maxReplicas: expected integer, got number 4.0" in errors_of(obj)


def test_null_in_non_nullable_field_fails() -> None:
    obj = raycluster()
    obj["spec"]["rayVersion"] = None
    assert "spec.rayVersion: expected string, got null" in errors_of(obj)


def test_int32_range_is_enforced() -> None:
    obj = raycluster()
    obj["spec"]["workerGroupSpecs"][0]["replicas"] = 2**31
    assert "spec.workerGroupSpecs[0].replicas: 2147483648 is not a valid int32" in errors_of(obj)


def test_int_or_string_quantities() -> None:
    obj = raycluster()
    requests = obj["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    requests["cpu"] = 2
    requests["memory"] = "512Mi"
    assert validate_object(obj) == []
    requests["memory"] = "lots"
    requests["cpu"] = [2]
    text = errors_of(obj)
    assert "containers[0].resources.requests.memory: 'lots' does not match" in text
    assert "containers[0].resources.requests.cpu: expected integer or string, got array [2]" in text


def test_missing_required_field_fails() -> None:
    obj = minimal_raycluster()
    del obj["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["name"]
    assert "spec.headGroupSpec.template.spec.containers[0].name: required field is missing" in errors_of(obj)
    del obj["spec"]["headGroupSpec"]
    assert "spec.headGroupSpec: required field is missing" in errors_of(obj)


def test_required_field_with_a_default_may_be_omitted() -> None:
    # minReplicas/maxReplicas are required in the CRD but have defaults the API server fills in first.
    obj = raycluster()
    del obj["spec"]["workerGroupSpecs"][0]["minReplicas"]
    del obj["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    assert validate_object(obj) == []


def test_enum_is_enforced() -> None:
    obj = rayjob()
    obj["spec"]["rayClusterSpec"]["autoscalerOptions"] = {"upscalingMode": "Conservative"}
    assert validate_object(obj) == []
    obj["spec"]["rayClusterSpec"]["autoscalerOptions"]["upscalingMode"] = "Eager"
    assert 'spec.rayClusterSpec.autoscalerOptions.upscalingMode: "Eager" is not one of' in errors_of(obj)


def test_list_map_keys_must_be_unique() -> None:
    obj = raycluster()
    container = obj["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "RAY_LOG_TO_STDERR", "value": "0"})
    assert "containers[0].env[1]: duplicate entry (name='RAY_LOG_TO_STDERR')" in errors_of(obj)


def test_metadata_is_checked_like_the_api_server_does() -> None:
    obj = minimal_raycluster()
    obj["metadata"] = {
        "name": "Demo_Cluster",
        "labels": {"team": "a/b", "-bad": "x"},
        "annotations": {"ok.example.com/x": "y"},
    }
    text = errors_of(obj)
    assert "metadata.name: 'Demo_Cluster' is not valid for a RayCluster" in text
    assert 'metadata.labels.team: invalid label value "a/b"' in text
    assert 'metadata.labels["-bad"]: invalid label key' in text
    del obj["metadata"]
    assert validate_object(obj) == ["metadata: required object is missing"]


def test_metadata_name_is_required() -> None:
    obj = minimal_raycluster()
    obj["metadata"] = {"generateName": "demo-"}
    assert validate_object(obj) == ["metadata.name: required field is missing"]


# ---------------------------------------------------------------------------------------------------- CEL


def test_cel_rule_rejects_invalid_managed_by() -> None:
    obj = raycluster()
    obj["spec"]["managedBy"] = "ray.io/kuberay-operator"
    assert validate_object(obj) == []
    obj["spec"]["managedBy"] = "someone-else"
    assert validate_object(obj) == [
        "spec.managedBy: the managedBy field value must be either 'ray.io/kuberay-operator' or "
        "'kueue.x-k8s.io/multikueue' (x-kubernetes-validations rule: "
        "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue'])"
    ]


def test_cel_rules_of_rayjob_deletion_strategy() -> None:
    obj = rayjob()
    rule = {"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED"}}
    obj["spec"]["deletionStrategy"] = {"deletionRules": [rule]}
    assert validate_object(obj) == []
    obj["spec"]["deletionStrategy"]["onSuccess"] = {"policy": "DeleteCluster"}
    assert "spec.deletionStrategy: legacy policies (onSuccess/onFailure) and deletionRules" in errors_of(obj)
    obj["spec"]["deletionStrategy"] = {"deletionRules": [{"policy": "DeleteCluster", "condition": {}}]}
    text = errors_of(obj)
    assert "spec.deletionStrategy.deletionRules[0].condition: the deletion condition requires either" in text


def test_cel_transition_rule_only_runs_on_update() -> None:
    old = raycluster()
    old["spec"]["managedBy"] = "ray.io/kuberay-operator"
    new = copy.deepcopy(old)
    new["spec"]["managedBy"] = "kueue.x-k8s.io/multikueue"
    assert validate_object(new) == []  # create: no oldSelf, transition rules are skipped
    assert validate_object(new, old=old) == [
        "spec.managedBy: the managedBy field is immutable (x-kubernetes-validations rule: self == oldSelf)"
    ]
    assert validate_object(old, old=old) == []


def test_every_shipped_cel_rule_is_evaluable() -> None:
    for api_version, kind in [
        ("ray.io/v1", "RayCluster"),
        ("ray.io/v1", "RayJob"),
        ("ray.io/v1", "RayService"),
        ("cloud.google.com/v1", "BackendConfig"),
        ("cloud.google.com/v1", "ComputeClass"),
        ("v1", "Service"),
    ]:
        assert schemas.unsupported_cel_rules(api_version, kind) == [], (api_version, kind)


def _write_crd(directory: Path, rule: str) -> None:
    (directory / "ray.io_rayclusters.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: apiextensions.k8s.io/v1
            kind: CustomResourceDefinition
            metadata:
              name: rayclusters.ray.io
            spec:
              group: ray.io
              names: {{kind: RayCluster, plural: rayclusters}}
              scope: Namespaced
              versions:
              - name: v1
                served: true
                storage: true
                schema:
                  openAPIV3Schema:
                    type: object
                    properties:
                      apiVersion: {{type: string}}
                      kind: {{type: string}}
                      metadata: {{type: object}}
                      spec:
                        type: object
                        properties:
                          rayVersion:
                            type: string
                            x-kubernetes-validations:
                            - rule: {rule!r}
                              message: bad rayVersion
            """
        )
    )


def test_kuberay_crds_dir_env_var_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_crd(tmp_path, "self.startsWith('2.')")
    monkeypatch.setenv(schemas.KUBERAY_CRDS_ENV, str(tmp_path))
    assert schemas.kuberay_crds_dir() == tmp_path
    obj: dict[str, Any] = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "x"},
        "spec": {},
    }
    assert validate_object(obj) == []
    obj["spec"]["rayVersion"] = "1.0"
    assert validate_object(obj) == [
        "spec.rayVersion: bad rayVersion (x-kubernetes-validations rule: self.startsWith('2.'))"
    ]


def test_rule_with_a_function_cel_python_lacks_fails_loudly(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _write_crd(tmp_path, "self.split('.').size() == 3")
    monkeypatch.setenv(schemas.KUBERAY_CRDS_ENV, str(tmp_path))
    obj: dict[str, Any] = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "x"},
        "spec": {},
    }
    assert validate_object(obj) == []  # the rule does not apply: its field is absent
    obj["spec"]["rayVersion"] = "2.49.0"
    expected = r"properties\.rayVersion.*lacks the function\(s\) split"
    with pytest.raises(CelRuleUnsupportedError, match=expected):
        validate_object(obj)
    assert len(schemas.unsupported_cel_rules("ray.io/v1", "RayCluster")) == 1


def test_missing_kuberay_crds_fail_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(schemas.KUBERAY_CRDS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="KUBERAY_CRDS_DIR"):
        validate_object(minimal_raycluster())


# ----------------------------------------------------------------------------------------- built-in kinds


@pytest.mark.parametrize("factory", [service, network_policy, ingress, service_account])
def test_valid_builtin_objects_pass(factory: Any) -> None:
    assert validate_object(factory()) == []


def test_more_builtin_kinds_pass() -> None:
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "b"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "ray:reader"},
            "rules": [{"apiGroups": ["ray.io"], "resources": ["rayclusters"], "verbs": ["get", "list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "ray-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "ray:reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "ray", "namespace": "team-a"}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "operator"},
            "spec": {
                "selector": {"matchLabels": {"app": "op"}},
                "template": {
                    "metadata": {"labels": {"app": "op"}},
                    "spec": {"containers": [{"name": "op", "image": "op:1"}]},
                },
            },
        },
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "mlworkloads.mlworkload.io"},
            "spec": {
                "group": "mlworkload.io",
                "names": {"kind": "MLWorkload", "plural": "mlworkloads"},
                "scope": "Namespaced",
                "versions": [
                    {
                        "name": "v1alpha1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                                "x-kubernetes-validations": [{"rule": "true"}],
                            }
                        },
                    }
                ],
            },
        },
    ]
    for obj in objects:
        assert validate_object(obj) == [], obj["kind"]


def test_invalid_service_fails() -> None:
    obj = service()
    obj["spec"]["ports"][0]["port"] = "8265"
    obj["spec"]["clusterIp"] = "None"
    text = errors_of(obj)
    assert 'spec.ports[0].port: expected integer, got string "8265"' in text
    assert "spec.clusterIp: unknown field" in text
    obj = service()
    obj["metadata"]["name"] = "1-head"  # Service names are DNS-1035 labels
    assert "metadata.name: '1-head' is not valid for a Service" in errors_of(obj)


def test_invalid_network_policy_fails() -> None:
    obj = network_policy()
    obj["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabel"] = {"a": "b"}
    obj["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"] = 10
    text = errors_of(obj)
    assert "spec.ingress[0].from[0].podSelector.matchLabel: unknown field" in text
    assert "spec.egress[0].to[0].ipBlock.cidr: expected string, got integer 10" in text


def test_invalid_ingress_fails() -> None:
    obj = ingress()
    path = obj["spec"]["rules"][0]["http"]["paths"][0]
    path["backend"] = {"serviceName": "demo-head", "servicePort": 8265}  # the old extensions/v1beta1 shape
    obj["spec"]["rules"][0]["host"] = ["demo.example.com"]
    text = errors_of(obj)
    assert "spec.rules[0].http.paths[0].backend.serviceName: unknown field" in text
    assert "spec.rules[0].http.paths[0].backend.servicePort: unknown field" in text
    assert "spec.rules[0].host: expected string or null, got array" in text


def test_invalid_service_account_fails() -> None:
    obj = service_account()
    obj["automountServiceAccountToken"] = "no"
    obj["imagePullSecret"] = [{"name": "x"}]
    text = errors_of(obj)
    assert 'automountServiceAccountToken: expected boolean or null, got string "no"' in text
    assert "imagePullSecret: unknown field" in text


def test_builtin_format_checks() -> None:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"k": "not base64!"},
    }
    assert 'data.k: "not base64!" is not a valid byte' in errors_of(obj)
    obj["data"]["k"] = "aGVsbG8="
    assert validate_object(obj) == []


# ---------------------------------------------------------------------------------------------------- GKE


def test_valid_backend_config_passes() -> None:
    assert validate_object(backend_config()) == []
    minimal = {"apiVersion": "cloud.google.com/v1", "kind": "BackendConfig", "metadata": {"name": "b"}}
    assert validate_object(minimal) == []


def test_invalid_backend_config_fails() -> None:
    obj = backend_config()
    obj["spec"]["healthCheck"]["path"] = "/healthz"
    obj["spec"]["timeoutSec"] = "3600"
    del obj["spec"]["iap"]["enabled"]
    del obj["spec"]["iap"]["oauthclientCredentials"]["secretName"]
    text = errors_of(obj)
    assert "spec.healthCheck.path: unknown field" in text
    assert 'spec.timeoutSec: expected integer, got string "3600"' in text
    assert "spec.iap.enabled: required field is missing" in text
    assert "spec.iap.oauthclientCredentials.secretName: required field is missing" in text


def test_valid_compute_class_passes() -> None:
    assert validate_object(compute_class()) == []


def test_invalid_compute_class_fails() -> None:
    obj = compute_class()
    obj["spec"]["whenUnsatisfiable"] = "ScaleUpIfPossible"
    obj["spec"]["priorities"][0]["gpu"]["driver"] = "latest"
    obj["spec"]["priorities"][1]["gpu"]["driverVersion"] = "newest"
    obj["spec"]["nodePoolAutoCreation"] = {"enabled": "yes"}
    text = errors_of(obj)
    assert 'spec.whenUnsatisfiable: "ScaleUpIfPossible" is not one of' in text
    assert "spec.priorities[0].gpu.driver: unknown field" in text
    assert 'spec.priorities[1].gpu.driverVersion: "newest" is not one of' in text
    assert 'spec.nodePoolAutoCreation.enabled: expected boolean, got string "yes"' in text


def test_compute_class_cel_rules() -> None:
    obj = compute_class()
    obj["spec"]["priorities"][2]["machineType"] = "n4-standard-16"
    obj["spec"]["priorities"][3]["spot"] = True
    text = errors_of(obj)
    assert "spec.priorities[2]: MachineFamily and MachineType cannot be set together" in text
    assert "spec.priorities[2]: MachineType cannot be set together with MinCores/MinMemoryGb" in text
    assert "spec.priorities[3]: Nodepool field cannot be set along with other fields" in text


def test_namespace_on_cluster_scoped_kind_fails() -> None:
    obj = compute_class()
    obj["metadata"]["namespace"] = "team-a"
    assert validate_object(obj) == [
        "metadata.namespace: ComputeClass is cluster-scoped; the API server would drop the namespace"
    ]


def test_compute_class_requires_spec() -> None:
    obj = compute_class()
    del obj["spec"]
    assert validate_object(obj) == ["spec: required field is missing"]


# ------------------------------------------------------------------------------------- dispatch & helpers


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("example.com/v1", "Widget"),
        ("ray.io/v1alpha1", "RayCluster"),
        ("ray.io/v1", "RayCronJob"),
        ("networking.gke.io/v1", "Ingress"),  # same first label as networking.k8s.io: must not match
        ("v1", "Servic"),
    ],
)
def test_unknown_kind_fails(api_version: str, kind: str) -> None:
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}}
    assert validate_object(obj) == [f"no schema for {api_version}/{kind}"]


def test_missing_api_version_or_kind_fails() -> None:
    assert validate_object({"kind": "Service", "metadata": {"name": "x"}}) == [
        "(root): apiVersion and kind must be non-empty strings"
    ]


def test_assert_valid() -> None:
    assert_valid(raycluster())
    obj = service()
    obj["spec"]["bogus"] = 1
    obj["spec"]["ports"][0]["port"] = "x"
    with pytest.raises(AssertionError) as excinfo:
        assert_valid(obj)
    message = str(excinfo.value)
    assert "v1/Service 'demo-head' is not valid (2 problem(s))" in message
    assert "spec.bogus: unknown field" in message
    assert "spec.ports[0].port: expected integer" in message


def test_validate_object_does_not_mutate_its_input() -> None:
    obj = raycluster()
    obj["spec"]["managedBy"] = "ray.io/kuberay-operator"
    del obj["spec"]["workerGroupSpecs"][0]["minReplicas"]
    snapshot = copy.deepcopy(obj)
    validate_object(obj)
    assert obj == snapshot


# ------------------------------------------------------------------------- fast path agrees with jsonschema


def _mutations(obj: dict[str, Any], rng: random.Random, count: int) -> list[dict[str, Any]]:
    """Random single-point corruptions (and some harmless edits) of ``obj``."""
    replacements: list[Any] = ["x", "", 7, -1, 2**40, 1.5, 3.0, True, None, [], {}, [1], {"z": 1}]
    out = []
    for _ in range(count):
        mutated = copy.deepcopy(obj)
        containers: list[Any] = []

        def collect(node: Any, containers: list[Any] = containers) -> None:
            if isinstance(node, dict):
                containers.append(node)
                for value in node.values():
                    collect(value)
            elif isinstance(node, list):
                if node:
                    containers.append(node)
                for value in node:
                    collect(value)

        collect(mutated)
        target = rng.choice(containers)
        action = rng.randrange(4)
        if isinstance(target, dict) and target:
            key = rng.choice(list(target))
            if action == 0:
                del target[key]
            elif action == 1:
                target[f"x{rng.randrange(10)}"] = rng.choice(replacements)
            else:
                target[key] = copy.deepcopy(rng.choice(replacements))
        elif isinstance(target, list):
            index = rng.randrange(len(target))
            if action == 0:
                target.append(copy.deepcopy(target[index]))
            else:
                target[index] = copy.deepcopy(rng.choice(replacements))
        out.append(mutated)
    return out


@pytest.mark.parametrize(
    "factory", [raycluster, rayjob, service, network_policy, ingress, backend_config, compute_class]
)
def test_fast_path_agrees_with_jsonschema(factory: Any) -> None:
    obj = factory()
    bundle = schemas._bundle_for(obj["apiVersion"], obj["kind"])
    assert bundle is not None
    assert bundle.fast is not None, "the compiled fast path should cover this schema"
    rng = random.Random(f"{obj['kind']}-seed")
    rejected = 0
    for mutated in [obj, *_mutations(obj, rng, 150)]:
        expected = bundle.validator.is_valid(mutated)
        assert bundle.fast(mutated) == expected, mutated
        rejected += not expected
    assert rejected > 50  # the mutations really exercise the failure side
