"""The cluster view admission reads in the operator, at a cost that does not grow with the fleet.

kopf's watches keep three indexes (handlers.py registers the indexing functions): policies,
namespaces' labels and GPUs per workload. A reconcile or an admission review used to rebuild the
whole view from them: every policy parsed, every workload walked and its governing policy selected,
O(N) per reconcile and O(N^2) per pass. Instead:

- each policy is parsed once per resourceVersion, by its indexing function, and kopf's index holds
  the parsed policy (`policy_entry`), never its body;
- the GPUs at max scale are also summed per namespace, as the workload indexing function sees them
  change (`NamespaceGpus`), so quota usage is a sum over namespaces, not over workloads;
- the governing policy is selected once per namespace and kept while the policies are the same
  objects and the namespace's labels the same (`policy.selection.GoverningPolicies`).

What is kept lives as long as kopf's GPU index it belongs to (one per operator run): both the
indexing function and `cluster_view` reach it from that index, the one object they share.
"""

import threading
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from mlworkload.api.load import parse_policy
from mlworkload.api.meta import LabelSelector
from mlworkload.api.policy import MLWorkloadPolicy
from mlworkload.policy import BrokenPolicy, ClusterView
from mlworkload.policy.selection import GoverningPolicies
from mlworkload.problems import Refused

T = TypeVar("T")
WorkloadKey = tuple[str, str]  # (namespace, name), the GPU index's key
PolicyEntry = tuple[str, MLWorkloadPolicy | BrokenPolicy]
"""What the policy index holds per policy: the version it was parsed from (uid and resourceVersion;
empty when unknown) and the policy, or why it cannot be read."""


def policy_entry(name: str, body: Mapping[str, Any], previous: Iterable[PolicyEntry] = ()) -> PolicyEntry:
    """The policy index's value for a stored policy: `previous` (what the index holds now) when it was
    parsed from the same spec version, so that an unchanged policy is parsed once and stays the same object.

    Never raises: kopf drops an object from its index when the indexing function fails, and a policy
    missing from the view would let the namespaces it governs fall to another policy.
    """
    version = spec_version(body)
    for held in previous:
        if version and held[0] == version:
            return held
    try:
        return version, parse_policy(dict(body))
    except Refused as refused:
        return version, broken_policy(name, body, refused)
    except Exception as error:  # anything else about an unreadable body: still never skipped
        return version, BrokenPolicy(name, f"{type(error).__name__}: {error}", selector=None)


def spec_version(body: Mapping[str, Any]) -> str:
    """Which spec a stored object holds: its uid and generation, which the API server moves on every change of
    the spec and never on one of the status (the operator's own policy status writes) or of metadata; its
    resourceVersion when it has no generation. Empty when unknown."""
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    version = metadata.get("generation") or metadata.get("resourceVersion")
    return f"{metadata.get('uid', '')}/{version}" if version else ""


def broken_policy(name: str, body: Mapping[str, Any], refused: Refused) -> BrokenPolicy:
    """What can still be read of a policy that does not parse: which namespaces and priority it may claim."""
    spec = body.get("spec")
    spec = spec if isinstance(spec, dict) else None
    selector_doc = spec.get("namespaceSelector") if spec is not None else None
    try:
        selector = LabelSelector.model_validate(selector_doc or {}, by_alias=True, by_name=False)
    except ValueError:
        selector = None  # cannot tell which namespaces it governs: it may govern any
    priority = spec.get("priority", 0) if spec is not None else None
    readable_priority = priority if type(priority) is int else None  # bool is an int, and no priority
    problem = str(refused.problems[0]) if refused.problems else "unreadable"
    return BrokenPolicy(name, problem, selector, readable_priority)


def _first(values: Iterable[T] | None) -> T | None:
    """The value in one of kopf's stores (one object per key here), None when there is none."""
    return next(iter(values), None) if values is not None else None


class NamespaceGpus:
    """GPUs at max scale per workload and their sum per namespace (`policy.admission.GpuTotals`).

    Fed by the GPU indexing function (`put`) with every value it gives kopf. kopf forgets a deleted
    workload without calling that function, so `sync` (before each read) compares the number of keys
    with kopf's index and, only when they differ, drops what kopf no longer holds: O(1) per read, and
    O(N) once per deletion.

    The indexing function runs on the event loop, and kopf stores its value before any other task
    runs, so the loop never sees the two apart. The webhook's handler runs in a thread, and may: a key
    put but not yet stored by kopf looks deleted there. It is dropped, and the next `sync` compares
    the keys in full (taking the key back from kopf's index) even if the counts happen to agree.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the event loop writes, kopf's handler threads (the webhook) read
        self._gpus: dict[WorkloadKey, int] = {}
        self._totals: dict[str, int] = {}
        self._recent: set[WorkloadKey] = set()  # put since the last sync: maybe not in kopf's index yet
        self._recheck = False
        self.full_syncs = 0  # how often the keys were compared in full (a deletion, or a race, each)

    def put(self, key: WorkloadKey, gpus: int) -> None:
        with self._lock:
            self._set(key, gpus)
            self._recent.add(key)

    def sync(self, index: Mapping[WorkloadKey, Collection[int]]) -> None:
        """Forget the workloads kopf's GPU index no longer holds, and take any it holds that are missing."""
        with self._lock:
            if len(index) == len(self._gpus) and not self._recheck:
                self._recent.clear()
                return
            self.full_syncs += 1
            present = set(index)  # one pass in C: the event loop cannot write to the index meanwhile
            gone = [key for key in self._gpus if key not in present]
            self._recheck = any(key in self._recent for key in gone)
            for key in gone:
                self._set(key, None)
            for key in present.difference(self._gpus):
                gpus = _first(index.get(key))
                if gpus is not None:
                    self._set(key, gpus)
            self._recent.clear()

    def _set(self, key: WorkloadKey, gpus: int | None) -> None:
        namespace = key[0]
        change = (gpus or 0) - self._gpus.get(key, 0)
        if gpus is None:
            self._gpus.pop(key, None)
        else:
            self._gpus[key] = gpus
        total = self._totals.get(namespace, 0) + change
        if total:
            self._totals[namespace] = total
        else:  # only namespaces holding GPUs are listed: the quota's sum visits no others
            self._totals.pop(namespace, None)

    def by_namespace(self) -> Iterable[tuple[str, int]]:
        with self._lock:
            return list(self._totals.items())

    def of(self, namespace: str, name: str) -> int:
        return self._gpus.get((namespace, name), 0)


class _Kept:
    """What one operator run keeps beside kopf's indexes."""

    def __init__(self) -> None:
        self.gpus = NamespaceGpus()
        self.governance: GoverningPolicies | None = None

    def governance_for(self, policies: list[MLWorkloadPolicy]) -> GoverningPolicies:
        governance = self.governance
        if governance is None or not governance.built_for(policies):
            governance = self.governance = GoverningPolicies(policies)  # a policy changed: choose again
        return governance


_KEPT: dict[int, _Kept] = {}  # by id() of kopf's GPU index; an entry goes when that index does
_KEPT_LOCK = threading.Lock()


def kept_for(gpu_index: Mapping[WorkloadKey, Any]) -> _Kept:
    """What is kept for this GPU index. A mapping that cannot be weakly referenced (a test's plain dict)
    keeps nothing: its state would outlive it under a reusable id()."""
    key = id(gpu_index)
    with _KEPT_LOCK:
        kept = _KEPT.get(key)
        if kept is None:
            kept = _Kept()
            try:
                weakref.finalize(gpu_index, _KEPT.pop, key, None)
            except TypeError:
                return kept
            _KEPT[key] = kept
        return kept


class IndexedLabels(Mapping[str, Mapping[str, str]]):
    """Namespace labels read from kopf's namespace index on demand, not copied for every view."""

    def __init__(self, index: Mapping[str, Collection[Mapping[str, str]]]) -> None:
        self._index = index

    def __getitem__(self, namespace: str) -> Mapping[str, str]:
        labels = _first(self._index[namespace])
        if labels is None:
            raise KeyError(namespace)
        return labels

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._index))

    def __len__(self) -> int:
        return len(self._index)


def cluster_view(
    policy_index: Mapping[str, Collection[PolicyEntry]],
    namespace_index: Mapping[str, Collection[Mapping[str, str]]],
    gpu_index: Mapping[WorkloadKey, Collection[int]],
) -> ClusterView:
    """The view for one reconcile or review: O(policies) to build, and what it reads later is O(1) in
    the number of workloads (see the module's docstring)."""
    policies: list[MLWorkloadPolicy] = []
    broken: list[BrokenPolicy] = []
    for entries in list(policy_index.values()):
        entry = _first(entries)
        if entry is None:
            continue
        _, policy = entry
        if isinstance(policy, BrokenPolicy):
            broken.append(policy)
        else:
            policies.append(policy)
    kept = kept_for(gpu_index)
    kept.gpus.sync(gpu_index)
    return ClusterView(
        policies=policies,
        namespace_labels=IndexedLabels(namespace_index),
        default_labels={},
        broken=broken,
        totals=kept.gpus,
        governance=kept.governance_for(policies),
    )


Governance = Mapping[str, str | None]
"""Namespace -> the name of the policy that governs it (None: none does)."""


def governance(view: ClusterView, namespaces: Iterable[str]) -> dict[str, str | None]:
    """Which policy governs each of these namespaces, as the view stands."""
    return {namespace: getattr(view.governing(namespace), "name", None) for namespace in namespaces}


def readmission_scope(
    before: Governance | None, after: Governance, changed: str, unreadable: bool
) -> Collection[str] | None:
    """The namespaces whose workloads a change of the policy `changed` can affect: those it governs before or
    after the change, and those whose governing policy moved (a new priority or selector takes them from
    another policy). None means every namespace: with no earlier picture (the first change after a start), or
    while any policy cannot be read (it may govern any namespace, see `BrokenPolicy.may_govern`)."""
    if before is None or unreadable:
        return None
    moved = {namespace for namespace, policy in after.items() if namespace not in before or before[namespace] != policy}
    ruled = {namespace for picture in (before, after) for namespace, policy in picture.items() if policy == changed}
    return moved | ruled
