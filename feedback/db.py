"""Database engines for segue's durable stores: SQLite (embedded default) or PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` by default, so a committed batch survives a
crash of the process and of the machine; readers (the learner) never block the writer.
PostgreSQL is reached through psycopg 3 with connect and statement timeouts, so a stalled
server turns into an error the API answers with 503, not a hung request.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine


def sqlite_url(path: Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{path}"


def create_db_engine(
    url: str,
    *,
    timeout_s: float = 5.0,
    sqlite_synchronous: str = "FULL",
    pool_size: int = 8,
) -> Engine:
    """An engine for ``url`` with segue's durability and timeout settings applied.

    ``timeout_s`` bounds how long a statement may wait (SQLite's busy timeout, PostgreSQL's
    ``statement_timeout``) and how long a PostgreSQL connect may take.
    """
    parsed = sa.engine.make_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": timeout_s, "check_same_thread": False}
        kwargs["pool_size"] = pool_size
        engine = sa.create_engine(url, **kwargs)
        sync = sqlite_synchronous.upper()
        if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"sqlite synchronous must be OFF, NORMAL, FULL or EXTRA, not {sync!r}")

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            _ensure_wal(cur, timeout_s)
            cur.execute(f"PRAGMA synchronous={sync}")
            cur.close()

        return engine
    if parsed.get_backend_name() == "postgresql":
        options = f"-c statement_timeout={int(timeout_s * 1000)}"
        existing = parsed.query.get("options")
        if existing:
            options = f"{existing} {options}"
        url_obj = parsed.update_query_dict({"options": options})
        kwargs["connect_args"] = {"connect_timeout": max(1, int(timeout_s))}
        kwargs["pool_size"] = pool_size
        kwargs["pool_pre_ping"] = True
        return sa.create_engine(url_obj, **kwargs)
    return sa.create_engine(url, **kwargs)


def _ensure_wal(cur: Any, timeout_s: float) -> None:
    """Switch the file to WAL once. The mode is stored in the file, so later connections only
    read it; switching takes an exclusive lock that SQLite does not wait for (no busy
    handler), so processes opening a fresh file together retry within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        mode = cur.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() == "wal":
            return
        try:
            cur.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
