"""The `oomtuner` command: run | report | explain | approve | patch | dashboard | crds | lab.

Every failure is one line on stderr, `oomtuner: ...`, never a traceback, with an exit code that
says whose fault it was (README, "Exit codes"):

- 2: the command line or its input (click's usage errors, unreadable or invalid files, a kubeconfig
  that cannot be loaded, settings that do not parse);
- 1: the cluster (no connection, a timeout, an answer that is not JSON, an error from the API
  server), or `approve` when the operator refused the change.

Messages are made one line here, whatever they quote: control characters are escaped and a very
long message is cut.
"""

from __future__ import annotations

from oomtuner.cli import cluster, gitops, offline, run, tools  # noqa: F401 - each module adds its commands
from oomtuner.cli.base import main

__all__ = ["kubectl_main", "main"]


def kubectl_main() -> None:
    """`kubectl oomtuner ...`: kubectl runs a plugin as the executable `kubectl-oomtuner` on PATH
    (the package installs it). The same commands, with kubectl's name in usage lines."""
    main(prog_name="kubectl oomtuner", complete_var="_KUBECTL_OOMTUNER_COMPLETE")
