"""KubeRay's CRDs when nothing gives them: fetched from a Helm chart (tests/support/kuberay_crds.py).

No network: the chart is a local one, packaged here with the real helm from the upstream CRDs the tests
already use (copied into a temporary directory, never into the repository), and given as KUBERAY_CHART.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from mlworkload.builders import build_objects
from tests.support import kuberay_crds
from tests.support.documents import permissive_policy, resolved, workload
from tests.support.helm import helm
from tests.support.kuberay_crds import (
    KUBERAY_CHART_ENV,
    KUBERAY_CRDS_ENV,
    KUBERAY_HELM_REPO,
    KUBERAY_VERSION,
    KubeRayCrdsUnavailable,
    cached_kuberay_crds_dir,
    chart_arguments,
    fetch_crds,
    kuberay_crds_dir,
    split_crds,
)
from tests.support.schemas import validate_object

ROOT = Path(__file__).resolve().parents[2]
SMALL = {"cpu": "1", "memory": "2Gi"}


@pytest.fixture(scope="module")
def upstream() -> Path:
    """The upstream KubeRay CRDs the other tests use: configured, shared, or (a clean clone) fetched once."""
    return kuberay_crds_dir()


def package_chart(workdir: Path, crd_files: list[Path], version: str = KUBERAY_VERSION) -> Path:
    """A chart named like KubeRay's, holding these files in crds/, packaged by helm: its .tgz."""
    chart = workdir / "src" / "kuberay-operator"
    (chart / "crds").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: kuberay-operator\nversion: {version}\n")
    for crd in crd_files:
        shutil.copyfile(crd, chart / "crds" / crd.name)
    packaged = helm("package", str(chart), "--destination", str(workdir))
    assert packaged.returncode == 0, packaged.stderr
    return workdir / f"kuberay-operator-{version}.tgz"


def no_helm() -> Path:
    raise AssertionError("helm must not run: the CRDs are cached")


def test_the_default_chart_is_kuberays_at_the_version_of_the_crds() -> None:
    assert chart_arguments({}) == ["kuberay-operator", "--repo", KUBERAY_HELM_REPO, "--version", KUBERAY_VERSION]
    assert chart_arguments({KUBERAY_CHART_ENV: "/charts/kuberay.tgz"}) == ["/charts/kuberay.tgz"]
    oci = "oci://example.com/charts/kuberay-operator"
    assert chart_arguments({KUBERAY_CHART_ENV: f"{oci} --version 1.7.0"}) == [oci, "--version", "1.7.0"]
    assert chart_arguments({KUBERAY_CHART_ENV: "'/my charts/k.tgz'"}) == ["/my charts/k.tgz"]  # split as a shell does
    provenance = kuberay_crds.SHARED_KUBERAY_CRDS_DIR / "README.md"
    if provenance.is_file():  # the shared test data says which release it was copied from
        assert f"KubeRay release: **v{KUBERAY_VERSION}**" in provenance.read_text()


def test_the_configured_directory_wins_then_the_shared_one_then_the_chart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched: list[list[str]] = []

    def fake_fetch(arguments: list[str], cache_dir: Path) -> Path:
        fetched.append(arguments)
        return cache_dir / "fetched"

    monkeypatch.setattr(kuberay_crds, "fetch_crds", fake_fetch)
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setattr(kuberay_crds, "SHARED_KUBERAY_CRDS_DIR", shared)
    assert kuberay_crds_dir({KUBERAY_CRDS_ENV: "/mine"}, tmp_path) == Path("/mine")
    assert kuberay_crds_dir({}, tmp_path) == shared
    shared.rmdir()
    assert kuberay_crds_dir({KUBERAY_CHART_ENV: "/c.tgz"}, tmp_path) == tmp_path / "fetched"
    assert kuberay_crds_dir({}, tmp_path) == tmp_path / "fetched"
    assert fetched == [["/c.tgz"], chart_arguments({})]


def test_the_cached_lookup_follows_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KUBERAY_CRDS_ENV, str(tmp_path / "a"))
    assert cached_kuberay_crds_dir() == tmp_path / "a"
    monkeypatch.setenv(KUBERAY_CRDS_ENV, str(tmp_path / "b"))
    assert cached_kuberay_crds_dir() == tmp_path / "b"


def test_the_crds_of_a_chart_are_fetched_split_and_cached(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = sorted(upstream.glob("*.yaml"))
    chart = package_chart(tmp_path, sources)
    monkeypatch.setattr(kuberay_crds, "SHARED_KUBERAY_CRDS_DIR", tmp_path / "absent")  # as in a clean clone
    cache = tmp_path / "cache"

    fetched = kuberay_crds_dir({KUBERAY_CHART_ENV: str(chart)}, cache)

    assert fetched.parent == cache
    assert sorted(p.name for p in fetched.glob("*.yaml")) == [p.name for p in sources]
    for source in sources:  # controller-gen's files, byte for byte, under their upstream names
        assert (fetched / source.name).read_bytes() == source.read_bytes(), source.name
    assert (fetched / kuberay_crds.SOURCE_FILE).read_text() == f"helm show crds {chart}\n"
    assert fetch_crds([str(chart)], cache, helm=no_helm) == fetched  # cached: helm does not run again
    assert [p.name for p in cache.iterdir()] == [fetched.name]  # no partial directory left behind


def test_the_fetched_crds_are_what_the_schema_validation_reads(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chart = package_chart(tmp_path, sorted(upstream.glob("*.yaml")))
    fetched = fetch_crds([str(chart)], tmp_path / "cache")
    monkeypatch.setenv(KUBERAY_CRDS_ENV, str(fetched))
    docs = {
        "RayCluster": workload("c").group("cpu", replicas=1, resources=SMALL),
        "RayJob": workload("j").job('python -c "print(42)"').group("cpu", replicas=1, resources=SMALL),
        "RayService": workload("s").service().group("cpu", replicas=1, resources=SMALL),
    }
    for kind, doc in docs.items():
        objects = build_objects(resolved(doc, permissive_policy()))
        (ray,) = [o for o in objects if o["apiVersion"] == "ray.io/v1"]
        assert ray["kind"] == kind
        assert validate_object(ray) == [], kind
        broken: dict[str, Any] = {**ray, "spec": {**ray["spec"], "notAKubeRayField": 1}}
        (problem,) = validate_object(broken)  # the schema is KubeRay's: a field it lacks is refused
        assert problem.startswith("spec.notAKubeRayField: unknown field"), problem


def test_another_version_of_the_chart_is_fetched_anew(upstream: Path, tmp_path: Path) -> None:
    sources = sorted(upstream.glob("*.yaml"))
    first = fetch_crds([str(package_chart(tmp_path / "a", sources, "1.7.0"))], tmp_path / "cache")
    second = fetch_crds([str(package_chart(tmp_path / "b", sources, "1.7.1"))], tmp_path / "cache")
    assert first != second


def test_a_chart_without_kuberays_crds_is_refused(tmp_path: Path) -> None:
    chart = package_chart(tmp_path, [ROOT / "crds" / "mlworkload.io_mlworkloads.yaml"])
    with pytest.raises(KubeRayCrdsUnavailable, match=r"no CRD for \['RayCluster', 'RayJob', 'RayService'\]"):
        fetch_crds([str(chart)], tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_chart_helm_cannot_read_names_both_settings(tmp_path: Path) -> None:
    with pytest.raises(KubeRayCrdsUnavailable, match=f"{KUBERAY_CRDS_ENV}.*{KUBERAY_CHART_ENV}"):
        fetch_crds([str(tmp_path / "no-such-chart.tgz")], tmp_path / "cache")


def test_files_without_a_leading_separator_and_stray_documents() -> None:
    shown = (
        "---\n# only a comment\n"
        "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        "spec:\n  group: ray.io\n  names:\n    kind: RayJob\n    plural: rayjobs\n\n"
        "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        "spec:\n  group: ray.io\n  names: {kind: RayCluster, plural: rayclusters}\n"
    )
    files = split_crds(shown)
    assert sorted(files) == ["ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml"]
    kind, text = files["ray.io_rayjobs.yaml"]
    assert kind == "RayJob"
    assert text.startswith("---\napiVersion:")
    assert text.endswith("plural: rayjobs\n")
