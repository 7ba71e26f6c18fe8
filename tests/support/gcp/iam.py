"""A fake IAM API for the IAM policy of Google service accounts (roles/iam.workloadIdentityUser bindings).

Served two ways over the same state, because the two real clients differ:

- ``google.cloud.iam_admin_v1.IAMClient`` (google-cloud-iam 2.x) has *no REST transport*: its transport
  registry holds only "grpc" and "grpc_asyncio" (``iam_admin_v1/services/iam/client.py``). So the fake
  also runs a gRPC server for ``google.iam.admin.v1.IAM/GetIamPolicy`` and ``.../SetIamPolicy``; see
  ``clients.iam_client`` for an insecure channel to it. Over gRPC a stale etag raises
  ``google.api_core.exceptions.Aborted``.
- The REST form, ``POST /v1/projects/P/serviceAccounts/EMAIL:getIamPolicy`` and ``:setIamPolicy``
  (https://cloud.google.com/iam/docs/reference/rest/v1/projects.serviceAccounts/setIamPolicy), for an
  adapter that calls IAM over HTTP itself; there a stale etag is HTTP 409, which api-core raises as
  ``Conflict`` (status ABORTED in the body).

Real behaviour reproduced, with where it was confirmed:

- A fresh account's policy is ``{"version": 1, "etag": "ACAB"}``; each write mints a new etag. A write whose
  etag differs from the current one is 409 ABORTED "There were concurrent policy changes. Please retry
  the whole read-modify-write with exponential backoff. The request's ETag '...' did not match the current
  policy's ETag '...'." (pulumi/pulumi-gcp#1028, for service account IAM policies; reason ``aborted`` in
  vmware-archive/terraforming-gcp#132). A write without an etag overwrites unconditionally.
- A missing account is 403 "Permission 'iam.serviceAccounts.getIamPolicy' denied on resource (or it may
  not exist)." with ErrorInfo reason IAM_PERMISSION_DENIED, domain iam.googleapis.com
  (terraform-provider-google#3349, #11208; crossplane-contrib/provider-upjet-gcp#411), not 404.
- A workload-identity member whose pool does not exist (no GKE cluster with Workload Identity in that
  project yet) is 400 "Identity Pool does not exist (P.svc.id.goog). Please check that you specified a
  valid resource name as returned in the `name` attribute in the configuration API." (``badRequest``;
  terraform-google-kubernetes-engine#916, google/kctf#193). ``FakeGcp`` registers a pool for every
  Workload Identity cluster it is given.
- A member naming a service account that does not exist is 400 "Service account X does not exist."
  (GoogleCloudPlatform/generative-ai#944, Liscor/terraform_dataform_ga4_pipeline#1).

Approximations: roles outside the set a service account accepts are refused with "Role R is not supported
for this resource." (wording as commonly reported, not confirmed in the corpus); conditions need version 3.
"""

from __future__ import annotations

import copy
import itertools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from google.iam.v1 import iam_policy_pb2, policy_pb2  # type: ignore[import-untyped]
from google.protobuf import json_format  # type: ignore[import-untyped]

from tests.support.gcp.core import Reply, Request, Route, route
from tests.support.gcp.errors import ApiError, Json, b64

EMPTY_ETAG: Final = b"\x00\x20\x01"  # "ACAB", the etag of a policy that was never set
GRPC_SERVICE: Final = "google.iam.admin.v1.IAM"
RESOURCE: Final = re.compile(r"projects/(?P<project>[^/]+)/serviceAccounts/(?P<account>[^/:]+)")
_SA = r"^/v1/projects/(?P<project>[^/]+)/serviceAccounts/(?P<account>[^/:]+)"
_WORKLOAD_MEMBER: Final = re.compile(
    r"serviceAccount:(?P<pool>[^\[\]]+\.svc\.id\.goog)\[(?P<ns>[^/\]]+)/(?P<ksa>[^\]]+)\]"
)
_SA_MEMBER: Final = re.compile(r"serviceAccount:(?P<email>[^@\s]+@[^@\s]+\.iam\.gserviceaccount\.com)")


def default_role_supported(role: str) -> bool:
    """Roles a service account's own policy accepts: IAM's roles, basic roles and custom roles."""
    return (
        role.startswith("roles/iam.")
        or role in {"roles/owner", "roles/editor", "roles/viewer"}
        or re.fullmatch(r"(projects|organizations)/[^/]+/roles/[^/]+", role) is not None
    )


def _c_escape(data: bytes) -> str:
    """Bytes as the IAM error message prints etags: printable ASCII, octal escapes otherwise."""
    return "".join(chr(b) if 32 <= b < 127 and b not in (39, 92) else f"\\{b:03o}" for b in data)


def iam_permission_denied(permission: str) -> ApiError:
    return ApiError(
        "PERMISSION_DENIED", f"Permission '{permission}' denied on resource (or it may not exist)."
    ).with_error_info("IAM_PERMISSION_DENIED", "iam.googleapis.com", {"permission": permission})


@dataclass
class IamPolicy:
    """One resource's IAM policy, as the IAM-style APIs (IAM, IAP) keep it."""

    version: int = 1
    bindings: list[Json] = field(default_factory=list)
    etag: bytes = EMPTY_ETAG

    def to_json(self) -> Json:
        body: Json = {"version": self.version}
        if self.bindings:
            body["bindings"] = copy.deepcopy(self.bindings)
        body["etag"] = b64(self.etag)
        return body

    def write(
        self,
        wanted: Any,
        *,
        role_supported: Callable[[str], bool],
        next_etag: Callable[[], bytes],
        validate_member: Callable[[str], None] = lambda member: None,
    ) -> Json:
        """SetIamPolicy: refused with 409 ABORTED when `wanted` (a policy_pb2.Policy) carries a stale etag, with
        400 for an unsupported role or a condition below version 3; else replaces the bindings, new etag."""
        if wanted.etag and wanted.etag != self.etag:
            raise ApiError(
                "ABORTED",
                "There were concurrent policy changes. Please retry the whole read-modify-write with exponential "
                f"backoff. The request's ETag '{_c_escape(wanted.etag)}' did not match the current policy's ETag "
                f"'{_c_escape(self.etag)}'.",
            )
        bindings: list[Json] = []
        for binding in wanted.bindings:
            if not role_supported(binding.role):
                raise ApiError("INVALID_ARGUMENT", f"Role {binding.role} is not supported for this resource.")
            members = list(dict.fromkeys(binding.members))
            for member in members:
                validate_member(member)
            if not members:
                continue
            entry: Json = {"role": binding.role, "members": members}
            if binding.HasField("condition"):
                entry["condition"] = json_format.MessageToDict(binding.condition)
            bindings.append(entry)
        has_conditions = any("condition" in binding for binding in bindings)
        if has_conditions and wanted.version < 3:
            raise ApiError("INVALID_ARGUMENT", "IAM Conditions require policy version 3.")
        self.bindings = bindings
        self.version = 3 if has_conditions else max(wanted.version, 1)
        self.etag = next_etag()
        return self.to_json()


@dataclass(frozen=True)
class GrpcMethod:
    rpc: str
    request_type: Any
    response_type: Any
    handler: Callable[[Request], Reply]


class FakeIam:
    """Service accounts and their IAM policies; thread-safe; served over REST and gRPC."""

    service: Final = "iam"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.accounts: dict[str, IamPolicy] = {}
        self.workload_pools: set[str] = set()
        self.validate_workload_pools = True
        self.validate_member_accounts = True
        self.role_supported: Callable[[str], bool] = default_role_supported
        self._etags = itertools.count(1)

    def reset(self) -> None:
        with self.lock:
            self.accounts.clear()
            self.workload_pools.clear()
            self.validate_workload_pools = True
            self.validate_member_accounts = True
            self.role_supported = default_role_supported

    # --- test-facing state helpers ---------------------------------------------------------------

    def add_service_account(self, email: str) -> None:
        with self.lock:
            self.accounts.setdefault(email, IamPolicy())

    def policy(self, email: str) -> Json:
        """The account's policy as the REST API returns it (etag base64)."""
        with self.lock:
            return self.accounts[email].to_json()

    def members(self, email: str, role: str) -> list[str]:
        with self.lock:
            return [m for b in self.accounts[email].bindings if b["role"] == role for m in b.get("members", [])]

    def set_bindings(self, email: str, bindings: list[Json]) -> Json:
        """Change the policy as another writer would (new etag), e.g. between a client's read and write."""
        with self.lock:
            policy = self.accounts[email]
            policy.bindings = copy.deepcopy(bindings)
            policy.etag = self._next_etag()
            return policy.to_json()

    # --- HTTP and gRPC ---------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            route("POST", _SA + r":getIamPolicy$", "GetIamPolicy", self._get_iam_policy),
            route("POST", _SA + r":setIamPolicy$", "SetIamPolicy", self._set_iam_policy),
        ]

    def grpc_methods(self) -> list[GrpcMethod]:
        return [
            GrpcMethod("GetIamPolicy", iam_policy_pb2.GetIamPolicyRequest, policy_pb2.Policy, self._get_iam_policy),
            GrpcMethod("SetIamPolicy", iam_policy_pb2.SetIamPolicyRequest, policy_pb2.Policy, self._set_iam_policy),
        ]

    @staticmethod
    def grpc_params(body: Json) -> dict[str, str]:
        """Path parameters of a gRPC request, from its ``resource`` field."""
        match = RESOURCE.fullmatch(str(body.get("resource", "")))
        if match is None:
            raise ApiError("INVALID_ARGUMENT", f"Invalid resource name: {body.get('resource', '')!r}.")
        return match.groupdict()

    def _account(self, request: Request, permission: str) -> IamPolicy:
        policy = self.accounts.get(request.params["account"])
        if policy is None:
            raise iam_permission_denied(permission)
        return policy

    def _get_iam_policy(self, request: Request) -> Reply:
        with self.lock:
            return Reply(self._account(request, "iam.serviceAccounts.getIamPolicy").to_json())

    def _set_iam_policy(self, request: Request) -> Reply:
        with self.lock:
            current = self._account(request, "iam.serviceAccounts.setIamPolicy")
            body = request.body if isinstance(request.body, dict) else {}
            try:
                wanted = json_format.ParseDict(body.get("policy", {}), policy_pb2.Policy(), ignore_unknown_fields=False)
            except json_format.ParseError as error:
                raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. {error}") from error
            return Reply(
                current.write(wanted, role_supported=self.role_supported, next_etag=self._next_etag,
                              validate_member=self._validate_member)
            )  # fmt: skip

    def _validate_member(self, member: str) -> None:
        workload = _WORKLOAD_MEMBER.fullmatch(member)
        if workload is not None:
            pool = workload.group("pool")
            if self.validate_workload_pools and pool not in self.workload_pools:
                raise ApiError(
                    "INVALID_ARGUMENT",
                    f"Identity Pool does not exist ({pool}). Please check that you specified a valid resource name "
                    "as returned in the `name` attribute in the configuration API.",
                )
            return
        account = _SA_MEMBER.fullmatch(member)
        if account is not None and self.validate_member_accounts and account.group("email") not in self.accounts:
            raise ApiError("INVALID_ARGUMENT", f"Service account {account.group('email')} does not exist.")

    def _next_etag(self) -> bytes:
        return b"\x07\x06" + next(self._etags).to_bytes(6, "big")
