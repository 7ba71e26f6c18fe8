"""The scale harness (bench/bench_scale.py) in the suite: a smoke test of the harness at small N, and issue 12's
regression guards at N = 200 — an unchanged restart and resync pass write nothing, and one node pool is created
per shape however many workloads share it.

Each run is a real `mlworkload run` process against the in-memory API server (and, at 200, live GCP mode against
the fake GCP). Counts only: the harness measures times, nothing here asserts one.
"""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.bench_scale import SECTIONS, SHAPES, TYPES, ScaleReport, gcp_writes, render, run_scale, workload_docs

from tests.support.gcp import FakeGcp

SMOKE = 20
AT_SCALE = 200
# The restarted process's resync interval: after its restart pass (a few seconds at 200), short enough to keep
# the module within its budget. Were a timer to fire during the restart pass, its writes would still be counted
# (in that pass) and the resync pass would wait for the next one.
SMOKE_RESYNC_SECONDS = 8.0
SCALE_RESYNC_SECONDS = 15.0


@pytest.fixture(scope="module")
def at_scale(fake: FakeGcp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaleReport]:
    """One run of the three passes over 200 workloads, live GCP against the fake (shared by two tests)."""
    fake.reset()
    yield run_scale(AT_SCALE, tmp_path_factory.mktemp("scale"), fake=fake, resync_seconds=SCALE_RESYNC_SECONDS)
    assert fake.unrouted == []
    assert fake.internal_errors == []


def test_the_mix_is_sixty_thirty_ten_over_ten_namespaces() -> None:
    docs = workload_docs(100)
    assert Counter(d.doc["spec"]["type"] for d in docs) == {"Cluster": 60, "Job": 30, "Service": 10}
    by_namespace = Counter((d.doc["metadata"]["namespace"], d.doc["spec"]["type"]) for d in docs)
    assert by_namespace == {(f"scale-{i}", kind): count for i in range(10) for kind, count in Counter(TYPES).items()}
    shapes = Counter(d.doc["spec"]["workerGroups"][0]["accelerator"]["type"] for d in docs)
    assert set(shapes) == {accelerator for accelerator, _, _ in SHAPES}


def test_the_harness_reports_every_pass_at_small_n(tmp_path: Path) -> None:
    report = run_scale(SMOKE, tmp_path, resync_seconds=SMOKE_RESYNC_SECONDS)
    assert report.ready == SMOKE
    assert (report.converge.covered, report.restart.covered, report.resync.covered) == (SMOKE, SMOKE, SMOKE)
    assert report.exit_codes == [0, 0]
    # The request log was read: each Ray object applied once per workload of its type, children written.
    applies = {
        kind: report.converge.traffic.counts["apply", kind] for kind in ("rayclusters", "rayjobs", "rayservices")
    }
    assert applies == {"rayclusters": 12, "rayjobs": 6, "rayservices": 2}
    assert report.converge.traffic.writes >= SMOKE
    assert report.resync.traffic.writes == 0, report.resync.traffic.writes_by_resource()
    assert report.converge.operator_cpu > 0
    assert report.converge.rss_mb > 0
    assert report.converge.peak_mb >= report.converge.rss_mb
    text = render(report)
    missing = [section for section in SECTIONS if f"-- {section}" not in text]
    assert missing == [], text


def test_an_unchanged_restart_and_resync_write_nothing_at_200(at_scale: ScaleReport) -> None:
    assert at_scale.ready == AT_SCALE
    assert (at_scale.restart.covered, at_scale.resync.covered) == (AT_SCALE, AT_SCALE)
    assert at_scale.restart.traffic.writes == 0, at_scale.restart.traffic.writes_by_resource()
    assert at_scale.resync.traffic.writes == 0, at_scale.resync.traffic.writes_by_resource()
    assert gcp_writes(at_scale.restart.gcp_calls) == {}
    assert gcp_writes(at_scale.resync.gcp_calls) == {}
    assert at_scale.exit_codes == [0, 0]


def test_one_node_pool_create_per_shape_at_200(at_scale: ScaleReport) -> None:
    """200 workloads over three GPU shapes share three pools: three creates, all in the converge pass."""
    assert at_scale.ready == AT_SCALE  # Ready needs NodePoolsReady: every workload found its pool
    assert at_scale.pools_created == len(SHAPES)
    assert at_scale.converge.gcp_calls["container/CreateNodePool"] == len(SHAPES)
