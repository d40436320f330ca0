"""Results on disk: per-step metrics (CSV + Parquet), a summary table, PNG plots, the config.

Every run writes into one output folder::

    out/
      config.json              the configuration the run used (seeds included)
      steps.csv, steps.parquet per-step (or per-estimate) rows
      summary.csv              one row per policy (or per target x estimator)
      *.png                    learning curves, cumulative regret, OPE estimates with CIs

Plots use matplotlib's object API on an Agg canvas (no pyplot state, no display needed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

__all__ = [
    "RunResult",
    "plot_cumulative_regret",
    "plot_learning_curves",
    "plot_ope",
    "print_table",
    "progress_bar",
    "write_config",
    "write_frame",
    "write_report",
]

T = TypeVar("T")


@dataclass(frozen=True)
class RunResult:
    """What a replay or a simulation returns: one row per step, one row per policy."""

    steps: pd.DataFrame
    summary: pd.DataFrame


def progress_bar(
    iterable: Iterable[T], enabled: bool, *, desc: str = "", total: int | None = None
) -> Iterable[T]:
    """A tqdm progress bar on stderr when ``enabled``, the bare iterable otherwise."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def write_frame(df: pd.DataFrame, out: Path, stem: str, *, parquet: bool = True) -> list[Path]:
    """Write ``df`` as ``<stem>.csv`` (and ``<stem>.parquet``); returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.csv"]
    df.to_csv(paths[0], index=False)
    if parquet:
        paths.append(out / f"{stem}.parquet")
        df.to_parquet(paths[1], index=False)
    return paths


def write_config(config: Mapping[str, Any], out: Path) -> Path:
    """Write the run's configuration as ``config.json`` (sorted keys, readable)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    path.write_text(json.dumps(dict(config), indent=2, sort_keys=True, default=str) + "\n")
    return path


def _figure(width: float = 8.0, height: float = 4.5) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_learning_curves(
    steps: pd.DataFrame,
    metrics: Sequence[str],
    path: Path,
    *,
    x: str = "step",
    window: int = 0,
    title: str = "",
) -> Path:
    """One panel per metric: the running mean (or a rolling mean over ``window``) per policy."""
    fig = _figure(8.0, 3.2 * len(metrics))
    axes = fig.subplots(len(metrics), 1, squeeze=False)[:, 0]
    for ax, metric in zip(axes, metrics, strict=True):
        for name, g in steps.groupby("policy", sort=False):
            y = g[metric].astype(float)
            curve = y.rolling(window, min_periods=1).mean() if window > 1 else y.expanding().mean()
            ax.plot(g[x].to_numpy(), curve.to_numpy(), label=str(name))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best")
    axes[-1].set_xlabel(x)
    if title:
        axes[0].set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_cumulative_regret(steps: pd.DataFrame, path: Path) -> Path:
    """Cumulative (exact) regret against the world's best list, one line per policy."""
    fig = _figure()
    ax = fig.subplots()
    for name, g in steps.groupby("policy", sort=False):
        ax.plot(g["step"].to_numpy(), g["regret"].cumsum().to_numpy(), label=str(name))
    ax.set_xlabel("step")
    ax.set_ylabel("cumulative regret (expected plays)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_ope(estimates: pd.DataFrame, path: Path) -> Path:
    """Point estimates with bootstrap CI bars, grouped by target policy and estimator."""
    fig = _figure()
    ax = fig.subplots()
    targets = list(dict.fromkeys(estimates["target"]))
    estimators = list(dict.fromkeys(estimates["estimator"]))
    width = 0.8 / max(len(estimators), 1)
    for j, est in enumerate(estimators):
        sub = estimates[estimates["estimator"] == est].set_index("target").reindex(targets)
        xs = np.arange(len(targets)) + (j - (len(estimators) - 1) / 2) * width
        value = sub["value"].to_numpy(dtype=float)
        err = np.vstack(
            [
                value - sub["ci_low"].to_numpy(dtype=float),
                sub["ci_high"].to_numpy(dtype=float) - value,
            ]
        )
        ax.errorbar(xs, value, yerr=np.abs(err), fmt="o", capsize=3, label=est)
    ax.set_xticks(np.arange(len(targets)), targets)
    ax.set_ylabel("estimated reward per row")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path)
    return path


def print_table(df: pd.DataFrame, title: str = "") -> None:
    """Print a DataFrame as a rich table (numbers to 4 significant digits).

    Off a terminal (a file, a pipe, a notebook log) the table is 160 columns wide, so it is not
    folded into unreadable cells.
    """
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    for col in df.columns:
        table.add_column(str(col), justify="right" if df[col].dtype.kind in "iuf" else "left")
    for row in df.itertuples(index=False):
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def write_report(
    result: RunResult,
    out: Path,
    config: Mapping[str, Any],
    *,
    kind: str,
) -> list[Path]:
    """Write a replay (``kind="replay"``), world (``"simulate"``) or OPE (``"ope"``) result.

    For OPE, ``result.steps`` holds the per-estimate rows (target x estimator [x position])
    and ``result.summary`` the overall estimates.
    """
    out = Path(out)
    paths = [write_config(config, out)]
    paths += write_frame(result.steps, out, "steps")
    paths += write_frame(result.summary, out, "summary", parquet=False)
    if kind == "replay":
        metrics = [c for c in ("hit", "ndcg", "mrr") if c in result.steps.columns]
        paths.append(
            plot_learning_curves(
                result.steps, metrics, out / "learning_curves.png", title="progressive replay"
            )
        )
    elif kind == "simulate":
        paths.append(plot_cumulative_regret(result.steps, out / "cumulative_regret.png"))
        paths.append(
            plot_learning_curves(
                result.steps,
                ["expected_reward", "coverage", "ild", "novelty"],
                out / "learning_curves.png",
                window=200,
                title="synthetic world",
            )
        )
    elif kind == "ope":
        paths.append(plot_ope(result.summary, out / "ope_estimates.png"))
    else:
        raise ValueError(f"unknown report kind {kind!r}: expected replay, simulate or ope")
    return paths
