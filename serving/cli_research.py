"""``segue replay | ope | simulate``: the research commands, with segue's engine policies.

The commands themselves live in :mod:`simulations.cli`; here they get the engine factory, so
``--policies random,popular,relevance,segue`` compares the baselines with the very engine the
service runs.
"""

from __future__ import annotations

import typer

from simulations.cli import make_app
from simulations.engine_policy import engine_factory

_research = make_app(engine_factory)


def _single(name: str) -> typer.Typer:
    app = typer.Typer(add_completion=False)
    for info in _research.registered_commands:
        if info.name == name:
            app.registered_commands.append(info)
    return app


replay_app = _single("replay")
ope_app = _single("ope")
simulate_app = _single("simulate")
