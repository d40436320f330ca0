"""Fast paths of the catalog and the HNSW index behave exactly like the plain ones."""

from __future__ import annotations

import numpy as np
import pytest

from online.catalog import Catalog
from online.demo import demo_vectors, generate_demo_catalog
from online.items import Item
from online.retrieval import BruteForceRetriever, HNSWRetriever
from tests.online.conftest import World, make_engine, run_world


def test_get_many_equals_get_and_follows_changes():
    catalog = Catalog("sqlite://", embedding_dim=8, item_cache_size=5)
    items = generate_demo_catalog(20, dim=8, seed=1)
    catalog.upsert(items)
    ids = [it.item_id for it in items] + ["nope", items[3].item_id]
    for _ in range(3):  # cold, cached, and past the cache's size
        got = catalog.get_many(ids)
        assert got == [catalog.get(i) for i in ids]
        assert got[:20] == items and got[20] is None and got[21] == items[3]
    catalog.set_available(items[3].item_id, False)
    assert catalog.get_many([items[3].item_id])[0].available is False  # type: ignore[union-attr]
    changed = Item(items[4].item_id, artist="someone else", embedding=(1.0,) * 8)
    catalog.upsert([changed])
    assert catalog.get(items[4].item_id) == changed
    assert catalog.indexes_of(["nope", items[2].item_id]).tolist() == [-1, 2]
    assert catalog.artist_of(items[4].item_id) == "someone else"
    by_artist = catalog.indexes_by_artist(items[0].artist)
    assert [str(catalog.ids[i]) for i in by_artist] == catalog.items_by_artist(items[0].artist)


@pytest.mark.parametrize("space", ["ip", "l2"])
def test_refresh_keeps_scores_exact_and_relinks_only_far_moves(space: str):
    vectors = demo_vectors(3_000, 16, seed=0, norm_spread=0.3)
    hnsw, exact = HNSWRetriever(16, ef=100, seed=0, space=space), BruteForceRetriever(16)
    ids = np.arange(3_000)
    for r in (hnsw, exact):
        r.upsert(ids, vectors)
    rng = np.random.default_rng(0)
    moved = vectors * (1 + 0.01 * rng.standard_normal(vectors.shape)).astype(np.float32)
    moved[:10] = -moved[:10]  # ten items moved far
    assert hnsw.refresh(ids, moved, tolerance=0.05) == 10
    exact.upsert(ids, moved)
    stored, live = hnsw.stored(ids)
    np.testing.assert_array_equal(stored, moved)
    assert live.all()
    hits = 0
    for q in moved[100:130]:
        got, scores = hnsw.query(q, 20)
        want, want_scores = exact.query(q, 20)
        np.testing.assert_allclose(scores[np.isin(got, want)], want_scores[np.isin(want, got)])
        hits += len(set(got.tolist()) & set(want.tolist()))
    assert hits / (30 * 20) > 0.95


def test_index_refresh_writes_only_vectors_that_moved(small_catalog: Catalog, world: World):
    engine = make_engine(small_catalog)
    list(run_world(engine, world, steps=30))
    while engine.index_lag()["dirty_items"]:
        engine.refresh_index()
    for _ in range(len(small_catalog) // max(1, engine.settings.index_sweep_batch) + 1):
        engine.refresh_index()  # a full sweep: every learned vector is in the index
    assert engine.refresh_index() == 0  # nothing learned since: nothing to write
    stored, live = engine._cf_index.stored(np.arange(len(small_catalog)))
    items = small_catalog.get_many(small_catalog.ids.tolist())
    want = engine.relevance.item_vectors(items)  # type: ignore[arg-type]
    learned = np.abs(want[:, :-1]).sum(axis=1) > 0
    np.testing.assert_array_equal(stored[live], want[live])  # exact vectors are current
    assert not live[~learned].any()
    # every learned vector is in the index, with at most `cap` items per identical vector
    cap = engine.settings.cf_max_identical
    groups: dict[bytes, list[bool]] = {}
    for row in np.flatnonzero(learned).tolist():
        groups.setdefault(want[row].tobytes(), []).append(bool(live[row]))
    assert max(len(g) for g in groups.values()) > cap  # the catalog has such groups
    assert all(sum(g) == min(len(g), cap) for g in groups.values())


def test_an_index_holding_more_identical_vectors_than_the_cap_is_trimmed(small_catalog: Catalog):
    """A CF index saved before the cap (or with a larger one) keeps the lowest rows of each
    group of identical vectors at the first refresh after it is loaded."""
    engine = make_engine(small_catalog, cf_max_identical=2)
    rows = np.arange(10, 16)
    engine._cf_index.upsert(rows, np.ones((len(rows), engine.relevance.dim), dtype=np.float32))
    engine.refresh_index()
    _, live = engine._cf_index.stored(rows)
    assert live.tolist() == [True, True, False, False, False, False]
