"""The operator at scale: `mlworkload run` in its own process against the in-memory API server, N workloads.

    python bench/bench_scale.py --workloads 100 1000 5000
    python bench/bench_scale.py --workloads 1000 --tracemalloc      # plus the operator's top allocators

For each N: 60 % Cluster, 30 % Job, 10 % Service workloads over 10 namespaces, each with one GPU worker group
of one of three shapes, under one permissive policy; the KubeRay stand-in (tests/support/kuberay.py) marks
every Ray object the operator creates ready, so every workload becomes Ready. Three passes, each over all N:

- converge: the first operator process starts (its resync timer far away), then all N workloads are created
  at once; until every workload is Ready, then until the operator has been quiet for a moment;
- restart: the process is stopped (SIGTERM, as a pod is) and started again; until every workload has had a
  handler succeed in the new process (kopf's resume), i.e. is re-verified; writes expected: 0;
- resync: the same process's resync timer fires for every workload (its interval is chosen to fall after the
  restart pass); until every workload's timer has succeeded; writes expected: 0.

Figures per pass: wall time, requests per workload by verb and kind (from the emulator's request log: every
HTTP request it logs is the operator's, since this harness and the KubeRay stand-in write through the store
directly), operator CPU (/proc/<pid>/stat) against the emulator thread's (/proc/self/task/<tid>/stat) and the
rest of this process, operator RSS current and peak (/proc/<pid>/status VmRSS, VmHWM). Handler and timer
completions come from the operator's own JSON log (kopf logs "Handler 'x' succeeded." per object).

`--tracemalloc`: a `sitecustomize.py` in the run's temporary directory (on the operator's PYTHONPATH) starts
tracemalloc at interpreter start-up and dumps the top allocators to a file on SIGUSR1, which the harness sends
after the converge and resync passes; the operator's code is unchanged, but tracemalloc slows it and adds to
its memory, so that run's times and RSS are not the plain ones.

Nothing is asserted: the figures depend on the machine and its load. tests/integration/test_scale_bench.py
runs the harness at small N (a smoke test of the harness, asserting counts) and at N = 200 (the zero-write
and one-pool-create-per-shape regression guards).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel, ConfigDict, ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.documents import GSA, WorkloadDoc, permissive_policy, workload
from tests.support.kube import KubeEmulatorServer, parse_route, wait_until
from tests.support.kube.watching import Change, Subscription, WatchFilter
from tests.support.kuberay import KubeRaySimulator

if TYPE_CHECKING:
    from tests.support.gcp import FakeGcp

GROUP: Final = "mlworkload.io"
MLW: Final = "mlworkload.io/v1alpha1"
PROJECT, LOCATION, CLUSTER = "my-proj", "us-central1", "ml-cluster"  # what permissive_policy names
CLUSTER_PATH: Final = f"projects/{PROJECT}/locations/{LOCATION}/clusters/{CLUSTER}"
NAMESPACES: Final = 10
# 60 % Cluster, 30 % Job, 10 % Service (issue 12's mix), by position in a block of ten.
TYPES: Final = ("Cluster",) * 6 + ("Job",) * 3 + ("Service",)
# GPU worker-group shapes: each gets its own node pool (live GCP) and ComputeClass.
SHAPES: Final[tuple[tuple[str, int, str], ...]] = (
    ("nvidia-l4", 1, "Spot"),
    ("nvidia-tesla-t4", 2, "OnDemand"),
    ("nvidia-tesla-a100", 1, "Spot"),
)
RAY_PLURALS: Final = ("rayclusters", "rayjobs", "rayservices")
WRITE_VERBS: Final = frozenset({"create", "update", "patch", "apply", "delete"})
READ_VERBS: Final = frozenset({"get", "list"})
FAR_AWAY: Final = 24 * 3600.0  # the first process's resync interval: never during the converge pass
QUIET_SECONDS: Final = 2.0  # a pass ends once the operator has written nothing for this long
POLL: Final = 0.05
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
HANDLER_DONE: Final = re.compile(r"Handler '(?P<id>[^']+)' succeeded\.")
TIMER_DONE: Final = re.compile(r"Timer '(?P<id>resync[^']*)' succeeded\.")

Key = tuple[str, str]  # namespace, name

SITECUSTOMIZE: Final = '''"""Written by bench/bench_scale.py: the operator's tracemalloc, dumped on SIGUSR1."""
import json, os, signal, tracemalloc

_path = os.environ.get("MLW_BENCH_TRACEMALLOC")
# Which package allocated: the first marker found in the file's path names it (kopf's share is the question
# the scale issue asks about the memory goal).
_PACKAGES = [("/kopf/", "kopf"), ("/mlworkload/", "mlworkload"), ("/kubernetes/", "kubernetes client"),
             ("/aiohttp/", "aiohttp"), ("/pydantic", "pydantic"), ("/prometheus_client/", "prometheus_client"),
             ("/json/", "json (parsed bodies)"), ("/asyncio/", "asyncio"), ("<frozen", "imports"),
             ("site-packages", "other packages"), ("/lib/python3", "other standard library")]

_GENERIC = {"json (parsed bodies)", "asyncio", "imports", "other standard library"}


def _package(traceback):
    """The package on whose behalf a block was allocated: the innermost frame in a named package, looking
    past the standard library's generic code (json decodes bodies for kopf and for our client alike)."""
    innermost_first = reversed(list(traceback))  # a Traceback runs from the oldest frame to the newest
    names = [_named(frame.filename) for frame in innermost_first]
    if "imports" in names:  # allocated while importing a module: code and module state, not per-object data
        return "imports"
    return next((name for name in names if name not in _GENERIC), names[0] if names else "other")


_NAMES = {}


def _named(filename):
    if filename not in _NAMES:
        _NAMES[filename] = next((name for marker, name in _PACKAGES if marker in filename), "other")
    return _NAMES[filename]


if _path:
    tracemalloc.start(5)  # enough frames to see past json's decoder to whoever parsed the body

    def _dump(signum, frame):
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        current, peak = tracemalloc.get_traced_memory()
        top = [
            {"where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}", "size": s.size, "count": s.count}
            for s in snapshot.statistics("lineno")[:15]
        ]
        files = [
            {"where": s.traceback[0].filename, "size": s.size, "count": s.count}
            for s in snapshot.statistics("filename")[:10]
        ]
        packages = {}
        for stat in snapshot.statistics("traceback"):  # one pass per distinct traceback, not per block
            package = _package(stat.traceback)
            size, count = packages.get(package, (0, 0))
            packages[package] = (size + stat.size, count + stat.count)
        by_package = [{"where": name, "size": size, "count": count}
                      for name, (size, count) in sorted(packages.items(), key=lambda item: -item[1][0])]
        dump = {"current": current, "peak": peak, "top_lines": top, "top_files": files, "top_packages": by_package}
        with open(_path + ".tmp", "w") as out:
            json.dump(dump, out)
        os.replace(_path + ".tmp", _path)

    signal.signal(signal.SIGUSR1, _dump)
'''


# --- the workloads ----------------------------------------------------------------------------------------


def namespace_of(index: int) -> str:
    return f"scale-{index % NAMESPACES}"


def workload_docs(count: int, shapes: Sequence[tuple[str, int, str]] = SHAPES) -> list[WorkloadDoc]:
    """`count` workloads: type by position in blocks of ten, shifted per block so that every namespace gets
    every type; shape by position modulo the number of shapes."""
    docs = []
    for index in range(count):
        kind = TYPES[(index + index // NAMESPACES) % len(TYPES)]
        accelerator, gpus, capacity = shapes[index % len(shapes)]
        doc = workload(f"w{index:05d}", namespace_of(index), kind)
        if kind == "Job":
            doc.job()
        elif kind == "Service":
            doc.service()
        docs.append(doc.gpu_group("gpu", accelerator=accelerator, count=gpus, capacity=capacity))
    return docs


# --- the operator's log (kopf's JSON lines) --------------------------------------------------------------


class LoggedObject(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: str = ""
    name: str = ""
    namespace: str | None = None


class LogLine(BaseModel):
    """One line of kopf's JSON log format (`MLW_LOG_FORMAT=json`)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    message: str
    timestamp: datetime.datetime
    object: LoggedObject | None = None


class LogFollower:
    """Reads the operator's log as it grows; keeps, per workload, when its handlers and resync timer succeeded
    (monotonic seconds, converted from the log's wall-clock timestamps)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self._wall_to_monotonic = time.monotonic() - time.time()
        self.handled: dict[Key, list[float]] = {}
        self.resynced: dict[Key, list[float]] = {}
        self.errors = 0  # lines at severity error, for the report

    def read(self) -> None:
        with self.path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            self._take(raw)

    def _take(self, raw: bytes) -> None:
        if not raw.startswith(b"{"):
            return  # a traceback or anything else not from kopf's formatter
        try:
            parsed = json.loads(raw)
            line = LogLine.model_validate(parsed)
        except (ValueError, ValidationError):
            return
        if parsed.get("severity") == "error":
            self.errors += 1
        if line.object is None or line.object.kind != "MLWorkload":
            return
        key = (line.object.namespace or "", line.object.name)
        when = line.timestamp.timestamp() + self._wall_to_monotonic
        if HANDLER_DONE.fullmatch(line.message):
            self.handled.setdefault(key, []).append(when)
        elif TIMER_DONE.fullmatch(line.message):
            self.resynced.setdefault(key, []).append(when)

    @staticmethod
    def first_after(events: Mapping[Key, list[float]], keys: Iterable[Key], since: float) -> dict[Key, float]:
        """Per key, its first event at or after `since` (keys without one are left out)."""
        found = {}
        for key in keys:
            times = [t for t in events.get(key, ()) if t >= since]
            if times:
                found[key] = min(times)
        return found


# --- /proc ------------------------------------------------------------------------------------------------


def cpu_seconds(stat_path: str) -> float:
    """utime + stime of a process or thread from its /proc stat file (fields 14 and 15)."""
    with open(stat_path, encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    values: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in {"VmRSS", "VmHWM"}:
                values[name] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


# --- the operator process ---------------------------------------------------------------------------------


class OperatorProcess:
    """`mlworkload run` with the given environment, logging to a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env, self.log_path = dict(env), log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.log = LogFollower(log_path)

    def start(self) -> None:
        executable = shutil.which("mlworkload", path=str(Path(sys.executable).parent))
        if executable is None:
            raise RuntimeError("the mlworkload console script is not installed next to this Python")
        self.log_path.write_bytes(b"")
        with self.log_path.open("ab") as log:
            self.started = time.monotonic()
            self.process = subprocess.Popen([executable, "run"], env=self.env, stdout=log, stderr=log)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"the operator exited ({self.process and self.process.returncode}):\n{tail}")

    def cpu(self) -> float:
        return cpu_seconds(f"/proc/{self.pid}/stat")

    def memory(self) -> tuple[float, float]:
        return memory_mb(self.pid)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (as Kubernetes stops a pod), SIGKILL after `timeout`; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


# --- the cluster side: KubeRay stand-in and readiness, fed by the store's change log ----------------------


def _ready(obj: Mapping[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class Observed:
    """What one drain of the change log brought: Ray objects to make ready, workloads that are Ready."""

    ray_new: list[tuple[str, str, str]] = field(default_factory=list)  # plural, namespace, name
    ready: list[Key] = field(default_factory=list)


class ClusterSide:
    """Plays KubeRay (every Ray object the operator creates becomes ready) and notes when each workload is
    first Ready. Subscribes to the store's change log on the server's loop, as a watch does, but without HTTP:
    the request log stays the operator's alone. A daemon thread drains it every POLL seconds; `tick` runs
    with each drain (live GCP: finish GKE operations, as GKE would)."""

    def __init__(self, server: KubeEmulatorServer, tick: Callable[[], object] | None = None) -> None:
        self.server = server
        self.kuberay = KubeRaySimulator(server)
        self.tick = tick
        self.ready_at: dict[Key, float] = {}
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        keys = [(GROUP, "mlworkloads"), *(("ray.io", plural) for plural in RAY_PLURALS)]
        self._subscriptions: list[Subscription] = server.call(
            lambda: [server.store.changes.subscribe(WatchFilter(key=key)) for key in keys]
        )
        self._thread = threading.Thread(target=self._run, name="bench cluster side", daemon=True)

    def __enter__(self) -> ClusterSide:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

        def unsubscribe() -> None:
            for subscription in self._subscriptions:
                self.server.store.changes.unsubscribe(subscription)

        self.server.call(unsubscribe)

    def ready_count(self) -> int:
        with self._lock:
            return len(self.ready_at)

    def ready_times(self) -> list[float]:
        with self._lock:
            return sorted(self.ready_at.values())

    def _drain(self) -> Observed:
        """On the server loop: take every queued change."""
        observed = Observed()
        for subscription in self._subscriptions:
            while not subscription.queue.empty():
                change: Change | None = subscription.queue.get_nowait()
                if change is None:
                    continue
                metadata = change.obj.get("metadata") or {}
                key = (metadata.get("namespace") or "", metadata.get("name") or "")
                if change.spec.plural == "mlworkloads":
                    if change.type != "DELETED" and _ready(change.obj):
                        observed.ready.append(key)
                elif change.type == "ADDED" and not change.obj.get("status"):
                    observed.ray_new.append((change.spec.plural, *key))
        return observed

    def _run(self) -> None:
        while not self._stop.wait(POLL):  # the polling interval of a stand-in controller
            try:
                observed = self.server.call(self._drain)
                now = time.monotonic()
                with self._lock:
                    for key in observed.ready:
                        self.ready_at.setdefault(key, now)
                for plural, namespace, name in observed.ray_new:
                    self._make_ready(plural, namespace, name)
                if self.tick is not None:
                    self.tick()
            except Exception as error:  # reported, and the harness fails on it: a broken stand-in
                self.errors.append(f"{type(error).__name__}: {error}")

    def _make_ready(self, plural: str, namespace: str, name: str) -> None:
        if plural == "rayclusters":
            self.kuberay.cluster_ready(namespace, name)
        elif plural == "rayjobs":
            self.kuberay.job_running(namespace, name)
        else:
            self.kuberay.service_running(namespace, name)


# --- the request log --------------------------------------------------------------------------------------


def verb_of(method: str, query: Mapping[str, str], named: bool, content_type: str | None) -> str:
    if method == "GET":
        if query.get("watch") in {"true", "1"}:
            return "watch"
        return "get" if named else "list"
    if method == "PATCH":
        return "apply" if (content_type or "").startswith("application/apply-patch") else "patch"
    return {"POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, method.lower())


@dataclass
class Traffic:
    """Requests by (verb, resource); the resource is the plural, with '/status' for the subresource."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    @classmethod
    def of(cls, server: KubeEmulatorServer, since: int, until: int | None = None) -> Traffic:
        traffic = cls()
        for record in server.requests(since)[: None if until is None else until - since]:
            route = parse_route(record.path)
            if route is None:
                traffic.counts["discovery", record.path] += 1
                continue
            resource = route.plural + (f"/{route.subresource}" if route.subresource else "")
            verb = verb_of(record.method, record.query, route.name is not None, record.content_type)
            traffic.counts[verb, resource] += 1
        return traffic

    def total(self, verbs: frozenset[str]) -> int:
        return sum(count for (verb, _), count in self.counts.items() if verb in verbs)

    @property
    def reads(self) -> int:
        return self.total(READ_VERBS)

    @property
    def writes(self) -> int:
        return self.total(WRITE_VERBS)

    def writes_by_resource(self) -> dict[str, int]:
        found: Counter[str] = Counter()
        for (verb, resource), count in self.counts.items():
            if verb in WRITE_VERBS:
                found[f"{verb} {resource}"] += count
        return dict(found.most_common())


def gcp_writes(calls: Mapping[str, int]) -> Counter[str]:
    """The mutating GCP RPCs (Create*, Delete*, Update*, Set*) of calls counted by service/rpc."""
    mutating = ("Create", "Delete", "Update", "Set")
    return Counter({name: count for name, count in calls.items() if name.partition("/")[2].startswith(mutating)})


# --- the report -------------------------------------------------------------------------------------------


@dataclass
class PassReport:
    name: str
    seconds: float  # wall time of the pass (see each pass for where it starts and ends)
    covered: int  # workloads that completed the pass
    traffic: Traffic
    operator_cpu: float
    emulator_cpu: float
    harness_cpu: float  # this process less the emulator thread (the KubeRay stand-in, the fake GCP, polling)
    rss_mb: float
    peak_mb: float
    gcp_calls: Counter[str] = field(default_factory=Counter)  # service/rpc, live GCP mode only
    note: str = ""


@dataclass
class Allocators:
    """The operator's tracemalloc dump (see SITECUSTOMIZE)."""

    when: str
    current_mb: float
    peak_mb: float
    top_lines: list[tuple[str, float, int]]  # where, MB, blocks
    top_files: list[tuple[str, float, int]]
    top_packages: list[tuple[str, float, int]]


@dataclass
class ScaleReport:
    workloads: int
    gcp_mode: str
    resync_seconds: float
    startup_seconds: float  # operator start until it watches MLWorkloads
    create_seconds: float  # the harness creating all N
    converge: PassReport
    median_ready_seconds: float
    restart: PassReport
    resync: PassReport
    stop_seconds: float  # SIGTERM to exit of the first process
    exit_codes: list[int]
    operator_errors: int  # error lines in the operator's logs
    allocators: list[Allocators] = field(default_factory=list)
    ready: int = 0
    pools_created: int | None = None  # CreateNodePool calls over the whole run (live GCP)
    shapes: int = len(SHAPES)

    @property
    def throughput(self) -> float:
        return self.workloads / self.converge.seconds if self.converge.seconds else 0.0


class ProcessCpu:
    """CPU of this process's emulator thread and of the rest of it."""

    def __init__(self, server: KubeEmulatorServer) -> None:
        tid = server.call(threading.get_native_id)
        self.thread_stat = f"/proc/self/task/{tid}/stat"

    def sample(self) -> tuple[float, float]:
        emulator = cpu_seconds(self.thread_stat)
        return emulator, time.process_time() - emulator


@dataclass
class Mark:
    """Where a pass starts: request log position, GCP call log position, CPU."""

    requests: int
    gcp: int
    operator_cpu: float
    emulator_cpu: float
    harness_cpu: float
    at: float


# --- the run ----------------------------------------------------------------------------------------------


class ScaleRun:
    """One N: the server, the cluster side and the operator processes of the three passes."""

    def __init__(
        self,
        workloads: int,
        workdir: Path,
        *,
        fake: FakeGcp | None = None,
        resync_seconds: float | None = None,
        tracemalloc: bool = False,
        timeout: float | None = None,
        progress: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.n, self.workdir, self.fake = workloads, workdir, fake
        self.resync_override = resync_seconds
        self.tracemalloc = tracemalloc
        # Deadlines only, never the measure: generous for a loaded 2-core machine.
        self.timeout = timeout if timeout is not None else 120.0 + 1.0 * workloads
        self.progress = progress
        self.docs = workload_docs(workloads)
        self.keys = [(d.doc["metadata"]["namespace"], d.doc["metadata"]["name"]) for d in self.docs]
        # Set by run(), for the passes.
        self.server: KubeEmulatorServer
        self.cpu: ProcessCpu
        self.side: ClusterSide

    # --- the operator's environment

    def env(self, resync_seconds: float, tag: str) -> dict[str, str]:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.workdir / "kubeconfig"),
            "MLW_ROLE": "controller",
            "MLW_GCP_MODE": "dry-run",
            "MLW_GCP_POLL_SECONDS": "0.5",
            "MLW_RESYNC_SECONDS": str(resync_seconds),
            "MLW_METRICS_PORT": "0",
            "MLW_HEALTH_PORT": "0",
            "MLW_WEBHOOK_PORT": "0",
            "MLW_LOG_FORMAT": "json",  # parsed by LogFollower
            # The policy status reporter passes every second, so that the restart and resync passes, whose writes
            # must be 0, include several of its passes (a restart must not write partial counts).
            "MLW_POLICY_STATUS_SECONDS": "1",
        }
        if self.fake is not None:
            from tests.support.operator import live_gcp_settings  # noqa: PLC0415  (imports kopf's test helpers)

            env.update(live_gcp_settings(self.fake, PROJECT, LOCATION, CLUSTER))
        if self.tracemalloc:
            (self.workdir / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.workdir), os.environ.get("PYTHONPATH")]))
            env["MLW_BENCH_TRACEMALLOC"] = str(self.workdir / f"tracemalloc-{tag}.json")
        return env

    # --- helpers (on the run's server, with its CPU sampler)

    def mark(self, operator: OperatorProcess) -> Mark:
        emulator, harness = self.cpu.sample()
        gcp = self.fake.mark() if self.fake is not None else 0
        return Mark(self.server.request_count, gcp, operator.cpu(), emulator, harness, time.monotonic())

    def settle(self, operator: OperatorProcess, since: int) -> None:
        """Until the operator has made no write for QUIET_SECONDS (its trailing writes belong to the pass).
        Reads only the requests logged since the last poll, so the emulator thread hardly notices."""
        state = {"seen": since, "changed": time.monotonic()}

        def quiet() -> bool:
            operator.check_alive()
            fresh = self.server.requests(int(state["seen"]))
            state["seen"] += len(fresh)
            if any(record.is_write for record in fresh):
                state["changed"] = time.monotonic()
            return time.monotonic() - state["changed"] >= QUIET_SECONDS

        wait_until(quiet, timeout=self.timeout, interval=0.2, what="the operator quiet")

    def finish(
        self, name: str, seconds: float, *, covered: int, start: Mark, operator: OperatorProcess, note: str = ""
    ) -> PassReport:
        emulator, harness = self.cpu.sample()
        rss, peak = operator.memory()
        calls: Counter[str] = Counter()
        if self.fake is not None:
            calls = Counter(f"{c.service}/{c.rpc}" for c in self.fake.calls(since=start.gcp))
        return PassReport(
            name=name,
            seconds=seconds,
            covered=covered,
            traffic=Traffic.of(self.server, start.requests),
            operator_cpu=operator.cpu() - start.operator_cpu,
            emulator_cpu=emulator - start.emulator_cpu,
            harness_cpu=harness - start.harness_cpu,
            rss_mb=rss,
            peak_mb=peak,
            gcp_calls=calls,
            note=note,
        )

    def allocators(self, operator: OperatorProcess, tag: str, when: str) -> list[Allocators]:
        """Ask the operator for its tracemalloc dump (SIGUSR1) and read it; nothing without --tracemalloc."""
        if not self.tracemalloc:
            return []
        path = Path(operator.env["MLW_BENCH_TRACEMALLOC"])
        path.unlink(missing_ok=True)
        os.kill(operator.pid, signal.SIGUSR1)
        wait_until(path.exists, timeout=self.timeout, interval=0.2, what=f"the tracemalloc dump ({tag})")
        dump = TracemallocDump.model_validate_json(path.read_text(encoding="utf-8"))
        mb = 1024 * 1024
        return [
            Allocators(
                when,
                dump.current / mb,
                dump.peak / mb,
                [(s.where, s.size / mb, s.count) for s in dump.top_lines],
                [(s.where, s.size / mb, s.count) for s in dump.top_files],
                [(s.where, s.size / mb, s.count) for s in dump.top_packages],
            )
        ]

    def wait_all(self, what: str, done: Callable[[], int], operator: OperatorProcess) -> None:
        def check() -> bool:
            operator.check_alive()
            if self.side.errors:
                raise RuntimeError(f"the cluster side failed: {self.side.errors[:3]}")
            return done() >= self.n

        wait_until(check, timeout=self.timeout, interval=0.1, what=what)

    # --- the passes

    def run(self) -> ScaleReport:
        with KubeEmulatorServer(history_limit=max(10_000, 30 * self.n)) as server:
            self.server = server
            for index in range(NAMESPACES):
                server.put_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace_of(index)}})
            server.put_object(permissive_policy("all").doc)
            tick = None
            if self.fake is not None:
                self.fake.gke.add_cluster(PROJECT, LOCATION, CLUSTER)
                self.fake.iam.add_service_account(GSA)
                tick = self.fake.gke.complete_operations  # GKE finishes every operation at once
            server.kubeconfig(self.workdir / "kubeconfig")
            self.cpu = ProcessCpu(server)
            with ClusterSide(server, tick=tick) as self.side:
                converged = self._converge()
                report = self._restart_and_resync(converged)
            if server.internal_errors:
                raise RuntimeError(f"the emulator failed: {server.internal_errors[:3]}")
            return report

    def _converge(self) -> Converged:
        """The first process: all N created at once once it watches; until all are Ready and it is quiet."""
        first = OperatorProcess(self.env(FAR_AWAY, "converge"), self.workdir / "operator-1.log")
        first.start()
        try:

            def watching() -> bool:
                # The operator's watch request, not the store's subscriptions (the cluster side has one too).
                first.check_alive()
                return bool(Traffic.of(self.server, 0).counts["watch", "mlworkloads"])

            wait_until(watching, timeout=self.timeout, what="the operator watching MLWorkloads")
            startup = time.monotonic() - first.started
            start = self.mark(first)
            for doc in self.docs:
                self.server.put_object(doc.doc)
            created = time.monotonic() - start.at
            self.progress(f"N={self.n}: created in {created:.1f} s, converging")
            self.wait_all("every workload Ready", self.side.ready_count, first)
            ready = [t - start.at for t in self.side.ready_times()]
            self.settle(first, start.requests)
            report = self.finish("converge", ready[-1], covered=len(ready), start=start, operator=first)
            allocators = self.allocators(first, "converge", "after the converge pass")
        finally:
            stopping = time.monotonic()
            exit_code = first.stop()
            stop_seconds = time.monotonic() - stopping
        first.log.read()
        self.progress(f"N={self.n}: converged in {report.seconds:.1f} s; restarting")
        return Converged(report, statistics.median(ready), startup, created, stop_seconds, exit_code,
                         first.log.errors, allocators)  # fmt: skip

    def _restart_and_resync(self, converged: Converged) -> ScaleReport:
        """The second process: its resume pass over every workload, then its resync timer's pass."""
        resync_seconds = self.resync_override or max(10.0, round(1.5 * converged.report.seconds + 5.0))
        second = OperatorProcess(self.env(resync_seconds, "restart"), self.workdir / "operator-2.log")
        # The new process's CPU counts from 0; the logs' positions and this process's CPU from now.
        emulator_cpu, harness_cpu = self.cpu.sample()
        start = Mark(self.server.request_count, self.fake.mark() if self.fake else 0, 0.0, emulator_cpu, harness_cpu,
                     time.monotonic())  # fmt: skip
        second.start()
        try:

            def verified() -> dict[Key, float]:
                second.log.read()
                return LogFollower.first_after(second.log.handled, self.keys, second.started)

            self.wait_all("every workload re-verified after the restart", lambda: len(verified()), second)
            handled = verified()
            restart_end = max(handled.values())
            self.settle(second, start.requests)
            early = LogFollower.first_after(second.log.resynced, self.keys, second.started)
            overlap = sum(1 for t in early.values() if t <= restart_end)
            note = f"{overlap} resync timers fired during the restart pass" if overlap else ""
            restart = self.finish(
                "restart", restart_end - second.started, covered=len(handled), start=start, operator=second, note=note
            )
            self.progress(f"N={self.n}: restart pass {restart.seconds:.1f} s; waiting for the resync timers")

            start = self.mark(second)

            def resynced() -> dict[Key, float]:
                second.log.read()
                return LogFollower.first_after(second.log.resynced, self.keys, restart_end)

            self.wait_all("every workload resynced", lambda: len(resynced()), second)
            timers = resynced()
            self.settle(second, start.requests)
            resync = self.finish(
                "resync", max(timers.values()) - min(timers.values()), covered=len(timers), start=start, operator=second
            )
            allocators = self.allocators(second, "resync", "after the resync pass (restarted process)")
        finally:
            exit_code = second.stop()
        second.log.read()
        return ScaleReport(
            workloads=self.n,
            gcp_mode="live (fake GCP)" if self.fake is not None else "dry-run",
            resync_seconds=resync_seconds,
            startup_seconds=converged.startup_seconds,
            create_seconds=converged.create_seconds,
            converge=converged.report,
            median_ready_seconds=converged.median_ready_seconds,
            restart=restart,
            resync=resync,
            stop_seconds=converged.stop_seconds,
            exit_codes=[converged.exit_code, exit_code],
            operator_errors=converged.operator_errors + second.log.errors,
            allocators=converged.allocators + allocators,
            ready=self.side.ready_count(),
            pools_created=len(self.fake.calls("container", "CreateNodePool")) if self.fake is not None else None,
        )


@dataclass
class Converged:
    """What the converge pass hands to the rest of the run."""

    report: PassReport
    median_ready_seconds: float
    startup_seconds: float
    create_seconds: float
    stop_seconds: float
    exit_code: int
    operator_errors: int
    allocators: list[Allocators]


class DumpedStat(BaseModel):
    where: str
    size: int
    count: int


class TracemallocDump(BaseModel):
    """What SITECUSTOMIZE writes."""

    current: int
    peak: int
    top_lines: list[DumpedStat]
    top_files: list[DumpedStat]
    top_packages: list[DumpedStat]


def run_scale(
    workloads: int,
    workdir: Path | None = None,
    *,
    fake: FakeGcp | None = None,
    resync_seconds: float | None = None,
    tracemalloc: bool = False,
    timeout: float | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> ScaleReport:
    """The three passes over `workloads` workloads; `fake`: live GCP mode against it (else dry-run)."""
    with tempfile.TemporaryDirectory(prefix="mlw-scale-") as scratch:
        directory = workdir or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        run = ScaleRun(workloads, directory, fake=fake, resync_seconds=resync_seconds, tracemalloc=tracemalloc,
                       timeout=timeout, progress=progress)  # fmt: skip
        return run.run()


# --- printing ---------------------------------------------------------------------------------------------

SECTIONS: Final = ("converge", "requests per workload", "restart pass", "resync pass", "memory", "cpu", "allocators")


def machine() -> str:
    return (
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), Python {platform.python_version()}"
        f" ({platform.python_implementation()}), {platform.system()} {platform.release()}"
    )


def _traffic_lines(traffic: Traffic, n: int) -> list[str]:
    watches = traffic.total(frozenset({"watch"}))
    lines = [
        f"    reads {traffic.reads / n:.2f} / workload, writes {traffic.writes / n:.2f} / workload"
        f" ({traffic.reads} reads, {traffic.writes} writes, {watches} watches)"
    ]
    rows = sorted(traffic.counts.items(), key=lambda item: (-item[1], item[0]))
    for (verb, resource), count in rows:
        if verb in READ_VERBS | WRITE_VERBS:
            lines.append(f"      {verb:<7} {resource:<32} {count:>8}  {count / n:7.2f} / workload")
    return lines


def render(report: ScaleReport) -> str:
    n = report.workloads
    c, r, s = report.converge, report.restart, report.resync
    out = [
        f"== N = {n} workloads ({report.gcp_mode}; {n} = 60 % Cluster / 30 % Job / 10 % Service over"
        f" {NAMESPACES} namespaces, {report.shapes} GPU shapes; resync timer of the restarted process:"
        f" {report.resync_seconds:.0f} s)",
        "-- converge",
        f"    Ready: {report.ready} of {n}; all Ready {c.seconds:.1f} s after the first create"
        f" ({report.throughput:.1f} workloads/s); median workload Ready at {report.median_ready_seconds:.1f} s"
        f" ({report.median_ready_seconds / c.seconds:.0%} of the total)"
        if c.seconds
        else "    no workload",
        f"    operator start-up until watching {report.startup_seconds:.1f} s; creating all {n} took"
        f" {report.create_seconds:.1f} s; stopping the first process took {report.stop_seconds:.1f} s",
        "-- requests per workload (converge pass, every request the operator made)",
        *_traffic_lines(c.traffic, n),
        f"-- restart pass: every workload re-verified {r.seconds:.1f} s after the process started"
        f" ({r.covered} of {n}); writes {r.traffic.writes}, reads {r.traffic.reads / n:.2f} / workload",
        *([f"    note: {r.note}"] if r.note else []),
        *(f"    write: {what} x{count}" for what, count in r.traffic.writes_by_resource().items()),
        f"-- resync pass: every workload's timer within {s.seconds:.1f} s of the first ({s.covered} of {n});"
        f" writes {s.traffic.writes}, reads {s.traffic.reads / n:.2f} / workload",
        *(f"    write: {what} x{count}" for what, count in s.traffic.writes_by_resource().items()),
        "-- memory (operator, /proc/<pid>/status)",
        f"    after converge: RSS {c.rss_mb:.0f} MB, peak {c.peak_mb:.0f} MB (first process)",
        f"    after restart:  RSS {r.rss_mb:.0f} MB, peak {r.peak_mb:.0f} MB (second process)",
        f"    after resync:   RSS {s.rss_mb:.0f} MB, peak {s.peak_mb:.0f} MB",
        "-- cpu seconds (operator process / emulator thread / rest of the benchmark process)",
        *(
            f"    {p.name:<9} {p.operator_cpu:7.1f} / {p.emulator_cpu:7.1f} / {p.harness_cpu:7.1f}"
            f"   operator {1000 * p.operator_cpu / n:.1f} ms per workload"
            for p in (c, r, s)
        ),
    ]
    if report.pools_created is not None:
        out.append("-- gcp (live, fake GCP): calls by RPC per pass")
        for p in (c, r, s):
            calls = ", ".join(f"{rpc} {count}" for rpc, count in sorted(p.gcp_calls.items())) or "none"
            out.append(f"    {p.name:<9} {calls}")
        out.append(f"    CreateNodePool over the run: {report.pools_created} ({report.shapes} shapes)")
    out.append("-- allocators (operator, tracemalloc)")
    if not report.allocators:
        out.append("    not measured (run with --tracemalloc)")
    for found in report.allocators:
        out.append(f"    {found.when}: traced {found.current_mb:.1f} MB, traced peak {found.peak_mb:.1f} MB")
        out.extend(f"      {mb:7.2f} MB {count:>8} blocks  {where}" for where, mb, count in found.top_lines)
        out.append("      by file:")
        out.extend(f"      {mb:7.2f} MB {count:>8} blocks  {where}" for where, mb, count in found.top_files)
        out.append("      by package:")
        out.extend(f"      {mb:7.2f} MB {count:>8} blocks  {where}" for where, mb, count in found.top_packages)
    if report.operator_errors or set(report.exit_codes) != {0}:
        out.append(f"-- operator: {report.operator_errors} error lines, exit codes {report.exit_codes}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--workloads", type=int, nargs="+", default=[100, 1000], help="N values, run in turn")
    parser.add_argument("--resync-seconds", type=float, default=None,
                        help="the restarted process's resync interval (default: 1.5 x converge + 5 s)")  # fmt: skip
    parser.add_argument("--tracemalloc", action="store_true", help="dump the operator's top allocators")
    parser.add_argument("--live-gcp", action="store_true", help="live GCP mode against the fake GCP")
    parser.add_argument("--timeout", type=float, default=None, help="deadline of each wait (default 120 s + 1 s x N)")
    args = parser.parse_args(argv)
    print(f"# mlworkload scale benchmark: {machine()}", flush=True)
    for n in args.workloads:
        started = time.monotonic()
        if args.live_gcp:
            from tests.support.gcp import FakeGcp  # noqa: PLC0415

            with FakeGcp() as fake:
                report = run_scale(n, fake=fake, resync_seconds=args.resync_seconds, tracemalloc=args.tracemalloc,
                                   timeout=args.timeout, progress=lambda m: print(f"# {m}", flush=True))  # fmt: skip
        else:
            report = run_scale(n, resync_seconds=args.resync_seconds, tracemalloc=args.tracemalloc,
                               timeout=args.timeout, progress=lambda m: print(f"# {m}", flush=True))  # fmt: skip
        print(render(report), flush=True)
        print(f"# N={n}: the whole run took {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
