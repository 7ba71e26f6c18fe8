"""`mlworkload`: the operator's builders and policy checks on the command line, no cluster needed.

Exit codes: 0 success (admitted), 1 refused (one line per problem, naming the field), 2 usage.
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import yaml

from mlworkload.api.crd import build_crds, crd_files
from mlworkload.api.load import Documents, parse_documents
from mlworkload.builders import build_gcp_plan, build_objects
from mlworkload.gcp.plan import GcpPlan, IamBinding, NodePoolPlan
from mlworkload.policy import Admission, ClusterView, WorkloadGpus, admit_in
from mlworkload.problems import Problem, Refused
from mlworkload.settings import SETTINGS_VARIABLES, OperatorSettings, flag_of
from mlworkload.yamlio import dump_all, load_all

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line use (a missing file, a malformed flag value)."""


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(encoding="utf-8"), path
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None


def _load(paths: Sequence[str]) -> Documents:
    combined = Documents()
    for path in paths:
        text, source = _read(path)
        try:
            documents = load_all(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
            problem = getattr(error, "problem", None) or str(error)
            raise Refused([Problem(where, f"not valid YAML: {problem}")]) from None
        parsed = parse_documents(documents, source)
        combined.workloads += parsed.workloads
        combined.policies += parsed.policies
    return combined


def _namespace_labels(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    labels = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--namespace-labels: {item!r} is not key=value (example: team=nlp,env=prod)")
        labels[key] = value
    return labels


def _admissions(args: argparse.Namespace) -> list[Admission]:
    documents = _load(args.file)
    if not documents.workloads:
        raise UsageError(f"no MLWorkload in {', '.join(args.file)}")
    # Offline, the workloads of the input share their namespaces' quota with each other.
    view = ClusterView(
        policies=documents.policies + _load(args.policy).policies,
        default_labels=_namespace_labels(args.namespace_labels),
        usage=[WorkloadGpus.of(workload) for workload in documents.workloads],
    )
    # The operator's settings (MLW_GCP_PROJECT, MLW_KUBERAY_NAMESPACE, ...) fill in what policies leave out.
    defaults = OperatorSettings.load().platform_defaults
    return [admit_in(view, workload, defaults) for workload in documents.workloads]


def _admitted(verdicts: list[Admission]) -> list[Admission]:
    problems = [
        Problem(f"{verdict.resolved.namespace}/{verdict.resolved.name}", str(problem))
        for verdict in verdicts
        for problem in verdict.problems
    ]
    if problems:
        raise Refused(problems)
    return verdicts


def _render(args: argparse.Namespace, out: TextIO) -> int:
    objects = [obj for verdict in _admitted(_admissions(args)) for obj in build_objects(verdict.resolved)]
    out.write(json.dumps(objects, indent=2) + "\n" if args.output == "json" else dump_all(objects))
    return EXIT_OK


def _merge_plans(plans: list[GcpPlan]) -> GcpPlan:
    pools: dict[str, NodePoolPlan] = {}
    bindings: dict[tuple[str, str, str], IamBinding] = {}
    for plan in plans:
        pools.update({pool.name: pool for pool in plan.node_pools})
        bindings.update({(b.resource, b.role, b.member): b for b in plan.iam_bindings})
    return GcpPlan(node_pools=[pools[k] for k in sorted(pools)], iam_bindings=list(bindings.values()))


def _plan_text(plan: GcpPlan) -> str:
    if not plan.node_pools and not plan.iam_bindings:
        return "No GCP changes: no node pools and no IAM bindings are needed.\n"
    lines = []
    if plan.node_pools:
        lines.append("Node pools (shared by shape, created with 0 nodes, autoscaling from 0):")
        for pool in plan.node_pools:
            gpus = f"{pool.accelerator.count} x {pool.accelerator.type}" if pool.accelerator else "no GPU"
            zones = ",".join(pool.locations) or "cluster default zones"
            lines.append(
                f"  + {pool.name}  in {pool.cluster_path}\n"
                f"      {pool.machine_type}, {gpus}, {'spot' if pool.spot else 'on-demand'},"
                f" {pool.min_nodes}..{pool.max_nodes} nodes, {zones}, location policy {pool.location_policy}\n"
                f"      taints: {', '.join(f'{t.key}={t.value}:{t.effect}' for t in pool.taints) or 'none'}"
            )
    if plan.iam_bindings:
        lines.append("IAM bindings:")
        lines += [f"  + {b.role}\n      on {b.resource}\n      for {b.member}" for b in plan.iam_bindings]
    return "\n".join(lines) + "\n"


def _plan(args: argparse.Namespace, out: TextIO) -> int:
    plan = _merge_plans([build_gcp_plan(verdict.resolved) for verdict in _admitted(_admissions(args))])
    out.write(json.dumps(plan.to_dict(), indent=2) + "\n" if args.output == "json" else _plan_text(plan))
    return EXIT_OK


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    verdicts = _admissions(args)
    for verdict in verdicts:
        if verdict.allowed:
            out.write(f"{verdict.resolved.namespace}/{verdict.resolved.name}: admitted by {verdict.policy_name}\n")
    _admitted(verdicts)
    return EXIT_OK


def _crds(args: argparse.Namespace, out: TextIO) -> int:
    if args.output_dir is None:
        out.write(dump_all(build_crds()))
        return EXIT_OK
    directory = Path(args.output_dir)
    if not directory.is_dir():
        raise UsageError(f"--output-dir {directory} is not a directory")
    for name, content in crd_files().items():
        (directory / name).write_text(content, encoding="utf-8")
        out.write(f"wrote {directory / name}\n")
    return EXIT_OK


def _run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the operator until interrupted (imported lazily: the offline commands need no kopf)."""
    from mlworkload.operator_main import run_operator  # noqa: PLC0415

    overrides = {field: getattr(args, field) for field in SETTINGS_VARIABLES if hasattr(args, field)}
    run_operator(OperatorSettings.load(overrides))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlworkload",
        description="Render, plan and validate MLWorkloads offline, with the operator's own code.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_inputs(name: str, help_text: str, outputs: tuple[str, ...] | None) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "-f",
            "--file",
            action="append",
            required=True,
            metavar="FILE",
            help="MLWorkload file (several documents allowed; - for stdin); repeatable",
        )
        command.add_argument(
            "--policy", action="append", default=[], metavar="FILE", help="MLWorkloadPolicy file; repeatable"
        )
        command.add_argument(
            "--namespace-labels",
            metavar="K=V,...",
            help="labels of the workload's namespace, to match policies' namespaceSelector",
        )
        if outputs:
            command.add_argument("-o", "--output", choices=outputs, default=outputs[0])
        return command  # fmt: skip

    with_inputs("render", "print every Kubernetes object the operator would create", ("yaml", "json")).set_defaults(
        handler=_render
    )
    with_inputs("plan", "print the GCP changes: node pools and IAM bindings", ("text", "json")).set_defaults(
        handler=_plan
    )
    with_inputs("validate", "admission verdict, the same code as the webhook", None).set_defaults(handler=_validate)
    crds = commands.add_parser("crds", help="print the generated CRDs", description="print the generated CRDs")
    crds.add_argument("--output-dir", metavar="DIR", help="write one file per CRD into DIR instead (e.g. crds)")
    crds.set_defaults(handler=_crds)
    run = commands.add_parser(
        "run",
        help="run the operator against the current kubeconfig / in-cluster config",
        description="Run the operator. Every flag has an environment variable (shown); flags win.",
    )
    for field, variable in SETTINGS_VARIABLES.items():
        described = OperatorSettings.model_fields[field].description or ""
        run.add_argument(flag_of(field), dest=field, metavar="VALUE", help=f"{described} [{variable}]".strip())
    run.set_defaults(handler=_run)
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        handler: Any = args.handler
        return int(handler(args, out))
    except Refused as refused:
        err.write("\n".join(refused.lines()) + "\n")
        return EXIT_REFUSED
    except UsageError as error:
        err.write(f"mlworkload: {error}\n")
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
