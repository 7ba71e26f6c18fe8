"""A fake Cloud Storage JSON API for buckets' IAM policies (read-modify-write with etags).

Serves what ``google.cloud.storage`` sends for ``client.bucket(name).get_iam_policy(requested_policy_version=3)``
(``GET /storage/v1/b/B/iam?optionsRequestedPolicyVersion=3``), ``bucket.set_iam_policy(policy)``
(``PUT /storage/v1/b/B/iam`` with the policy, its ``etag`` and ``resourceId``) and ``client.get_bucket`` /
``bucket.exists()`` / ``reload()`` (``GET /storage/v1/b/B``, with ``fields=name`` for ``exists``).

Why the fake is our own and not the ``gcp-storage-emulator`` package: its route table
(``HANDLERS`` in oittaa/gcp-storage-emulator ``src/gcp_storage_emulator/server.py``) covers buckets and
objects only, with no ``/b/B/iam`` endpoints, so it cannot model policy etags at all.

Behaviour reproduced, with where it was confirmed:

- The policy carries an ``etag`` (base64 of a small protobuf, ``CAE=`` for a new bucket) that changes on
  every write; a PUT whose etag is not the current one is ``412 Precondition Failed`` with reason
  ``conditionNotMet`` (hashicorp/terraform-provider-google#7853, magic-modules#3278); google-cloud-storage
  raises ``google.api_core.exceptions.PreconditionFailed``. A PUT without an etag overwrites. The JSON API's
  error body has ``code``, ``message`` and ``errors[]`` but no ``status``.
- A policy without conditions is returned as version 1 even when version 3 was requested
  (googleapis/python-storage#52: ``get_iam_policy(requested_policy_version=3) == get_iam_policy()``);
  ``resourceId`` is ``projects/_/buckets/B`` (googleapis/google-cloud-cpp#5958).
- Missing bucket: 404 "The specified bucket does not exist." (``notFound``).

Note for call counting: google-cloud-storage 3.x starts a background ``GET /storage/v1/b/B`` (its bucket
metadata cache, ``_bucket_metadata_cache.py``) the first time a bucket-scoped call such as
``get_iam_policy`` is traced, unless ``DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA=true``. The fake
answers it; count IAM calls by ``rpc`` (GetIamPolicy / SetIamPolicy), never all storage calls.
Also, ``set_iam_policy`` retries 429/5xx by itself (with backoff from 1 s) because the body has an etag.
"""

from __future__ import annotations

import copy
import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from tests.support.gcp.core import Reply, Request, Route, route
from tests.support.gcp.errors import ApiError, Json, b64

_B = r"^/storage/v1/b/(?P<bucket>[^/]+)"
_POLICY_FIELDS: Final = frozenset({"kind", "resourceId", "version", "etag", "bindings"})


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def policy_etag(generation: int) -> str:
    """The etag format Cloud Storage uses for bucket IAM policies: base64 of field 1 = generation."""
    return b64(b"\x08" + _varint(generation))


def precondition_failed() -> ApiError:
    return ApiError(
        "FAILED_PRECONDITION", "Precondition Failed", http_status=412, reason="conditionNotMet", with_status_field=False
    )


def bucket_not_found() -> ApiError:
    return ApiError("NOT_FOUND", "The specified bucket does not exist.", with_status_field=False)


def storage_permission_denied(principal: str, permission: str) -> ApiError:
    """403 as Cloud Storage words it for a caller without ``permission`` on the bucket."""
    return ApiError(
        "PERMISSION_DENIED",
        f"{principal} does not have {permission} access to the Google Cloud Storage bucket. "
        f"Permission '{permission}' denied on resource (or it may not exist).",
        with_status_field=False,
    )


def storage_invalid(message: str) -> ApiError:
    return ApiError("INVALID_ARGUMENT", message, reason="invalid", with_status_field=False)


@dataclass
class Bucket:
    name: str
    project: str
    project_number: str
    location: str = "US-CENTRAL1"
    version: int = 1
    bindings: list[Json] = field(default_factory=list)
    generation: int = 1
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    def policy(self) -> Json:
        body: Json = {
            "kind": "storage#policy",
            "resourceId": f"projects/_/buckets/{self.name}",
            "version": self.version,
            "etag": policy_etag(self.generation),
        }
        if self.bindings:
            body["bindings"] = copy.deepcopy(self.bindings)
        return body

    def resource(self) -> Json:
        return {
            "kind": "storage#bucket",
            "selfLink": f"https://www.googleapis.com/storage/v1/b/{self.name}",
            "id": self.name,
            "name": self.name,
            "projectNumber": self.project_number,
            "metageneration": "1",
            "location": self.location,
            "locationType": "region",
            "storageClass": "STANDARD",
            "etag": "CAE=",
            "timeCreated": self.created,
            "updated": self.created,
            "iamConfiguration": {
                "uniformBucketLevelAccess": {"enabled": True},
                "publicAccessPrevention": "enforced",
            },
        }


class FakeStorage:
    """Buckets and their IAM policies; thread-safe."""

    service: Final = "storage"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.buckets: dict[str, Bucket] = {}
        self._numbers = itertools.count(200_000_000_001)

    def reset(self) -> None:
        with self.lock:
            self.buckets.clear()

    # --- test-facing state helpers ---------------------------------------------------------------

    def add_bucket(self, name: str, project: str = "my-proj", *, location: str = "US-CENTRAL1") -> Bucket:
        """A bucket with the default policy of a new bucket (legacy roles for the project's basic roles)."""
        bucket = Bucket(name, project, str(next(self._numbers)), location=location)
        bucket.bindings = [
            {
                "role": "roles/storage.legacyBucketOwner",
                "members": [f"projectEditor:{project}", f"projectOwner:{project}"],
            },
            {"role": "roles/storage.legacyBucketReader", "members": [f"projectViewer:{project}"]},
        ]
        with self.lock:
            self.buckets[name] = bucket
        return bucket

    def policy(self, name: str) -> Json:
        with self.lock:
            return self.buckets[name].policy()

    def members(self, name: str, role: str) -> list[str]:
        with self.lock:
            return [m for b in self.buckets[name].bindings if b["role"] == role for m in b.get("members", [])]

    def set_bindings(self, name: str, bindings: list[Json]) -> Json:
        """Change the policy as another writer would (new etag)."""
        with self.lock:
            bucket = self.buckets[name]
            bucket.bindings = copy.deepcopy(bindings)
            bucket.generation += 1
            return bucket.policy()

    # --- HTTP ------------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            route("GET", _B + r"$", "GetBucket", self._get_bucket),
            route("GET", _B + r"/iam$", "GetIamPolicy", self._get_iam_policy),
            route("PUT", _B + r"/iam$", "SetIamPolicy", self._set_iam_policy),
        ]

    def _bucket(self, request: Request) -> Bucket:
        bucket = self.buckets.get(request.params["bucket"])
        if bucket is None:
            raise bucket_not_found()
        return bucket

    def _get_bucket(self, request: Request) -> Reply:
        with self.lock:
            resource = self._bucket(request).resource()
            fields = request.query.get("fields")
            if fields:
                wanted = {name.strip() for name in fields.split(",")}
                resource = {key: value for key, value in resource.items() if key in wanted}
            return Reply(resource)

    def _get_iam_policy(self, request: Request) -> Reply:
        with self.lock:
            bucket = self._bucket(request)
            requested = request.query.get("optionsRequestedPolicyVersion", "1")
            if not requested.isdigit():
                raise storage_invalid(f"Invalid value for optionsRequestedPolicyVersion: {requested}")
            if bucket.version >= 3 and int(requested) < 3:
                raise storage_invalid(
                    "The requested policy version is lower than the version of the policy, which has IAM Conditions; "
                    "request version 3."
                )
            return Reply(bucket.policy())

    def _set_iam_policy(self, request: Request) -> Reply:
        with self.lock:
            bucket = self._bucket(request)
            body = request.body if isinstance(request.body, dict) else {}
            unknown = set(body) - _POLICY_FIELDS
            if unknown:
                raise storage_invalid(f"Invalid JSON payload received. Unknown name {sorted(unknown)[0]!r}.")
            etag = body.get("etag")
            if etag and etag != policy_etag(bucket.generation):
                raise precondition_failed()
            bindings: list[Json] = []
            for binding in body.get("bindings", []):
                if not isinstance(binding, dict) or not isinstance(binding.get("role"), str):
                    raise storage_invalid("Invalid binding: each binding needs a role and members.")
                members = list(dict.fromkeys(binding.get("members", [])))
                if members:
                    bindings.append({**copy.deepcopy(binding), "members": members})
            has_conditions = any("condition" in binding for binding in bindings)
            version = int(body.get("version", 1) or 1)
            if has_conditions and version < 3:
                raise storage_invalid("IAM Conditions require policy version 3.")
            bucket.bindings = bindings
            bucket.version = 3 if has_conditions else 1
            bucket.generation += 1
            return Reply(bucket.policy())
