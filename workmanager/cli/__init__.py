"""The ``workmanager`` command line: an adapter over the same services as HTTP and MCP."""

from __future__ import annotations

import sys

import click

from ..errors import WorkManagerError
from .app import cli


def main() -> None:
    """Entry point: domain errors print their code and message and exit 1."""
    try:
        cli(standalone_mode=True)
    except WorkManagerError as exc:
        click.echo(f"error [{exc.code}]: {exc.message}", err=True)
        sys.exit(1)


__all__ = ["cli", "main"]
