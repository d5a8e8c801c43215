"""Allows `python -m oomtuner`."""

from oomtuner import cli

if __name__ == "__main__":
    cli.main()
