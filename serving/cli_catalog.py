"""``segue catalog ...``: import items and make demo catalogs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from serving.settings import SettingsError, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True)


def _catalog():
    from feedback.db import create_db_engine
    from online.catalog import Catalog

    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    db = create_db_engine(settings.resolved_database_url(), timeout_s=settings.db_timeout_s)
    return settings, Catalog(db, embedding_dim=settings.embedding_dim)


@app.command("import")
def import_(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV, JSONL or Parquet.")
    ],
    format: Annotated[
        str | None, typer.Option(help="csv, jsonl or parquet (default: from the extension).")
    ] = None,
    rejected: Annotated[
        Path | None, typer.Option(help="Write the rejected rows with reasons to this CSV.")
    ] = None,
) -> None:
    """Import items; every rejected row is reported with its reason. Example:
    segue catalog import tracks.parquet --rejected rejected.csv"""
    from online.catalog import import_file

    _, catalog = _catalog()
    report = import_file(file, catalog, format=format, progress=True)
    typer.echo(report.summary())
    if rejected is not None and report.rejected:
        import csv

        with rejected.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "id", "reason"])
            for r in report.rejected:
                writer.writerow([r.row, r.item_id or "", r.reason])
        typer.echo(f"rejected rows written to {rejected}")
    if report.rejected:
        raise typer.Exit(1)


@app.command()
def demo(
    n: Annotated[int, typer.Option(help="How many items.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Add a generated demo catalog (artists, genres, embeddings).

    Example: segue catalog demo --n 100000
    """
    import time

    from online.demo import generate_demo_catalog

    settings, catalog = _catalog()
    added = catalog.upsert(
        generate_demo_catalog(n, dim=settings.embedding_dim, seed=seed, now=time.time())
    )
    typer.echo(f"catalog now has {len(catalog)} items ({added} written)")


@app.command()
def stats() -> None:
    """How many items, how many available. Example: segue catalog stats"""
    _, catalog = _catalog()
    view = catalog.view()
    typer.echo(f"items: {len(catalog)}, available: {int(view.available_mask.sum())}")
