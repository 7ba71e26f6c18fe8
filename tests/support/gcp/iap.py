"""A fake IAP Admin API for the IAM policies of IAP-secured backend services (roles/iap.httpsResourceAccessor).

It serves what ``iap_v1.IdentityAwareProxyAdminServiceClient(transport="rest")`` (google-cloud-iap 1.x) sends:
``POST /v1/{resource=**}:getIamPolicy`` with the body ``{"options": {"requestedPolicyVersion": 3}}`` and
``POST /v1/{resource=**}:setIamPolicy`` with ``{"policy": {...}}`` (body ``*``: the whole request but the
path's ``resource``; ``$alt=json;enum-encoding=int`` in the query), per the transport's
``_BaseGetIamPolicy`` / ``_BaseSetIamPolicy`` http options (``transports/rest_base.py``). Bodies are parsed
with the request's own proto schema, so an unknown field is a 400 like the real front end's.

Resources: ``projects/P/iap_web/compute/services/S`` for a global backend service and
``projects/P/iap_web/compute-R/services/S`` for a regional one (terraform-provider-google's
``iam_iap_web_backend_service.go`` / ``iam_iap_web_region_backend_service.go``). ``P`` may be the project id
or number and ``S`` the backend service's name or numeric id ("projects/PROJECT_NUMBER/iap_web/compute/
services/BACKEND_SERVICE_ID or BACKEND_SERVICE_NAME", Google's reference quoted in
hashicorp/terraform-provider-google#13537); every spelling reaches the same policy.

Real behaviour reproduced, with where it was confirmed:

- A policy exists per backend service, and only while the backend service exists: GKE's Ingress
  controller creates the backend when the Ingress syncs (``add_backend_service``) and a recreated backend
  starts with an empty policy ("the list of users able to access a specific backend via IAP get wiped
  when the associated backend is recreated", kubernetes/ingress-gce#511; ``delete_backend_service``).
- A backend service that does not exist is 404: "it gives an 404 error in terraform saying that the
  service doesn't exist" (GoogleCloudPlatform/ai-on-gke#83).
- Policies are version 3 (IAP bindings take conditions; Terraform's ``google_iap_web_backend_service_iam_*``
  examples carry ``condition`` blocks, and the provider reads with ``requestedPolicyVersion`` 3). A read
  asking for less than 3 of a policy with conditions shows each conditional binding as
  ``ROLE_withcond_<hash>`` without its condition, as version 1 (https://cloud.google.com/iam/docs/
  troubleshooting-withcond); writing a condition needs version 3 ("Any operation that affects conditional
  role bindings must specify version 3", ``Policy.version`` reference).

Approximations, as for the IAM fake (``iam.py``), whose shapes the IAP API shares but which were not found
for IAP itself: a fresh policy is ``{"version": 1, "etag": "ACAB"}``; each write mints a new etag and a
write with a stale etag is 409 ABORTED "There were concurrent policy changes. ..." (a write without an etag
overwrites); the 404's message is Google's generic "Requested entity was not found."; roles outside
``roles/iap.*``, the basic roles and custom roles are 400 "Role R is not supported for this resource.".
Members are not validated.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from google.iam.v1 import iam_policy_pb2  # type: ignore[import-untyped]
from google.protobuf import json_format  # type: ignore[import-untyped]

from tests.support.gcp.core import Reply, Request, Route, route
from tests.support.gcp.errors import ApiError, Json
from tests.support.gcp.iam import IamPolicy

_R = (
    r"^/v1/projects/(?P<project>[^/]+)/iap_web/compute(?:-(?P<region>[^/]+))?"
    r"/services/(?P<service>[^/:]+)"
)
NOT_FOUND_MESSAGE: Final = "Requested entity was not found."


def default_role_supported(role: str) -> bool:
    """Roles an IAP resource's policy accepts: IAP's own, the basic roles and custom roles (approximation)."""
    return (
        role.startswith("roles/iap.")
        or role in {"roles/owner", "roles/editor", "roles/viewer"}
        or re.fullmatch(r"(projects|organizations)/[^/]+/roles/[^/]+", role) is not None
    )


def iap_resource_not_found() -> ApiError:
    return ApiError("NOT_FOUND", NOT_FOUND_MESSAGE)


def iap_permission_denied() -> ApiError:
    """403 as Google APIs word a caller without the permission ("The caller does not have permission")."""
    return ApiError("PERMISSION_DENIED", "The caller does not have permission")


def _withcond(binding: Json) -> Json:
    """A conditional binding as a version-1 read shows it: the role suffixed with a hash, no condition."""
    digest = hashlib.sha1(json.dumps(binding["condition"], sort_keys=True).encode()).hexdigest()[:20]
    return {"role": f"{binding['role']}_withcond_{digest}", "members": list(binding["members"])}


@dataclass
class BackendService:
    """A Compute Engine backend service as IAP sees it: where it is, its ids, and its IAP policy."""

    project: str
    name: str
    region: str | None
    id: str  # the numeric id Compute Engine assigns
    policy: IamPolicy = field(default_factory=IamPolicy)

    @property
    def resource(self) -> str:
        web_type = f"compute-{self.region}" if self.region else "compute"
        return f"projects/{self.project}/iap_web/{web_type}/services/{self.name}"


class FakeIap:
    """Backend services and their IAP policies; thread-safe.

    ``project_number`` maps a project id to its number, so resources may name either (``FakeGcp`` passes
    the fake GKE's numbering).
    """

    service: Final = "iap"

    def __init__(self, project_number: Callable[[str], str] | None = None) -> None:
        self.lock = threading.RLock()
        self.backends: dict[str, BackendService] = {}  # by resource with project id and name
        self.role_supported: Callable[[str], bool] = default_role_supported
        self._project_number = project_number or (lambda project: project)
        self._ids = itertools.count(4_000_000_000_000_001)
        self._etags = itertools.count(1)

    def reset(self) -> None:
        with self.lock:
            self.backends.clear()
            self.role_supported = default_role_supported

    # --- test-facing state helpers ---------------------------------------------------------------

    def add_backend_service(self, project: str, name: str, region: str | None = None) -> str:
        """The backend service GKE creates when an Ingress syncs, with an empty policy; returns its IAP resource."""
        backend = BackendService(project, name, region, str(next(self._ids)))
        with self.lock:
            self.backends[backend.resource] = backend
        return backend.resource

    def delete_backend_service(self, resource: str) -> None:
        """The Ingress went away: so does the backend service, and its IAP policy with it."""
        with self.lock:
            del self.backends[resource]

    def backend(self, resource: str) -> BackendService:
        with self.lock:
            return self.backends[resource]

    def policy(self, resource: str) -> Json:
        """The policy as the REST API returns it to a version-3 read (etag base64)."""
        with self.lock:
            return self.backends[resource].policy.to_json()

    def members(self, resource: str, role: str) -> list[str]:
        with self.lock:
            bindings = self.backends[resource].policy.bindings
            return [m for b in bindings if b["role"] == role and "condition" not in b for m in b["members"]]

    def set_bindings(self, resource: str, bindings: list[Json]) -> Json:
        """Change the policy as another writer would (new etag), e.g. between a client's read and write."""
        with self.lock:
            policy = self.backends[resource].policy
            policy.bindings = copy.deepcopy(bindings)
            policy.version = 3 if any("condition" in b for b in bindings) else policy.version
            policy.etag = self._next_etag()
            return policy.to_json()

    # --- HTTP ------------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            route("POST", _R + r":getIamPolicy$", "GetIamPolicy", self._get_iam_policy),
            route("POST", _R + r":setIamPolicy$", "SetIamPolicy", self._set_iam_policy),
        ]

    def _backend(self, request: Request) -> BackendService:
        p = request.params
        for backend in self.backends.values():
            if (
                p["project"] in (backend.project, self._project_number(backend.project))
                and p["region"] == backend.region
                and p["service"] in (backend.name, backend.id)
            ):
                return backend
        raise iap_resource_not_found()

    @staticmethod
    def _parse(body: Any, message: Any) -> Any:
        try:
            return json_format.ParseDict(body if isinstance(body, dict) else {}, message)
        except json_format.ParseError as error:
            raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. {error}") from error

    def _get_iam_policy(self, request: Request) -> Reply:
        with self.lock:
            asked = self._parse(request.body, iam_policy_pb2.GetIamPolicyRequest())
            policy = self._backend(request).policy.to_json()
            conditional = any("condition" in b for b in policy.get("bindings", []))
            if conditional and asked.options.requested_policy_version < 3:
                policy["version"] = 1
                policy["bindings"] = [_withcond(b) if "condition" in b else b for b in policy["bindings"]]
            return Reply(policy)

    def _set_iam_policy(self, request: Request) -> Reply:
        with self.lock:
            wanted = self._parse(request.body, iam_policy_pb2.SetIamPolicyRequest()).policy
            current = self._backend(request).policy
            return Reply(current.write(wanted, role_supported=self.role_supported, next_etag=self._next_etag))

    def _next_etag(self) -> bytes:
        return b"\x07\x09" + next(self._etags).to_bytes(6, "big")
