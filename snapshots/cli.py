"""``segue snapshots ...``: list, inspect, roll back, pin, prune, verify, export and import.

This module imports only the standard library, typer and the rest of :mod:`snapshots`, never
River, Vowpal Wabbit, hnswlib, FastAPI or numpy, so an operator can roll back when everything
else is broken. The snapshot directory is ``--dir``, else the root command's ``snapshot_dir``
(``ctx.obj``), else ``$SEGUE_SNAPSHOT_DIR``, else ``$SEGUE_DATA_DIR/snapshots``, else
``./segue-data/snapshots``.

Exit codes: 0 success, 1 refused (bad archive, conflict, nothing verifies), 2 usage error,
3 unknown version, 4 corrupt snapshot.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from snapshots.errors import CorruptSnapshotError, SnapshotError, UnknownVersionError
from snapshots.guard import HIGHER_IS_BETTER
from snapshots.manifest import Manifest, version_key
from snapshots.store import SnapshotStore, VersionInfo, default_dir

EXIT_REFUSED, EXIT_UNKNOWN, EXIT_CORRUPT = 1, 3, 4
KEY_METRICS = ("relevance_auc", "relevance_logloss", "bandit_reward")

app = typer.Typer(
    name="snapshots",
    help="Model snapshots: list, inspect, roll back, pin, prune, verify, export, import.",
    no_args_is_help=True,
    add_completion=False,
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Snapshot directory (default: $SEGUE_SNAPSHOT_DIR, else $SEGUE_DATA_DIR/snapshots).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
VersionArg = Annotated[
    str, typer.Argument(help="A version, a unique prefix of one, or its number (42).")
]


@app.callback()
def _main(ctx: typer.Context, dir: DirOption = None) -> None:
    """Model snapshots: list, inspect, roll back, pin, prune, verify, export, import."""
    if dir is not None:
        ctx.obj = {**(ctx.obj if isinstance(ctx.obj, dict) else {}), "snapshot_dir": dir}


def _root(ctx: typer.Context, dir: Path | None) -> Path:
    if dir is not None:
        return dir
    obj = ctx.obj
    found = obj.get("snapshot_dir") if isinstance(obj, dict) else getattr(obj, "snapshot_dir", None)
    return Path(found) if found else default_dir()


def _store(ctx: typer.Context, dir: Path | None, *, by: str | None = None) -> SnapshotStore:
    return SnapshotStore(_root(ctx, dir), by=by or _operator())


def _operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"operator:{user}@{socket.gethostname()}"


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn store errors into a one-line message on stderr and an exit code.

    ``SystemExit`` rather than ``typer.Exit``: it ends the process with the code whichever
    click (typer's own or the root command's) is running the group.
    """
    try:
        yield
    except UnknownVersionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_UNKNOWN) from None
    except CorruptSnapshotError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_CORRUPT) from None
    except (SnapshotError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_REFUSED) from None


def _resolve(store: SnapshotStore, name: str) -> str:
    """A full version name from an exact name, a unique prefix, or a sequence number."""
    versions = store.versions()
    if name in versions:
        return name
    if name.isdigit():
        matches = [v for v in versions if version_key(v) == int(name)]
    else:
        matches = [v for v in versions if v.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise SnapshotError(f"{name!r} is ambiguous: {', '.join(matches)}")
    raise UnknownVersionError(name)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _row(info: VersionInfo) -> dict[str, Any]:
    m = info.manifest
    out: dict[str, Any] = {
        "version": info.version,
        "current": info.current,
        "pinned": info.pinned,
        "held_back": info.held_back,
        "error": info.error,
    }
    if m is not None:
        out |= {
            "parent": m.parent,
            "created_at": m.created_at,
            "offset": m.offset,
            "watermark": m.watermark,
            "events": m.events,
            "events_total": m.events_total,
            "metrics": dict(m.metrics),
            "size": m.size,
        }
    return out


@app.command("list")
def list_(ctx: typer.Context, dir: DirOption = None, as_json: JsonOption = False) -> None:
    """List snapshots: events, key metrics, size, current, pinned, held back and why.

    Example: segue snapshots list --json
    """
    with _errors():
        store = _store(ctx, dir)
        rows = store.list_versions()
    if as_json:
        typer.echo(json.dumps([_row(r) for r in rows], indent=2))
        return
    if not rows:
        typer.echo(f"no snapshots in {store.root}")
        return
    header = ("", "VERSION", "CREATED", "EVENTS", "AUC", "LOGLOSS", "REWARD", "SIZE", "NOTES")
    table: list[tuple[str, ...]] = [header]
    for r in rows:
        notes = ["pinned"] if r.pinned else []
        if r.held_back:
            notes.append(f"held back: {r.held_back}")
        if r.error:
            notes.append(f"UNREADABLE: {r.error}")
        m = r.manifest
        mark = "*" if r.current else ""
        if m is None:
            table.append((mark, r.version, "?", "?", "?", "?", "?", "?", "; ".join(notes)))
            continue
        table.append(
            (
                mark,
                r.version,
                m.created_at[:19].replace("T", " "),
                str(m.events),
                *(_metric(m.metrics.get(k)) for k in KEY_METRICS),
                _size(m.size),
                "; ".join(notes),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        typer.echo("  ".join([*cells, row[-1]]).rstrip())
    typer.echo("* = CURRENT")


@app.command()
def show(
    ctx: typer.Context, version: VersionArg, dir: DirOption = None, as_json: JsonOption = False
) -> None:
    """Show one snapshot's manifest: lineage, offsets, metrics, libraries, files.

    Example: segue snapshots show v000042
    """
    with _errors():
        store = _store(ctx, dir)
        version = _resolve(store, version)
        manifest = store.manifest(version)
        pointer = store.pointer()
        pinned = version in store.pinned()
    if as_json:
        body = manifest.to_dict()
        body["current"] = pointer is not None and pointer.version == version
        body["pinned"] = pinned
        typer.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    flags = [f for f, on in (("CURRENT", pointer and pointer.version == version),) if on]
    if pinned:
        flags.append("pinned")
    p = manifest.promotion
    lines = [
        f"version       {manifest.version}  {' '.join(flags)}".rstrip(),
        f"parent        {manifest.parent or '-'}",
        f"created_at    {manifest.created_at}",
        f"offset        {manifest.offset} (next event to learn)",
        f"watermark     {manifest.watermark}",
        f"events        {manifest.events} since parent, {manifest.events_total} in total",
        "promotion     "
        + ("promoted" if p.promoted else f"held back: {p.reason}")
        + (f" (compared with {p.baseline})" if p.baseline else ""),
        f"settings_hash {manifest.settings_hash or '-'}",
        "metrics",
        *(f"  {k:<22}{_metric(v)}" for k, v in sorted(manifest.metrics.items())),
        "libraries",
        *(f"  {k:<22}{v}" for k, v in sorted(manifest.libraries.items())),
        f"files         {len(manifest.files)}, {_size(manifest.size)}",
        *(
            f"  {k:<40}{_size(e.size):>10}  sha256 {e.sha256[:16]}"
            for k, e in sorted(manifest.files.items())
        ),
    ]
    if manifest.extra:
        lines.append(f"extra         {json.dumps(dict(manifest.extra), sort_keys=True)}")
    typer.echo("\n".join(lines))


def _pair(a: int, b: int) -> dict[str, int]:
    return {"a": a, "b": b, "delta": b - a}


def _diff(a: Manifest, b: Manifest) -> dict[str, Any]:
    metrics = {}
    for name in sorted(set(a.metrics) | set(b.metrics)):
        va, vb = a.metrics.get(name), b.metrics.get(name)
        delta = None if va is None or vb is None else vb - va
        verdict = None
        if delta is not None and name in HIGHER_IS_BETTER and delta != 0:
            verdict = "better" if (delta > 0) == HIGHER_IS_BETTER[name] else "worse"
        metrics[name] = {"a": va, "b": vb, "delta": delta, "verdict": verdict}
    files = {}
    for name in sorted(set(a.files) | set(b.files)):
        fa, fb = a.files.get(name), b.files.get(name)
        files[name] = {
            "a": fa.size if fa else None,
            "b": fb.size if fb else None,
            "delta": (fb.size if fb else 0) - (fa.size if fa else 0),
            "changed": fa is None or fb is None or fa.sha256 != fb.sha256,
        }
    libs = {
        k: {"a": a.libraries.get(k), "b": b.libraries.get(k)}
        for k in sorted(set(a.libraries) | set(b.libraries))
        if a.libraries.get(k) != b.libraries.get(k)
    }
    return {
        "a": a.version,
        "b": b.version,
        "events": _pair(a.events_total, b.events_total),
        "offset": _pair(a.offset, b.offset),
        "metrics": metrics,
        "files": files,
        "size": _pair(a.size, b.size),
        "settings_changed": a.settings_hash != b.settings_hash,
        "libraries_changed": libs,
    }


@app.command()
def diff(
    ctx: typer.Context,
    a: VersionArg,
    b: VersionArg,
    dir: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare two snapshots: metric deltas (better/worse), events, offsets, file sizes.

    Example: segue snapshots diff v000041 v000042
    """
    with _errors():
        store = _store(ctx, dir)
        d = _diff(store.manifest(_resolve(store, a)), store.manifest(_resolve(store, b)))
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    lines = [
        f"{d['a']} -> {d['b']}",
        f"events total  {d['events']['a']} -> {d['events']['b']} ({d['events']['delta']:+d})",
        f"offset        {d['offset']['a']} -> {d['offset']['b']} ({d['offset']['delta']:+d})",
        "metrics",
    ]
    for name, m in d["metrics"].items():
        delta = ""
        if m["delta"] is not None:
            verdict = f", {m['verdict']}" if m["verdict"] else ""
            delta = f" ({m['delta']:+.4f}{verdict})"
        lines.append(f"  {name:<22}{_metric(m['a'])} -> {_metric(m['b'])}{delta}")
    lines.append(f"size          {_size(d['size']['a'])} -> {_size(d['size']['b'])}")
    for name, f in d["files"].items():
        a_size = "-" if f["a"] is None else _size(f["a"])
        b_size = "-" if f["b"] is None else _size(f["b"])
        mark = "" if f["changed"] else " (identical)"
        lines.append(f"  {name:<40}{a_size:>10} -> {b_size:>10}{mark}")
    lines.append(f"settings      {'changed' if d['settings_changed'] else 'same'}")
    for name, v in d["libraries_changed"].items():
        lines.append(f"library       {name}: {v['a']} -> {v['b']}")
    typer.echo("\n".join(lines))


@app.command()
def rollback(
    ctx: typer.Context,
    version: VersionArg,
    replay: Annotated[
        bool, typer.Option("--replay", help="The learner re-learns the events after V.")
    ] = False,
    by: Annotated[
        str | None, typer.Option(help="Who to record in CURRENT (default: operator:user@host).")
    ] = None,
    dir: DirOption = None,
) -> None:
    """Point CURRENT at V (verified first); the service and learner follow within seconds.

    The learner continues from V with new events only; with --replay it re-learns from V.

    Example: segue snapshots rollback v000042 --replay
    """
    with _errors():
        store = _store(ctx, dir, by=by)
        result = store.rollback(_resolve(store, version), mode="replay" if replay else "continue")
    typer.echo("\n".join(result.describe()))


@app.command()
def pin(ctx: typer.Context, version: VersionArg, dir: DirOption = None) -> None:
    """Pin V so retention and prune never delete it.

    Example: segue snapshots pin v000042
    """
    with _errors():
        store = _store(ctx, dir)
        version = _resolve(store, version)
        store.pin(version)
    typer.echo(f"pinned {version}")


@app.command()
def unpin(ctx: typer.Context, version: VersionArg, dir: DirOption = None) -> None:
    """Unpin V; retention may delete it again.

    Example: segue snapshots unpin v000042
    """
    with _errors():
        store = _store(ctx, dir)
        version = _resolve(store, version)
        was = store.unpin(version)
    typer.echo(f"unpinned {version}" if was else f"{version} was not pinned")


@app.command()
def prune(
    ctx: typer.Context,
    keep: Annotated[
        int | None,
        typer.Option(min=1, help="Newest versions to keep (default: SEGUE_SNAPSHOT_KEEP, 10)."),
    ] = None,
    dir: DirOption = None,
) -> None:
    """Delete all but the newest N snapshots; pinned ones and CURRENT always stay.

    Example: segue snapshots prune --keep 5
    """
    if keep is None:
        from snapshots.settings import SnapshotSettings  # pydantic, only when needed

        keep = SnapshotSettings().keep
    with _errors():
        removed = _store(ctx, dir).prune(keep)
    for version in removed:
        typer.echo(f"removed {version}")
    typer.echo(f"{len(removed)} removed, newest {keep} kept (plus pinned and CURRENT)")


@app.command()
def verify(
    ctx: typer.Context,
    version: Annotated[str | None, typer.Argument(help="Default: every snapshot.")] = None,
    dir: DirOption = None,
) -> None:
    """Check every file's sha256 and size against the manifest (exit 4 if any is corrupt).

    Example: segue snapshots verify v000042
    """
    with _errors():
        store = _store(ctx, dir)
        versions = [_resolve(store, version)] if version else store.versions()
        pointer = store.pointer()
    bad = 0
    for name in versions:
        try:
            snapshot = store.verify(name, full=True)
        except CorruptSnapshotError as exc:
            bad += 1
            typer.echo(f"CORRUPT {name}: {exc.path}: {exc.reason}")
            continue
        current = " (CURRENT)" if pointer and pointer.version == name else ""
        typer.echo(
            f"ok      {name}{current}: {len(snapshot.manifest.files)} files, "
            f"{_size(snapshot.manifest.size)}"
        )
    if bad:
        typer.echo(f"error: {bad} of {len(versions)} snapshots failed verification", err=True)
        raise SystemExit(EXIT_CORRUPT)


@app.command("export")
def export(
    ctx: typer.Context,
    version: VersionArg,
    file: Annotated[Path, typer.Argument(help="Archive to write (.tar.gz).")],
    dir: DirOption = None,
) -> None:
    """Verify V and write it to a .tar.gz archive.

    Example: segue snapshots export v000042 /backups/v000042.tar.gz
    """
    with _errors():
        store = _store(ctx, dir)
        snapshot = store.export_archive(_resolve(store, version), file)
    typer.echo(f"exported {snapshot.version} to {file} ({_size(file.stat().st_size)})")


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Archive written by export.")],
    dir: DirOption = None,
) -> None:
    """Add a snapshot from an archive after verifying every checksum (CURRENT unchanged).

    Example: segue snapshots import /backups/v000042.tar.gz
    """
    with _errors():
        snapshot, new = _store(ctx, dir).import_archive(file)
    if new:
        typer.echo(
            f"imported {snapshot.version}; make it current with: "
            f"segue snapshots rollback {snapshot.version}"
        )
    else:
        typer.echo(f"{snapshot.version} is already here (identical)")


if __name__ == "__main__":
    app()
