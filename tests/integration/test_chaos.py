"""Chaos: the real operator, SIGKILLed at random points of a stream of creates, updates, policy changes and
deletes, with GCP faults (429, 503, a busy cluster, stockouts) and Kubernetes API faults (409, 500).

Each trial is one seed (tests/support/chaos.py turns it into the plan). Trials run side by side against one
API server emulator and one FakeGcp, each in its own namespace, policy, GKE cluster, service account and
bucket, with its own `mlworkload run` process (its own installation, watching its namespace): a kill is a real
SIGKILL of a real process, which leaves kopf's finalizer and progress annotations, GKE operations and IAM
read-modify-writes half done, exactly as a crashed pod does. Kills are triggered by the operator's own
requests (its n-th write to Kubernetes or to GCP since it started), not by a timer, so they land mid-reconcile.

Each trial ends with the faults healed and is judged against the fakes' state: every workload converged, no
duplicate pools or bindings, nothing left after every workload is deleted, and no IAM member revoked while a
live workload relied on it (checked at the moment of every SetIamPolicy, against the emulator's objects).

    python -m pytest tests/integration/test_chaos.py                          # 20 random trials + 5 regressions
    MLW_CHAOS_SEED=1234 MLW_CHAOS_TRIALS=1 python -m pytest tests/integration/test_chaos.py   # replay one trial

Part of `python -m pytest`: 25 trials take about 2.5 minutes on 2 cores (two at a time; a failing trial waits
out its deadlines, so a failure costs more). The seed is random unless set, so every run tries new streams, and
the seeds of trials that once failed (`REGRESSIONS`) run too; a failure prints the trial's seed, stream,
violations and the last lines of its operator's log. The checkers are unit-tested in
tests/unit/test_chaos_support.py.

The run's figures (trials, kills, faults by kind, violations, wall time) are printed at the end of the session.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support import chaos
from tests.support.chaos import MLW, Json, KillPoint, Op, TrialPlan, TrialResult, World
from tests.support.gcp import FakeGcp, Fault, Request, api_error, stockout, unavailable
from tests.support.gcp.core import Service
from tests.support.kube import WRITES, KubeCall, KubeEmulatorServer, KubeFault, RandomFaultHandle, RandomFaults

SEED = int(os.environ.get("MLW_CHAOS_SEED") or random.SystemRandom().randrange(1, 10**6))
TRIALS = int(os.environ.get("MLW_CHAOS_TRIALS") or 20)
# Trials that once failed, replayed in every default run (not when a seed is given): a lost hand-over across a
# crash (728000, 802124), two refused workloads leaving a member to each other (644608), a deletion waiting for a
# workload that vanished, and a workload provisioned before kopf's finalizer (549898), a workload never
# reconciled after kopf's finalizer patch met a 409 (668912). Whether a kill or a fault lands on the same write
# depends on timing, so a replay shows a regression often, not always.
REGRESSIONS = () if os.environ.get("MLW_CHAOS_SEED") else (549898, 644608, 668912, 728000, 802124)
PARALLEL = int(os.environ.get("MLW_CHAOS_PARALLEL") or 2)  # the CI machine has 2 cores
CONVERGE_SECONDS = 30.0  # deadlines only: a healthy trial converges in a few seconds
RELEASE_SECONDS = 20.0
PROGRESS_TICKS = 40  # at most this many ticks between two steps while waiting for the operator's writes
TICK = 0.1  # the polling interval of the driver while the stream runs
CHECK_INTERVAL = 0.25  # and while it waits for convergence or release (a check reads the whole world)
# A refusal is judged on a fresh read of the policies, a few milliseconds before the revoke reaches IAM; a policy
# changed back within that moment is not the operator's to know. A revoke is wrong only if every policy in
# effect during this window admitted the workload.
POLICY_WINDOW_SECONDS = 1.0
BUSY_TICKS = 30  # how long a GKE-started operation holds the cluster
OPERATION_TICKS = 2  # how long the operator's own GKE operations run
RAY_KINDS = (("ray.io/v1", "RayCluster"),)
CHILD_KINDS = (
    ("v1", "ServiceAccount"),
    ("v1", "Service"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("networking.k8s.io/v1", "Ingress"),
    ("cloud.google.com/v1", "BackendConfig"),
    ("ray.io/v1", "RayCluster"),
)
GCP_WRITES: tuple[tuple[Service, str], ...] = (
    ("container", "CreateNodePool"),
    ("container", "DeleteNodePool"),
    ("container", "UpdateNodePool"),
    ("container", "SetNodePoolAutoscaling"),
    ("iam", "SetIamPolicy"),
    ("storage", "SetIamPolicy"),
)
SUMMARY = pytest.StashKey[list[str]]()


class SummaryReporter:
    """Prints the chaos figures in pytest's closing summary (whatever the capture mode)."""

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
        if SUMMARY in config.stash:
            terminalreporter.write_sep("-", "mlworkload chaos")
            for line in config.stash[SUMMARY]:
                terminalreporter.write_line(line)


class Trial:
    """One seed's stream against its own operator process; the result says what went wrong, if anything."""

    def __init__(self, plan: TrialPlan, server: KubeEmulatorServer, fake: FakeGcp, kubeconfig: Path, logs: Path):
        self.plan, self.names = plan, plan.names
        self.server, self.fake = server, fake
        self.kubeconfig, self.log_path = kubeconfig, logs / f"operator-{plan.seed}.log"
        self.result = TrialResult(plan.seed)
        self.process: subprocess.Popen[bytes] | None = None
        self.killed_pid: int | None = None  # the last process a kill point SIGKILLed
        self.lock = threading.Lock()  # the kill triggers run in the servers' threads
        self.pending_kills = list(plan.kills)
        self.writes: Counter[str] = Counter()  # by channel, since the operator (re)started
        self.total_writes = 0
        self.busy: dict[str, int] = {}  # GKE-started operations -> ticks left
        self.operation_ticks: dict[str, int] = {}
        self.docs: dict[str, Json] = {}
        self.gcp_faults: list[tuple[str, Fault]] = []
        self.hooks: list[Fault] = []
        self.kube_chaos: RandomFaultHandle | None = None
        self.revocations: list[tuple[str, list[str]]] = []  # (request body, members revoked while claimed)
        self.policy_changes: list[tuple[float, Json]] = []  # (when replaced, the policy it replaced)
        self.mark = fake.mark()

    # --- the operator process ---------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "MLW_ROLE": "controller",
            "MLW_NAMESPACES": self.names.namespace,
            "MLW_INSTALLATION": self.names.installation,
            "MLW_GCP_MODE": "live",
            "MLW_GCP_PROJECT": chaos.PROJECT,
            "MLW_GCP_LOCATION": chaos.LOCATION,
            "MLW_GKE_CLUSTER": self.names.cluster,
            "MLW_GKE_ENDPOINT": self.fake.endpoint,
            "MLW_IAM_ENDPOINT": f"http://{self.fake.grpc_target}",
            "MLW_IAP_ENDPOINT": self.fake.endpoint,
            "MLW_STORAGE_ENDPOINT": self.fake.endpoint,
            "MLW_POOL_RELEASE_GRACE_SECONDS": "1",
            "MLW_GCP_POLL_SECONDS": "0.3",
            "MLW_RESYNC_SECONDS": "2",
            "MLW_METRICS_PORT": "0",
            "MLW_HEALTH_PORT": "0",
            "MLW_WEBHOOK_PORT": "0",
            "MLW_LOG_FORMAT": "text",
        }

    def start(self) -> None:
        executable = shutil.which("mlworkload", path=str(Path(sys.executable).parent))
        assert executable is not None
        with self.lock:
            self.writes.clear()
        with self.log_path.open("ab") as log:
            log.write(f"--- start (kills so far: {self.result.kills})\n".encode())
            log.flush()
            self.process = subprocess.Popen([executable, "run"], env=self.env(), stdout=log, stderr=log)

    def kill(self) -> None:
        """SIGKILL, from a server thread in the middle of one of the operator's requests."""
        if self.process is not None and self.process.poll() is None:
            self.killed_pid = self.process.pid
            os.kill(self.process.pid, signal.SIGKILL)
            self.result.kills += 1

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
            # -SIGTERM: a process restarted a moment ago may not have installed kopf's handler yet, and dies of
            # the signal as a pod killed during start-up does; anything else is an unclean stop.
            # -SIGKILL from this harness's own kill point, landing just as the stop began, is not the operator's.
            killed_here = code == -signal.SIGKILL and self.killed_pid == self.process.pid
            if code not in (0, -signal.SIGTERM) and not killed_here:
                self.result.errors.append(f"the operator exited with {code} on SIGTERM")
        self.process = None

    def tick(self) -> bool:
        """One step of the world: a killed operator is started again (as its Deployment would), GKE finishes
        operations that have run long enough."""
        if self.process is not None and self.process.poll() is not None:
            self.result.restarts += 1
            self.start()
        for name in self.fake.gke.active_operations(self.names.cluster_path):
            table = self.busy if name in self.busy else self.operation_ticks
            left = table.setdefault(name, OPERATION_TICKS)
            if left <= 0:
                self.fake.gke.complete_operation(name)
            else:
                table[name] = left - 1
        return True

    def until(self, check: Callable[[], list[str]], seconds: float) -> list[str]:
        """Tick until `check` finds nothing wrong; what it found last when the deadline passed."""
        deadline = time.monotonic() + seconds
        while True:
            self.tick()
            problems = check()
            if not problems or time.monotonic() >= deadline:
                return problems
            time.sleep(CHECK_INTERVAL)  # the polling interval, not a synchronisation point

    # --- triggers and hooks (run in the servers' threads) ------------------------------------------

    def _count_write(self, channel: chaos.KillChannel) -> bool:
        """Count one of the operator's writes; kill it when a kill point says so. True: drop the write."""
        with self.lock:
            self.writes[channel] += 1
            self.total_writes += 1
            point: KillPoint | None = self.pending_kills[0] if self.pending_kills else None
            if point is None or point.channel != channel or self.writes[channel] != point.nth:
                return False
            self.pending_kills.pop(0)
        self.kill()
        return not point.lands

    def _kube_write(self, call: KubeCall) -> bool:
        ours = call.namespace == self.names.namespace or (
            call.resource == "mlworkloadpolicies" and call.name == self.names.policy
        )
        return ours and self._count_write("kube")

    def _ours(self, service: Service, request: Request) -> bool:
        if service == "iam":
            return request.params.get("account") == self.names.gsa
        if service == "storage":
            return request.params.get("bucket") == self.names.bucket
        if "op" in request.params:  # operations name no cluster: look the operation up
            with self.fake.gke.lock:
                operation = self.fake.gke.operations.get(request.params["op"])
            return operation is not None and operation.cluster == self.names.cluster
        return request.params.get("cluster") == self.names.cluster

    def _gcp_write(self, service: Service) -> Callable[[Request], bool]:
        def when(request: Request) -> bool:
            if not self._ours(service, request):
                return False
            if service != "container":
                self._watch_revocation(service, request)
            return self._count_write("gcp")

        return when

    def _watch_revocation(self, service: Service, request: Request) -> None:
        """Before a SetIamPolicy is handled: the members it removes that a live workload relies on right now."""
        if service == "iam":
            resource, before = self.names.gsa_resource(), self.fake.iam.policy(self.names.gsa)
            after = (request.body or {}).get("policy", {})
        else:
            resource, before, after = (
                self.names.bucket_resource(),
                self.fake.storage.policy(self.names.bucket),
                request.body or {},
            )
        if not chaos.policy_bindings(before) - chaos.policy_bindings(after):
            return
        world = self.world()
        claims = chaos.claimed(world, self.names)
        with self.lock:
            recent = [old for when, old in self.policy_changes if time.monotonic() - when < POLICY_WINDOW_SECONDS]
        for old in recent:  # claimed under each policy of the window, not only the newest
            claims &= chaos.claimed(dataclasses.replace(world, policy=old), self.names)
        wrong = chaos.wrongly_revoked(resource, before, after, claims)
        if wrong:  # confirmed against the call log at the end: the write may still be refused (a stale etag)
            self.revocations.append((json.dumps(request.body, sort_keys=True), wrong))

    # --- the world --------------------------------------------------------------------------------

    def world(self, *, children: bool = False) -> World:
        """The trial's part of the world; its objects other than Ray's only with `children` (a cost to the
        emulator that every trial's operator shares)."""
        ns = self.names.namespace
        found = [
            obj
            for api_version, kind in (CHILD_KINDS if children else ())
            for obj in self.server.list_objects(api_version, kind, ns)
            if chaos.WORKLOAD_LABEL in obj["metadata"].get("labels", {})
        ]
        return World(
            workloads=self.server.list_objects(MLW, "MLWorkload", ns),
            policy=self.server.get_object(MLW, "MLWorkloadPolicy", self.names.policy) or {},
            ray_objects={
                o["metadata"]["name"]: o for av, kind in RAY_KINDS for o in self.server.list_objects(av, kind, ns)
            },
            children=found,
            pools=self.fake.gke.node_pools(self.names.cluster_path),
            iam_policies={
                self.names.gsa_resource(): self.fake.iam.policy(self.names.gsa),
                self.names.bucket_resource(): self.fake.storage.policy(self.names.bucket),
            },
        )

    # --- the stream -------------------------------------------------------------------------------

    def set_up(self) -> None:
        names = self.names
        self.server.put_object({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": names.namespace, "labels": names.namespace_labels}})  # fmt: skip
        self.server.put_object(chaos.policy_document(names, self.plan.initial_policy))
        self.fake.gke.add_cluster(chaos.PROJECT, chaos.LOCATION, names.cluster)
        self.fake.iam.add_service_account(names.gsa)
        self.fake.storage.add_bucket(names.bucket, chaos.PROJECT)
        # Counting and killing come first: they see every write, and never answer one themselves unless a kill
        # point drops it. Then the random Kubernetes faults of the whole stream.
        self.server.inject(KubeFault(status=500, methods=WRITES, when=self._kube_write, times=None))
        for service, rpc in GCP_WRITES:
            self.hooks.append(self.fake.fail(service, rpc, unavailable(), times=None, when=self._gcp_write(service)))
        self.kube_chaos = self.server.inject(
            RandomFaults(
                rate=self.plan.kube_fault_rate,
                rng=random.Random(self.plan.seed),
                statuses=chaos.KUBE_FAULT_STATUSES,
                when=lambda call: call.namespace == self.names.namespace,
            )
        )
        self.start()

    def inject(self, op: Op) -> None:
        for fault in op.faults:
            if fault.kind == "busy":
                self.busy[self.fake.gke.start_operation(self.names.cluster_path)] = BUSY_TICKS
            elif fault.kind == "stockout":
                for pool in self.pools_of(op):
                    self.fake.gke.fail_operations(stockout(), pool=pool, times=1)
            else:
                error = (
                    api_error("RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Requests' per minute.")
                    if fault.kind == "429"
                    else unavailable()
                )
                service: Any = fault.service
                scoped = functools.partial(self._ours, service)
                self.gcp_faults.append(
                    (
                        fault.kind,
                        self.fake.fail(
                            service,
                            fault.rpc,
                            error,
                            times=fault.times,
                            when=scoped,
                        ),
                    )
                )

    def pools_of(self, op: Op) -> list[str]:
        assert op.spec is not None
        doc = chaos.workload_document(self.names, op.name, op.spec)
        policy = self.server.get_object(MLW, "MLWorkloadPolicy", self.names.policy) or {}
        return sorted(chaos.desired([doc], policy, self.names).pools)

    def apply(self, op: Op) -> None:
        names = self.names
        if op.kind == "create":
            assert op.spec is not None
            self.docs[op.name] = chaos.workload_document(names, op.name, op.spec)
            self.server.put_object(self.docs[op.name])
        elif op.kind == "update":
            assert op.spec is not None
            old, new = self.docs[op.name]["spec"], chaos.workload_document(names, op.name, op.spec)["spec"]
            patch = {**{key: None for key in old if key not in new}, **new}  # a merge patch: None removes
            self.server.patch_object(MLW, "MLWorkload", op.name, {"spec": patch}, names.namespace)
            self.docs[op.name]["spec"] = new
        elif op.kind == "delete":
            self.server.delete_object(MLW, "MLWorkload", op.name, names.namespace)
            del self.docs[op.name]
        else:
            assert op.policy is not None
            spec = chaos.policy_document(names, op.policy)["spec"]
            replaced = self.server.get_object(MLW, "MLWorkloadPolicy", names.policy) or {}
            self.server.patch_object(MLW, "MLWorkloadPolicy", names.policy, {"spec": spec})
            with self.lock:
                self.policy_changes.append((time.monotonic(), replaced))

    def progress(self, writes: int) -> None:
        """Let the operator make `writes` more writes (at most PROGRESS_TICKS ticks) before the next step."""
        with self.lock:
            target = self.total_writes + writes
        for _ in range(PROGRESS_TICKS if writes else 0):
            self.tick()
            with self.lock:
                if self.total_writes >= target:
                    return
            time.sleep(TICK)  # the polling interval, not a synchronisation point

    def heal(self) -> None:
        with self.lock:
            self.pending_kills.clear()
        if not self.result.kills:  # no kill point was reached: the end of the stream is the random point
            self.kill()
        if self.kube_chaos is not None:
            self.kube_chaos.remove()
        with self.fake.recorder.lock:
            for _, fault in self.gcp_faults:
                fault.times = 0
        self.busy = dict.fromkeys(self.busy, 0)

    def run(self) -> TrialResult:
        started = time.monotonic()
        try:
            self.set_up()
            for op in self.plan.ops:
                self.inject(op)
                self.apply(op)
                self.result.operations += 1
                self.progress(op.progress)
            self.heal()
            self.result.unconverged = self.until(lambda: chaos.unconverged(self.world(), self.names), CONVERGE_SECONDS)
            world = self.world()
            self.result.duplicates = chaos.duplicate_pools(world.pools) + [
                problem for resource, policy in world.iam_policies.items()
                for problem in chaos.duplicate_bindings(resource, policy)
            ] + self.duplicates_sent()  # fmt: skip
            for name in list(self.docs):
                self.server.delete_object(MLW, "MLWorkload", name, self.names.namespace)
            self.result.orphans = self.until(
                lambda: chaos.orphans(self.world(children=True), self.names), RELEASE_SECONDS
            )
        except Exception as error:  # a broken harness or server: reported with the seed, like a violation
            self.result.errors.append(f"{type(error).__name__}: {error}")
        finally:
            self.stop()
            with self.fake.recorder.lock:
                for fault in self.hooks:
                    fault.times = 0
            self.figures()
            self.result.seconds = time.monotonic() - started
        if self.result.violations:
            self.result.log = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
        return self.result

    def ours(self, service: Service) -> Callable[[Any], bool]:
        def check(call: Any) -> bool:
            if service == "iam":
                return str((call.body or {}).get("resource", "")).endswith(self.names.gsa)
            return f"/b/{self.names.bucket}/" in call.path

        return check

    def set_policy_calls(self) -> list[tuple[str, Any]]:
        """Our trial's answered SetIamPolicy calls: (resource, the policy it wrote)."""
        calls = []
        for service, resource in (("iam", self.names.gsa_resource()), ("storage", self.names.bucket_resource())):
            mine = self.ours(service)  # type: ignore[arg-type]
            for call in self.fake.calls(service, "SetIamPolicy", since=self.mark):  # type: ignore[arg-type]
                if call.status == 200 and mine(call):
                    calls.append((resource, call))
        return calls

    def duplicates_sent(self) -> list[str]:
        """Duplicate roles or members in what the operator wrote (the fakes fold duplicate members together)."""
        problems = []
        for resource, call in self.set_policy_calls():
            policy = call.body.get("policy", {}) if call.service == "iam" else call.body
            problems += [f"{p} (sent)" for p in chaos.duplicate_bindings(resource, policy or {})]
        return problems

    def figures(self) -> None:
        result = self.result
        for kind, fault in self.gcp_faults:
            result.gcp_faults[kind] += fault.hits
        path = f"/clusters/{self.names.cluster}/"
        mutations = ("CreateNodePool", "DeleteNodePool", "UpdateNodePool", "SetNodePoolAutoscaling")
        busy = [
            c for c in self.fake.calls("container", mutations, since=self.mark) if path in c.path and c.status == 400
        ]
        result.gcp_faults["busy"] += len(busy)
        with self.fake.gke.lock:
            result.gcp_faults["stockout"] += sum(
                1
                for op in self.fake.gke.operations.values()
                if op.cluster == self.names.cluster and op.failure is not None
            )
        if self.kube_chaos is not None:
            result.kube_faults.update(self.kube_chaos.injected)
        answered = {json.dumps(call.body, sort_keys=True) for _, call in self.set_policy_calls()}
        result.wrongly_revoked = [w for body, wrong in self.revocations if body in answered for w in wrong]


@pytest.fixture(scope="module")
def server() -> Iterator[KubeEmulatorServer]:
    with KubeEmulatorServer() as emulator:
        yield emulator


def describe(result: TrialResult, plan: TrialPlan) -> str:
    steps = "\n".join(f"    {i}. {op.describe()}" for i, op in enumerate(plan.ops, 1))
    violations = "\n".join(f"    - {v}" for v in result.violations[:20])
    return (
        f"trial {result.seed} (replay: MLW_CHAOS_SEED={result.seed} MLW_CHAOS_TRIALS=1): {len(result.violations)} "
        f"violation(s), {result.kills} kill(s) at {plan.kills}, Kubernetes fault rate {plan.kube_fault_rate}\n"
        f"  stream:\n{steps}\n  violations:\n{violations}\n  operator log (last lines):\n{result.log}"
    )


def test_the_operator_converges_through_kills_and_faults(
    server: KubeEmulatorServer, fake: FakeGcp, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every trial: converged, 0 duplicate pools or bindings, 0 orphans after delete, 0 members revoked while
    claimed; and the suite did inject what it claims (kills, GCP and Kubernetes faults)."""
    kubeconfig = server.kubeconfig(tmp_path / "config")
    seeds = [SEED + i for i in range(TRIALS)]
    plans = [chaos.plan_trial(seed) for seed in [*seeds, *(s for s in REGRESSIONS if s not in seeds)]]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        results = list(pool.map(lambda plan: Trial(plan, server, fake, kubeconfig, tmp_path).run(), plans))
    lines = chaos.summary(results, SEED, time.monotonic() - started)
    request.config.stash[SUMMARY] = lines
    if not request.config.pluginmanager.has_plugin("mlworkload-chaos-summary"):
        request.config.pluginmanager.register(SummaryReporter(), "mlworkload-chaos-summary")
    failed = [describe(result, plan) for result, plan in zip(results, plans, strict=True) if result.violations]
    assert not failed, "\n".join(lines) + "\n\n" + "\n\n".join(failed)
    assert fake.unrouted == []
    assert fake.internal_errors == []
    assert server.internal_errors == []
    assert sum(r.kills for r in results) >= TRIALS  # every trial kills at least once (its first kill point)
    if TRIALS >= 10:  # one trial may draw no fault that fires; a run of many always does
        assert sum(sum(r.kube_faults.values()) for r in results) > 0
        assert sum(sum(r.gcp_faults.values()) for r in results) > 0
