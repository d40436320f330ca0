"""The content index saved to disk: a restart reads it and applies what changed since."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from online.catalog import Catalog
from online.demo import generate_demo_catalog
from online.engine import ContentIndex
from online.retrieval import BruteForceRetriever, HNSWRetriever

from .conftest import T0

DIM = 16


def make_catalog(n: int = 1500, seed: int = 7, url: str = "sqlite://") -> Catalog:
    catalog = Catalog(url, embedding_dim=DIM)
    catalog.upsert(generate_demo_catalog(n, n_artists=60, dim=DIM, seed=seed, now=T0))
    return catalog


def open_index(catalog: Catalog, cache: Path | None, **kw: object) -> ContentIndex:
    return ContentIndex.open(catalog, DIM, cache, threads=1, **kw)  # type: ignore[arg-type]


def count_upserts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows each ``HNSWRetriever.upsert`` call writes, from now on."""
    calls: list[int] = []
    original = HNSWRetriever.upsert

    def counting(self: HNSWRetriever, ids: np.ndarray, vectors: np.ndarray) -> None:
        calls.append(len(ids))
        original(self, ids, vectors)

    monkeypatch.setattr(HNSWRetriever, "upsert", counting)
    return calls


def assert_mirrors(index: ContentIndex, catalog: Catalog) -> None:
    """The exact oracle: the index holds the catalog's live items with their vectors, and
    its answers agree with brute force over them."""
    view = catalog.view()
    assert view.embeddings is not None
    live = np.flatnonzero(view.has_embedding & view.available_mask)
    vectors, searchable = index.index.stored(np.arange(len(view.ids) + 50))
    assert np.array_equal(np.flatnonzero(searchable), live)
    assert np.array_equal(vectors[live], view.embeddings[live])
    exact = BruteForceRetriever(DIM)
    exact.upsert(live, view.embeddings[live])
    rng = np.random.default_rng(0)
    hits = total = 0
    for q in rng.normal(size=(30, DIM)).astype(np.float32):
        got = set(index.index.query(q, 20)[0].tolist())
        assert got <= set(live.tolist())  # never a withdrawn item
        hits += len(got & set(exact.query(q, 20)[0].tolist()))
        total += 20
    assert hits / total >= 0.95


def test_a_restart_reads_the_saved_index_and_applies_only_what_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    catalog = make_catalog(url=f"sqlite:///{tmp_path / 'c.db'}")
    cache = tmp_path / "content-index"
    first = open_index(catalog, cache)
    assert not first.restored and (cache / "meta.json").exists()
    assert_mirrors(first, catalog)

    # while the service is down: one item withdrawn, one moved, one returned, two added
    ids = catalog.ids.tolist()
    catalog.remove(ids[10])
    moved = dataclasses.replace(catalog.get(ids[20]), embedding=tuple([0.5] * DIM))  # type: ignore[arg-type]
    back = next(i for i in ids if not catalog.get(i).available)  # type: ignore[union-attr]
    added = generate_demo_catalog(2, dim=DIM, seed=99, now=T0)
    added = [
        dataclasses.replace(x, item_id=f"new-{n}", available=True) for n, x in enumerate(added)
    ]
    catalog.upsert([moved, dataclasses.replace(catalog.get(back), available=True), *added])  # type: ignore[arg-type]
    restarted = Catalog(f"sqlite:///{tmp_path / 'c.db'}", embedding_dim=DIM)

    upserts = count_upserts(monkeypatch)
    second = open_index(restarted, cache)
    assert second.restored
    assert sum(upserts) == 4  # moved, returned, two new: nothing else is re-indexed
    assert_mirrors(second, restarted)
    top = second.index.query(np.full(DIM, 0.5, dtype=np.float32), 1)[0]
    assert restarted.ids[top[0]] == ids[20]


def test_a_torn_copy_is_ignored_rebuilt_and_replaced(tmp_path: Path):
    catalog = make_catalog()
    cache = tmp_path / "content-index"
    open_index(catalog, cache)
    (cache / "vectors.npy").write_bytes(b"not an array")
    again = open_index(catalog, cache)
    assert not again.restored
    assert_mirrors(again, catalog)
    assert open_index(catalog, cache).restored  # the rebuilt copy was written back


def test_a_copy_built_with_another_graph_degree_is_not_used(tmp_path: Path):
    catalog = make_catalog()
    cache = tmp_path / "content-index"
    open_index(catalog, cache, m=8)
    again = open_index(catalog, cache, m=12)
    assert not again.restored and again.index.M == 12
    assert HNSWRetriever.load(cache).M == 12


def test_a_copy_of_a_larger_catalog_loses_the_rows_past_the_end(tmp_path: Path):
    cache = tmp_path / "content-index"
    open_index(make_catalog(1500), cache)
    smaller = make_catalog(600)  # another database: the same first 600 items
    index = open_index(smaller, cache)
    assert index.restored
    assert_mirrors(index, smaller)


def test_without_a_cache_nothing_is_written(tmp_path: Path):
    index = open_index(make_catalog(300), None)
    assert not index.restored and len(index.index) > 0
    assert list(tmp_path.iterdir()) == []


def test_a_second_process_saving_at_the_same_time_skips(tmp_path: Path):
    from snapshots._fs import try_lock

    catalog = make_catalog(300)
    cache = tmp_path / "content-index"
    fd = try_lock(tmp_path / ".content-index.lock")  # another worker is writing its copy
    assert fd is not None
    try:
        index = open_index(catalog, cache)
        assert not cache.exists()
    finally:
        import os

        os.close(fd)
    assert index.save(cache) and open_index(catalog, cache).restored
