"""Catalog: memory and database agree, imports reject bad rows with their reason."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from online.catalog import Catalog, ImportReport, Rejection, UnknownItemError, import_file
from online.demo import generate_demo_catalog
from online.items import Item


@pytest.fixture
def catalog(tmp_path) -> Iterator[Catalog]:
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}", embedding_dim=3) as catalog:
        yield catalog


def test_upsert_get_indexes_and_version(catalog):
    a = Item(
        "a",
        title="A",
        artist="x",
        genres=("rock", "pop"),
        release_time=10.0,
        duration_ms=1000,
        embedding=(1.0, 0.0, 0.0),
        attributes={"label": "L"},
    )
    b = Item("b", artist="y", genres=("rock",))
    v0 = catalog.version
    assert catalog.upsert([a, b]) == 2
    assert catalog.version == v0 + 1
    assert catalog.get("a") == a and catalog.get("b") == b
    assert catalog.get("zzz") is None
    assert [catalog.index_of("a"), catalog.index_of("b")] == [0, 1]
    assert "a" in catalog and "zzz" not in catalog and len(catalog) == 2
    assert catalog.ids.tolist() == ["a", "b"]
    assert catalog.items_by_genre("rock") == ["a", "b"]
    assert catalog.items_by_artist("y") == ["b"]
    assert np.isnan(catalog.release_times[1]) and catalog.release_times[0] == 10.0
    assert catalog.embeddings.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert catalog.has_embedding.tolist() == [True, False]
    # the same items again change nothing
    assert catalog.upsert([a, b]) == 0
    assert catalog.version == v0 + 1
    with pytest.raises(UnknownItemError, match="zzz"):
        catalog.index_of("zzz")


def test_items_without_content_for_ranking_leave_the_cache_whole(catalog):
    a = Item("a", title="A", artist="x", genres=("rock",), release_time=10.0,
             duration_ms=1000, embedding=(1.0, 0.0, 0.0), attributes={"label": "L"})  # fmt: skip
    catalog.upsert([a, Item("b", artist="y")])
    lite, missing = catalog.get_many(["a", "zzz"], content=False)
    assert missing is None
    assert lite == Item("a", title="A", artist="x", genres=("rock",), release_time=10.0,
                        duration_ms=1000)  # fmt: skip
    assert catalog.get_many(["a"], content=False)[0] is lite  # cached for the next list
    # cached apart: a full read still has the embedding and the attributes
    assert catalog.get("a") == a
    # a cached full item is what a ranking read gets too
    assert catalog.get_many(["a"], content=False) == [a]
    # a change drops both
    catalog.upsert([Item("a", title="A2", artist="x")])
    assert catalog.get_many(["a"], content=False)[0].title == "A2"  # type: ignore[union-attr]
    assert catalog.get("a").title == "A2"  # type: ignore[union-attr]


def test_update_moves_artist_and_keeps_index(catalog):
    catalog.upsert([Item("a", artist="x", genres=("g1",)), Item("b", artist="x")])
    assert catalog.upsert([Item("a", artist="z", genres=("g2",))]) == 1
    assert catalog.index_of("a") == 0
    assert catalog.items_by_artist("x") == ["b"]
    assert catalog.items_by_artist("z") == ["a"]
    assert catalog.items_by_genre("g1") == [] and catalog.items_by_genre("g2") == ["a"]


def test_a_row_revision_changes_with_its_metadata_and_never_repeats(catalog, tmp_path):
    catalog.upsert([Item("a", artist="x"), Item("b", artist="y"), Item("c", artist="y")])
    rows = np.arange(3)
    first = catalog.revisions_at(rows)
    assert catalog.artists_at([2, 0]) == ["y", "x"]
    catalog.upsert([Item("b", artist="z")])
    second = catalog.revisions_at(rows)
    assert second[1] != first[1] and second[0] == first[0] and second[2] == first[2]
    assert catalog.artists_at([1]) == ["z"]
    catalog.upsert([Item("b", artist="z")])  # the same again: no change, same revision
    np.testing.assert_array_equal(catalog.revisions_at(rows), second)
    # another catalog (or this one loaded again) puts other items at the same rows: no
    # revision it gives equals one given before
    with Catalog(f"sqlite:///{tmp_path / 'other.db'}", embedding_dim=3) as other:
        other.upsert([Item("q"), Item("r"), Item("s")])
        assert not set(other.revisions_at(rows).tolist()) & set(first.tolist() + second.tolist())
    catalog.load()
    assert not set(catalog.revisions_at(rows).tolist()) & set(first.tolist() + second.tolist())


def test_remove_keeps_the_id_and_published_arrays_never_change(catalog):
    catalog.upsert([Item("a"), Item("b")])
    before = catalog.view()
    assert catalog.remove("a") is True
    assert catalog.remove("a") is False  # already unavailable: no change, no version bump
    after = catalog.view()
    assert before.available_mask.tolist() == [True, True]  # a reader's snapshot is stable
    assert after.available_mask.tolist() == [False, True]
    assert after.version == before.version + 1
    assert catalog.get("a").available is False and catalog.index_of("a") == 0
    assert not after.available_mask.flags.writeable
    catalog.upsert([Item("c")])
    assert before.ids.tolist() == ["a", "b"] and catalog.ids.tolist() == ["a", "b", "c"]
    assert catalog.set_available("a", True) is True
    with pytest.raises(UnknownItemError):
        catalog.set_available("nope", False)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (Item(""), "missing id"),
        (Item("a", embedding=(1.0, 2.0)), "embedding has 2 values, expected 3"),
        (Item("a", embedding=(1.0, math.nan, 0.0)), "embedding has non-finite values"),
        (Item("a", release_time=math.inf), "release_time must be finite"),
        (Item("a", duration_ms=-1), "duration_ms must be >= 0, got -1"),
    ],
)
def test_invalid_items_are_refused_whole(catalog, item, message):
    with pytest.raises(ValueError, match=f"item '{item.item_id}': {message}"):
        catalog.upsert([Item("ok"), item])
    assert len(catalog) == 0


def test_no_embedding_dimension(tmp_path):
    catalog = Catalog(f"sqlite:///{tmp_path / 'c.db'}", embedding_dim=None)
    catalog.upsert([Item("a")])
    assert catalog.embeddings is None
    with pytest.raises(ValueError, match="the catalog has no embedding dimension"):
        catalog.upsert([Item("b", embedding=(1.0,))])


def _round_trip(url: str) -> None:
    items = generate_demo_catalog(500, dim=3, seed=4)
    catalog = Catalog(url, embedding_dim=3)
    try:
        _check_round_trip(url, items, catalog)
    finally:
        catalog.close()


def _check_round_trip(url: str, items: list[Item], catalog: Catalog) -> None:
    catalog.upsert(items[:300])
    catalog.upsert(items[300:])
    catalog.remove(items[7].item_id)
    catalog.upsert([Item(items[9].item_id, title="renamed")])
    with Catalog(url, embedding_dim=3) as reloaded:
        _compare(items, catalog, reloaded)


def _compare(items: list[Item], catalog: Catalog, reloaded: Catalog) -> None:
    assert len(reloaded) == 500
    assert reloaded.ids.tolist() == catalog.ids.tolist()
    for item in items[:50]:
        assert reloaded.get(item.item_id) == catalog.get(item.item_id)
    assert reloaded.get(items[7].item_id).available is False
    assert reloaded.get(items[9].item_id) == Item(items[9].item_id, title="renamed")
    assert np.array_equal(reloaded.available_mask, catalog.available_mask)
    assert np.array_equal(reloaded.release_times, catalog.release_times, equal_nan=True)
    assert np.array_equal(reloaded.embeddings, catalog.embeddings)
    assert reloaded.items_by_artist("artist-3") == catalog.items_by_artist("artist-3")


def test_sqlite_round_trip(tmp_path):
    _round_trip(f"sqlite:///{tmp_path / 'catalog.db'}")


@pytest.mark.postgres
def test_postgres_round_trip(postgres_url):
    _round_trip(postgres_url)


# -- import --------------------------------------------------------------------------------

GOOD = [
    {
        "id": "t1",
        "title": "One",
        "artist": "A",
        "genres": ["rock", "pop"],
        "release_time": "2024-01-02T03:04:05Z",
        "duration_ms": 1000,
        "available": True,
        "embedding": [1.0, 0.0, 0.0],
        "label": "Sub Pop",
    },
    {
        "id": "t2",
        "title": "Two",
        "artist": "B",
        "genres": [],
        "release_time": 1700000000,
        "available": False,
        "mood": "calm",
    },
]
EXPECTED = {
    "t1": Item(
        "t1",
        "One",
        "A",
        ("rock", "pop"),
        1704164645.0,
        1000,
        True,
        (1.0, 0.0, 0.0),
        {"label": "Sub Pop"},
    ),
    "t2": Item("t2", "Two", "B", (), 1700000000.0, None, False, None, {"mood": "calm"}),
}


def _timestamp(value):
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _write(tmp_path, fmt: str, rows: list[dict]):
    path = tmp_path / f"items.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "parquet":  # release times as a timestamp column, as Parquet writers do
        columns = list(dict.fromkeys(k for r in rows for k in r))
        rows = [{c: r.get(c) for c in columns} for r in rows]
        rows = [{**r, "release_time": _timestamp(r["release_time"])} for r in rows]
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        columns = list(dict.fromkeys(k for r in rows for k in r))
        lines = [",".join(columns)]
        for r in rows:
            cells = []
            for c in columns:
                v = r.get(c, "")
                if c == "genres" and isinstance(v, list):
                    v = "|".join(v)
                elif c == "embedding" and isinstance(v, list):
                    v = " ".join(str(x) for x in v)
                elif isinstance(v, bool):
                    v = str(v).lower()
                cells.append(f'"{v}"' if "," in str(v) else str(v))
            lines.append(",".join(cells))
        path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_import_each_format_keeps_unknown_fields(catalog, tmp_path, fmt):
    report = import_file(_write(tmp_path, fmt, GOOD), catalog, progress=False)
    assert report.ok and (report.rows, report.accepted, report.changed) == (2, 2, 2)
    assert catalog.get("t1") == EXPECTED["t1"]
    assert catalog.get("t2") == EXPECTED["t2"]


BAD = [
    ({"id": ""}, None, "missing id"),
    ({"id": "b", "embedding": [1.0, 2.0]}, "b", "embedding has 2 values, expected 3"),
    ({"id": "b", "embedding": [1.0, "x", 2.0]}, "b", "embedding must be a list of numbers"),
    (
        {"id": "b", "embedding": "1 2 x"},
        "b",
        "embedding is neither a JSON array nor space-separated numbers",
    ),
    ({"id": "b", "embedding": "[1e999, 0, 0]"}, "b", "embedding has non-finite values"),
    (
        {"id": "b", "release_time": "yesterday"},
        "b",
        "release_time 'yesterday' is neither RFC 3339 nor epoch seconds",
    ),
    (
        {"id": "b", "release_time": "2024-01-02T03:04:05"},
        "b",
        "release_time '2024-01-02T03:04:05' has no UTC offset",
    ),
    ({"id": "b", "release_time": "nan"}, "b", "release_time must be finite, got 'nan'"),
    ({"id": "b", "duration_ms": -5}, "b", "duration_ms must be >= 0, got -5"),
    ({"id": "b", "duration_ms": 12.5}, "b", "duration_ms must be an integer, got 12.5"),
    ({"id": "b", "available": "maybe"}, "b", "available must be true or false, got 'maybe'"),
    ({"id": "b", "genres": "rock"}, "b", "genres must be a list of strings"),
    ({"id": "b", "title": 5}, "b", "title must be a string, got int"),
    ({"id": 1.5}, "1.5", "id must be a string or an integer, got float"),
]


@pytest.mark.parametrize(("row", "item_id", "reason"), BAD, ids=[b[2][:40] for b in BAD])
def test_jsonl_bad_rows_rejected_with_reason_good_rows_kept(
    catalog, tmp_path, row, item_id, reason
):
    path = _write(tmp_path, "jsonl", [GOOD[0], row, GOOD[1]])
    report = import_file(path, catalog, progress=False)
    assert report.rejected == [Rejection(2, item_id, reason)]
    assert (report.rows, report.accepted) == (3, 2)
    assert set(catalog.ids.tolist()) == {"t1", "t2"}


def test_csv_specific_rejections(catalog, tmp_path):
    path = tmp_path / "items.csv"
    path.write_text(
        "id,title,duration_ms,embedding\n"
        "a,A,10,[1 0 0]\n"  # JSON array with spaces only: not JSON
        "b,B,-3,\n"
        "c,C\n"
        "a,again,1,\n"
        "d,D,7,0.5 0.5 0\n"
    )
    report = import_file(path, catalog, progress=False)
    assert report.rejected == [
        Rejection(1, "a", "embedding is neither a JSON array nor space-separated numbers"),
        Rejection(2, "b", "duration_ms must be >= 0, got '-3'"),
        Rejection(3, None, "row has 2 fields, the header has 4"),
    ]
    assert catalog.ids.tolist() == ["a", "d"]  # the later duplicate row "a" was the good one
    assert catalog.get("d").embedding == (0.5, 0.5, 0.0)


def test_duplicates_across_chunks_and_invalid_json(catalog, tmp_path):
    path = tmp_path / "items.ndjson"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{oops\n[1]\n\n{"id": "a", "title": "again"}\n')
    report = import_file(path, catalog, progress=False, chunk_size=1)
    assert [(r.row, r.item_id) for r in report.rejected] == [(3, None), (4, None), (6, "a")]
    assert report.rejected[0].reason.startswith("invalid JSON: ")
    assert report.rejected[1].reason == "row is not a JSON object"
    assert report.rejected[2].reason == "duplicate id (first seen at row 1)"
    assert catalog.get("a").title == ""
    assert "5 rows, 2 accepted" in report.summary()


def test_import_updates_existing_and_shows_progress(catalog, tmp_path, capsys):
    catalog.upsert([Item("t1", title="old")])
    report = import_file(_write(tmp_path, "parquet", GOOD), catalog, progress=True)
    assert isinstance(report, ImportReport) and report.changed == 2
    assert catalog.get("t1").title == "One" and catalog.index_of("t1") == 0
    assert "import items.parquet" in capsys.readouterr().err


def test_unknown_format_is_refused(catalog, tmp_path):
    with pytest.raises(ValueError, match=r"cannot tell the format of 'items\.txt'"):
        import_file(tmp_path / "items.txt", catalog)


# -- demo catalog --------------------------------------------------------------------------


def test_demo_catalog_is_seeded_and_structured():
    items = generate_demo_catalog(3_000, dim=16, seed=5, now=1_000_000_000.0)
    assert items == generate_demo_catalog(3_000, dim=16, seed=5, now=1_000_000_000.0)
    assert items != generate_demo_catalog(3_000, dim=16, seed=6, now=1_000_000_000.0)
    vectors = np.array([it.embedding for it in items])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    artists = np.array([it.artist for it in items])
    same = artists[:, None] == artists[None, :]
    sims = vectors @ vectors.T
    off_diagonal = ~np.eye(len(items), dtype=bool)
    assert sims[same & off_diagonal].mean() > sims[~same].mean() + 0.5  # artist clusters
    ages = 1_000_000_000.0 - np.array([it.release_time for it in items])
    assert (ages < 7 * 86_400).sum() >= 20  # a fresh pool
    assert ages.max() > 10 * 365 * 86_400
    assert all(it.genres for it in items)
    assert 0 < sum(not it.available for it in items) < 100
