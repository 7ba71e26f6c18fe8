"""`mlworkload run` as a deployment runs it: a separate process configured by MLW_* variables, with
its liveness probe, Prometheus metrics, JSON logs and a clean stop on SIGTERM."""

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.documents import workload
from tests.support.kube import KubeEmulatorServer, wait_until
from tests.support.operator import emulated_cluster, free_port

NS = "run"


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


@pytest.fixture
def server() -> Iterator[KubeEmulatorServer]:
    with emulated_cluster(NS) as emulator:
        yield emulator


def test_the_run_command_serves_health_metrics_and_reconciles(server: KubeEmulatorServer, tmp_path: Path) -> None:
    metrics, health = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(server.kubeconfig(tmp_path / "config")),
        "MLW_METRICS_PORT": str(metrics),
        "MLW_HEALTH_PORT": str(health),
        "MLW_WEBHOOK_PORT": str(free_port()),
        "MLW_LOG_FORMAT": "json",
        "MLW_NAMESPACES": NS,
    }
    executable = shutil.which("mlworkload", path=str(Path(sys.executable).parent))
    assert executable is not None
    log = (tmp_path / "operator.log").open("w+")
    process = subprocess.Popen([executable, "run", "--resync-seconds", "30"], env=env, stdout=log, stderr=log)
    try:
        wait_until(lambda: fetch(f"http://127.0.0.1:{health}/healthz"), timeout=30, what="the liveness probe")
        server.put_object(workload("served", NS).gpu_group().doc)

        def phase() -> str:
            found = server.get_object("mlworkload.io/v1alpha1", "MLWorkload", "served", NS) or {}
            return str(found.get("status", {}).get("phase", ""))

        def exposed() -> str:
            text = fetch(f"http://127.0.0.1:{metrics}/metrics")
            return text if "mlworkload_workloads{" in text else ""

        wait_until(lambda: phase() == "Provisioning", timeout=30, what="the workload reconciled")
        exposition = wait_until(exposed, timeout=30, what="the workload in /metrics")
        assert 'mlworkload_reconciles_total{result="applied"}' in exposition
        assert 'mlworkload_workloads{phase="Provisioning",type="Cluster"} 1.0' in exposition
        assert 'mlworkload_gpus_requested{accelerator="nvidia-l4",capacity="SpotWithFallback",namespace="run"} 1.0' in (
            exposition
        )
        assert "mlworkload_reconcile_duration_seconds_count" in exposition
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    log.seek(0)
    lines = [line for line in log.read().splitlines() if line.strip()]
    assert code == 0, lines[-20:]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records, lines[:20]
    assert any("served" in json.dumps(record) for record in records)
