"""IAM bindings: one member in one role on a Google service account, a bucket or an IAP-secured backend service
(`iap.py`), added and removed exactly.

All three APIs are read-modify-write with an etag: a write whose etag went stale (someone else changed
the policy meanwhile) is refused (409 ABORTED for service accounts and IAP, 412 for buckets) and the whole
cycle is retried. Only the one member is touched; every other binding and member stays as it was.
"""

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

from google.cloud import iam_admin_v1
from google.iam.v1 import iam_policy_pb2, options_pb2, policy_pb2  # type: ignore[import-untyped]

from mlworkload.gcp.errors import FailureKind, GcpError, classify
from mlworkload.gcp.plan import IamBinding
from mlworkload.gcp.retry import Backoff
from mlworkload.metrics import GCP_API_ERRORS

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
STALE_ETAG_ATTEMPTS: Final = 5
BUCKET_PREFIX: Final = "projects/_/buckets/"
IAP_WEB: Final = "/iap_web/"  # in every IAP resource name, and in no service account's or bucket's


# One member to add (True) or remove (False); a batch of them always shares one resource.
Change = tuple[IamBinding, bool]


class IamPolicies(Protocol):
    """Synchronous IAM policy access for one kind of resource."""

    def update(self, changes: Sequence[Change]) -> set[IamBinding]:
        """Apply the changes to one resource's policy in one read-modify-write; the bindings that changed."""
        ...


def _guarded(api: str, call: Callable[[], _T]) -> _T:
    try:
        return call()
    except Exception as error:  # every client failure leaves as a classified GcpError
        failure = classify(error)
        GCP_API_ERRORS.labels(api=api, reason=failure.kind.value).inc()
        raise failure from error


def _one_resource(changes: Sequence[Change]) -> str:
    resources = {binding.resource for binding, _ in changes}
    if len(resources) != 1:
        raise ValueError(f"one IAM policy update is for one resource, not {sorted(resources)}")
    return resources.pop()


def _read_modify_write(api: str, change: Callable[[], set[IamBinding]]) -> set[IamBinding]:
    """Run one read-modify-write cycle, again from the read when the etag went stale."""
    for attempt in range(1, STALE_ETAG_ATTEMPTS + 1):
        try:
            return _guarded(api, change)
        except GcpError as error:
            if error.kind is not FailureKind.STALE or attempt == STALE_ETAG_ATTEMPTS:
                raise
            logger.info("IAM policy changed concurrently, retrying (%d/%d)", attempt, STALE_ETAG_ATTEMPTS)
    raise AssertionError("unreachable")


class StandardPolicies:
    """IAM policies through a client with the standard google.iam.v1 GetIamPolicy/SetIamPolicy methods."""

    def __init__(self, client: Any, api: str) -> None:
        self._client = client
        self._api = api  # label in mlworkload_gcp_api_errors_total

    def _policy(self, resource: str) -> Any:
        """Version 3, so a conditional binding someone else made is read whole and written back unchanged."""
        request = iam_policy_pb2.GetIamPolicyRequest(
            resource=resource, options=options_pb2.GetPolicyOptions(requested_policy_version=3)
        )
        return self._client.get_iam_policy(request=request)

    def update(self, changes: Sequence[Change]) -> set[IamBinding]:
        resource = _one_resource(changes)

        def change() -> set[IamBinding]:
            policy = self._policy(resource)
            changed = {binding for binding, present in changes if _edit_proto(policy, binding, present)}
            if changed:  # the policy carries the etag it was read with: a concurrent write is refused
                self._client.set_iam_policy(
                    request=iam_policy_pb2.SetIamPolicyRequest(resource=resource, policy=policy)
                )
            return changed

        return _read_modify_write(self._api, change)


class ServiceAccountPolicies(StandardPolicies):
    """IAM policies of Google service accounts (google-cloud-iam; gRPC is its only transport)."""

    def __init__(self, client: iam_admin_v1.IAMClient) -> None:
        super().__init__(client, "iam")


def _edit_proto(policy: Any, binding: IamBinding, present: bool) -> bool:
    """Add or remove the member in the unconditional binding of the role; False when nothing changes."""
    for entry in policy.bindings:
        if entry.role != binding.role or entry.HasField("condition"):
            continue
        members = list(entry.members)
        if present == (binding.member in members):
            return False
        if present:
            entry.members.append(binding.member)
        else:
            entry.members.remove(binding.member)
            if not entry.members:
                policy.bindings.remove(entry)
        return True
    if not present:
        return False
    policy.bindings.append(policy_pb2.Binding(role=binding.role, members=[binding.member]))
    return True


class BucketPolicies:
    """IAM policies of Cloud Storage buckets (google-cloud-storage, policy version 3)."""

    def __init__(self, client: Any) -> None:  # google.cloud.storage.Client ships no type information
        self._client = client

    def _policy(self, resource: str) -> tuple[Any, Any]:
        bucket = self._client.bucket(resource.removeprefix(BUCKET_PREFIX))
        return bucket, bucket.get_iam_policy(requested_policy_version=3)

    def update(self, changes: Sequence[Change]) -> set[IamBinding]:
        resource = _one_resource(changes)

        def change() -> set[IamBinding]:
            bucket, policy = self._policy(resource)
            changed = {binding for binding, present in changes if _edit_dicts(policy.bindings, binding, present)}
            if changed:
                policy.version = 3
                bucket.set_iam_policy(policy)  # sends the etag it read: a concurrent change is a 412
            return changed

        return _read_modify_write("storage", change)


def _edit_dicts(bindings: list[dict[str, Any]], binding: IamBinding, present: bool) -> bool:
    for entry in bindings:
        if entry["role"] != binding.role or entry.get("condition"):
            continue
        members = set(entry["members"])
        if present == (binding.member in members):
            return False
        entry["members"] = members | {binding.member} if present else members - {binding.member}
        if not entry["members"]:
            bindings.remove(entry)
        return True
    if not present:
        return False
    bindings.append({"role": binding.role, "members": {binding.member}})
    return True


class RoutedPolicies:
    """Buckets to Cloud Storage, IAP resources (backend services) to IAP, everything else (service accounts) to IAM."""

    def __init__(self, service_accounts: IamPolicies, buckets: IamPolicies, iap: IamPolicies) -> None:
        self._service_accounts, self._buckets, self._iap = service_accounts, buckets, iap

    def _for(self, resource: str) -> IamPolicies:
        if resource.startswith(BUCKET_PREFIX):
            return self._buckets
        if IAP_WEB in resource:
            return self._iap
        return self._service_accounts

    def update(self, changes: Sequence[Change]) -> set[IamBinding]:
        return self._for(_one_resource(changes)).update(changes)


class BindingManager:
    """Makes bindings present, without re-reading a verified one more often than `verify_seconds`.

    Changes to one resource are serialised and batched: while one read-modify-write of a GSA's
    policy runs, the members other workloads want added queue up and go in the next one, so N
    workloads sharing a GSA cost about two writes instead of N racing ones that spoil each other's etag.
    """

    def __init__(self, policies: IamPolicies, *, backoff: Backoff, verify_seconds: float) -> None:
        self._policies = policies
        self._backoff = backoff
        self._verify_seconds = verify_seconds
        self._verified: dict[IamBinding, float] = {}
        self._failures: dict[IamBinding, GcpError] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._queued: dict[str, list[tuple[Change, asyncio.Future[bool]]]] = {}

    async def _apply(self, binding: IamBinding, present: bool) -> bool:
        """Queue one change and run the resource's batch, unless an earlier caller runs it; True if it changed."""
        resource = binding.resource
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(resource, []).append(((binding, present), done))
        async with self._locks.setdefault(resource, asyncio.Lock()):
            batch = self._queued.pop(resource, [])
            if batch:
                try:
                    changed = await asyncio.to_thread(self._policies.update, [change for change, _ in batch])
                except GcpError as error:
                    for _, waiter in batch:
                        if not waiter.done():  # a caller cancelled meanwhile has nobody to tell
                            waiter.set_exception(error)
                else:
                    for (binding_changed, _), waiter in batch:
                        if not waiter.done():
                            waiter.set_result(binding_changed in changed)
        return await done

    async def ensure(self, binding: IamBinding) -> tuple[bool, GcpError | None]:
        """(added now, failure): the member is in the role unless a failure is returned."""
        now = self._backoff.clock()
        if now - self._verified.get(binding, float("-inf")) < self._verify_seconds:
            return False, None
        if not self._backoff.due(binding) and binding in self._failures:
            return False, self._failures[binding]
        try:
            added = await self._apply(binding, True)
        except GcpError as error:
            self._failures[binding] = error
            delay = self._backoff.failed(binding)
            logger.warning("IAM binding %s on %s failed, retrying in %.0fs: %s",
                           binding.member, binding.resource, delay, error)  # fmt: skip
            return False, error
        self._failures.pop(binding, None)
        self._backoff.succeeded(binding)
        self._verified[binding] = now
        if added:
            logger.info("granted %s to %s on %s", binding.role, binding.member, binding.resource)
        return added, None

    async def remove(self, binding: IamBinding) -> None:
        """Take the member out of the role; raises GcpError so the caller can retry."""
        self._verified.pop(binding, None)
        if await self._apply(binding, False):
            logger.info("revoked %s from %s on %s", binding.role, binding.member, binding.resource)
