"""A recommendation's change in the forms a repository takes (`oomtuner patch`): a kustomize
strategic-merge patch file, the values of a Helm chart, or one `kubectl patch` command line.

All three are made from `domain.patch`'s bodies, the same the operator applies and offers in
`status.patch`, so they set exactly what the operator would: the memory request and limit of the
changed containers, each addressed by its name.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from oomtuner.api import kinds
from oomtuner.domain import patch


class GitOpsError(ValueError):
    """The change cannot be given in the form asked for; the message says why."""


def kustomize(*, api_version: str, kind: str, name: str, namespace: str, changes: Sequence[patch.MemoryChange],
              note: str) -> str:
    """A strategic-merge patch file (kustomization.yaml: `patches: [{path: FILE}]`), headed by `note`
    as a comment."""
    body = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace},
            **patch.template_patch(kind=kind, changes=changes)}
    return _comment(note) + patch.to_yaml(body)


# One segment of a values path: a key of letters, digits, `_` and `-` (what a chart's values use).
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")


def values_paths(specs: Sequence[str], changes: Sequence[patch.MemoryChange]) -> dict[str, list[str]]:
    """Container name → the segments of its values path, from `--values-path` specs: `PATH` alone when
    one container changes, else `CONTAINER=PATH` for each changed container."""
    changed = [c.container for c in changes]
    paths: dict[str, list[str]] = {}
    for spec in specs:
        container, sep, path = spec.rpartition("=")
        if not sep:
            if len(changed) != 1:
                raise GitOpsError(f"--values-path {spec!r}: {len(changed)} containers change ({', '.join(changed)}): "
                                  "give CONTAINER=PATH for each")
            container = changed[0]
        segments = path.split(".")
        if not all(_SEGMENT.match(s) for s in segments):
            raise GitOpsError(f"--values-path {spec!r}: expected a dotted path of keys such as app.resources")
        if container in paths:
            raise GitOpsError(f"--values-path: container {container} is given twice")
        paths[container] = segments
    unknown = sorted(set(paths) - set(changed))
    missing = [c for c in changed if c not in paths]
    if unknown:
        raise GitOpsError(f"--values-path: no change for container(s) {', '.join(unknown)} (changed: {', '.join(changed) or 'none'})")
    if missing:
        raise GitOpsError(f"--values-path: give the values path of container(s) {', '.join(missing)}")
    return paths


def helm_values(changes: Sequence[patch.MemoryChange], paths: Mapping[str, Sequence[str]], *, note: str) -> str:
    """A values file that sets each changed container's `resources` at its values path (from
    `values_paths`), headed by `note` as a comment."""
    wanted = [tuple(paths[c.container]) for c in changes]
    if len(set(wanted)) < len(wanted):
        raise GitOpsError("--values-path: two containers share a values path")
    for path in wanted:
        if any(other != path and other[: len(path)] == path for other in wanted):
            raise GitOpsError(f"--values-path: another container's path runs through {'.'.join(path)}")
    values: dict[str, Any] = {}
    for change, (*parents, last) in zip(changes, wanted):
        node = values
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = patch.resources_of(change)
    return _comment(note) + yaml.safe_dump(values, sort_keys=False)


def kubectl_command(*, kind: str, name: str, namespace: str, changes: Sequence[patch.MemoryChange]) -> str:
    """One `kubectl patch` command line (a strategic merge), every argument shell-quoted. Only for kinds
    whose pod template may change (a Job's cannot: change its manifest, or its CronJob)."""
    if not kinds.patchable(kind):
        raise GitOpsError(f"a {kind}'s pod template cannot be changed in place: use -o kustomize or -o helm-values "
                          "for its manifest")
    body = json.dumps(patch.template_patch(kind=kind, changes=changes), separators=(",", ":"))
    words = ["kubectl", "patch", kind.lower(), name, "--namespace", namespace, "--type", "strategic", "--patch", body]
    return " ".join(shlex.quote(w) for w in words)


def _comment(note: str) -> str:
    return "".join(f"# {line}\n" for line in note.splitlines() if line.strip())
