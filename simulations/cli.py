"""``segue replay | ope | simulate``: the simulation runs from the command line.

Each command resolves its config (defaults < ``--config`` file < explicit options), runs the
matching function of :mod:`simulations.runs`, prints the summary table and writes the output
folder described in :mod:`simulations.report`. :func:`make_app` builds the Typer app; pass
an ``engine_factory`` to make engine-based policy names available.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from simulations.ope import policy_target
from simulations.policy import EngineFactory
from simulations.report import print_table, write_report
from simulations.runs import (
    OPE_DEFAULTS,
    REPLAY_DEFAULTS,
    SIMULATE_DEFAULTS,
    default_replay_jobs,
    load_config,
    resolve_config,
    run_ope,
    run_replay,
    run_simulation,
)

__all__ = ["app", "make_app"]

Seed = Annotated[int | None, typer.Option(help="Random seed (default 0).")]
Out = Annotated[Path | None, typer.Option(help="Output folder (default sim-out/<command>).")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="TOML or JSON file with run settings.")
]
K = Annotated[int | None, typer.Option("--k", help="List length (default 10).")]
Progress = Annotated[bool, typer.Option(help="Show progress bars.")]


def _split(names: str | None) -> list[str] | None:
    return None if names is None else [n.strip() for n in names.split(",") if n.strip()]


def _finish(result: Any, out: Path, cfg: dict[str, Any], kind: str, title: str) -> None:
    paths = write_report(result, out, cfg, kind=kind)
    print_table(result.summary, title)
    typer.echo(f"wrote {len(paths)} files to {out}")


def make_app(
    engine_factory: EngineFactory | None = None,
    snapshot_loader: Callable[[str], Any] | None = None,
) -> typer.Typer:
    """The ``replay``, ``ope`` and ``simulate`` commands, with policies built by name;
    ``snapshot_loader(version)`` gives a policy restored from a model snapshot (``ope``)."""
    app = typer.Typer(
        help="Simulations: progressive replay, off-policy evaluation, a synthetic world.",
        no_args_is_help=True,
    )

    @app.command("replay")
    def replay(
        file: Annotated[Path, typer.Argument(help="u.data, ratings.csv, *.csv/parquet, *.jsonl")],
        seed: Seed = None,
        out: Out = None,
        config: ConfigFile = None,
        k: K = None,
        policies: Annotated[
            str | None, typer.Option(help="Comma-separated policy names (random,popular).")
        ] = None,
        eval_every: Annotated[int | None, typer.Option(help="Score every n-th play.")] = None,
        max_events: Annotated[int | None, typer.Option(help="Replay only the first n.")] = None,
        rating_threshold: Annotated[
            float | None, typer.Option(help="Ratings below this become skips.")
        ] = None,
        jobs: Annotated[
            int | None,
            typer.Option(
                min=1,
                help="Worker processes the policies are spread over (default: the usable "
                "CPUs, at most one per policy). Results do not depend on it.",
            ),
        ] = None,
        progress: Progress = True,
    ) -> None:
        """Progressive replay: score hit@k, NDCG@k, MRR before learning each play.

        Example: segue replay ml-100k/u.data --k 10 --jobs 2 --out results/replay
        """
        file_cfg = load_config(config)
        cfg = resolve_config(
            REPLAY_DEFAULTS,
            file_cfg,
            {"seed": seed, "k": k, "policies": _split(policies), "eval_every": eval_every,
             "max_events": max_events, "rating_threshold": rating_threshold, "jobs": jobs},
        )  # fmt: skip
        if jobs is None and file_cfg.get("jobs") is None:
            # on the command line the machine is the researcher's own: use its cores
            cfg["jobs"] = default_replay_jobs(cfg["policies"])
        result = run_replay(file, cfg, engine_factory=engine_factory, progress=progress)
        cfg["file"] = str(file)
        _finish(result, out or Path("sim-out/replay"), cfg, "replay", "progressive replay")

    @app.command("ope")
    def ope(
        file: Annotated[Path, typer.Argument(help="Open Bandit Dataset CSV or decision JSONL")],
        seed: Seed = None,
        out: Out = None,
        config: ConfigFile = None,
        n_boot: Annotated[int | None, typer.Option(help="Bootstrap resamples (200).")] = None,
        reward_model: Annotated[
            str | None, typer.Option(help="DR reward model: mean or ridge.")
        ] = None,
        snapshot: Annotated[
            list[str] | None,
            typer.Option(help="Also evaluate this model snapshot (repeatable), e.g. v000012."),
        ] = None,
    ) -> None:
        """Off-policy evaluation: Replay, IPS, SNIPS and DR with bootstrap CIs.

        Example: segue ope obd/random/all/all.csv --n-boot 200 --out results/ope
        """
        cfg = resolve_config(
            OPE_DEFAULTS,
            load_config(config),
            {"seed": seed, "n_boot": n_boot, "reward_model": reward_model},
        )
        extra: dict[str, Any] = {}
        for version in snapshot or []:
            if snapshot_loader is None:
                raise typer.BadParameter("snapshots can be evaluated from the segue command")
            policy = snapshot_loader(version)
            extra[f"snapshot:{version}"] = lambda _train, test, p=policy: policy_target(test, p)
        result = run_ope(file, cfg, extra_targets=extra)
        cfg["file"] = str(file)
        if snapshot:
            cfg["snapshots"] = list(snapshot)
        _finish(result, out or Path("sim-out/ope"), cfg, "ope", "off-policy estimates")

    @app.command("simulate")
    def simulate(
        seed: Seed = None,
        out: Out = None,
        config: ConfigFile = None,
        k: K = None,
        policies: Annotated[
            str | None, typer.Option(help="Comma-separated names (random,popular,oracle).")
        ] = None,
        steps: Annotated[int | None, typer.Option(help="Requests per policy (5000).")] = None,
        progress: Progress = True,
    ) -> None:
        """Synthetic world: reward, exact regret, coverage, diversity, novelty per policy.

        Example: segue simulate --steps 2000 --seed 1 --out results/world
        """
        cfg = resolve_config(
            SIMULATE_DEFAULTS,
            load_config(config),
            {"seed": seed, "k": k, "policies": _split(policies), "n_steps": steps},
        )
        result = run_simulation(cfg, engine_factory=engine_factory, progress=progress)
        _finish(result, out or Path("sim-out/simulate"), cfg, "simulate", "synthetic world")

    return app


app = make_app()
