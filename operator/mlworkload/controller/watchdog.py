"""Waking kopf for a workload it will not look at again on its own.

kopf handles an object only when a watch event for it arrives. Two cases leave a workload without one:

- its node pool vanished in GKE (the collector notices; the workload's own object did not change);
- kopf's own PATCH of it failed (a 409 the API server gives up retrying on under contention, or a 5xx
  after kopf's retries): kopf logs the error, throttles, and then waits for the next event. For a live
  workload the resync timer brings one (its status write); for a workload being deleted there is none,
  timers stop at deletion, and the finalizer stays: its namespace hangs.

Either way the fix is the same: change an annotation, which is a watch event, and kopf processes the
object again (the progress annotations keep the handlers' finished work, so nothing runs twice that
should not).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mlworkload.constants import ANNOTATION_RECHECK, FINALIZER
from mlworkload.controller.kube import WORKLOADS, ClientKubeApi, KubeError
from mlworkload.controller.reconcile import list_workloads, owner_key

logger = logging.getLogger(__name__)


async def recheck(kube: ClientKubeApi, owners: Iterable[str], why: str) -> None:
    """Give each workload a watch event (an annotation change), so kopf processes it now."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for owner in sorted(owners):
        namespace, _, name = owner.partition("/")
        patch = {"metadata": {"annotations": {ANNOTATION_RECHECK: stamp}}}
        try:
            await asyncio.to_thread(kube.request, "PATCH", WORKLOADS.path(namespace, name), body=patch,
                                    content_type="application/merge-patch+json")  # fmt: skip
        except KubeError as error:  # gone meanwhile, or refused: the next pass (or timer) tries again
            logger.warning("could not ask for a new look at %s (%s): %s", owner, why, error)


def stuck_deletions(workloads: Iterable[Mapping[str, Any]], now: datetime, after_seconds: float) -> set[str]:
    """Workloads deleted more than `after_seconds` ago that still carry the operator's finalizer."""
    stuck: set[str] = set()
    for workload in workloads:
        meta = workload.get("metadata") or {}
        deleted = meta.get("deletionTimestamp")
        if not deleted or FINALIZER not in (meta.get("finalizers") or []):
            continue
        since = datetime.fromisoformat(str(deleted).replace("Z", "+00:00"))
        if (now - since).total_seconds() > after_seconds:
            stuck.add(owner_key(meta["namespace"], meta["name"]))
    return stuck


async def watch_deletions(kube: ClientKubeApi, namespaces: Sequence[str], period_seconds: float) -> None:
    """Forever, every `period_seconds` (the resync interval, a background task of the operator): a workload
    whose deletion has waited longer than that gets a new look (see the module docstring)."""
    while True:
        await asyncio.sleep(period_seconds)
        try:
            stuck = stuck_deletions(await list_workloads(kube, namespaces), datetime.now(UTC), period_seconds)
            if stuck:
                why = "its deletion waits on the finalizer"
                logger.info("%s: %s; asking kopf for a new look", ", ".join(sorted(stuck)), why)
                await recheck(kube, stuck, why)
        except Exception:  # the watchdog must outlive any one failure; the next pass retries
            logger.exception("checking for stuck deletions failed")
