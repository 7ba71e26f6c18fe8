"""Names shared by every part of the operator: API coordinates, labels, annotations, reasons.

One place for each string that crosses a boundary (the API server, GCP, the user's terminal),
so that the builders, the controller and the tests can never disagree about it.
"""

from typing import Final

GROUP: Final = "mlworkload.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
WORKLOAD_KIND: Final = "MLWorkload"
POLICY_KIND: Final = "MLWorkloadPolicy"
WORKLOAD_PLURAL: Final = "mlworkloads"
POLICY_PLURAL: Final = "mlworkloadpolicies"

RAY_API_VERSION: Final = "ray.io/v1"

# Ownership. These labels, together with owner references, decide what the operator may touch.
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "mlworkload"
LABEL_WORKLOAD: Final = f"{GROUP}/workload"
LABEL_ROLE: Final = f"{GROUP}/role"  # head | worker | submitter
LABEL_GROUP: Final = f"{GROUP}/group"  # the worker group name, or "head"
LABEL_POOL_SHAPE: Final = f"{GROUP}/pool-shape"
# The policy whose pools a node belongs to (sharing: Policy): a node label its pods select, and a taint only
# they tolerate, so one team's pods never land on another team's nodes.
LABEL_POOL_TENANT: Final = f"{GROUP}/pool-policy"
POOL_TENANT_TAINT_KEY: Final = LABEL_POOL_TENANT
GCP_LABEL_MANAGED_BY: Final = "managed-by"  # GCP labels allow no "/" in keys
GCP_LABEL_POOL_SHAPE: Final = "mlworkload-shape"
GCP_LABEL_POOL_TENANT: Final = "mlworkload-policy"
# Which installation created a pool (settings.installation): only that one ever deletes it.
GCP_LABEL_INSTALLATION: Final = "mlworkload-installation"
# One per other installation whose workloads use a pool: `mlworkload-claim-<hash of its id>`; its creator
# never deletes a pool carrying another installation's claim.
GCP_LABEL_CLAIM_PREFIX: Final = "mlworkload-claim-"

FIELD_MANAGER: Final = "mlworkload-operator"
FINALIZER: Final = f"{GROUP}/cleanup"
ANNOTATION_PREFIX: Final = GROUP
# Set by the node pool collector on a workload whose pool vanished or is being deleted by someone else:
# the change makes kopf reconcile it at once, not at the next resync.
ANNOTATION_RECHECK: Final = f"{GROUP}/recheck"  # a watch event for kopf: see controller/watchdog.py

# KubeRay's own labels on the pods it creates.
RAY_LABEL_NODE_TYPE: Final = "ray.io/node-type"
RAY_LABEL_SERVE: Final = "ray.io/serve"

# GKE scheduling vocabulary.
GKE_ACCELERATOR_LABEL: Final = "cloud.google.com/gke-accelerator"
GKE_SPOT_LABEL: Final = "cloud.google.com/gke-spot"
GKE_COMPUTE_CLASS_LABEL: Final = "cloud.google.com/compute-class"
GPU_RESOURCE: Final = "nvidia.com/gpu"
GPU_TAINT_KEY: Final = "nvidia.com/gpu"
GPU_TAINT_VALUE: Final = "present"
# GKE's own key for spot taints, so that pods also fit spot pools GKE auto-provisions.
SPOT_TAINT_KEY: Final = GKE_SPOT_LABEL
SPOT_TAINT_VALUE: Final = "true"

# Ray ports (KubeRay defaults; the serve port must be named "serve" on a RayService head).
PORT_GCS: Final = 6379
PORT_DASHBOARD: Final = 8265
PORT_CLIENT: Final = 10001
PORT_SERVE: Final = 8000
PORT_METRICS: Final = 8080

# Condition types and reasons on MLWorkload status (machine-readable, PascalCase).
CONDITION_READY: Final = "Ready"
CONDITION_RECONCILING: Final = "Reconciling"
CONDITION_STALLED: Final = "Stalled"
CONDITION_POLICY_ADMITTED: Final = "PolicyAdmitted"
CONDITION_NODE_POOLS_READY: Final = "NodePoolsReady"
CONDITION_IDENTITY_READY: Final = "IdentityReady"
CONDITION_RAY_READY: Final = "RayReady"
CONDITION_ENDPOINTS_READY: Final = "EndpointsReady"
CONDITION_NETWORK_POLICIES_ENFORCED: Final = "NetworkPoliciesEnforced"
# Kueue's admission of a queued workload's Ray object (spec.queue), as the Ray object shows it.
CONDITION_QUEUE_ADMITTED: Final = "QueueAdmitted"
# Present while a node pool is RUNNING_WITH_ERROR (GKE: "partially usable"): the workload may still be Ready.
CONDITION_DEGRADED: Final = "Degraded"

REASON_POLICY_VIOLATION: Final = "PolicyViolation"
REASON_INVALID_SPEC: Final = "InvalidSpec"
REASON_ALLOWED: Final = "Allowed"
REASON_CHILD_CONFLICT: Final = "ChildConflict"
REASON_GCP_NOT_CONFIGURED: Final = "GcpNotConfigured"
REASON_DELETING: Final = "Deleting"
REASON_SUSPENDED: Final = "Suspended"
REASON_IDLE_TIMEOUT: Final = "IdleTimeout"  # the operator suspended an idle Cluster (controller/idle.py)
# The operator suspended a Cluster that ran the policy's lifecycle.maxClusterRuntimeSeconds (controller/idle.py)
REASON_RUNTIME_LIMIT: Final = "RuntimeLimit"
REASON_UP_TO_DATE: Final = "UpToDate"
REASON_NODE_POOL_DEGRADED: Final = "NodePoolDegraded"
# A child's write refused by the Kubernetes API: retried with backoff (ApplyFailed), or Stalled until someone
# fixes the RBAC (Forbidden) or what the object says (Invalid).
REASON_APPLY_FAILED: Final = "ApplyFailed"
REASON_FORBIDDEN: Final = "Forbidden"
REASON_INVALID: Final = "Invalid"
WRITE_FAILURE_REASONS: Final = frozenset({REASON_APPLY_FAILED, REASON_FORBIDDEN, REASON_INVALID})
REASON_READ_FAILED: Final = "KubernetesApiError"  # an Event: a read or the status write failed
REASON_UNTRUSTED_STATUS: Final = "UntrustedStatus"  # an Event: a status entry the operator ignored
# an Event on a deleted workload: a member it had added passes to others, whose status must record it first
REASON_HANDING_OVER: Final = "HandingOver"
REASON_INVALID_POLICY: Final = "InvalidPolicy"  # an Event on a stored policy the operator cannot read
# Kueue holds the queued Ray object suspended until its ClusterQueue has quota (QueueAdmitted False).
REASON_WAITING_FOR_QUOTA: Final = "WaitingForQuota"
REASON_QUEUE_ADMITTED: Final = "Admitted"  # QueueAdmitted True: Kueue admitted (unsuspended) the Ray object
REASON_NO_ENDPOINTS: Final = "NoEndpoints"
REASON_SERVING: Final = "Serving"
REASON_WAITING_FOR_ADDRESS: Final = "WaitingForAddress"
REASON_WAITING_FOR_CERTIFICATE: Final = "WaitingForCertificate"
REASON_WAITING_FOR_BACKEND: Final = "WaitingForBackend"
REASON_NETWORK_POLICIES_ENFORCED: Final = "Enforced"
REASON_NETWORK_POLICIES_NOT_ENFORCED: Final = "NotEnforced"

# Kueue (kueue.x-k8s.io): the labels that put a Ray object in a LocalQueue, with a WorkloadPriorityClass.
KUEUE_LABEL_QUEUE_NAME: Final = "kueue.x-k8s.io/queue-name"
KUEUE_LABEL_PRIORITY_CLASS: Final = "kueue.x-k8s.io/priority-class"
