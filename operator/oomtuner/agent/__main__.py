"""`python -m oomtuner.agent`: the agent without the rest of the CLI (the image's entry point may use it)."""

from oomtuner.agent import command

command.agent(prog_name="oomtuner agent")
