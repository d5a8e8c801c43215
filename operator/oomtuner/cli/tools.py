"""Commands loaded when asked for: the node agent's, and the lab's (a development tool found only in
a checkout of the repository)."""

from __future__ import annotations

import os
import pathlib
import sys

import click

from oomtuner.cli.base import LAZY_COMMANDS, Fail, main


def _agent_command() -> click.Command | None:
    from oomtuner.agent import command as agent_command

    return agent_command.agent


LAB_PACKAGE = "oomtuner_lab"


def _lab_home() -> pathlib.Path | None:
    """Where the lab's package lives in a checkout (hack/lab), or None outside one.

    The lab is a development tool, not part of the product: it is not in the wheel or the image.
    `oomtuner lab` works from a checkout (an editable install, or OOMTUNER_REPO pointing at one).
    """
    roots = [pathlib.Path(os.environ["OOMTUNER_REPO"])] if os.environ.get("OOMTUNER_REPO") else []
    roots.append(pathlib.Path(__file__).resolve().parents[3])
    for root in roots:
        home = root / "hack" / "lab"
        if (home / LAB_PACKAGE / "__init__.py").is_file():
            return home
    return None


@main.command("lab", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def _lab_missing() -> None:
    """A local Kubernetes lab (from a checkout of the repository only)."""
    raise Fail("`oomtuner lab` is a development tool: run it from a checkout of the oomtuner repository "
                "(pip install -e .), or set OOMTUNER_REPO to one")


def _lab_command() -> click.Command | None:
    if _LAB_HOME is None:
        return None
    from oomtuner_lab import commands as lab_commands  # type: ignore[import-not-found]  # only in a checkout

    command: click.Command = lab_commands.lab
    return command


_LAB_HOME = _lab_home()
if _LAB_HOME is not None and str(_LAB_HOME) not in sys.path:
    sys.path.append(str(_LAB_HOME))

# Commands imported when they are asked for: the agent's and the lab's modules (the kubernetes
# client, prometheus_client) would add half a second to every `oomtuner explain`.
LAZY_COMMANDS.update({"agent": _agent_command, "lab": _lab_command})
