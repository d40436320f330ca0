"""Several catalogs over one table (serving workers, ``segue learn``, ``segue catalog``): what
one writes, the others see after ``sync``; writers never collide on dense indexes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import sqlalchemy as sa

import online.catalog as catalog_module
from feedback.db import create_db_engine
from online.catalog import TABLE_NAME, Catalog, UnknownItemError
from online.items import Item

DIM = 3


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def make(url: str) -> Iterator[Callable[[], Catalog]]:
    """A new catalog over the shared table, with its own engine: another process, as far as
    the database can tell."""
    engines: list[sa.Engine] = []

    def new() -> Catalog:
        engines.append(create_db_engine(url))
        return Catalog(engines[-1], embedding_dim=DIM)

    yield new
    for engine in engines:
        engine.dispose()


def item(item_id: str, n: int = 0, **changes: object) -> Item:
    fields: dict[str, object] = {
        "title": f"title {item_id}",
        "artist": f"artist-{n % 3}",
        "genres": (f"genre-{n % 4}", "all"),
        "release_time": None if n % 5 == 0 else 1_700_000_000.0 + n,
        "duration_ms": None if n % 7 == 0 else 1000 * n,
        "available": n % 6 != 5,
        "embedding": None if n % 4 == 3 else (float(n), 0.5, -1.0),
        "attributes": {"label": f"label {n}", "n": n} if n % 2 else {},
    }
    fields.update(changes)
    return Item(item_id, **fields)  # type: ignore[arg-type]


def items(prefix: str, count: int, start: int = 0) -> list[Item]:
    return [item(f"{prefix}{n}", n) for n in range(start, start + count)]


def assert_same(catalog: Catalog, reference: Catalog) -> None:
    """Everything a caller can read from ``catalog`` is what ``reference`` says."""
    ids = reference.ids.tolist()
    assert catalog.ids.tolist() == ids
    assert [catalog.index_of(i) for i in ids] == list(range(len(ids)))
    np.testing.assert_array_equal(catalog.available_mask, reference.available_mask)
    np.testing.assert_array_equal(catalog.release_times, reference.release_times)
    np.testing.assert_array_equal(catalog.embeddings, reference.embeddings)
    np.testing.assert_array_equal(catalog.has_embedding, reference.has_embedding)
    assert catalog.get_many(ids) == reference.get_many(ids)
    for n in range(4):
        assert catalog.items_by_genre(f"genre-{n}") == reference.items_by_genre(f"genre-{n}")
        assert catalog.items_by_artist(f"artist-{n}") == reference.items_by_artist(f"artist-{n}")


def stored_indexes(url: str) -> list[int]:
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(sa.text(f"select idx from {TABLE_NAME} order by idx")).scalars()
            )
    finally:
        engine.dispose()


def test_items_added_elsewhere_appear_after_sync(make: Callable[[], Catalog]):
    a, b = make(), make()
    written = items("t", 30)
    assert a.upsert(written) == 30
    assert len(b) == 0 and b.get("t1") is None
    version = b.version

    assert b.sync() == 30
    assert b.version > version
    assert_same(b, a)
    assert [b.get(it.item_id) for it in written] == written  # every field, as written

    version = b.version
    assert b.sync() == 0  # the same rows read again are no change
    assert b.version == version

    # a change and a new item: just those two
    renamed = item("t4", 4, title="renamed", genres=("genre-3",), embedding=(9.0, 9.0, 9.0))
    assert a.upsert([renamed, item("late", 31)]) == 2
    assert b.sync() == 2
    assert b.get("t4") == renamed
    assert b.items_by_genre("genre-0") == a.items_by_genre("genre-0")
    assert_same(b, a)
    assert b.sync() == 0


def test_an_item_withdrawn_elsewhere_is_unavailable_after_sync(make: Callable[[], Catalog]):
    a = make()
    a.upsert(items("t", 10))
    b = make()
    shown = b.get("t2")  # cached by b
    assert shown is not None and shown.available
    assert b.available_mask[b.index_of("t2")]

    assert a.remove("t2") is True
    assert b.sync() == 1
    assert not b.available_mask[b.index_of("t2")]
    assert b.get("t2") == item("t2", 2, available=False)
    assert b.available_mask.tolist() == a.available_mask.tolist()


def test_writers_that_did_not_sync_never_collide(make: Callable[[], Catalog], url: str):
    a = make()
    a.upsert(items("t", 10))
    b = make()  # loaded: the ten items

    assert a.upsert(items("a", 5)) == 5
    a.upsert([item("t3", 3, title="changed by a")])
    # b has not synced: its new items still go after a's, none is refused
    assert b.upsert(items("b", 7)) == 7
    assert [b.index_of(f"b{n}") for n in range(7)] == list(range(15, 22))
    # "changed" is judged against the table: b puts t3 back as b knows it, a real change
    assert b.upsert([item("t3", 3)]) == 1
    # an item b has not seen yet can still be withdrawn through b; an unknown id cannot
    assert b.remove("a1") is True
    with pytest.raises(UnknownItemError):
        b.remove("nowhere")
    assert a.upsert(items("c", 3)) == 3

    assert stored_indexes(url) == list(range(25))
    a.sync()
    b.sync()
    fresh = make()
    assert len(fresh) == 25
    assert fresh.get("t3") == item("t3", 3)
    assert fresh.get("a1") == item("a1", 1, available=False)
    assert_same(a, fresh)
    assert_same(b, fresh)


def test_concurrent_writers_keep_indexes_dense(make: Callable[[], Catalog], url: str):
    writers = [make(), make()]
    start = threading.Barrier(len(writers))
    errors: list[BaseException] = []

    def write(catalog: Catalog, prefix: str) -> None:
        try:
            start.wait()
            for batch in range(12):
                catalog.upsert(items(f"{prefix}{batch}-", 25, start=batch))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(catalog, f"w{k}-"))
        for k, catalog in enumerate(writers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert stored_indexes(url) == list(range(2 * 12 * 25))
    fresh = make()
    assert len(fresh) == 600
    for catalog in writers:
        catalog.sync()
        assert_same(catalog, fresh)


def test_a_published_view_never_changes(make: Callable[[], Catalog]):
    a = make()
    a.upsert(items("t", 20))
    b = make()
    before = b.view()
    kept = {
        name: np.array(getattr(before, name), copy=True)
        for name in ("ids", "available_mask", "release_times", "embeddings", "has_embedding")
    }

    a.remove("t0")
    a.upsert([item("t1", 1, release_time=5.0, embedding=(7.0, 7.0, 7.0)), item("t3", 3)])
    a.upsert([item("t2", 2, embedding=None), *items("n", 5)])
    assert b.sync() == 8

    after = b.view()
    assert after.version > before.version and len(after.ids) == 25
    for name, values in kept.items():
        np.testing.assert_array_equal(getattr(before, name), values, err_msg=name)
    assert before.available_mask[0] and not after.available_mask[0]
    assert after.embeddings is not None and after.embeddings[1].tolist() == [7.0, 7.0, 7.0]


def test_a_row_stamped_before_the_watermark_is_still_read(make: Callable[[], Catalog], url: str):
    a = make()
    a.upsert(items("t", 10))
    b = make()
    engine = create_db_engine(url)
    try:
        with engine.begin() as conn:
            newest = conn.execute(sa.text(f"select max(updated_at) from {TABLE_NAME}")).scalar()
            # written by other means, its stamp a second older than any b has seen
            conn.execute(
                sa.text(
                    f"update {TABLE_NAME} set title = 'by hand', available = :no, "
                    "updated_at = :at where item_id = 't4'"
                ),
                {"no": False, "at": newest - 1.0},
            )
    finally:
        engine.dispose()
    assert catalog_module.SYNC_MARGIN_S > 1.0
    assert b.sync() == 1
    assert b.get("t4") == item("t4", 4, title="by hand", available=False)
    assert not b.available_mask[b.index_of("t4")]


def test_a_sync_with_nothing_new_is_one_statement(
    make: Callable[[], Catalog], url: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(catalog_module, "SYNC_MARGIN_S", 0.05)
    engine = create_db_engine(url)
    statements: list[str] = []
    checkouts: list[object] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    sa.event.listen(engine, "checkout", lambda *args: checkouts.append(args[0]))
    try:
        a, b = make(), Catalog(engine, embedding_dim=DIM)
        a.upsert(items("t", 10))
        assert b.sync() == 10
        time.sleep(0.1)
        assert b.sync() == 0  # the margin's rows, read once more
        statements.clear()
        checkouts.clear()
        version = b.version
        assert b.sync() == 0  # nothing new, the margin passed: one query
        assert len(statements) == 1 and len(checkouts) == 1, statements
        assert b.version == version
    finally:
        engine.dispose()


def test_an_older_table_gets_the_updated_at_index(url: str):
    engine = create_db_engine(url)
    index = f"ix_{TABLE_NAME}_updated_at"
    try:
        before = sa.Table(  # the table as catalogs made it before the index
            TABLE_NAME,
            sa.MetaData(),
            sa.Column("item_id", sa.String(512), primary_key=True),
            sa.Column("idx", sa.Integer, nullable=False, unique=True),
            sa.Column("title", sa.Text, nullable=False),
            sa.Column("artist", sa.Text, nullable=False),
            sa.Column("genres", sa.Text, nullable=False),
            sa.Column("release_time", sa.Double, nullable=True),
            sa.Column("duration_ms", sa.BigInteger, nullable=True),
            sa.Column("available", sa.Boolean, nullable=False),
            sa.Column("embedding", sa.LargeBinary, nullable=True),
            sa.Column("attributes", sa.Text, nullable=True),
            sa.Column("updated_at", sa.Double, nullable=False),
        )
        before.create(engine)
        assert index not in {i["name"] for i in sa.inspect(engine).get_indexes(TABLE_NAME)}
        with Catalog(engine, embedding_dim=DIM) as catalog:
            catalog.upsert(items("t", 3))
        assert index in {i["name"] for i in sa.inspect(engine).get_indexes(TABLE_NAME)}
    finally:
        engine.dispose()
