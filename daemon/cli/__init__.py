"""The ``runbookd`` command: ``serve`` runs the daemon; the others are local checks or API clients."""

from daemon.cli.main import main

__all__ = ["main"]
