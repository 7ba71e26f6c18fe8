"""Pure-compute timings of the offline path, per example: parse, admit, build, and the whole render.

    python bench/bench_render.py [--iterations 2000] [--schema-iterations N] [--examples DIR]

For every MLWorkload in examples/ (under examples/policy-team-nlp.yaml), each phase runs many
times after a warm-up, timed with time.perf_counter_ns; no file or network I/O is inside a timed
region. Phases:

  parse            parse_workload + parse_policy of the already-loaded YAML documents
  admit            policy selection, defaults and every policy check (mlworkload.policy.admit)
  build            build_objects + build_gcp_plan from the admitted workload
  render           the whole operator path: parse + admit + build
  render+schema    render, then tests.support.schemas.validate_object on every object: the test
                   suite's upstream-schema check, not operator work, so it is reported but not
                   held to the budget

Each row prints mean / median / p99 in microseconds and the mean as a fraction of a 1 ms budget.
Peak memory (tracemalloc) is measured for one render per example. Nothing is asserted.
"""

import argparse
import gc
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.support.schemas (the package itself is installed)

from mlworkload.api.load import parse_policy, parse_workload  # noqa: E402
from mlworkload.builders import build_gcp_plan, build_objects  # noqa: E402
from mlworkload.policy import admit  # noqa: E402
from mlworkload.yamlio import load_all  # noqa: E402

BUDGET_NS = 1_000_000  # 1 ms
POLICY_FILE = "policy-team-nlp.yaml"
NAMESPACE_LABELS = {"team": "nlp"}  # the example policy selects team=nlp


def measure(function: Callable[[], Any], iterations: int, warmup: int) -> list[int]:
    """Durations in ns of `iterations` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        function()
    gc.collect()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        start = clock()
        function()
        samples.append(clock() - start)
    return samples


def summary(samples: list[int]) -> tuple[float, float, float]:
    """mean, median and p99 in microseconds."""
    ordered = sorted(samples)
    p99 = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
    return statistics.fmean(ordered) / 1000, statistics.median(ordered) / 1000, p99 / 1000


def peak_memory(function: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def load_schema_validator() -> Callable[[dict[str, Any]], list[str]] | None:
    try:
        from tests.support.schemas import validate_object  # noqa: PLC0415 - optional, test-side
    except ImportError as error:
        print(f"(render+schema skipped: {error})")
        return None
    return validate_object


def bench_example(
    path: Path,
    policy_doc: dict[str, Any],
    iterations: int,
    schema_iterations: int,
    validate: Callable[[dict[str, Any]], list[str]] | None,
) -> tuple[list[tuple[str, int, list[int]]], int, int]:
    (workload_doc,) = load_all(path.read_text(encoding="utf-8"))
    workload = parse_workload(workload_doc)
    policy = parse_policy(policy_doc)
    verdict = admit(workload, [policy], NAMESPACE_LABELS)
    if not verdict.allowed:
        raise SystemExit(f"{path.name} is refused: {[str(p) for p in verdict.problems]}")
    resolved = verdict.resolved

    def parse() -> None:
        parse_workload(workload_doc)
        parse_policy(policy_doc)

    def admit_only() -> None:
        admit(workload, [policy], NAMESPACE_LABELS)

    def build() -> None:
        build_objects(resolved)
        build_gcp_plan(resolved)

    def render() -> list[dict[str, Any]]:
        admitted = admit(parse_workload(workload_doc), [parse_policy(policy_doc)], NAMESPACE_LABELS)
        objects = build_objects(admitted.resolved)
        build_gcp_plan(admitted.resolved)
        return objects

    warmup = max(10, iterations // 10)
    rows = [
        ("parse", iterations, measure(parse, iterations, warmup)),
        ("admit", iterations, measure(admit_only, iterations, warmup)),
        ("build", iterations, measure(build, iterations, warmup)),
        ("render", iterations, measure(render, iterations, warmup)),
    ]
    if validate is not None and schema_iterations > 0:

        def render_and_check() -> None:
            for obj in render():
                errors = validate(obj)
                if errors:
                    raise SystemExit(f"{path.name}: {obj['kind']} fails its schema: {errors}")

        schema_warmup = max(3, schema_iterations // 10)
        rows.append(("render+schema", schema_iterations, measure(render_and_check, schema_iterations, schema_warmup)))
    return rows, peak_memory(render), len(render())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000, help="timed runs per phase (default 2000)")
    parser.add_argument(
        "--schema-iterations",
        type=int,
        default=None,
        help="timed runs of render+schema (default: --iterations; 0 skips)",
    )
    parser.add_argument("--examples", type=Path, default=REPO / "examples", help="directory of example YAML files")
    args = parser.parse_args(argv)
    if args.schema_iterations is None:
        args.schema_iterations = args.iterations

    (policy_doc,) = load_all((args.examples / POLICY_FILE).read_text(encoding="utf-8"))
    examples = sorted(p for p in args.examples.glob("*.yaml") if p.name != POLICY_FILE)
    validate = load_schema_validator() if args.schema_iterations > 0 else None

    print(
        f"mlworkload render benchmark: Python {platform.python_version()} on {platform.machine()},"
        f" {os.cpu_count()} CPUs; policy {POLICY_FILE}; {args.iterations} iterations after warm-up"
    )
    header = f"{'example':<24} {'phase':<14} {'runs':>5} {'mean us':>9} {'median us':>10} {'p99 us':>9}  budget"
    print(header)
    print("-" * (len(header) + 10))
    memory = []
    for path in examples:
        rows, peak, count = bench_example(path, policy_doc, args.iterations, args.schema_iterations, validate)
        for phase, runs, samples in rows:
            mean, median, p99 = summary(samples)
            budget = f"{mean * 1000 / BUDGET_NS:.2f} of 1 ms"
            if phase == "render+schema":
                budget += " (test-side, not budgeted)"
            print(f"{path.stem:<24} {phase:<14} {runs:>5} {mean:>9.1f} {median:>10.1f} {p99:>9.1f}  {budget}")
        memory.append((path.stem, peak, count))
    print("budget: mean time of the phase as a fraction of 1 ms; GC stays enabled, as in the operator")
    print()
    print(f"{'example':<24} {'objects':>7} {'peak memory of one render (tracemalloc)':>40}")
    for name, peak, count in memory:
        print(f"{name:<24} {count:>7} {peak / 1024:>36.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
