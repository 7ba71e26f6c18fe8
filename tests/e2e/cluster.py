"""The e2e tier's cluster: whichever one there is, behind the few verbs the scenarios need.

The scenarios must say the same thing on a developer's cluster, a throwaway kind cluster and the
in-memory API server, so they only ever talk to :class:`Cluster`. It speaks plain HTTP API calls
through the official ``kubernetes`` client on every backend, including the in-memory one: the
client, server-side apply, discovery and the CRD installation then run here too, and only the
provisioning of the cluster itself (:func:`provision`) differs between backends.

Backend selection (:func:`choose_backend`), first match wins:

1. ``MLW_E2E_CLUSTER=in-memory``: the in-memory server, whatever else is set.
2. ``KUBECONFIG`` set (or ``MLW_E2E_CLUSTER=kubeconfig``): that cluster's current context.
3. ``kind`` and ``docker`` on PATH and ``docker info`` succeeds (or ``MLW_E2E_CLUSTER=kind``): a new
   kind cluster, deleted afterwards.
4. Otherwise the in-memory server, so that the suite always runs.

An explicit ``MLW_E2E_CLUSTER`` that cannot be honoured is an error, never a silent fallback.

Which operator the scenarios test (:func:`choose_operator`), ``MLW_E2E_OPERATOR``:

- ``in-process`` (the default): the tier runs the operator in this process (GCP dry-run, resync 2 s).
- ``in-cluster``: the operator the cluster already runs, installed from the Helm chart with
  ``operator.gcp.mode=dry-run`` (the e2e workflow's set-up, .github/workflows/e2e.yaml). The tier waits for its
  Deployments, restarts the controller if the tier had to add the GKE stand-in CRDs after it started, and
  waits until the webhook admits workloads in the run's namespace before any scenario runs.

On a real cluster the tier first checks that the operators there are the ones the run expects
(:func:`operator_problems`): never two mlworkload operators, never the KubeRay simulator next to a real KubeRay.
"""

from __future__ import annotations

import builtins
import functools
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar, cast

import kubernetes.client
import kubernetes.config

from mlworkload.controller.kube import ClientKubeApi, KubeError
from tests.support.documents import PolicyDoc, permissive_policy, workload
from tests.support.kube import KubeEmulatorServer, default_crd_paths, wait_until
from tests.support.kube.resources import load_crds

Obj = dict[str, Any]
T = TypeVar("T")
Backend = Literal["kubeconfig", "kind", "in-memory"]
BACKENDS: Final[tuple[Backend, ...]] = ("kubeconfig", "kind", "in-memory")
OperatorMode = Literal["in-process", "in-cluster"]
OPERATOR_MODES: Final[tuple[OperatorMode, ...]] = ("in-process", "in-cluster")
OPERATOR_ENV: Final = "MLW_E2E_OPERATOR"

MLW: Final = "mlworkload.io/v1alpha1"
CRD: Final = "apiextensions.k8s.io/v1"
FIELD_MANAGER: Final = "mlworkload-e2e"
RUN_LABEL: Final = "mlworkload.io/e2e-run"
STAND_IN_LABEL: Final = "mlworkload.io/e2e-stand-in"
# Above any priority a real cluster's own policies are likely to use, so that the run's policy is
# the one governing its namespace even where a team policy also selects team=nlp.
POLICY_PRIORITY: Final = 10_000
# Real API servers (and GC, and kopf's event posting) are slower than the in-memory one.
REAL_TIMEOUT: Final = 60.0
IN_MEMORY_TIMEOUT: Final = 30.0
# How often tests poll. Every poll is a few HTTP requests; the in-memory server shares this
# process (and its GIL) with the operator, so polling at wait_until's default 50 Hz slows the
# operator down several-fold, and a real API server would throttle it.
POLL_INTERVAL: Final = 0.25
# The Deployments of the operators, as their Helm charts label them (this chart's controller and webhook; KubeRay's).
OPERATOR_SELECTOR: Final = "app.kubernetes.io/name=mlworkload-operator"
KUBERAY_SELECTOR: Final = "app.kubernetes.io/name=kuberay-operator"
# Image pulls and (re)starts of the operators' pods.
INSTALLED_TIMEOUT: Final = 300.0
# What the run's policy opens for the Ray pods when a real KubeRay runs them: the internet (the RayService's
# runtime_env working_dir is on GitHub), never the cluster's private ranges. Everything else stays isolated.
INTERNET: Final[Obj] = {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]}}


class BackendUnavailable(RuntimeError):
    """MLW_E2E_CLUSTER asked for a backend this machine cannot provide."""


@dataclass(frozen=True)
class BackendChoice:
    backend: Backend
    reason: str
    kubeconfig: Path | None = None  # the user's, for the kubeconfig backend (may list several files)


def kind_usable() -> bool:
    """kind needs a working Docker engine, not only the CLI (which may exist without a daemon)."""
    if shutil.which("kind") is None or shutil.which("docker") is None:
        return False
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return False
    return info.returncode == 0


def choose_backend(
    environ: Mapping[str, str] = os.environ, kind_available: Callable[[], bool] = kind_usable
) -> BackendChoice:
    """The backend for this run; see the module docstring for the order. ``docker info`` runs only if needed."""
    forced = environ.get("MLW_E2E_CLUSTER", "")
    if forced and forced not in BACKENDS:
        raise BackendUnavailable(f"MLW_E2E_CLUSTER={forced!r}; expected one of {', '.join(BACKENDS)}")
    if forced == "in-memory":
        return BackendChoice("in-memory", "MLW_E2E_CLUSTER=in-memory")
    if forced == "kubeconfig" or (not forced and environ.get("KUBECONFIG")):
        if not environ.get("KUBECONFIG"):
            raise BackendUnavailable("MLW_E2E_CLUSTER=kubeconfig, but KUBECONFIG is not set")
        return BackendChoice("kubeconfig", f"KUBECONFIG={environ['KUBECONFIG']}", Path(environ["KUBECONFIG"]))
    if forced == "kind" or (not forced and kind_available()):
        if forced and not kind_available():
            raise BackendUnavailable("MLW_E2E_CLUSTER=kind, but kind, docker or the Docker engine is missing")
        return BackendChoice("kind", "kind and a Docker engine are available")
    return BackendChoice("in-memory", "no KUBECONFIG, and no kind with a Docker engine")


def choose_operator(backend: Backend, environ: Mapping[str, str] = os.environ) -> OperatorMode:
    """Which operator the scenarios test; see the module docstring."""
    mode = environ.get(OPERATOR_ENV) or "in-process"
    if mode not in OPERATOR_MODES:
        raise BackendUnavailable(f"{OPERATOR_ENV}={mode!r}; expected one of {', '.join(OPERATOR_MODES)}")
    if mode == "in-cluster" and backend == "in-memory":
        raise BackendUnavailable(
            f"{OPERATOR_ENV}=in-cluster needs a real cluster running the operator; the in-memory server runs none"
        )
    return mode


def _names(deployments: Sequence[Obj]) -> str:
    return ", ".join(f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in deployments)


def _env(deployment: Obj) -> dict[str, str]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: str(e.get("value", "")) for c in containers for e in c.get("env") or [] if "valueFrom" not in e}


def _is_controller(deployment: Obj) -> bool:
    return (deployment["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "controller"


def operator_problems(
    operator: OperatorMode, real_kuberay: bool, ours: Sequence[Obj], kuberay: Sequence[Obj]
) -> list[str]:
    """Why the operators a cluster runs (its Deployments) are not those the run expects, each with the fix."""
    problems = []
    if real_kuberay and not kuberay:
        problems.append(
            f"MLW_E2E_REAL_KUBERAY=1, but no KubeRay operator runs here (no Deployment with {KUBERAY_SELECTOR}): "
            "install KubeRay's chart kuberay-operator (docs/platform/ci-e2e.md)"
        )
    if kuberay and not real_kuberay:
        problems.append(
            f"KubeRay's operator runs here ({_names(kuberay)}): set MLW_E2E_REAL_KUBERAY=1, or the KubeRay simulator "
            "and KubeRay would both write the Ray objects' status"
        )
    if operator == "in-process" and ours:
        problems.append(
            f"the mlworkload operator runs here ({_names(ours)}): set {OPERATOR_ENV}=in-cluster to test it, or "
            "uninstall it; two operators would reconcile the same workloads"
        )
    if operator == "in-cluster":
        controllers = [d for d in ours if _is_controller(d)]
        if not controllers:
            problems.append(
                f"{OPERATOR_ENV}=in-cluster, but no mlworkload controller runs here (no Deployment with "
                f"{OPERATOR_SELECTOR},app.kubernetes.io/component=controller): install the chart"
            )
        for deployment in controllers:
            env = _env(deployment)
            mode = env.get("MLW_GCP_MODE") or ("live" if env.get("MLW_GCP_PROJECT") else "dry-run")
            if mode != "dry-run":
                problems.append(
                    f"the mlworkload controller {_names([deployment])} runs in GCP mode {mode}: install the chart "
                    "with --set operator.gcp.mode=dry-run (the scenarios' policies name made-up GCP projects)"
                )
    return problems


def rolled_out(deployment: Obj | None) -> bool:
    """As `kubectl rollout status` judges it: the newest spec observed, every replica updated and available, and
    no pod of an older one left."""
    if deployment is None:
        return False
    wanted = int(deployment["spec"].get("replicas", 1))
    status = deployment.get("status") or {}
    return bool(
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("updatedReplicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
        and status.get("replicas", 0) == wanted
    )


@contextmanager
def provision(choice: BackendChoice, workdir: Path) -> Iterator[tuple[Path, KubeEmulatorServer | None]]:
    """A kubeconfig for the chosen cluster, valid until the block ends (and the emulator, if in memory)."""
    if choice.backend == "kubeconfig":
        assert choice.kubeconfig is not None
        yield choice.kubeconfig, None
    elif choice.backend == "kind":
        with kind_cluster(workdir) as kubeconfig:
            yield kubeconfig, None
    else:
        with KubeEmulatorServer() as server:
            yield server.kubeconfig(workdir / "kubeconfig"), server


@contextmanager
def kind_cluster(workdir: Path) -> Iterator[Path]:
    """A throwaway kind cluster with its own kubeconfig file (the user's is never touched)."""
    name = f"mlw-e2e-{secrets.token_hex(3)}"
    kubeconfig = workdir / "kind-kubeconfig"
    try:
        subprocess.run(
            ["kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig), "--wait", "180s"],
            check=True,
            timeout=600,
        )
        yield kubeconfig
    finally:  # also after a failed create, which can leave the node container behind
        subprocess.run(
            ["kind", "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)], check=False, timeout=300
        )


@dataclass(frozen=True)
class _Resource:
    plural: str
    namespaced: bool


class Cluster:
    """The scenarios' whole view of a cluster: apply, read, patch, delete, and KubeRay's status writes.

    Everything the tests create lives in :attr:`namespace`, unique per run and labelled ``team=nlp``
    and :data:`RUN_LABEL`; cluster-scoped objects (policies) select that namespace by the run label,
    never by ``team=nlp``, so a shared cluster's other namespaces are never governed by them.
    """

    def __init__(self, backend: Backend, kubeconfig: Path, run_id: str) -> None:
        self.backend: Backend = backend
        self.kubeconfig = kubeconfig
        self.run_id = run_id
        self.namespace = f"mlw-e2e-{run_id}"
        self.policy_name = f"mlw-e2e-{run_id}"
        self.timeout = IN_MEMORY_TIMEOUT if backend == "in-memory" else REAL_TIMEOUT
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
        self.api_client = kubernetes.client.ApiClient(configuration)
        self.api_client.user_agent = FIELD_MANAGER  # the tests' own requests, told apart in audit logs
        self._resources: dict[tuple[str, str], _Resource] = {}

    def wait_until(self, condition: Callable[[], T], what: str, timeout: float | None = None) -> T:
        """Poll ``condition`` until it is truthy (the tier's only way of waiting), at a pace the cluster takes."""
        return wait_until(condition, timeout=timeout or self.timeout, interval=POLL_INTERVAL, what=what)

    @property
    def namespace_selector(self) -> Obj:
        """The selector for policies of this run: exactly the run's namespace."""
        return {"matchLabels": {RUN_LABEL: self.run_id}}

    # --- the verbs the scenarios use ----------------------------------------------------------------

    def apply(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Server-side apply, as `kubectl apply --server-side` and Argo CD do; fields left out are removed.

        ``dry_run``: admission (webhooks included) judges it, nothing is stored.
        """
        meta = obj["metadata"]
        path = self._path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")] + ([("dryRun", "All")] if dry_run else [])
        return self._request(
            "PATCH", path, query=query, body=json.dumps(obj), content_type="application/apply-patch+yaml"
        )

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return self._request("GET", self._path(api_version, kind, namespace, name))
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> builtins.list[Obj]:
        query = [("labelSelector", label_selector)] if label_selector else []
        items: builtins.list[Obj] = self._request("GET", self._path(api_version, kind, namespace), query=query)["items"]
        return items

    def patch(self, api_version: str, kind: str, name: str, patch: Obj, namespace: str | None = None) -> Obj:
        """A JSON merge patch of the main resource."""
        path = self._path(api_version, kind, namespace, name)
        return self._request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete in the background (finalizers and GC apply); False when there was no such object."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            self._request("DELETE", self._path(api_version, kind, namespace, name), body=body)
        except KubeError as error:
            if error.status == 404:
                return False
            raise
        return True

    def patch_status(
        self, api_version: str, kind: str, name: str, status: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch a namespaced custom object's /status, as KubeRay does (the simulator's StatusWriter)."""
        if namespace is None:
            raise ValueError("patch_status writes namespaced custom objects (KubeRay's) only")
        group, _, version = api_version.rpartition("/")
        written = kubernetes.client.CustomObjectsApi(self.api_client).patch_namespaced_custom_object_status(
            group,
            version,
            namespace,
            self._resource(api_version, kind).plural,
            name,
            {"status": status},
            _content_type="application/merge-patch+json",
        )
        return cast(dict[str, Any], written)

    # --- set-up and tear-down -----------------------------------------------------------------------

    def install_crds(self, paths: Iterable[Path]) -> None:
        """Server-side apply: the KubeRay CRDs exceed client-side apply's 256 KiB annotation limit."""
        crds = [self.apply(crd) for crd in load_crds(paths)]
        self._wait_served(crds)

    def install_gke_stand_ins(self) -> builtins.list[str]:
        """Minimal CRDs for the GKE kinds the operator writes, where the cluster does not serve them.

        Off GKE (kind, most clusters) BackendConfig and ComputeClass do not exist, and the operator
        lists BackendConfigs in every reconcile: without a stand-in each reconcile fails with 404.
        Returns the names of the CRDs created here, for :meth:`remove_crds`.
        """
        created: builtins.list[Obj] = []
        for kind, plural, scope in (("BackendConfig", "backendconfigs", "Namespaced"),
                                    ("ComputeClass", "computeclasses", "Cluster")):  # fmt: skip
            if not self._serves("cloud.google.com/v1", kind):
                created.append(self.apply(_stand_in_crd(f"{plural}.cloud.google.com", kind, plural, scope)))
        self._wait_served(created)
        return [crd["metadata"]["name"] for crd in created]

    def remove_crds(self, names: Iterable[str]) -> None:
        for name in names:
            self.delete(CRD, "CustomResourceDefinition", name)

    def create_namespace_and_policy(self, allowed_egress: Sequence[Obj] = ()) -> None:
        """The run's namespace (team=nlp, as the integration tier's) and a permissive policy governing it.

        ``allowed_egress``: the policy's ``network.allowedEgress``, for Ray pods that really run.
        """
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": self.namespace, "labels": {"team": "nlp", RUN_LABEL: self.run_id}}})  # fmt: skip
        doc = permissive_policy(self.policy_name).set("priority", POLICY_PRIORITY)
        if allowed_egress:
            doc.set("network.allowedEgress", list(allowed_egress))
        self.apply(self.policy(doc).doc)

    def policy(self, doc: PolicyDoc) -> PolicyDoc:
        """``doc`` made to govern exactly this run's namespace, and labelled for clean-up."""
        doc.doc["metadata"].setdefault("labels", {})[RUN_LABEL] = self.run_id
        return doc.set("namespaceSelector", self.namespace_selector)

    def remove_workloads(self) -> None:
        """After the operator stopped: remove what the tests left, finalizers and all.

        The scenarios assert deletion themselves; here nothing may hold the namespace's deletion,
        and the end of a run must not depend on the operator's timing (a workload whose deletion
        met a running resync keeps kopf's finalizer for up to a minute).
        """
        for obj in self.list(MLW, "MLWorkload", self.namespace):
            name = obj["metadata"]["name"]
            try:
                self.patch(MLW, "MLWorkload", name, {"metadata": {"finalizers": None}}, self.namespace)
            except KubeError as error:
                if error.status != 404:  # gone meanwhile: nothing left to remove
                    raise
            self.delete(MLW, "MLWorkload", name, self.namespace)

    def delete_namespace_and_policies(self) -> None:
        for obj in self.list(MLW, "MLWorkloadPolicy", label_selector=f"{RUN_LABEL}={self.run_id}"):
            self.delete(MLW, "MLWorkloadPolicy", obj["metadata"]["name"])
        self.delete("v1", "Namespace", self.namespace)

    # --- the operators a real cluster runs ----------------------------------------------------------

    def deployments(self, label_selector: str) -> builtins.list[Obj]:
        """The Deployments with these labels, in every namespace."""
        return self.list("apps/v1", "Deployment", None, label_selector)

    def check_operators(self, operator: OperatorMode, real_kuberay: bool) -> None:
        """Fail at once, naming the fix, when the cluster does not run the operators the run expects; then wait
        for those it runs to be available. The in-memory server runs only what the tier starts."""
        if self.backend == "in-memory":
            if real_kuberay:
                raise BackendUnavailable("MLW_E2E_REAL_KUBERAY=1 needs a real cluster running KubeRay; the in-memory "
                                         "server runs none (set KUBECONFIG or MLW_E2E_CLUSTER)")  # fmt: skip
            return
        ours, kuberay = self.deployments(OPERATOR_SELECTOR), self.deployments(KUBERAY_SELECTOR)
        problems = operator_problems(operator, real_kuberay, ours, kuberay)
        if problems:
            raise BackendUnavailable("; ".join(problems))
        self.wait_available(ours + kuberay)

    def restart_controllers(self) -> None:
        """Restart the installed mlworkload controller (as `kubectl rollout restart`), so that it watches the
        kinds whose CRDs appeared after it started, and wait until it is back."""
        controllers = [d for d in self.deployments(OPERATOR_SELECTOR) if _is_controller(d)]
        stamp = datetime.now(UTC).isoformat()
        for deployment in controllers:
            meta = deployment["metadata"]
            patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}}
            self.patch("apps/v1", "Deployment", meta["name"], patch, meta["namespace"])
        self.wait_available(controllers)

    def wait_available(self, deployments: Iterable[Obj]) -> None:
        for deployment in deployments:
            namespace, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
            self.wait_until(
                functools.partial(self.rolled_out, namespace, name),
                f"Deployment {namespace}/{name} rolled out and available",
                timeout=INSTALLED_TIMEOUT,
            )

    def rolled_out(self, namespace: str, name: str) -> bool:
        return rolled_out(self.get("apps/v1", "Deployment", name, namespace))

    def until_accepted(self, action: Callable[[], object], what: str, times: int = 1) -> None:
        """Repeat ``action`` until the API server (and its webhooks) accepted it ``times`` times in a row: an
        installed webhook learns of a new policy through its watch, a moment after the policy is stored."""
        streak, last = 0, ""

        def accepted() -> bool:
            nonlocal streak, last
            try:
                action()
            except KubeError as error:
                streak, last = 0, str(error)
                return False
            streak += 1
            return streak >= times

        try:
            self.wait_until(accepted, what)
        except AssertionError as timeout:
            raise AssertionError(f"{timeout}; the last refusal: {last}") from None

    # --- plumbing -----------------------------------------------------------------------------------

    def _wait_served(self, crds: Iterable[Obj]) -> None:
        """Until each CRD is Established and its kinds are in discovery (which can lag behind on a real server)."""
        names = [crd["metadata"]["name"] for crd in crds]
        kinds = [(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
                 for crd in crds for version in crd["spec"]["versions"] if version.get("served")]  # fmt: skip
        self._resources.clear()  # answers from before the CRDs
        self.wait_until(lambda: all(self._established(name) for name in names), f"CRDs established: {names}")
        self.wait_until(lambda: all(self._serves(*kind) for kind in kinds), f"discovery serving {kinds}")

    def _established(self, crd_name: str) -> bool:
        crd = self.get(CRD, "CustomResourceDefinition", crd_name) or {}
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    def _serves(self, api_version: str, kind: str) -> bool:
        try:
            self._resource(api_version, kind)
        except LookupError:
            return False
        return True

    def _resource(self, api_version: str, kind: str) -> _Resource:
        """Plural and scope from discovery, as kubectl finds them: no table of kinds to keep in step."""
        key = (api_version, kind)
        if key not in self._resources:
            base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            try:
                listing = self._request("GET", base)
            except KubeError as error:
                if error.status == 404:
                    raise LookupError(f"the cluster does not serve {api_version}") from None
                raise
            for entry in listing.get("resources", []):
                if entry["kind"] == kind and "/" not in entry["name"]:
                    self._resources[key] = _Resource(entry["name"], bool(entry["namespaced"]))
        if key not in self._resources:
            raise LookupError(f"the cluster does not serve {kind} in {api_version}")
        return self._resources[key]

    def _path(self, api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
        resource = self._resource(api_version, kind)
        path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
        if resource.namespaced and namespace:
            path += f"/namespaces/{namespace}"
        path += f"/{resource.plural}"
        return f"{path}/{name}" if name else path

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: builtins.list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Obj:
        """The operator's own request path (the same client, headers and error type)."""
        return ClientKubeApi(self.api_client).request(method, path, query=query, body=body, content_type=content_type)


def _stand_in_crd(name: str, kind: str, plural: str, scope: str) -> Obj:
    """A schemaless CRD: enough to store what the operator writes; GKE's controllers are not emulated."""
    open_object = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": CRD,
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name, "labels": {STAND_IN_LABEL: "true"}},
        "spec": {
            "group": "cloud.google.com",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "scope": scope,
            "versions": [{
                "name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": open_object, "status": open_object}}},
            }],
        },
    }  # fmt: skip


@contextmanager
def connected(
    backend: Backend, kubeconfig: Path, operator: OperatorMode = "in-process", real_kuberay: bool = False
) -> Iterator[Cluster]:
    """The cluster with the CRDs, the run's namespace and policy; the namespace and policies go afterwards.

    The CRDs stay on a shared cluster (deleting a CRD deletes every object of its kind); only the
    GKE stand-ins created here are removed again. With ``operator="in-cluster"``, the installed operator
    admits workloads in the run's namespace before this returns.
    """
    cluster = Cluster(backend, kubeconfig, secrets.token_hex(3))
    cluster.check_operators(operator, real_kuberay)
    cluster.install_crds(default_crd_paths())  # crds/*.yaml and $KUBERAY_CRDS_DIR (never copied here)
    stand_ins = cluster.install_gke_stand_ins()
    egress = [INTERNET] if real_kuberay else []
    try:
        if operator == "in-process":
            cluster.create_namespace_and_policy(egress)
        else:
            if stand_ins:
                cluster.restart_controllers()
            cluster.until_accepted(lambda: cluster.create_namespace_and_policy(egress), "the namespace and policy")
            probe = workload(f"mlw-e2e-probe-{cluster.run_id}", cluster.namespace).doc
            cluster.until_accepted(lambda: cluster.apply(probe, dry_run=True), "the webhook admitting", times=3)
        yield cluster
    finally:
        cluster.delete_namespace_and_policies()
        cluster.remove_crds(stand_ins)
        cluster.api_client.close()  # type: ignore[no-untyped-call]
