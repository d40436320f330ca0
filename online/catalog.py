"""The item catalog: persisted with SQLAlchemy, served from memory as numpy arrays.

Every online stage asks the catalog two kinds of questions: "what is item ``x``?"
(:meth:`Catalog.get`) and array questions over all items at once (which are available, how old,
their content vectors). The second kind is answered from arrays indexed by a *dense index*:
each item id gets the next integer the first time it is seen, the index is stored with the
row, and it never changes or gets reused. Retrievers and counters key on it.

Exceptions
----------
::

    CatalogError
     └── UnknownItemError(CatalogError, KeyError)   an id the catalog has never seen
    ValueError                                      an invalid Item passed to upsert

Storage
-------
One table, ``segue_items``, in any SQLAlchemy database (an SQLite file by default, PostgreSQL
in the distributed mode): ``item_id`` (primary key), ``idx`` (the dense index, unique),
``title``, ``artist``, ``genres`` (JSON array text), ``release_time`` (epoch seconds, double),
``duration_ms``, ``available``, ``embedding`` (little-endian float32 bytes, ``LargeBinary``:
4 bytes a value instead of ~20 as JSON text, and decoded with one ``frombuffer`` for a million
rows), ``attributes`` (JSON object text, NULL when empty) and ``updated_at`` (epoch
seconds of the row's last write, indexed: :meth:`Catalog.sync` asks for the recent ones).

Several processes
-----------------
Serving workers, ``segue learn`` and ``segue catalog`` each hold their own catalog over one
table. Writes (:meth:`Catalog.upsert`, :meth:`Catalog.set_available`) take the database's
write lock (``BEGIN IMMEDIATE`` on SQLite, an advisory transaction lock on PostgreSQL), read
what other processes committed, and only then hand out dense indexes (after the last one in
the table, so two processes adding items never collide) and stamp ``updated_at``. Each stamp
is later than every stamp already in the table, so stamp order is commit order even across
hosts whose clocks disagree.

:meth:`Catalog.sync` then brings a process up to date: it reads the rows past its last dense
index and the rows stamped after its *watermark* (the latest stamp it has seen), plus, for
rows written by other means, those stamped up to :data:`SYNC_MARGIN_S` before its last read
began; it applies the ones that differ from memory. When nothing changed that is one indexed
query, so every process can sync every second.

Removing
--------
segue never forgets an id: decisions, events and snapshots refer to items long after they
leave the catalog. :meth:`Catalog.remove` therefore only makes an item unavailable; its row,
its dense index and its metadata stay.

Thread safety
-------------
Writes (an HTTP handler, the importer) and syncs take a lock; a write changes the database
first, then memory, so a failed write leaves its change out of memory. Readers take no lock: the
arrays they get (``ids``, ``available_mask``, ``release_times``, ``embeddings``) are never
changed in place once published. A write that changes existing rows copies the array first
(copy-on-write: about a millisecond per million items for the mask, more for embeddings);
appending new items writes past the end of the published length and publishes a longer view.
:meth:`Catalog.view` returns one consistent snapshot of all arrays with its ``version``, which
is bumped by every change.

>>> from online.items import Item
>>> catalog = Catalog("sqlite://", embedding_dim=2)
>>> catalog.upsert([Item("a", artist="x", embedding=(1.0, 0.0)), Item("b", artist="x")])
2
>>> catalog.index_of("b"), len(catalog), catalog.version
(1, 2, 2)
>>> catalog.remove("a")
True
>>> catalog.available_mask
array([False,  True])
>>> catalog.items_by_artist("x")
['a', 'b']
"""

from __future__ import annotations

import bisect
import csv
import functools
import itertools
import json
import math
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import sqlalchemy as sa

from feedback.db import is_postgres, is_sqlite
from online.items import Item

__all__ = [
    "SYNC_MARGIN_S",
    "Catalog",
    "CatalogError",
    "CatalogView",
    "ImportReport",
    "Rejection",
    "UnknownItemError",
    "import_file",
    "items_table",
    "parse_item",
]


_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})


class CatalogError(Exception):
    """Base of the catalog's errors."""


class UnknownItemError(CatalogError, KeyError):
    """The catalog has never seen this item id."""


TABLE_NAME = "segue_items"

SYNC_MARGIN_S = 2.0
"""Seconds before its last read began from which :meth:`Catalog.sync` reads rows again.

Catalog writes stamp rows in commit order, so rows stamped after the watermark are exact for
them. The margin is for rows written otherwise (an older segue, a script, SQL by hand), whose
stamp is some clock's time when the write began: the write's own duration, a clock step and
the skew between two hosts' clocks may date it before a read that did not see it yet. Rows
read again are skipped (their stamp tells) unless they changed."""

_WRITE_LOCK_KEY = 0x5E61  # pg_advisory_xact_lock key for catalog writes (the event log's: 0x5E6E)


def items_table(metadata: sa.MetaData) -> sa.Table:
    """The ``segue_items`` table definition, bound to ``metadata``."""
    return sa.Table(
        TABLE_NAME,
        metadata,
        sa.Column("item_id", sa.String(512), primary_key=True),
        sa.Column("idx", sa.Integer, nullable=False, unique=True),
        sa.Column("title", sa.Text, nullable=False, default=""),
        sa.Column("artist", sa.Text, nullable=False, default=""),
        sa.Column("genres", sa.Text, nullable=False, default="[]"),
        sa.Column("release_time", sa.Double, nullable=True),
        sa.Column("duration_ms", sa.BigInteger, nullable=True),
        sa.Column("available", sa.Boolean, nullable=False, default=True),
        sa.Column("embedding", sa.LargeBinary, nullable=True),
        sa.Column("attributes", sa.Text, nullable=True),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Index(f"ix_{TABLE_NAME}_updated_at", "updated_at"),
    )


def _reason(item: Item, dim: int | None, check_finite: bool = True) -> str | None:
    """Why ``item`` cannot enter a catalog of embedding dimension ``dim``, or ``None``."""
    if not isinstance(item.item_id, str) or not item.item_id:
        return "missing id"
    if len(item.item_id) > 512:
        return "id is longer than 512 characters"
    if item.release_time is not None and not math.isfinite(item.release_time):
        return "release_time must be finite"
    if item.duration_ms is not None and item.duration_ms < 0:
        return f"duration_ms must be >= 0, got {item.duration_ms}"
    if item.embedding is not None:
        if dim is None:
            return "embedding given but the catalog has no embedding dimension"
        if len(item.embedding) != dim:
            return f"embedding has {len(item.embedding)} values, expected {dim}"
        if not check_finite:
            return None
        if not all(math.isfinite(x) for x in item.embedding):
            return "embedding has non-finite values"
    return None


@functools.lru_cache(maxsize=65_536)
def _genres_json(genres: tuple[str, ...]) -> str:
    return json.dumps(list(genres))


@functools.lru_cache(maxsize=65_536)
def _genres_tuple(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _same_attributes(held: Mapping[str, Any] | str | None, stored: str | None) -> bool:
    """Whether a record's attributes (a mapping, or JSON text not parsed yet) are ``stored``."""
    if isinstance(held, str) and held == stored:
        return True
    mine = json.loads(held) if isinstance(held, str) else dict(held or {})
    return mine == (json.loads(stored) if stored else {})


@dataclass(frozen=True, slots=True)
class CatalogView:
    """One consistent, immutable snapshot of the catalog's arrays, indexed by dense index."""

    version: int
    ids: np.ndarray
    """Item ids (object array of ``str``); ``ids[catalog.index_of(x)] == x``."""
    available_mask: np.ndarray
    release_times: np.ndarray
    """Epoch seconds, float64, NaN when unknown."""
    embeddings: np.ndarray | None
    """float32 ``(n, dim)``; a zero row where ``has_embedding`` is False; None without a dim."""
    has_embedding: np.ndarray


# a row's metadata kept in memory: title, artist, genres, duration_ms, attributes (a mapping,
# or the stored JSON text, parsed only when the item is asked for: loading stays fast)
_Record = tuple[str, str, tuple[str, ...], int | None, Mapping[str, Any] | str | None]
# row revisions (see Catalog.revisions_at): unique across catalogs and reloads in a process
_REVISIONS = itertools.count(1)
_EMPTY: Mapping[str, Any] = {}


class Catalog:
    """The in-memory catalog over a ``segue_items`` table (see the module doc).

    ``engine_or_url`` is an SQLAlchemy engine or URL (``"sqlite:///catalog.db"``,
    ``"postgresql+psycopg://..."``); the table is created if missing and, with ``load=True``,
    read into memory. ``embedding_dim`` is the content-vector size, or ``None`` when the
    catalog carries no content vectors (then an item with an embedding is rejected).
    """

    def __init__(
        self,
        engine_or_url: sa.Engine | str,
        embedding_dim: int | None = None,
        *,
        load: bool = True,
        item_cache_size: int = 32_768,
    ) -> None:
        if embedding_dim is not None and embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1 or None, got {embedding_dim}")
        self._engine = (
            engine_or_url
            if isinstance(engine_or_url, sa.Engine)
            else sa.create_engine(engine_or_url)
        )
        self._owns_engine = not isinstance(engine_or_url, sa.Engine)
        self.embedding_dim = embedding_dim
        # built Items by dense index: the request path asks for the same popular items again
        # and again; an entry is dropped whenever its row changes
        self.item_cache_size = item_cache_size
        self._item_cache: dict[int, Item] = {}
        self._table = items_table(sa.MetaData())
        self._table_ready = False
        self._lock = threading.RLock()
        self._reset()
        if load:
            self.load()

    def close(self) -> None:
        """Release the database connections (the engine is disposed if the catalog made it)."""
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reset(self) -> None:
        self._item_cache = {}
        self._index: dict[str, int] = {}
        self._records: list[_Record] = []
        self._by_artist: dict[str, list[int]] = {}
        self._by_genre: dict[str, list[int]] = {}
        self._n = 0
        dim = self.embedding_dim or 0
        self._ids_buf = np.empty(0, dtype=object)
        self._avail_buf = np.zeros(0, dtype=bool)
        self._release_buf = np.zeros(0, dtype=np.float64)
        self._has_emb_buf = np.zeros(0, dtype=bool)
        self._emb_buf = np.zeros((0, dim), dtype=np.float32)
        # each row's updated_at as last read or written (never published): a row read again
        # with the same stamp is the same row, so sync need not compare it field by field
        self._stamp_buf = np.zeros(0, dtype=np.float64)
        self._epoch = next(_REVISIONS)  # the revision of every row as loaded
        self._rev_buf = np.zeros(0, dtype=np.int64)
        # sync's watermark: the latest updated_at memory has seen (-inf: none), and this
        # process's clock when the last complete read began (see _since)
        self._synced_until = -math.inf
        self._synced_at = -math.inf
        self._version = 0
        self._publish()

    # -- reading -------------------------------------------------------------------------

    def view(self) -> CatalogView:
        """The current snapshot: arrays that no later write will change."""
        return self._view

    @property
    def version(self) -> int:
        """Bumped by every change; the serving path compares it to notice catalog updates."""
        return self._view.version

    @property
    def ids(self) -> np.ndarray:
        return self._view.ids

    @property
    def available_mask(self) -> np.ndarray:
        return self._view.available_mask

    @property
    def release_times(self) -> np.ndarray:
        return self._view.release_times

    @property
    def embeddings(self) -> np.ndarray | None:
        return self._view.embeddings

    @property
    def has_embedding(self) -> np.ndarray:
        return self._view.has_embedding

    def __len__(self) -> int:
        return self._view.ids.size

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def index_of(self, item_id: str) -> int:
        """The dense index of ``item_id``; raises :class:`UnknownItemError`."""
        try:
            return self._index[item_id]
        except KeyError:
            raise UnknownItemError(item_id) from None

    def get(self, item_id: str) -> Item | None:
        """The item, or ``None`` when the catalog has never seen ``item_id``."""
        return self.get_many((item_id,))[0]

    def get_many(self, item_ids: Iterable[str], *, content: bool = True) -> list[Item | None]:
        """:meth:`get` for many ids at once (one lock, array reads in bulk): the request path
        builds a few hundred items per list.

        ``content=False`` leaves out what no ranking stage reads: an item not cached already
        comes without its ``embedding`` (a tuple of floats per item, most of the cost of
        building one) and ``attributes``. Such items are cached apart (under ``-1 - index``),
        so a full read never gets one.
        """
        with self._lock:
            index, records, cache = self._index, self._records, self._item_cache
            ids = list(item_ids)
            rows = [index.get(item_id, -1) for item_id in ids]
            if len(cache) + len(rows) > self.item_cache_size:
                cache.clear()
            pos: dict[int, int] = {}
            for i in rows:
                if i >= 0 and i not in cache and i not in pos and (content or -1 - i not in cache):
                    pos[i] = len(pos)
            if not pos:
                if content:
                    return [cache.get(i) for i in rows]
                return [cache.get(i) or cache.get(-1 - i) if i >= 0 else None for i in rows]
            known = list(pos)
            view = self._view
            releases = view.release_times[known].tolist()
            available = view.available_mask[known].tolist()
            if content and view.embeddings is not None:
                has = view.has_embedding[known].tolist()
                vectors = view.embeddings[known].tolist()
            else:
                has = [False] * len(known)
                vectors = []
            out: list[Item | None] = []
            built: dict[int, Item] = {}
            keep = self.item_cache_size > 0
            for item_id, i in zip(ids, rows, strict=True):
                if i < 0:
                    out.append(None)
                    continue
                hit = cache.get(i) or built.get(i)
                if hit is None and not content:
                    hit = cache.get(-1 - i)
                if hit is not None:
                    out.append(hit)
                    continue
                j = pos[i]
                title, artist, genres, duration_ms, attributes = records[i]
                release = releases[j]
                if content:
                    if isinstance(attributes, str):
                        # parsed once, on first use (loading a million rows stays fast)
                        attributes = json.loads(attributes)
                        records[i] = (title, artist, genres, duration_ms, attributes)
                    # shared by every caller of a cached item: read-only
                    extra: Mapping[str, Any] = MappingProxyType(dict(attributes or {}))
                else:
                    extra = _NO_ATTRIBUTES
                item = Item(
                    item_id=item_id,
                    title=title,
                    artist=artist,
                    genres=genres,
                    release_time=None if release != release else release,  # NaN: unknown
                    duration_ms=duration_ms,
                    available=available[j],
                    embedding=tuple(vectors[j]) if has[j] else None,
                    attributes=extra,
                )
                built[i] = item
                if keep:
                    cache[i if content else -1 - i] = item
                out.append(item)
            return out

    def _forget(self, i: int) -> None:
        """Drop the cached items of row ``i`` (full and ranking-only) when it changes."""
        self._item_cache.pop(i, None)
        self._item_cache.pop(-1 - i, None)

    def feature_columns(
        self, indexes: Sequence[int]
    ) -> tuple[list[str], list[str], list[tuple[str, ...]]]:
        """The ids, artists and genres of the rows at dense ``indexes``: what models
        featurize, as columns (no ``Item`` built). Index refreshes read thousands a second;
        use :meth:`get_many` for anything served."""
        with self._lock:
            ids, records = self._ids_buf, self._records
        # read outside the lock (an index refresh asks for thousands, which requests would
        # wait for): rows are only ever appended or replaced whole, and a grown buffer is a
        # new array, so these references stay right for every row asked about
        rows = [records[i] for i in indexes]
        return (
            ids[np.asarray(indexes, dtype=np.int64)].tolist(),
            [r[1] for r in rows],
            [r[2] for r in rows],
        )

    def revisions_at(self, indexes: np.ndarray) -> np.ndarray:
        """The revision of each row at dense ``indexes`` (int64): it changes whenever the
        row's metadata does, and never repeats in this process (not across catalogs or
        reloads either), so a cache keyed by row and revision needs no invalidation.

        Read without the lock: a row's record is replaced before its revision, so a reader
        that sees the new revision reads the new record; one that sees the old revision
        and the new record caches what the next read finds stale.
        """
        return self._rev_buf[np.asarray(indexes, dtype=np.int64)]

    def artists_at(self, indexes: Iterable[int]) -> list[str]:
        """The artist of each row at dense ``indexes`` (``""`` when unknown)."""
        records = self._records
        return [records[i][1] for i in indexes]

    def iter_artists_at(self, indexes: Iterable[int]) -> Iterator[str]:
        """:meth:`artists_at`, one at a time: for a caller that may stop early."""
        records = self._records
        return (records[i][1] for i in indexes)

    def available_ids(self, item_ids: Iterable[str]) -> list[str]:
        """The ids among ``item_ids`` that are in the catalog and available, in their order,
        read from the arrays (no item built: the fallback list needs this when busiest)."""
        ids = list(item_ids)
        if not ids:
            return []
        rows = self.indexes_of(ids)
        mask = self.view().available_mask
        ok = (rows >= 0) & (rows < len(mask))
        ok[ok] = mask[rows[ok]]
        return [item_id for item_id, good in zip(ids, ok.tolist(), strict=True) if good]

    def indexes_of(self, item_ids: Iterable[str]) -> np.ndarray:
        """Dense indexes of ``item_ids`` (int64), ``-1`` for ids the catalog has never seen."""
        get = self._index.get
        return np.fromiter((get(item_id, -1) for item_id in item_ids), dtype=np.int64)

    def artist_of(self, item_id: str) -> str | None:
        """The artist of ``item_id`` (``""`` when unknown), ``None`` for an unseen id."""
        i = self._index.get(item_id)
        return None if i is None else self._records[i][1]

    def indexes_by_artist(self, artist: str) -> list[int]:
        """Dense indexes of every item by ``artist`` (available or not), in index order."""
        with self._lock:
            return list(self._by_artist.get(artist, ()))

    def items_by_artist(self, artist: str) -> list[str]:
        """Ids of every item by ``artist`` (available or not), in index order."""
        with self._lock:
            return [self._ids_buf[i] for i in self._by_artist.get(artist, ())]

    def items_by_genre(self, genre: str) -> list[str]:
        """Ids of every item tagged ``genre`` (available or not), in index order."""
        with self._lock:
            return [self._ids_buf[i] for i in self._by_genre.get(genre, ())]

    def _ensure_table(self) -> None:
        """Create the table on first use, not in the constructor, so a service whose
        database is down still starts (its readiness check says so) instead of crashing.

        Indexes are created one by one as well: a table made before an index was added to its
        definition gets it here. Under the write lock, since processes start together."""
        if self._table_ready:
            return
        with self._lock:
            if not self._table_ready:
                with self._engine.begin() as conn:
                    self._lock_for_write(conn)
                    self._table.create(conn, checkfirst=True)
                    for index in self._table.indexes:
                        index.create(conn, checkfirst=True)
                self._table_ready = True

    def _lock_for_write(self, conn: sa.Connection) -> None:
        """Take the database's write lock first, as the event log does: on SQLite a
        transaction that reads and then writes fails with "database is locked" when another
        writer got in between (no busy wait on a lock upgrade), so writes begin IMMEDIATE; on
        PostgreSQL an advisory lock makes the read-then-write atomic across processes."""
        if is_postgres(self._engine):
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_WRITE_LOCK_KEY)))
        elif is_sqlite(self._engine):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _stamp(self) -> float:
        """``updated_at`` for a write (under the write lock, after catching up): now, but
        later than every stamp in the table, so stamp order is commit order on every host."""
        return max(time.time(), math.nextafter(self._synced_until, math.inf))

    # -- writing -------------------------------------------------------------------------

    def upsert(self, items: Iterable[Item]) -> int:
        """Insert new items and replace known ones; returns how many rows changed.

        Unchanged items are skipped. Raises ``ValueError`` naming the first invalid item
        (nothing is written then); of duplicate ids in one call the last wins.
        """
        batch: dict[str, Item] = {}
        for item in items:
            reason = _reason(item, self.embedding_dim, check_finite=False)
            if reason is not None:
                raise ValueError(f"item {item.item_id!r}: {reason}")
            batch[item.item_id] = item
        with_embedding = [it for it in batch.values() if it.embedding is not None]
        if with_embedding:
            matrix = np.array([it.embedding for it in with_embedding], dtype=np.float64)
            bad = ~np.isfinite(matrix).all(axis=1)
            if bad.any():
                first = with_embedding[int(np.argmax(bad))].item_id
                raise ValueError(f"item {first!r}: embedding has non-finite values")
        with self._lock:
            self._ensure_table()
            with self._engine.begin() as conn:
                self._lock_for_write(conn)
                # what other processes committed first: new items go after theirs, and
                # "changed" means changed from the table, not from a stale memory
                self._catch_up(conn)
                new = [it for iid, it in batch.items() if iid not in self._index]
                changed = [
                    it for iid, it in batch.items() if iid in self._index and self.get(iid) != it
                ]
                if not new and not changed:
                    return 0
                now = self._stamp()
                if new:
                    rows = [self._row(it, self._n + j, now) for j, it in enumerate(new)]
                    conn.execute(self._table.insert(), rows)
                if changed:
                    rows = [self._row(it, None, now) for it in changed]
                    for r in rows:
                        r["b_item_id"] = r.pop("item_id")
                    conn.execute(
                        self._table.update().where(
                            self._table.c.item_id == sa.bindparam("b_item_id")
                        ),
                        rows,
                    )
            self._apply(new, changed, now)
            self._synced_until = now
            return len(new) + len(changed)

    def set_available(self, item_id: str, available: bool) -> bool:
        """Set an item's availability; returns whether it changed.

        Raises :class:`UnknownItemError` for an id the table does not have either (the item
        may be another process's, not synced here yet)."""
        with self._lock:
            self._ensure_table()
            with self._engine.begin() as conn:
                self._lock_for_write(conn)
                self._catch_up(conn)
                i = self.index_of(item_id)
                if bool(self._avail_buf[i]) == bool(available):
                    return False
                now = self._stamp()
                conn.execute(
                    self._table.update()
                    .where(self._table.c.item_id == item_id)
                    .values(available=bool(available), updated_at=now)
                )
            avail = self._avail_buf.copy()  # copy-on-write: published arrays never change
            avail[i] = bool(available)
            self._stamp_buf[i] = now
            self._forget(i)
            self._avail_buf = avail
            self._version += 1
            self._publish()
            self._synced_until = now
            return True

    def remove(self, item_id: str) -> bool:
        """Make an item unavailable; its id, index and metadata stay (see the module doc)."""
        return self.set_available(item_id, False)

    def _row(self, item: Item, idx: int | None, now: float) -> dict[str, Any]:
        row: dict[str, Any] = {
            "item_id": item.item_id,
            "title": item.title,
            "artist": item.artist,
            "genres": _genres_json(tuple(item.genres)),
            "release_time": item.release_time,
            "duration_ms": item.duration_ms,
            "available": bool(item.available),
            "embedding": None
            if item.embedding is None
            else np.asarray(item.embedding, dtype="<f4").tobytes(),
            "attributes": json.dumps(dict(item.attributes)) if item.attributes else None,
            "updated_at": now,
        }
        if idx is not None:
            row["idx"] = idx
        return row

    def _ensure(self, n: int) -> None:
        """Room for ``n`` rows; a bigger buffer is new, so published views stay valid."""
        if n <= self._ids_buf.size:
            return
        size = max(n, int(self._ids_buf.size * 1.5), 1024)

        def grown(buf: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full((size, *buf.shape[1:]), fill, dtype=buf.dtype)
            out[: self._n] = buf[: self._n]
            return out

        self._ids_buf = grown(self._ids_buf, None)
        self._avail_buf = grown(self._avail_buf, False)
        self._release_buf = grown(self._release_buf, np.nan)
        self._has_emb_buf = grown(self._has_emb_buf, False)
        self._emb_buf = grown(self._emb_buf, 0.0)
        self._stamp_buf = grown(self._stamp_buf, -math.inf)
        self._rev_buf = grown(self._rev_buf, self._epoch)

    def _apply(self, new: list[Item], changed: list[Item], now: float) -> None:
        """Put items written with ``updated_at=now`` into memory (under the lock) and publish
        a new view."""
        if changed:
            # rows readers may hold: copy before writing
            self._avail_buf = self._avail_buf.copy()
            self._release_buf = self._release_buf.copy()
            self._has_emb_buf = self._has_emb_buf.copy()
            if any(
                it.embedding is not None or self._has_emb_buf[self._index[it.item_id]]
                for it in changed
            ):
                self._emb_buf = self._emb_buf.copy()
        self._ensure(self._n + len(new))
        for item in new:
            i = self._n
            self._index[item.item_id] = i
            self._ids_buf[i] = item.item_id
            self._records.append(self._record(item))
            self._n += 1
            self._stamp_buf[i] = now
            self._set_arrays(i, item)
            self._link(i, item.artist, item.genres)
        for item in changed:
            i = self._index[item.item_id]
            self._forget(i)
            self._unlink(i)
            self._records[i] = self._record(item)
            self._rev_buf[i] = next(_REVISIONS)  # after the record: see revisions_at
            self._stamp_buf[i] = now
            self._set_arrays(i, item)
            self._link(i, item.artist, item.genres)
        self._version += 1
        self._publish()

    @staticmethod
    def _record(item: Item) -> _Record:
        attributes = dict(item.attributes) if item.attributes else _EMPTY
        return (item.title, item.artist, tuple(item.genres), item.duration_ms, attributes)

    def _set_arrays(self, i: int, item: Item) -> None:
        self._avail_buf[i] = bool(item.available)
        self._release_buf[i] = np.nan if item.release_time is None else item.release_time
        if item.embedding is not None:
            self._emb_buf[i] = item.embedding
            self._has_emb_buf[i] = True
        elif self._has_emb_buf[i]:
            self._emb_buf[i] = 0.0
            self._has_emb_buf[i] = False

    def _link(self, i: int, artist: str, genres: Iterable[str]) -> None:
        """Index row ``i`` by artist and genre, in index order (a changed row keeps its
        place: every catalog then lists the same, whatever order its changes came in)."""
        if artist:
            bisect.insort(self._by_artist.setdefault(artist, []), i)
        for genre in dict.fromkeys(genres):
            bisect.insort(self._by_genre.setdefault(genre, []), i)

    def _unlink(self, i: int) -> None:
        _, artist, genres, _, _ = self._records[i]
        if artist:
            self._by_artist[artist].remove(i)
            if not self._by_artist[artist]:
                del self._by_artist[artist]
        for genre in dict.fromkeys(genres):
            self._by_genre[genre].remove(i)
            if not self._by_genre[genre]:
                del self._by_genre[genre]

    def _publish(self) -> None:
        n = self._n
        self._view = CatalogView(
            version=self._version,
            ids=self._ids_buf[:n],
            available_mask=self._avail_buf[:n],
            release_times=self._release_buf[:n],
            embeddings=None if self.embedding_dim is None else self._emb_buf[:n],
            has_embedding=self._has_emb_buf[:n],
        )
        for array in (self._view.ids, self._view.available_mask, self._view.release_times):
            array.flags.writeable = False
        if self._view.embeddings is not None:
            self._view.embeddings.flags.writeable = False

    # -- loading -------------------------------------------------------------------------

    def _columns(self) -> list[sa.Column[Any]]:
        """The columns :meth:`_load_part` takes, in its order (``updated_at`` last)."""
        c = self._table.c
        return [
            c.item_id,
            c.idx,
            c.title,
            c.artist,
            c.genres,
            c.release_time,
            c.duration_ms,
            c.available,
            c.embedding,
            c.attributes,
            c.updated_at,
        ]

    @staticmethod
    def _stream(conn: sa.Connection, query: sa.Select[Any]) -> Iterator[list[Any]]:
        """``query``'s rows, 50 000 at a time, as plain DBAPI tuples: SQLAlchemy's row
        objects cost more than the rest of loading together (a million rows: ~5 s of 13 s)."""
        compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        params: Any = compiled.params
        if conn.dialect.positional:
            params = tuple(params[name] for name in compiled.positiontup or ())
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None, "an open connection has a DBAPI connection"
        cursor = dbapi.cursor()
        try:
            cursor.execute(str(compiled), params)
            while part := cursor.fetchmany(50_000):
                yield list(part)
        finally:
            cursor.close()

    def load(self) -> int:
        """Replace memory with the table's contents (streamed); returns the item count."""
        self._ensure_table()
        t = self._table
        with self._lock:
            self._reset()
            with self._engine.connect() as conn:
                # the watermark before the rows: a row committed in between is read twice,
                # never missed (and a load cut short is completed by sync)
                started = time.time()
                n_rows, newest = conn.execute(
                    sa.select(sa.func.count(), sa.func.max(t.c.updated_at))
                ).one()
                self._synced_until = -math.inf if newest is None else newest
                self._synced_at = started
                self._ensure(n_rows)
                for part in self._stream(conn, sa.select(*self._columns()).order_by(t.c.idx)):
                    self._load_part(part)
            self._version += 1
            self._publish()
            return self._n

    def sync(self) -> int:
        """Apply what other processes committed since the last sync, load or write; returns
        how many rows were applied (new and changed items).

        Each process holding a catalog over a shared table calls this every second or so
        (see "Several processes" in the module doc). When nothing changed it is one query,
        made without the lock, so readers never wait on the database: the largest dense index
        and the latest stamp, two lookups at the end of an index each (not "any row past the
        watermark?", which PostgreSQL may answer by scanning the table). Otherwise the changes
        are read under the lock (streamed: another process may have imported a million items)
        and one new view is published.
        """
        self._ensure_table()
        t = self._table
        with self._lock:
            n, since = self._n, self._since()
        started = time.time()
        with self._engine.connect() as conn:
            last, latest = conn.execute(
                sa.select(
                    sa.select(sa.func.max(t.c.idx)).scalar_subquery(),
                    sa.select(sa.func.max(t.c.updated_at)).scalar_subquery(),
                )
            ).one()
        if (last is None or last < n) and (since is None or latest is None or latest < since):
            with self._lock:  # nothing to read up to now: the margin window moves on
                self._synced_at = max(self._synced_at, started)
            return 0
        with self._lock, self._engine.connect() as conn:
            return self._catch_up(conn)

    def _since(self) -> float | None:
        """The oldest ``updated_at`` memory may lack (``None``: only new rows; under the lock).

        Catalog writes stamp in commit order, so the rows stamped after the latest stamp memory
        has seen are exactly the ones it lacks. A row written otherwise (see
        :data:`SYNC_MARGIN_S`) may carry an older stamp: rows stamped up to the margin before
        the last read began are read as well. Only right after a write does that reach back
        past the latest stamp; once nothing changed for longer, nothing is read again.
        """
        if self._synced_until == -math.inf:
            return None
        return min(math.nextafter(self._synced_until, math.inf), self._synced_at - SYNC_MARGIN_S)

    def _catch_up(self, conn: sa.Connection) -> int:
        """Apply the rows memory lacks (under the lock): those past its last dense index and
        those stamped since :meth:`_since`. Publishes a new view if any; returns how many.

        Known items are read in two steps: the stamps of those stamped since :meth:`_since`
        (the margin reads rows memory has, right after a write many thousands), then the rows
        whose stamp memory does not have. New items follow, appended while their dense indexes
        follow on; at a gap (a table written by hand: catalog writes add indexes in commit
        order) the rest is left to the next call, which reads every index from ``_n`` on
        anyway. The watermark moves only once every row was read.
        """
        t = self._table
        n, since, started = self._n, self._since(), time.time()
        newest = self._synced_until
        columns = self._columns()
        changed = 0
        copied: set[str] = set()
        try:
            if since is not None and n:
                stale: list[int] = []
                stamps_query = sa.select(t.c.idx, t.c.updated_at).where(
                    t.c.updated_at >= since, t.c.idx < n
                )
                for part in self._stream(conn, stamps_query):
                    idxs = np.fromiter((row[0] for row in part), np.int64, len(part))
                    stamps = np.fromiter((row[1] for row in part), np.float64, len(part))
                    newest = max(newest, float(stamps.max()))
                    stale.extend(idxs[self._stamp_buf[idxs] != stamps].tolist())
                stale.sort()
                for k in range(0, len(stale), 1_000):
                    rows_query = sa.select(*columns).where(t.c.idx.in_(stale[k : k + 1_000]))
                    for part in self._stream(conn, rows_query):
                        changed += self._apply_rows(part, copied)
            gap = False
            new_query = sa.select(*columns).where(t.c.idx >= n).order_by(t.c.idx)
            for part in self._stream(conn, new_query):
                newest = max(newest, max(row[10] for row in part))
                if gap:
                    continue
                idxs = np.fromiter((row[1] for row in part), np.int64, len(part))
                behind = np.flatnonzero(idxs != np.arange(self._n, self._n + len(part)))
                run = int(behind[0]) if behind.size else len(part)
                if run:
                    self._load_part(part[:run])
                gap = run < len(part)
            self._synced_until = newest
            self._synced_at = max(self._synced_at, started)
            return changed + self._n - n
        finally:
            if changed or self._n != n:
                self._version += 1
                self._publish()

    def _apply_rows(self, rows: list[Any], copied: set[str]) -> int:
        """Apply stored rows of known items; returns how many differed from memory.

        A published view never changes: an array is copied before its first write of a call
        (``copied`` names the arrays copied so far). A row that matches memory (a write by
        this process read back, a row written again unchanged) is skipped.
        """
        dim = self.embedding_dim
        applied = 0
        for row in rows:
            item_id, i, title, artist, genres_text, release, duration, available = row[:8]
            blob, attrs, stamp = row[8:]
            if self._ids_buf[i] != item_id:
                raise CatalogError(
                    f"{TABLE_NAME}: dense index {i} is {item_id!r} in the table but "
                    f"{self._ids_buf[i]!r} in memory (was the table replaced?): load() again"
                )
            vector = None if blob is None else bytes(blob)
            if vector is not None and (dim is None or len(vector) != 4 * dim):
                raise CatalogError(
                    f"{TABLE_NAME}: stored embeddings do not match the catalog's dimension {dim}"
                )
            self._stamp_buf[i] = stamp
            genres = () if genres_text == "[]" else _genres_tuple(genres_text)
            old = self._records[i]
            had = bool(self._has_emb_buf[i])
            held_release = self._release_buf[i]
            if (
                old[:4] == (title, artist, genres, duration)
                and bool(self._avail_buf[i]) == bool(available)
                and (held_release != held_release if release is None else held_release == release)
                and (
                    not had
                    if vector is None
                    else had and self._emb_buf[i].astype("<f4").tobytes() == vector
                )
                and _same_attributes(old[4], attrs)
            ):
                continue
            for name in ("_avail_buf", "_release_buf", "_has_emb_buf"):
                if name not in copied:
                    setattr(self, name, getattr(self, name).copy())
                    copied.add(name)
            if (had or vector is not None) and "_emb_buf" not in copied:
                self._emb_buf = self._emb_buf.copy()
                copied.add("_emb_buf")
            self._forget(i)
            self._unlink(i)
            self._records[i] = (title, artist, genres, duration, attrs)
            self._rev_buf[i] = next(_REVISIONS)  # after the record: see revisions_at
            self._link(i, artist, genres)
            self._avail_buf[i] = bool(available)
            self._release_buf[i] = np.nan if release is None else release
            if vector is not None:
                self._emb_buf[i] = np.frombuffer(vector, "<f4")
                self._has_emb_buf[i] = True
            elif had:
                self._emb_buf[i] = 0.0
                self._has_emb_buf[i] = False
            applied += 1
        return applied

    def _load_part(self, part: list) -> None:
        """Append rows (ordered by idx; :meth:`_columns`) from the table to memory, column by
        column."""
        start, stop = self._n, self._n + len(part)
        iids, idxs, titles, artists, genres, rels, durs, avails, embs, attrs, stamps = zip(
            *part, strict=True
        )
        if idxs[0] != start or idxs[-1] != stop - 1 or np.any(np.diff(idxs) != 1):
            raise CatalogError(
                f"{TABLE_NAME}: dense indexes are not 0..n-1 (expected {start}..{stop - 1}, "
                f"found {idxs[0]}..{idxs[-1]})"
            )
        genre_tuples = [() if g == "[]" else _genres_tuple(g) for g in genres]
        self._index.update(zip(iids, range(start, stop), strict=True))
        self._records.extend(zip(titles, artists, genre_tuples, durs, attrs, strict=True))
        for i, artist, gs in zip(range(start, stop), artists, genre_tuples, strict=True):
            if artist:
                self._by_artist.setdefault(artist, []).append(i)
            for genre in dict.fromkeys(gs):
                self._by_genre.setdefault(genre, []).append(i)
        self._ensure(stop)
        self._ids_buf[start:stop] = iids
        self._avail_buf[start:stop] = avails
        self._release_buf[start:stop] = np.array(rels, dtype=np.float64)
        self._stamp_buf[start:stop] = stamps
        rows = [i for i, e in zip(range(start, stop), embs, strict=True) if e is not None]
        if rows:
            dim = self.embedding_dim
            blobs = [e for e in embs if e is not None]
            if dim is None or any(len(e) != 4 * dim for e in blobs):
                raise CatalogError(
                    f"{TABLE_NAME}: stored embeddings do not match the catalog's dimension {dim}"
                )
            self._emb_buf[rows] = np.frombuffer(b"".join(blobs), "<f4").reshape(-1, dim)
            self._has_emb_buf[rows] = True
        self._n = stop


# -- import -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row that was not imported: 1-based ``row`` number, its id if any, and why."""

    row: int
    item_id: str | None
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What :func:`import_file` did: rows read, rows accepted, rows changed, rejections.

    ``row`` numbers are 1-based data rows: the CSV header is not counted, a JSONL row is its
    line number, a Parquet row its position plus one.
    """

    path: str
    format: str
    rows: int = 0
    accepted: int = 0
    changed: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        return (
            f"{self.path}: {self.rows} rows, {self.accepted} accepted "
            f"({self.changed} new or changed), {len(self.rejected)} rejected"
        )


_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_KNOWN = {"id", "title", "artist", "genres", "release_time", "duration_ms", "available"}
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


class _Bad(Exception):
    """A row problem; its message is the rejection reason."""


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any, name: str) -> str:
    if _empty(value):
        return ""
    if not isinstance(value, str):
        raise _Bad(f"{name} must be a string, got {type(value).__name__}")
    return value


def _parse_id(value: Any) -> str:
    if _empty(value):
        raise _Bad("missing id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Bad(f"id must be a string or an integer, got {type(value).__name__}")
    return str(value).strip()


def _parse_genres(value: Any, csv_text: bool) -> tuple[str, ...]:
    if _empty(value):
        return ()
    if csv_text and isinstance(value, str):
        return tuple(g.strip() for g in value.split("|") if g.strip())
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple) or not all(isinstance(g, str) for g in value):
        raise _Bad("genres must be a list of strings")
    return tuple(g for g in value if g)


def _parse_rfc3339(value: str, text: str) -> float:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Bad(f"release_time {value!r} is neither RFC 3339 nor epoch seconds") from None
    if moment.tzinfo is None:
        if len(text) != 10:  # a bare date is midnight UTC; a bare date-time is ambiguous
            raise _Bad(f"release_time {value!r} has no UTC offset")
        moment = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    return moment.timestamp()


def _parse_time(value: Any) -> float | None:
    if _empty(value):
        return None
    if isinstance(value, bool):
        raise _Bad("release_time must be RFC 3339 or epoch seconds, got a boolean")
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            return _parse_rfc3339(value, text)
    else:
        raise _Bad(f"release_time must be RFC 3339 or epoch seconds, got {type(value).__name__}")
    if not math.isfinite(seconds):
        raise _Bad(f"release_time must be finite, got {value!r}")
    return seconds


def _parse_duration(value: Any) -> int | None:
    if _empty(value):
        return None
    number: Any = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Bad(f"duration_ms must be an integer, got {value!r}") from None
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise _Bad(f"duration_ms must be an integer, got {type(value).__name__}")
    if isinstance(number, float) and (not math.isfinite(number) or not number.is_integer()):
        raise _Bad(f"duration_ms must be an integer, got {value!r}")
    if number < 0:
        raise _Bad(f"duration_ms must be >= 0, got {value!r}")
    return int(number)


def _parse_available(value: Any) -> bool:
    if _empty(value):
        return True
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _Bad(f"available must be true or false, got {value!r}")


def _parse_embedding(value: Any, dim: int | None) -> tuple[float, ...] | None:
    if _empty(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else [float(x) for x in text.split()]
        except ValueError:
            raise _Bad("embedding is neither a JSON array nor space-separated numbers") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        raise _Bad("embedding must be a list of numbers")
    if dim is None:
        raise _Bad("embedding given but the catalog has no embedding dimension")
    if len(value) != dim:
        raise _Bad(f"embedding has {len(value)} values, expected {dim}")
    floats = tuple(float(x) for x in value)
    if not all(math.isfinite(x) for x in floats):
        raise _Bad("embedding has non-finite values")
    return floats


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _parse_row(row: Mapping[str, Any], dim: int | None, csv_text: bool) -> Item:
    """An :class:`Item` from one record, or :class:`_Bad` naming the first problem."""
    item_id = _parse_id(row.get("id"))
    attributes: dict[str, Any] = {}
    for key, value in row.items():
        if key in _KNOWN or key == "embedding":
            continue
        if key == "attributes" and isinstance(value, Mapping):
            attributes.update(_jsonable(dict(value)))
        elif not _empty(value) and not (isinstance(value, float) and math.isnan(value)):
            attributes[key] = _jsonable(value)
    return Item(
        item_id=item_id,
        title=_text(row.get("title"), "title"),
        artist=_text(row.get("artist"), "artist"),
        genres=_parse_genres(row.get("genres"), csv_text),
        release_time=_parse_time(row.get("release_time")),
        duration_ms=_parse_duration(row.get("duration_ms")),
        available=_parse_available(row.get("available")),
        embedding=_parse_embedding(row.get("embedding"), dim),
        attributes=attributes,
    )


def parse_item(record: Mapping[str, Any], embedding_dim: int | None) -> Item:
    """An :class:`Item` from one JSON-like record (the import and ``POST /v1/items`` form);
    raises ``ValueError`` whose message is the reason the record is refused."""
    if not isinstance(record, Mapping):
        raise ValueError("an item must be an object")
    try:
        return _parse_row(record, embedding_dim, csv_text=False)
    except _Bad as exc:
        raise ValueError(str(exc)) from None


def _csv_records(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        for n, values in enumerate(reader, start=1):
            if not values:
                continue
            if len(values) != len(header):
                yield n, f"row has {len(values)} fields, the header has {len(header)}"
            else:
                yield n, dict(zip(header, values, strict=True))


def _jsonl_records(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    with path.open("rb") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                yield n, f"invalid JSON: {exc}"
                continue
            yield n, record if isinstance(record, dict) else "row is not a JSON object"


def _parquet_records(path: Path, chunk: int) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    import pyarrow.parquet as pq

    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk):
        for record in batch.to_pylist():
            n += 1
            yield n, record


def import_file(
    path: str | Path,
    catalog: Catalog,
    *,
    format: str | None = None,
    progress: bool = True,
    chunk_size: int = 50_000,
) -> ImportReport:
    """Import a CSV, JSONL or Parquet catalog file into ``catalog``, ``chunk_size`` rows at a time.

    Fields: ``id`` (required), ``title``, ``artist``, ``genres`` (a list; in CSV a
    ``|``-separated string), ``release_time`` (RFC 3339 or epoch seconds; a bare date is
    midnight UTC), ``duration_ms``, ``available`` (default true), ``embedding`` (a list; in CSV
    a JSON array or space-separated numbers). Other fields are kept in ``attributes`` (empty
    values dropped; a JSON ``attributes`` object is merged). ``format`` defaults to the file
    extension (``.csv``, ``.jsonl``/``.ndjson``, ``.parquet``).

    Every problem row is rejected with its reason in the report and never imported; the good
    rows are. Of two rows with the same id the first is imported and the second rejected.
    Ids already in the catalog are updated.
    """
    path = Path(path)
    fmt = format or _FORMATS.get(path.suffix.lower())
    if fmt not in ("csv", "jsonl", "parquet"):
        raise ValueError(
            f"cannot tell the format of {path.name!r}: pass format='csv', 'jsonl' or 'parquet'"
        )
    records = {
        "csv": lambda: _csv_records(path),
        "jsonl": lambda: _jsonl_records(path),
        "parquet": lambda: _parquet_records(path, chunk_size),
    }[fmt]()
    total = None
    if fmt == "parquet":
        import pyarrow.parquet as pq

        total = pq.ParquetFile(path).metadata.num_rows
    report = ImportReport(path=str(path), format=fmt)
    first_row: dict[str, int] = {}
    pending: list[Item] = []
    dim = catalog.embedding_dim

    from tqdm import tqdm

    with tqdm(total=total, unit=" rows", desc=f"import {path.name}", disable=not progress) as bar:
        for n, record in records:
            report.rows += 1
            bar.update(1)
            if isinstance(record, str):
                report.rejected.append(Rejection(n, None, record))
                continue
            raw_id = record.get("id")
            shown_id = None if _empty(raw_id) else str(raw_id)
            try:
                item = _parse_row(record, dim, csv_text=fmt == "csv")
            except _Bad as exc:
                report.rejected.append(Rejection(n, shown_id, str(exc)))
                continue
            reason = _reason(item, dim)
            if reason is not None:
                report.rejected.append(Rejection(n, shown_id, reason))
                continue
            if item.item_id in first_row:
                reason = f"duplicate id (first seen at row {first_row[item.item_id]})"
                report.rejected.append(Rejection(n, item.item_id, reason))
                continue
            first_row[item.item_id] = n
            pending.append(item)
            if len(pending) >= chunk_size:
                report.changed += catalog.upsert(pending)
                report.accepted += len(pending)
                pending = []
        if pending:
            report.changed += catalog.upsert(pending)
            report.accepted += len(pending)
    return report
