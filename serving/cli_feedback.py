"""``segue feedback ...``: what the intake stored and what it refused."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer

from feedback.db import create_db_engine
from feedback.log import SQLEventLog
from serving.settings import SettingsError, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True)


def _open_log() -> SQLEventLog:
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    return SQLEventLog(create_db_engine(settings.resolved_database_url()))


def _when(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 date-time: {value!r}") from None


@app.command()
def stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Events by type, the last log offset, dead letters by reason. Example: segue feedback stats"""
    log = _open_log()
    s = log.stats()
    if as_json:
        typer.echo(
            orjson.dumps(
                {
                    "last_offset": s.last_offset,
                    "events_by_type": s.events_by_type,
                    "dead_letters_by_code": s.dead_letters_by_code,
                }
            ).decode()
        )
        return
    typer.echo(f"last offset: {s.last_offset}")
    typer.echo("events by type:")
    for kind, n in sorted(s.events_by_type.items()):
        typer.echo(f"  {kind:<12} {n}")
    typer.echo("dead letters by reason:")
    if not s.dead_letters_by_code:
        typer.echo("  (none)")
    for code, n in sorted(s.dead_letters_by_code.items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {code:<28} {n}")


@app.command("dead-letters")
def dead_letters(
    code: Annotated[str | None, typer.Option(help="Only this reason code.")] = None,
    kind: Annotated[str | None, typer.Option(help="'event' or 'body'.")] = None,
    since: Annotated[str | None, typer.Option(help="Received at or after (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Received before (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (0: all).")] = 50,
    export: Annotated[
        Path | None, typer.Option(help="Write them as JSONL to this file ('-': stdout).")
    ] = None,
) -> None:
    """List dead letters, newest first. Example: segue feedback dead-letters --code wrong_type"""
    log = _open_log()
    rows = log.dead_letters(
        code=code, kind=kind, since=_when(since), until=_when(until), limit=limit or None
    )
    if export is not None:
        lines = b"".join(orjson.dumps(r.to_json()) + b"\n" for r in rows)
        if str(export) == "-":
            sys.stdout.buffer.write(lines)
        else:
            export.write_bytes(lines)
            typer.echo(f"wrote {len(rows)} dead letters to {export}")
        return
    for r in rows:
        when = datetime.fromtimestamp(r.received_at).isoformat(timespec="seconds")
        typer.echo(f"#{r.id} {when} {r.kind:<5} {r.code:<24} {r.event_id or '-'}  {r.reason}")
    if not rows:
        typer.echo("no dead letters match")


@app.command()
def export(
    file: Annotated[Path, typer.Argument(help="JSONL file to write ('-': stdout).")],
    after: Annotated[int, typer.Option(help="Only events after this log offset.")] = 0,
    limit: Annotated[int, typer.Option(help="At most this many events (0: all).")] = 0,
) -> None:
    """Write the event log as JSONL, in log order (what 'segue replay' reads).

    Example: segue feedback export events.jsonl && segue replay events.jsonl
    """
    log = _open_log()
    out = sys.stdout.buffer if str(file) == "-" else file.open("wb")
    n = 0
    try:
        for logged in log.iter_from(after):
            out.write(orjson.dumps({"offset": logged.offset, **logged.event.to_dict()}) + b"\n")
            n += 1
            if limit and n >= limit:
                break
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    if str(file) != "-":
        typer.echo(f"wrote {n} events to {file}")


@app.command("export-decisions")
def export_decisions(
    file: Annotated[Path, typer.Argument(help="JSONL file to write ('-': stdout).")],
    since: Annotated[str | None, typer.Option(help="Served at or after (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Served before (ISO 8601).")] = None,
    model_version: Annotated[
        str | None, typer.Option(help="Only lists served by this model version.")
    ] = None,
) -> None:
    """Write the served lists whose attribution windows closed, with the propensities served
    and the rewards learned, as JSONL in serving order (what 'segue ope' reads).

    The learner stores a list when its window closes (SEGUE_LEARNER_ATTRIBUTION_WINDOW_S
    after it was served); lists never shown are left out.

    Example: segue feedback export-decisions decisions.jsonl && segue ope decisions.jsonl
    """
    log = _open_log()
    out = sys.stdout.buffer if str(file) == "-" else file.open("wb")
    n = 0
    try:
        for row in log.iter_outcomes(
            since=_when(since), until=_when(until), model_version=model_version
        ):
            out.write(orjson.dumps(row) + b"\n")
            n += 1
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    if str(file) != "-":
        typer.echo(f"wrote {n} lists to {file}")
