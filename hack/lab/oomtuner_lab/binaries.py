"""Where the lab's binaries live, and building them with hack/lab/build.sh."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: Every target build.sh builds, in its order: binaries, then the CNI plugins and the images.
BINARIES: tuple[str, ...] = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
    "kubelet",
    "cni",
    "images",
)

#: What `lab up` needs (kubectl and helm are for people and tests).
CONTROL_PLANE: tuple[str, ...] = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)

#: What the real node needs beside the control plane.
REAL_NODE: tuple[str, ...] = ("kubelet", "cni", "images")

#: The CNI plugins build.sh puts in `cni_bin_dir()`, and the images' OCI archives in `images_dir()`.
CNI_PLUGINS: tuple[str, ...] = ("bridge", "host-local", "loopback", "portmap")
IMAGE_ARCHIVES: tuple[str, ...] = ("pause.tar", "memhog.tar")


class BuildScriptNotFound(RuntimeError):
    """hack/lab/build.sh is not where the checkout should have it."""


def repo_root() -> Path:
    """The checkout this package runs from (hack/lab/oomtuner_lab/ is three levels down)."""
    env = os.environ.get("OOMTUNER_REPO")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3]


def build_script() -> Path:
    script = repo_root() / "hack" / "lab" / "build.sh"
    if not script.is_file():
        raise BuildScriptNotFound(
            f"{script} not found: run from a checkout of oomtuner or set OOMTUNER_REPO"
        )
    return script


def cache_root() -> Path:
    return Path(os.environ.get("OOMTUNER_CACHE") or Path.home() / ".cache" / "oomtuner")


def k8s_version() -> str:
    """The Kubernetes version the wrapper module pins (hack/lab/k8s/go.mod)."""
    gomod = repo_root() / "hack" / "lab" / "k8s" / "go.mod"
    for line in gomod.read_text().splitlines():
        words = line.split()
        if words[:2] == ["require", "k8s.io/kubernetes"]:
            return words[2]
        if len(words) >= 2 and words[0] == "k8s.io/kubernetes" and words[1].startswith("v"):
            return words[1]
    raise RuntimeError(f"k8s.io/kubernetes not required in {gomod}")


def bin_dir() -> Path:
    """`<cache>/<k8s-version>/bin`, the same directory build.sh writes to."""
    return cache_root() / k8s_version() / "bin"


def kwok_stages_dir() -> Path:
    """kwok's default Stage YAMLs, copied there by build.sh."""
    return cache_root() / k8s_version() / "share" / "kwok" / "stages"


def cni_bin_dir() -> Path:
    """The CNI plugins (kept out of bin/, which `lab env` puts on PATH)."""
    return cache_root() / k8s_version() / "cni" / "bin"


def images_dir() -> Path:
    """The real node's images as OCI archives (pause.tar, memhog.tar)."""
    return cache_root() / k8s_version() / "images"


def path(name: str) -> Path:
    return bin_dir() / name


def _built(name: str) -> bool:
    if name == "cni":
        return all(os.access(cni_bin_dir() / p, os.X_OK) for p in CNI_PLUGINS)
    if name == "images":
        return all((images_dir() / a).is_file() for a in IMAGE_ARCHIVES)
    if name == "kwok" and not (kwok_stages_dir() / "VERSION").is_file():
        return False
    return os.access(path(name), os.X_OK)


def missing(names: tuple[str, ...] = BINARIES) -> list[str]:
    return [n for n in names if not _built(n)]


def build(names: tuple[str, ...] | list[str] = (), *, force: bool = False) -> None:
    """Run build.sh (output goes to this process's stdout/stderr). Raises on failure."""
    argv = ["bash", str(build_script()), *(["--force"] if force else []), *names]
    subprocess.run(argv, check=True)


def ensure_built(names: tuple[str, ...] = CONTROL_PLANE) -> Path:
    """Build whatever of `names` is missing from the cache; return the bin directory."""
    todo = missing(names)
    if todo:
        build(todo)
    return bin_dir()
