"""The operator adds its own finalizer when kopf's patch was refused and kopf waits for an event that never
comes (chaos seed 668912): controller/handlers.py `_add_finalizer`."""

from mlworkload.constants import FINALIZER
from mlworkload.controller.kube import WORKLOADS
from tests.support.documents import workload
from tests.support.fake_kube import FakeKubeApi
from tests.support.operator import handlers_module


async def test_the_finalizer_is_added_unless_the_workload_moved_on() -> None:
    handlers = handlers_module()
    kube = FakeKubeApi()
    stored = kube.put(workload().set("metadata.finalizers", ["example.com/other"]).doc)
    seen = await kube.get(WORKLOADS, "team-nlp", "demo")
    assert seen is not None
    await handlers._add_finalizer(kube, seen)
    assert stored["metadata"]["finalizers"] == ["example.com/other", FINALIZER]  # others' finalizers kept

    stale = dict(seen, metadata={**seen["metadata"], "finalizers": []})  # read before the first patch
    await handlers._add_finalizer(kube, stale)  # refused (409): the object moved on, its event is coming
    assert stored["metadata"]["finalizers"] == ["example.com/other", FINALIZER]
