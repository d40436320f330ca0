"""The ``segue`` command.

Subcommands load lazily (click's documented lazy-group pattern): ``segue snapshots rollback``
imports only the snapshots package, so an operator can roll back even when River, Vowpal
Wabbit, hnswlib or FastAPI are broken.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click
import typer.main

# name -> ("module:attribute", one-line help shown by ``segue --help`` without importing it)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serving.cli_serve:serve_app", "Run the HTTP service (and, embedded, the learner)."),
    "feedback": ("serving.cli_feedback:app", "Inspect the event log and the dead letters."),
    "snapshots": ("snapshots.cli:app", "List, diff, pin and roll back model snapshots."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when they are run."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self._lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self._lazy:
            return super().get_command(ctx, cmd_name)
        target, _ = self._lazy[cmd_name]
        module_name, attr = target.split(":")
        obj = getattr(importlib.import_module(module_name), attr)
        command = obj if isinstance(obj, click.Command) else typer.main.get_command(obj)
        command.name = cmd_name
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self._lazy[name][1]) for name in sorted(self._lazy)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


cli = LazyGroup(
    name="segue",
    lazy=SUBCOMMANDS,
    help="segue: an online-learning recommender service with a bandit reranker.\n\n"
    "Example: segue serve --demo",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``segue`` console script."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="segue")
