"""`mlworkload`: the operator's builders and policy checks on the command line, no cluster needed.

Exit codes, the same for every command (api.md):

  0  done; for `validate`, admitted (or, for a file of policies only, every policy valid)
  1  refused: one line per problem on stderr, naming the file, the document and the field; for
     `release`, a workload whose GCP resources or finalizer could not be released (run it again)
  2  unreadable input or usage: a missing file, not UTF-8, not YAML, a duplicate key, over the size
     or alias limits (see yamlio), a document that is not an object or whose apiVersion or kind is
     not a string; bad flags. One line per problem, naming the file and where in it
  3  internal error: a bug, never the input's fault. One line, `mlworkload: internal error: ...`;
     `--debug` adds the traceback

Refusals and unreadable input are kept apart so a script can tell "fix your manifest" (1) from
"this is not a manifest" (2) from "report this" (3); until they were, every crash exited 1.
"""

import argparse
import contextlib
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from mlworkload.api.crd import build_crds, crd_files
from mlworkload.api.load import Documents, parse_documents
from mlworkload.api.policy import MLWorkloadPolicy
from mlworkload.builders import build_gcp_plan, build_objects
from mlworkload.constants import GCP_LABEL_POOL_TENANT, WORKLOAD_KIND
from mlworkload.gcp.plan import GcpPlan, IamBinding, NodePoolPlan
from mlworkload.policy import Admission, ClusterView, WorkloadGpus, admit_in
from mlworkload.problems import Problem, Refused, printable
from mlworkload.settings import SETTINGS_VARIABLES, OperatorSettings, flag_of
from mlworkload.tree import Tree, expand, judge
from mlworkload.yamlio import MAX_INPUT_BYTES, UNREADABLE, Unreadable, dump_all, read_all

EXIT_OK, EXIT_REFUSED, EXIT_UNREADABLE, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_USAGE = EXIT_UNREADABLE  # bad flags are unreadable input too: nothing was judged

# An internal error's message is cut here: it may quote a whole hostile document.
_MAX_MESSAGE = 300


class UsageError(Exception):
    """Bad command-line use (a missing file, a malformed flag value)."""


def _read(path: str) -> tuple[bytes, str]:
    """A file's or stdin's bytes, one byte over the size limit at most (so /dev/zero ends too)."""
    if path == "-":
        stream: Any = getattr(sys.stdin, "buffer", sys.stdin)  # a text stream when tests replace stdin
        data = stream.read(MAX_INPUT_BYTES + 1)
        return (data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data), "<stdin>"
    try:
        with Path(path).open("rb") as stream:
            return stream.read(MAX_INPUT_BYTES + 1), path
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None


def _load(paths: Sequence[str]) -> tuple[Documents, list[Problem]]:
    """The documents of every file, and every problem of every file (not just the first file's)."""
    combined = Documents()
    problems: list[Problem] = []
    for path in paths:
        data, source = _read(path)
        try:
            parsed = parse_documents(read_all(data, source), source)
        except (Unreadable, Refused) as error:
            problems += error.problems
            continue
        combined.workloads += parsed.workloads
        combined.policies += parsed.policies
    return combined, problems


def _inputs(args: argparse.Namespace) -> tuple[Documents, list[MLWorkloadPolicy]]:
    """`-f` documents and all policies (`-f` and `--policy`); Refused with the problems of both."""
    documents, problems = _load(args.file)
    given, policy_problems = _load(args.policy)
    if problems or policy_problems:
        raise Refused(problems + policy_problems)
    return documents, documents.policies + given.policies


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
    documents, policies = _inputs(args)
    if not documents.workloads:
        raise UsageError(f"no MLWorkload in {', '.join(args.file)}")
    return _judge(args, documents, policies)


def _judge(args: argparse.Namespace, documents: Documents, policies: list[MLWorkloadPolicy]) -> list[Admission]:
    # Offline, the workloads of the input share their namespaces' quota with each other.
    view = ClusterView(
        policies=policies,
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
        lines.append("Node pools (created with 0 nodes, autoscaling from 0):")
        for pool in plan.node_pools:
            gpus = f"{pool.accelerator.count} x {pool.accelerator.type}" if pool.accelerator else "no GPU"
            zones = ",".join(pool.locations) or "cluster default zones"
            tenant = pool.labels.get(GCP_LABEL_POOL_TENANT)
            sharing = f"policy {tenant}'s own" if tenant else "shared by shape"
            lines.append(
                f"  + {pool.name}  in {pool.cluster_path}  ({sharing})\n"
                f"      {pool.machine_type}, {gpus}, {'spot' if pool.spot else 'on-demand'},"
                f" {pool.min_nodes}..{pool.max_nodes} nodes, {zones}, location policy {pool.location_policy}\n"
                f"      taints: {', '.join(f'{t.key}={t.value}:{t.effect}' for t in pool.taints) or 'none'}\n"
                f"      nodes: {_node_settings(pool)}"
            )
    if plan.iam_bindings:
        lines.append("IAM bindings:")
        lines += [f"  + {b.role}\n      on {b.resource}\n      for {b.member}" for b in plan.iam_bindings]
    return "\n".join(lines) + "\n"


def _node_settings(pool: NodePoolPlan) -> str:
    """The policy's node settings of a pool, GKE's default named for each one it leaves out."""
    disk = f"{pool.disk_type or 'pd-balanced (GKE default)'}, {pool.disk_size_gb or 100} GB"
    return ", ".join([
        f"service account {pool.service_account or 'Compute Engine default (GKE default)'}",
        f"disk {disk}",
        f"image {pool.image_type or 'COS_CONTAINERD (GKE default)'}",
        f"secure boot {'on' if pool.secure_boot else 'off'}",
        f"image streaming {'on' if pool.image_streaming else 'off'}",
    ])  # fmt: skip


def _plan(args: argparse.Namespace, out: TextIO) -> int:
    plan = _merge_plans([build_gcp_plan(verdict.resolved) for verdict in _admitted(_admissions(args))])
    out.write(json.dumps(plan.to_dict(), indent=2) + "\n" if args.output == "json" else _plan_text(plan))
    return EXIT_OK


def _validate(args: argparse.Namespace, out: TextIO) -> int:
    """Every MLWorkload and MLWorkloadPolicy of the files and directories given (mlworkload/tree.py)."""
    tree = Tree()
    for path in expand(args.file):
        data, source = _read(path)
        try:
            tree.add(read_all(data, source), source)
        except Unreadable as error:
            tree.unreadable_file(error.problems)
    given, problems = _load(expand(args.policy))
    if tree.unreadable or problems:  # no verdict at all, but every problem of every file
        raise Refused(tree.problems + problems)
    if not (tree.workloads or tree.policies or tree.refused):
        ignored = f" ({len(tree.ignored)} document(s) of other kinds ignored)" if tree.ignored else ""
        raise UsageError(f"no MLWorkload or MLWorkloadPolicy in {', '.join(args.file)}{ignored}")
    defaults = OperatorSettings.load().platform_defaults
    results = judge(tree, given.policies, _namespace_labels(args.namespace_labels), defaults)
    if args.output == "json":
        out.write(json.dumps({"results": [result.to_json() for result in results], "ignored": tree.ignored},
                             indent=2) + "\n")  # fmt: skip
        return EXIT_OK if all(result.allowed for result in results) else EXIT_REFUSED
    for note in tree.ignored:
        out.write(f"{note}: ignored, not an MLWorkload or MLWorkloadPolicy\n")
    for result in results:
        if result.allowed:
            verdict = f"admitted by {result.policy}" if result.kind == WORKLOAD_KIND else "valid"
            out.write(f"{result.subject}: {verdict}\n")
    refusals = [line for result in results for line in result.lines()]
    if refusals:
        raise Refused(refusals)
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


def _release(args: argparse.Namespace, out: TextIO) -> int:
    """Release the GCP resources of workloads whose deletion waits on a missing operator, and their finalizer."""
    import asyncio  # noqa: PLC0415  (the offline commands need neither asyncio's loop nor kopf)
    import datetime  # noqa: PLC0415

    from mlworkload.controller.handlers import api_client, gcp_provisioner  # noqa: PLC0415
    from mlworkload.controller.kube import ClientKubeApi  # noqa: PLC0415
    from mlworkload.controller.release import release_deleted  # noqa: PLC0415

    overrides = {field: getattr(args, field) for field in SETTINGS_VARIABLES if hasattr(args, field)}
    config = OperatorSettings.load(overrides)
    kube = ClientKubeApi(api_client())
    results = asyncio.run(
        release_deleted(
            kube,
            gcp_provisioner(config, kube),
            config.platform_defaults,
            namespaces=config.namespaces,
            min_age=datetime.timedelta(seconds=args.min_age),
            now=datetime.datetime.now(datetime.UTC),
            dry_run=args.dry_run,
        )
    )
    if args.output == "json":
        out.write(json.dumps({"results": [
            {"namespace": r.namespace, "name": r.name, "released": r.done, "leftAlone": r.waiting, "error": r.error,
             "revoked": [b.to_dict() for b in r.revoked], "kept": [b.to_dict() for b in r.kept]}
            for r in results]}, indent=2) + "\n")  # fmt: skip
    else:
        for result in results:
            out.write("".join(f"{line}\n" for line in result.lines()))
        if not results:
            out.write("no MLWorkload is waiting for its finalizer\n")
    return EXIT_REFUSED if any(result.error for result in results) else EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlworkload",
        description="Render, plan and validate MLWorkloads offline, with the operator's own code.",
    )
    parser.add_argument("--debug", action="store_true", help="print the traceback of an internal error (exit 3)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Also after the command: a subparser's default would overwrite the global flag, hence SUPPRESS.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def with_inputs(name: str, help_text: str, outputs: tuple[str, ...]) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help_text, description=help_text, parents=[debug])
        command.add_argument(
            "-f",
            "--file",
            action="append",
            required=True,
            metavar="FILE",
            help="MLWorkload file (several documents allowed; - for stdin; for validate, a directory too: every"
            " *.yaml and *.yml under it); repeatable",
        )
        command.add_argument(
            "--policy",
            action="append",
            default=[],
            metavar="FILE",
            help="MLWorkloadPolicy file (for validate, a directory too); repeatable",
        )
        command.add_argument(
            "--namespace-labels",
            metavar="K=V,...",
            help="labels of the workload's namespace, to match policies' namespaceSelector",
        )
        command.add_argument("-o", "--output", choices=outputs, default=outputs[0])
        return command  # fmt: skip

    with_inputs("render", "print every Kubernetes object the operator would create", ("yaml", "json")).set_defaults(
        handler=_render
    )
    with_inputs("plan", "print the GCP changes: node pools and IAM bindings", ("text", "json")).set_defaults(
        handler=_plan
    )
    with_inputs(
        "validate", "admission verdicts of files and directories, the same code as the webhook", ("text", "json")
    ).set_defaults(handler=_validate)
    crds = commands.add_parser(
        "crds", help="print the generated CRDs", description="print the generated CRDs", parents=[debug]
    )
    crds.add_argument("--output-dir", metavar="DIR", help="write one file per CRD into DIR instead (e.g. crds)")
    crds.set_defaults(handler=_crds)
    run = commands.add_parser(
        "run",
        parents=[debug],
        help="run the operator against the current kubeconfig / in-cluster config",
        description="Run the operator. Every flag has an environment variable (shown); flags win.",
    )
    run.set_defaults(handler=_run)
    release = commands.add_parser(
        "release",
        parents=[debug],
        help="after the operator was removed: release the GCP resources of MLWorkloads being deleted, and their"
        " finalizer (exit 1 when one could not be released)",
        description="For each MLWorkload being deleted that still carries the operator's finalizer: revoke the IAM"
        " members the operator added for it, as the operator would, then remove the finalizer. Only for an"
        " operator that is gone: the settings (GCP project, cluster, namespaces) are the operator's, as flags or"
        " environment variables. Node pools are left to GKE's autoscaler (they scale to zero) or to gcloud.",
    )
    release.add_argument("--min-age", type=float, default=60.0, metavar="SECONDS",
                         help="leave alone workloads deleted more recently (a running operator may be releasing"
                         " them); default 60")  # fmt: skip
    release.add_argument("--dry-run", action="store_true", help="say what would be done; change nothing")
    release.add_argument("-o", "--output", choices=("text", "json"), default="text")
    release.set_defaults(handler=_release)
    for command in (run, release):
        for field, variable in SETTINGS_VARIABLES.items():
            described = OperatorSettings.model_fields[field].description or ""
            command.add_argument(flag_of(field), dest=field, metavar="VALUE", help=f"{described} [{variable}]".strip())
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; the exit code is the module docstring's, whatever the input or the code does."""
    out = out or sys.stdout
    err = err or sys.stderr
    debug = False
    try:
        args = _parse(argv, out, err)
        if isinstance(args, int):
            return args
        debug = args.debug
        return _dispatch(args, out, err)
    except Exception as error:  # the one place where every unexpected error becomes exit 3
        return _internal_error(error, err, debug)


def _parse(argv: Sequence[str] | None, out: TextIO, err: TextIO) -> argparse.Namespace | int:
    """The parsed command line, or argparse's exit code (2 for bad flags, 0 for --help), its text on out/err."""
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return _parser().parse_args(argv)
        except SystemExit as exit_:
            return exit_.code if isinstance(exit_.code, int) else EXIT_OK if exit_.code is None else EXIT_USAGE


def _dispatch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        handler: Any = args.handler
        return int(handler(args, out))
    except Refused as refused:
        err.write("\n".join(refused.lines()) + "\n")
        unreadable = any(problem.rule == UNREADABLE for problem in refused.problems)
        return EXIT_UNREADABLE if unreadable else EXIT_REFUSED
    except UsageError as error:
        err.write(f"mlworkload: {printable(str(error))}\n")
        return EXIT_USAGE


def _internal_error(error: Exception, err: TextIO, debug: bool) -> int:
    """One line naming the exception, so a script sees 3 and a person sees what to report, not a traceback."""
    message = printable(str(error))
    if len(message) > _MAX_MESSAGE:
        message = message[:_MAX_MESSAGE] + "..."
    line = f"mlworkload: internal error: {type(error).__name__}: {message}"
    if debug:
        err.write("".join(traceback.format_exception(error)))
        err.write(line + "\n")
    else:
        err.write(line + " (run with --debug for the traceback)\n")
    return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
