"""KubeRay's CRDs for the tests: configured, next to the repository, or fetched from KubeRay's Helm chart.

The upstream KubeRay CRDs are never copied into this repository. :func:`kuberay_crds_dir` finds them, first
match wins:

1. ``$KUBERAY_CRDS_DIR``, whatever it holds (a wrong directory fails loudly where the files are read);
2. the shared test data next to the repository, ``../shared/testdata/kuberay-crds``, if it exists;
3. KubeRay's Helm chart: ``helm show crds $KUBERAY_CHART`` (default: :data:`DEFAULT_KUBERAY_CHART`, the
   chart ``kuberay-operator`` of :data:`KUBERAY_VERSION` from KubeRay's Helm repository), split into one file
   per CRD named as controller-gen names them upstream (``<group>_<plural>.yaml``, e.g.
   ``ray.io_rayclusters.yaml``), and cached under :data:`CACHE_DIR`. So a clean clone runs.

``KUBERAY_CHART`` holds the chart arguments of ``helm show crds``, split as a shell would: a local chart
directory or packaged ``.tgz``, ``oci://...  --version X``, or ``NAME --repo URL --version X``. The cache is
keyed by those arguments (and, for a local chart, its content), so another chart or version is fetched anew.

:func:`cached_kuberay_crds_dir` is the same answer, looked up once per setting (for code that asks per object).
``python -m tests.support.kuberay_crds`` prints the directory (fetching first if needed), for a CI step that
sets ``KUBERAY_CRDS_DIR`` for the whole test run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from tests.support.helm import CACHE, helm_binary

KUBERAY_CRDS_ENV: Final = "KUBERAY_CRDS_DIR"
KUBERAY_CHART_ENV: Final = "KUBERAY_CHART"
#: The KubeRay release the operator is built and tested against (its CRDs, its Helm chart, the e2e workflow's).
KUBERAY_VERSION: Final = "1.7.0"
KUBERAY_HELM_REPO: Final = "https://ray-project.github.io/kuberay-helm/"
KUBERAY_CHART_NAME: Final = "kuberay-operator"
DEFAULT_KUBERAY_CHART: Final = f"{KUBERAY_CHART_NAME} --repo {KUBERAY_HELM_REPO} --version {KUBERAY_VERSION}"
REPO_ROOT: Final = Path(__file__).resolve().parents[2]
SHARED_KUBERAY_CRDS_DIR: Final = REPO_ROOT.parent / "shared" / "testdata" / "kuberay-crds"
CACHE_DIR: Final = CACHE / "kuberay-crds"
#: The kinds the tests need; a chart without any of them is not KubeRay's.
RAY_KINDS: Final = frozenset({"RayCluster", "RayJob", "RayService"})
SOURCE_FILE: Final = "source.txt"  # provenance, next to the CRDs (not *.yaml: never read as a CRD)

_SEPARATOR: Final = re.compile(r"^---[ \t]*(?:#.*)?$", re.MULTILINE)


class KubeRayCrdsUnavailable(RuntimeError):
    """The chart could not be read, or holds no KubeRay CRDs."""


def chart_arguments(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The chart arguments of ``helm show crds``: ``$KUBERAY_CHART``, else KubeRay's chart of KUBERAY_VERSION."""
    arguments = shlex.split(environ.get(KUBERAY_CHART_ENV) or DEFAULT_KUBERAY_CHART)
    if not arguments:
        raise KubeRayCrdsUnavailable(f"{KUBERAY_CHART_ENV} holds no chart")
    return arguments


def kuberay_crds_dir(environ: Mapping[str, str] = os.environ, cache_dir: Path = CACHE_DIR) -> Path:
    """The directory of KubeRay's CRD files: configured, shared, or fetched from the chart (see the module)."""
    configured = environ.get(KUBERAY_CRDS_ENV)
    if configured:
        return Path(configured)
    if SHARED_KUBERAY_CRDS_DIR.is_dir():
        return SHARED_KUBERAY_CRDS_DIR
    return fetch_crds(chart_arguments(environ), cache_dir)


def cached_kuberay_crds_dir() -> Path:
    """:func:`kuberay_crds_dir` for hot paths (the schema validator asks once per object it checks): resolved
    once per value of ``$KUBERAY_CRDS_DIR`` and ``$KUBERAY_CHART``."""
    return _resolved(os.environ.get(KUBERAY_CRDS_ENV, ""), os.environ.get(KUBERAY_CHART_ENV, ""))


@functools.cache
def _resolved(configured: str, chart: str) -> Path:
    return kuberay_crds_dir({KUBERAY_CRDS_ENV: configured, KUBERAY_CHART_ENV: chart})


def fetch_crds(arguments: Sequence[str], cache_dir: Path = CACHE_DIR, helm: Callable[[], Path] = helm_binary) -> Path:
    """The chart's CRDs, one file each, in a directory of the cache (filled on first use, atomically)."""
    target = cache_dir / _cache_key(arguments)
    if target.is_dir():
        return target
    command = [str(helm()), "show", "crds", *arguments]
    try:
        shown = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise KubeRayCrdsUnavailable(f"`{shlex.join(command)}` did not finish in 300 s") from None
    if shown.returncode != 0:
        raise KubeRayCrdsUnavailable(
            f"`{shlex.join(command)}` failed: {shown.stderr.strip()}\n"
            f"Set {KUBERAY_CRDS_ENV} to a directory of KubeRay's CRDs, or {KUBERAY_CHART_ENV} to a chart holding them."
        )
    files = split_crds(shown.stdout)
    kinds = {kind for kind, _ in files.values()}
    if missing := RAY_KINDS - kinds:
        raise KubeRayCrdsUnavailable(
            f"`{shlex.join(command)}` gave no CRD for {sorted(missing)} (found {sorted(kinds)}): "
            f"not KubeRay's chart? Set {KUBERAY_CHART_ENV} to KubeRay's chart, e.g. {DEFAULT_KUBERAY_CHART}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache_dir / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}"
    partial.mkdir()
    try:
        for name, (_, text) in files.items():
            (partial / name).write_text(text, encoding="utf-8")
        (partial / SOURCE_FILE).write_text(f"helm show crds {shlex.join(arguments)}\n", encoding="utf-8")
        try:
            partial.rename(target)  # atomic: a concurrent run never sees half a directory
        except OSError:
            if not target.is_dir():  # not another run's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def split_crds(text: str) -> dict[str, tuple[str, str]]:
    """``helm show crds`` output -> {file name: (kind, file text)}, one CustomResourceDefinition per file.

    Helm prints each file of the chart's ``crds/`` as it is, after a ``---`` line unless the file starts with
    one, and then a newline; a file is rebuilt as ``---``, its document, one final newline (byte for byte the
    upstream controller-gen files). Documents that are not CRDs (a chart's stray comments) are left out.
    """
    files: dict[str, tuple[str, str]] = {}
    for chunk in _SEPARATOR.split(text):
        body = chunk.strip("\n")
        document: Any = yaml.load(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if body.strip() else None
        if not isinstance(document, dict) or document.get("kind") != "CustomResourceDefinition":
            continue
        spec = document.get("spec") or {}
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
        if not (isinstance(group, str) and isinstance(plural, str) and isinstance(kind, str)):
            raise KubeRayCrdsUnavailable(f"a CRD without spec.group, names.plural or names.kind: {body[:200]}")
        name = f"{group}_{plural}.yaml"
        if name in files:
            raise KubeRayCrdsUnavailable(f"two CRDs for {plural}.{group} in the chart")
        files[name] = (kind, f"---\n{body}\n")
    return files


def _cache_key(arguments: Sequence[str]) -> str:
    """A directory name for these chart arguments; a local chart's content is part of it."""
    digest = hashlib.sha256(json.dumps(list(arguments)).encode())
    for argument in arguments:
        path = Path(argument)
        if path.is_file():
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(file.relative_to(path).as_posix().encode())
                digest.update(hashlib.sha256(file.read_bytes()).digest())
    stem = re.sub(r"[^A-Za-z0-9.-]+", "-", Path(arguments[0]).name).strip("-") or "chart"
    version = next((arguments[i + 1] for i, a in enumerate(arguments[:-1]) if a == "--version"), "")
    return "-".join(part for part in (stem, version, digest.hexdigest()[:16]) if part)


def main() -> None:
    print(kuberay_crds_dir())


if __name__ == "__main__":
    main()
