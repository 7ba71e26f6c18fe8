"""IAM bindings: one member in one role on a Google service account, a bucket or an IAP-secured backend service
(`iap.py`), added and removed exactly.

All three APIs are read-modify-write with an etag: a write whose etag went stale (someone else changed
the policy meanwhile) is refused (409 ABORTED for service accounts and IAP, 412 for buckets) and the whole
cycle is retried. Only the one member is touched; every other binding and member stays as it was.

A plain read (`present`) tells whether a member is there without changing anything: the live provisioner
reads before it records the intent to grant, so "present before the operator looked" is never confused
with "granted by a process that died before saying so" (`live.py`).
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
_I = TypeVar("_I")  # what a batch queues: a change to make, or a binding to read
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

    def present(self, bindings: Sequence[IamBinding]) -> set[IamBinding]:
        """Which of the bindings (all on one resource) are in its policy now, from one getIamPolicy."""
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

    def present(self, bindings: Sequence[IamBinding]) -> set[IamBinding]:
        resource = _one_resource([(binding, True) for binding in bindings])
        policy = _guarded(self._api, lambda: self._policy(resource))
        return {binding for binding in bindings if _in_proto(policy, binding)}


class ServiceAccountPolicies(StandardPolicies):
    """IAM policies of Google service accounts (google-cloud-iam; gRPC is its only transport)."""

    def __init__(self, client: iam_admin_v1.IAMClient) -> None:
        super().__init__(client, "iam")


def _in_proto(policy: Any, binding: IamBinding) -> bool:
    """The member is in the unconditional binding of the role: the one `_edit_proto` adds to and removes from."""
    return any(
        entry.role == binding.role and not entry.HasField("condition") and binding.member in entry.members
        for entry in policy.bindings
    )


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

    def present(self, bindings: Sequence[IamBinding]) -> set[IamBinding]:
        resource = _one_resource([(binding, True) for binding in bindings])
        _, policy = _guarded("storage", lambda: self._policy(resource))
        return {binding for binding in bindings if _in_dicts(policy.bindings, binding)}


def _in_dicts(bindings: list[dict[str, Any]], binding: IamBinding) -> bool:
    """As `_in_proto`, for the storage client's policy (a list of dicts)."""
    return any(
        entry["role"] == binding.role and not entry.get("condition") and binding.member in entry["members"]
        for entry in bindings
    )


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

    def present(self, bindings: Sequence[IamBinding]) -> set[IamBinding]:
        return self._for(_one_resource([(binding, True) for binding in bindings])).present(bindings)


class BindingManager:
    """Makes bindings present, without re-reading a verified one more often than `verify_seconds`.

    Changes to one resource are serialised and batched: while one read-modify-write of a GSA's
    policy runs, the members other workloads want added queue up and go in the next one, so N
    workloads sharing a GSA cost about two writes instead of N racing ones that spoil each other's etag.
    Plain reads (`check`) queue the same way, under the same lock: N workloads looking at one GSA cost about
    two getIamPolicy calls, and a read never runs in the middle of a write it would then misreport.
    """

    def __init__(self, policies: IamPolicies, *, backoff: Backoff, verify_seconds: float) -> None:
        self._policies = policies
        self._backoff = backoff
        self._verify_seconds = verify_seconds
        self._verified: dict[IamBinding, float] = {}
        self._failures: dict[IamBinding, GcpError] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._queued: dict[str, list[tuple[Change, asyncio.Future[bool]]]] = {}
        self._reads: dict[str, list[tuple[IamBinding, asyncio.Future[bool]]]] = {}

    async def _batched(
        self,
        queues: dict[str, list[tuple[_I, asyncio.Future[bool]]]],
        resource: str,
        item: _I,
        run: Callable[[list[_I]], set[IamBinding]],
        key: Callable[[_I], IamBinding],
    ) -> bool:
        """Queue one item and run the resource's batch of its kind, unless an earlier caller runs it; True if
        `run` reported the item's binding."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        queues.setdefault(resource, []).append((item, done))
        async with self._locks.setdefault(resource, asyncio.Lock()):
            batch = queues.pop(resource, [])
            if batch:
                try:
                    reported = await asyncio.to_thread(run, [queued for queued, _ in batch])
                except GcpError as error:
                    for _, waiter in batch:
                        if not waiter.done():  # a caller cancelled meanwhile has nobody to tell
                            waiter.set_exception(error)
                else:
                    for queued, waiter in batch:
                        if not waiter.done():
                            waiter.set_result(key(queued) in reported)
        return await done

    async def _apply(self, binding: IamBinding, present: bool) -> bool:
        """One change, batched with the others queued for its resource; True if it changed the policy."""
        return await self._batched(self._queued, binding.resource, (binding, present), self._policies.update,
                                   lambda change: change[0])  # fmt: skip

    def _known(self, binding: IamBinding, now: float) -> tuple[bool, GcpError | None] | None:
        """What the last look says when no call is due: verified recently, or failed and still backing off."""
        if now - self._verified.get(binding, float("-inf")) < self._verify_seconds:
            return True, None
        if not self._backoff.due(binding) and binding in self._failures:
            return False, self._failures[binding]
        return None

    def _failed(self, binding: IamBinding, error: GcpError) -> tuple[bool, GcpError]:
        self._failures[binding] = error
        delay = self._backoff.failed(binding)
        logger.warning("IAM binding %s on %s failed, retrying in %.0fs: %s",
                       binding.member, binding.resource, delay, error)  # fmt: skip
        return False, error

    def _succeeded(self, binding: IamBinding) -> None:
        self._failures.pop(binding, None)
        self._backoff.succeeded(binding)

    async def check(self, binding: IamBinding) -> tuple[bool, GcpError | None]:
        """(present, failure): whether the member is in the role, read without changing anything. A member
        verified within `verify_seconds` is present without a call; a failure backs off as `ensure`'s does."""
        now = self._backoff.clock()
        known = self._known(binding, now)
        if known is not None:
            return known
        try:
            present = await self._batched(self._reads, binding.resource, binding, self._policies.present,
                                          lambda read: read)  # fmt: skip
        except GcpError as error:
            return self._failed(binding, error)
        self._succeeded(binding)
        if present:
            self._verified[binding] = now
        return present, None

    async def ensure(self, binding: IamBinding) -> tuple[bool, GcpError | None]:
        """(added now, failure): the member is in the role unless a failure is returned."""
        now = self._backoff.clock()
        known = self._known(binding, now)
        if known is not None:
            return False, known[1]
        try:
            added = await self._apply(binding, True)
        except GcpError as error:
            return self._failed(binding, error)
        self._succeeded(binding)
        self._verified[binding] = now
        if added:
            logger.info("granted %s to %s on %s", binding.role, binding.member, binding.resource)
        return added, None

    async def remove(self, binding: IamBinding) -> None:
        """Take the member out of the role (a member already absent is done: read, nothing written); raises
        GcpError so the caller can retry."""
        self._verified.pop(binding, None)
        if await self._apply(binding, False):
            logger.info("revoked %s from %s on %s", binding.role, binding.member, binding.resource)
