"""What one request costs the in-memory API server (tests/support/kube) as objects and requests accumulate.

    python bench/bench_emulator.py [--objects 500 5000] [--namespaces 10] [--repeats 300] [--requests 5000]

For each population size N the cluster holds N/5 MLWorkloads, each owning 4 ConfigMaps labelled with
its name, spread over the namespaces (N objects in all, plus the CRDs). Two parts:

  store   the ObjectStore alone, on this thread (no HTTP, no event loop): its share of each request
  http    round trips to a running KubeEmulatorServer over one keep-alive connection: what a client sees

Operations (median and p90 in microseconds over --repeats runs, after a warm-up):

  list/selector   LIST configmaps in one namespace with labelSelector=workload=<name> (4 items)
  list/namespace  LIST configmaps in one namespace, no selector (N*4/5/namespaces items)
  get             GET one configmap
  apply           server-side apply of a changed configmap (http: a JSON body, as kubectl and the
                  Python client send it, under Content-Type application/apply-patch+yaml)
  apply/yaml      http only: the same apply with a YAML body
  apply/no-op     an apply that changes nothing
  delete+gc       store only: delete a workload and run the garbage collection of its 4 configmaps
                  (then put them back, so N stays the same)
  write/fan-out   store only: a merge patch of a configmap with 40 watches open (10 on configmaps,
                  one per namespace; 30 on other kinds), the watch queues drained after each write
  watch event     http only: a merge patch until the event arrives on a watch of that namespace
  get after R     http only: GET again after R more requests (the request journal grew by R)

Last, what the request journal (kmock's, kept for the tests' request log) retains per request, in KB
(tracemalloc over --journal applies and GETs on a fresh server).

Nothing is asserted: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the emulator lives in the test support package

from tests.support.kube import KubeEmulatorServer, ObjectStore  # noqa: E402
from tests.support.kube.resources import (  # noqa: E402
    BUILTIN_RESOURCES,
    Obj,
    ResourceRegistry,
    ResourceSpec,
    default_crd_paths,
    load_crds,
)
from tests.support.kube.selectors import LabelSelector  # noqa: E402
from tests.support.kube.watching import WatchFilter  # noqa: E402

CHILDREN = 4  # configmaps per workload
MANAGER = "bench"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
OTHER_KINDS = (
    ("ray.io", "rayclusters"),
    ("", "services"),
    ("batch", "jobs"),
)


def workload(index: int, namespace: str) -> Obj:
    return {
        "apiVersion": "mlworkload.io/v1alpha1",
        "kind": "MLWorkload",
        "metadata": {"name": f"w{index}", "namespace": namespace, "labels": {"team": f"t{index % 7}"}},
        "spec": {"template": "cluster", "workers": index % 5},
    }


def child(owner: Obj, number: int) -> Obj:
    name = owner["metadata"]["name"]
    reference = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name,
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{name}-{number}",
            "namespace": owner["metadata"]["namespace"],
            "labels": {"workload": name, "part": str(number)},
            "ownerReferences": [reference],
        },
        "data": {"config.yaml": f"workers: {number}\n" * 20},
    }


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"{statistics.median(ordered) * 1e6:9.1f} {p90 * 1e6:9.1f}"


def timed(function: Callable[[int], object], repeats: int, warmup: int = 20) -> list[float]:
    """Durations in seconds of ``function(i)`` for i in range(repeats), after ``warmup`` untimed calls."""
    for index in range(warmup):
        function(index)
    clock = time.perf_counter
    samples = []
    for index in range(repeats):
        start = clock()
        function(index)
        samples.append(clock() - start)
    return samples


# --- the store alone -----------------------------------------------------------------------------------


class StoreBench:
    """An ObjectStore whose deferred work (GC) runs when the bench says, inside the timed region."""

    def __init__(self, objects: int, namespaces: int) -> None:
        self.pending: list[Callable[[], None]] = []
        self.store = ObjectStore(ResourceRegistry(BUILTIN_RESOURCES), schedule=self.pending.append)
        crd_spec = self.spec("apiextensions.k8s.io", "customresourcedefinitions")
        for crd in load_crds(default_crd_paths()):
            self.store.create(crd_spec, None, crd)
        self.namespaces = [f"ns-{n}" for n in range(namespaces)]
        self.workloads = objects // (CHILDREN + 1)
        self.mlw = self.spec("mlworkload.io", "mlworkloads")
        self.cm = self.spec("", "configmaps")
        for index in range(self.workloads):
            self.add_workload(index)

    def spec(self, group: str, plural: str) -> ResourceSpec:
        spec = self.store.registry.get((group, plural))
        assert spec is not None, (group, plural)
        return spec

    def namespace(self, index: int) -> str:
        return self.namespaces[index % len(self.namespaces)]

    def add_workload(self, index: int) -> None:
        owner = self.store.create(self.mlw, None, workload(index, self.namespace(index)))
        for number in range(CHILDREN):
            self.store.create(self.cm, None, child(owner, number))

    def drain(self) -> None:
        while self.pending:
            self.pending.pop(0)()

    def run(self, repeats: int) -> dict[str, list[float]]:
        store, cm = self.store, self.cm
        middle = self.workloads // 2
        ns = self.namespace(middle)
        selector = LabelSelector.parse(f"workload=w{middle}")
        results: dict[str, list[float]] = {}
        results["list/selector"] = timed(lambda _: store.select(cm, ns, selector), repeats)
        results["list/namespace"] = timed(lambda _: store.select(cm, ns), max(repeats // 10, 10), warmup=3)
        results["get"] = timed(lambda _: store.get(cm, ns, f"w{middle}-0"), repeats)

        def apply(index: int) -> None:
            config = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"w{middle}-1", "namespace": ns},
                "data": {"revision": str(index)},
            }
            store.apply(cm, ns, f"w{middle}-1", config, manager=MANAGER, force=True)

        results["apply"] = timed(apply, repeats)
        results["apply/no-op"] = timed(lambda _: apply(-1), repeats)

        def delete_and_collect(index: int) -> None:
            victim = index % self.workloads
            store.delete(self.mlw, self.namespace(victim), f"w{victim}")
            self.drain()

        deletions = min(repeats, self.workloads)
        results["delete+gc"] = timed(delete_and_collect, deletions, warmup=0)
        for victim in range(deletions):  # put them back, untimed
            self.add_workload(victim)
        self.drain()
        assert len(store.select(cm)) == self.workloads * CHILDREN, "GC left or took the wrong configmaps"

        watches = [store.changes.subscribe(WatchFilter(cm.key, namespace)) for namespace in self.namespaces]
        for number in range(30):
            watches.append(store.changes.subscribe(WatchFilter(OTHER_KINDS[number % len(OTHER_KINDS)])))

        def patch(index: int) -> None:
            store.patch(cm, ns, f"w{middle}-2", MERGE, {"data": {"revision": str(index)}})
            for watch in watches:
                while not watch.queue.empty():
                    watch.queue.get_nowait()

        results["write/fan-out"] = timed(patch, repeats)
        for watch in watches:
            store.changes.unsubscribe(watch)
        return results


# --- over HTTP -----------------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP connection, as a client library keeps its pool."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None) -> Any:
        headers = {"Authorization": "Bearer x"} | ({"Content-Type": content_type} if content_type else {})
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        raw = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {raw[:300]!r}")
        return json.loads(raw)

    def close(self) -> None:
        self.connection.close()


def watch_lines(url: str, path: str) -> Generator[Obj, None, None]:
    """The events of a watch, one per line, read from a connection of its own."""
    host, _, port = url.removeprefix("http://").partition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", path, headers={"Authorization": "Bearer x"})
    response = connection.getresponse()
    try:
        while line := response.readline():
            if line.strip():
                yield json.loads(line)
    finally:
        connection.close()


def http_run(objects: int, namespaces: int, repeats: int, requests: int) -> dict[str, list[float]]:
    with KubeEmulatorServer() as server:
        names = [f"ns-{n}" for n in range(namespaces)]
        workloads = objects // (CHILDREN + 1)

        def populate() -> None:
            mlw = server.store.registry.get(("mlworkload.io", "mlworkloads"))
            cm = server.store.registry.get(("", "configmaps"))
            assert mlw is not None
            assert cm is not None
            for index in range(workloads):
                owner = server.store.create(mlw, None, workload(index, names[index % namespaces]))
                for number in range(CHILDREN):
                    server.store.create(cm, None, child(owner, number))

        server.call(populate, timeout=600)
        client = Client(server.url)
        middle = workloads // 2
        ns = names[middle % namespaces]
        base = f"/api/v1/namespaces/{ns}/configmaps"
        results: dict[str, list[float]] = {}
        by_label = f"{base}?labelSelector=workload%3Dw{middle}"
        results["list/selector"] = timed(lambda _: client.request("GET", by_label), repeats)
        results["list/namespace"] = timed(lambda _: client.request("GET", base), max(repeats // 10, 10), warmup=3)
        results["get"] = timed(lambda _: client.request("GET", f"{base}/w{middle}-0"), repeats)

        def apply_body(index: int) -> Obj:
            return {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"w{middle}-1", "namespace": ns, "labels": {"workload": f"w{middle}"}},
                "data": {"revision": str(index), **{f"key{k}": f"value {k} " * 8 for k in range(20)}},
            }

        apply_path = f"{base}/w{middle}-1?fieldManager={MANAGER}&force=true"
        results["apply"] = timed(
            lambda i: client.request("PATCH", apply_path, json.dumps(apply_body(i)).encode(), APPLY), repeats
        )
        results["apply/yaml"] = timed(
            lambda i: client.request("PATCH", apply_path, yaml.safe_dump(apply_body(-i - 1)).encode(), APPLY), repeats
        )
        same = json.dumps(apply_body(-1)).encode()
        results["apply/no-op"] = timed(lambda _: client.request("PATCH", apply_path, same, APPLY), repeats)

        start_rv = client.request("GET", f"{base}?labelSelector=none")["metadata"]["resourceVersion"]
        events = watch_lines(server.url, f"{base}?watch=true&resourceVersion={start_rv}&timeoutSeconds=600")

        def patch_and_see(index: int) -> None:
            body = json.dumps({"data": {"revision": f"watched-{index}"}}).encode()
            client.request("PATCH", f"{base}/w{middle}-2", body, MERGE)
            while (next(events)["object"].get("data") or {}).get("revision") != f"watched-{index}":
                pass

        results["watch event"] = timed(patch_and_see, repeats)
        events.close()

        for _ in range(requests):
            client.request("GET", f"{base}/w{middle}-3")
        results[f"get after {requests}"] = timed(lambda _: client.request("GET", f"{base}/w{middle}-0"), repeats)
        client.close()
        return results


def journal_growth(requests: int) -> tuple[float, float]:
    """KB retained per request (tracemalloc, after a collection) by a server answering ``requests`` applies of
    a ~3 KB body and as many GETs: what the request journal keeps of each request."""
    body = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "journal", "namespace": "ns-0"},
            "data": {f"key{k}": "x" * 60 for k in range(40)},
        }
    ).encode()
    path = "/api/v1/namespaces/ns-0/configmaps/journal"
    figures = []
    with KubeEmulatorServer(crd_paths=[]) as server:
        client = Client(server.url)
        for method in ("PATCH", "GET"):
            send: Callable[[], object] = (
                (lambda: client.request("PATCH", f"{path}?fieldManager={MANAGER}&force=true", body, APPLY))
                if method == "PATCH"
                else (lambda: client.request("GET", path))
            )
            for _ in range(200):
                send()
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            for _ in range(requests):
                send()
            gc.collect()
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
            figures.append(grown / requests / 1024)
        client.close()
    return figures[0], figures[1]


def report(title: str, sizes: list[int], results: dict[int, dict[str, list[float]]]) -> None:
    print(f"\n{title}: median and p90 in microseconds")
    header = f"{'operation':<16}" + "".join(f" {'N=' + str(size):>19}" for size in sizes)
    print(header)
    print("-" * len(header))
    for operation in results[sizes[0]]:
        print(f"{operation:<16}" + "".join(f" {summary(results[size][operation])}" for size in sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, nargs="+", default=[500, 5000], help="stored objects (N)")
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--requests", type=int, default=5000, help="requests made before 'get after R'")
    parser.add_argument("--journal", type=int, default=1000, help="requests for the journal figure (0: skip)")
    parser.add_argument("--skip-http", action="store_true")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus; {platform.platform()}")

    store_results = {}
    for size in args.objects:
        started = time.perf_counter()
        store_results[size] = StoreBench(size, args.namespaces).run(args.repeats)
        print(f"store N={size}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    report("store (ObjectStore alone)", args.objects, store_results)
    if args.skip_http:
        return
    http_results = {}
    for size in args.objects:
        started = time.perf_counter()
        http_results[size] = http_run(size, args.namespaces, args.repeats, args.requests)
        print(f"http N={size}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    report("http (round trips to KubeEmulatorServer)", args.objects, http_results)
    if args.journal:
        applied, fetched = journal_growth(args.journal)
        print(f"\nrequest journal: {applied:.1f} KB kept per apply of a 3 KB body, {fetched:.1f} KB per GET")


if __name__ == "__main__":
    main()
