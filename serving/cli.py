"""The ``segue`` command.

Subcommands load lazily (click's lazy-group pattern on typer's group class): ``segue snapshots
rollback`` imports only the snapshots package, so an operator can roll back even when River,
Vowpal Wabbit, hnswlib or FastAPI are broken. ``segue --help`` loads them all to describe them.
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

# name -> "module:attribute" of a Typer app (a group, or an app with a single command)
SUBCOMMANDS: dict[str, str] = {
    "serve": "serving.cli_serve:serve_app",
    "learn": "serving.cli_learn:learn_app",
    "feedback": "serving.cli_feedback:app",
    "catalog": "serving.cli_catalog:app",
    "snapshots": "snapshots.cli:app",
    "replay": "serving.cli_research:replay_app",
    "ope": "serving.cli_research:ope_app",
    "simulate": "serving.cli_research:simulate_app",
}


class LazyGroup(TyperGroup):
    """A group whose subcommands are imported only when they are used."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return None  # that part of segue is not installed in this build
            raise
        command = typer.main.get_command(getattr(module, attr))
        command.name = cmd_name
        return command


app = typer.Typer(
    cls=LazyGroup,
    name="segue",
    help="segue: an online-learning recommender service with a bandit reranker.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """segue: an online-learning recommender service with a bandit reranker.

    Example: segue serve --demo
    """


def main() -> None:
    """Entry point of the ``segue`` console script."""
    app()
