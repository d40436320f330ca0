"""The engine as listeners and operators notice it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from feedback.events import Event
from online.catalog import Catalog
from online.engine import Engine, _merge_offers
from online.items import Item
from online.retrieval import BruteForceRetriever, HNSWRetriever
from tests.online.conftest import T0, World, make_engine, run_world


def test_a_listener_never_seen_gets_a_full_list_of_available_items(small_catalog: Catalog):
    engine = make_engine(small_catalog)
    rec = engine.recommend("stranger", 10, {"device": "web"}, now=T0)
    assert len(rec.items) == 10
    assert len(set(rec.item_ids)) == 10
    assert all(small_catalog.get(i).available for i in rec.item_ids)  # type: ignore[union-attr]


def test_the_engine_learns_each_groups_taste(small_catalog: Catalog, world: World):
    engine = make_engine(small_catalog)
    shares = list(run_world(engine, world, steps=400))
    first, after = np.mean(shares[:8]), np.mean(shares[-80:])
    # each favourite genre holds about 1/6 of the catalog: what the first, untrained lists hit
    assert first < 0.45
    assert after > 0.6, f"liked share only went from {first:.2f} to {after:.2f}"
    assert after > first + 0.25
    assert engine.join_stats["joined"] > 0
    assert engine.quality()["relevance_auc"] > 0.7


def test_hard_rules_hold_on_every_list(small_catalog: Catalog, world: World):
    engine = make_engine(small_catalog, max_per_artist=1)
    list(run_world(engine, world, steps=60))
    banned = small_catalog.ids[:50].tolist()
    small_catalog.set_available(small_catalog.ids[60], False)
    for user in ("u0", "u1", "new"):
        rec = engine.recommend(user, 20, {}, exclude=banned, now=world.t)
        artists = [small_catalog.get(i).artist for i in rec.item_ids]  # type: ignore[union-attr]
        assert len(artists) == len(set(artists))
        assert not set(rec.item_ids) & set(banned)
        assert small_catalog.ids[60] not in rec.item_ids


def test_a_pool_led_by_few_artists_still_fills_the_list(small_catalog: Catalog, world: World):
    # the rerank pool is as small as the list and one item per artist may be placed: when
    # the best candidates share artists, the pool is widened until the list can be filled
    engine = make_engine(small_catalog, max_per_artist=1, rerank_pool=10)
    list(run_world(engine, world, steps=100))
    for user in ("u0", "u1", "u2", "new"):
        rec = engine.recommend(user, 10, {"device": "ios"}, now=world.t)
        artists = [small_catalog.get(i).artist for i in rec.item_ids]  # type: ignore[union-attr]
        assert len(artists) == 10 and len(set(artists)) == 10


def test_scores_are_the_relevance_models_and_follow_a_catalog_change(
    small_catalog: Catalog, world: World
):
    engine = make_engine(small_catalog)
    list(run_world(engine, world, steps=80))
    ctx = {"device": "ios"}
    pool = engine.candidates("u1", ctx, now=world.t)
    assert [i.item_id for i in pool.items] == pool.ids

    def oracle() -> tuple[list[str], np.ndarray]:
        """The relevance model scoring the candidates as the catalog has them now."""
        items = [i for i in small_catalog.get_many(pool.ids) if i is not None]
        want = engine.relevance.predict_many("u1", items, ctx)
        order = np.argsort(-want, kind="stable")[: engine.settings.rerank_pool]
        return [pool.ids[i] for i in order], want[order]

    scored = engine.score(pool)
    ids, relevance = oracle()
    assert scored.ids == ids
    np.testing.assert_array_equal(scored.relevance, relevance)
    # the best candidate moves to another artist: scoring the same pool again gives the
    # model's score of the item as it is now, not as its features were first cached
    best = small_catalog.get(scored.ids[0])
    assert best is not None
    artist = next(i.artist for i in pool.items if i.artist != best.artist)
    small_catalog.upsert([Item(best.item_id, artist=artist, genres=best.genres)])
    again = engine.score(pool)
    ids, relevance = oracle()
    assert again.ids == ids
    np.testing.assert_array_equal(again.relevance, relevance)
    assert not np.array_equal(again.relevance, scored.relevance)
    # the artists the rerank caps by are the catalog's, as read when scoring (with k the
    # score stage reads them to widen the pool; without, on first use)
    assert again.artists[again.ids.index(best.item_id)] == artist
    for k in (None, 30):
        s = engine.score(pool, k)
        assert s.artists == [small_catalog.artist_of(i) for i in s.ids]


def test_an_item_made_unavailable_stops_appearing_at_once(small_catalog: Catalog, world: World):
    engine = make_engine(small_catalog)
    list(run_world(engine, world, steps=40))
    rec = engine.recommend("u1", 10, {}, explore=False, now=world.t)
    gone = rec.item_ids[0]
    small_catalog.set_available(gone, False)
    for _ in range(5):
        assert gone not in engine.recommend("u1", 10, {}, now=world.t).item_ids
    assert gone not in engine.popular_now(50, now=world.t)


def test_explore_false_is_the_greedy_list_with_propensity_one(small_catalog: Catalog, world: World):
    engine = make_engine(small_catalog)
    list(run_world(engine, world, steps=50))
    a = engine.recommend("u2", 10, {"device": "ios"}, explore=False, now=world.t)
    b = engine.recommend("u2", 10, {"device": "ios"}, explore=False, now=world.t)
    assert a.item_ids == b.item_ids
    assert all(i.propensity == 1.0 and not i.explored for i in a.items)
    explored = engine.recommend("u2", 10, {"device": "ios"}, now=world.t)
    assert all(0.0 < i.propensity <= 1.0 for i in explored.items)


def test_plays_just_posted_shape_the_next_list_before_any_model_update(small_catalog: Catalog):
    engine = make_engine(small_catalog, trending_candidates=0, fresh_candidates=0)
    played = small_catalog.get(str(small_catalog.ids[123]))
    assert played is not None
    assert engine.recommend("fresh-face", 10, {}, now=T0).items == ()  # nothing known yet
    engine.observe_sessions(
        [Event("p1", "play", "fresh-face", played.item_id, T0, played_ms=60_000)]
    )
    pool = engine.candidates("fresh-face", {}, now=T0 + 1)
    same_artist = set(small_catalog.items_by_artist(played.artist)) - {played.item_id}
    assert same_artist & {i.item_id for i in pool.items}, "the session vector found no neighbour"
    assert played.item_id not in {i.item_id for i in pool.items}  # just played: not again
    assert engine.relevance.n_learned == 0


def test_the_same_seed_gives_the_same_lists(small_catalog: Catalog):
    def lists(seed: int) -> list[list[str]]:
        engine = make_engine(small_catalog, seed=seed)
        world = World(small_catalog)
        out = []
        for step in range(30):
            rec = engine.recommend(f"u{step % 4}", 8, {}, now=world.t, request_id=f"r{step}")
            out.append(rec.item_ids)
            engine.learn(world.respond(f"u{step % 4}", rec.request_id, rec.item_ids))
        return out

    assert lists(5) == lists(5)
    assert lists(5) != lists(6)


def test_a_restart_from_a_saved_state_continues_exactly(small_catalog: Catalog, tmp_path: Path):
    """Learn a stream in one go, or save halfway, load, and go on: identical predictions."""
    world = World(small_catalog)
    driver = make_engine(small_catalog)  # serves the lists both learners learn from
    stream: list[list[Event]] = []
    for step in range(60):
        rec = driver.recommend(f"u{step % 6}", 8, {}, now=world.t, request_id=f"r{step}")
        stream.append(world.respond(f"u{step % 6}", rec.request_id, rec.item_ids))

    straight = make_engine(small_catalog, seed=11)
    straight.decisions = driver.decisions
    straight._joiner.decisions = driver.decisions
    for batch in stream:
        straight.learn(batch)

    first = make_engine(small_catalog, seed=11)
    first.decisions = driver.decisions
    first._joiner.decisions = driver.decisions
    for batch in stream[:30]:
        first.learn(batch)
    first.save(tmp_path / "snap")
    resumed = Engine.load(
        tmp_path / "snap",
        small_catalog,
        first.settings,
        first.learner_settings,
        decisions=driver.decisions,
    )
    for batch in stream[30:]:
        resumed.learn(batch)

    items = [small_catalog.get(str(i)) for i in small_catalog.ids[:50]]
    for user in ("u0", "u3", "unknown"):
        np.testing.assert_allclose(
            straight.relevance.predict_many(user, items, {}),  # type: ignore[arg-type]
            resumed.relevance.predict_many(user, items, {}),  # type: ignore[arg-type]
            rtol=1e-6,
        )
    assert straight.join_stats == resumed.join_stats
    assert straight.bandit.n_learned == resumed.bandit.n_learned > 0
    a = straight.recommend("u1", 8, {}, explore=False, now=world.t)
    b = resumed.recommend("u1", 8, {}, explore=False, now=world.t)
    assert a.item_ids == b.item_ids


def test_a_listener_back_after_weeks_still_gets_a_session_vector(small_catalog: Catalog):
    engine = make_engine(small_catalog)
    played = str(small_catalog.ids[5])
    engine.observe_sessions([Event("p", "play", "away", played, T0, played_ms=60_000)])
    rec = engine.recommend("away", 10, {}, now=T0 + 30 * 86_400)  # NaN would raise here
    assert len(rec.items) == 10
    pool = engine.candidates("away", {}, now=T0 + 30 * 86_400)
    assert any("content" in c for c in pool.channels.values())


def _load_deferred(engine: Engine, snapshot: Path) -> Engine:
    """``engine``'s snapshot loaded with its CF index deferred, as the serving path swaps."""
    return Engine.load(
        snapshot, engine.catalog, engine.settings, engine.learner_settings, defer_cf_index=True
    )


def test_a_deferred_cf_index_serves_at_once_and_ends_identical(
    small_catalog: Catalog, world: World, tmp_path: Path
):
    engine = make_engine(small_catalog)
    list(run_world(engine, world, steps=60))
    engine.refresh_index()
    engine.save(tmp_path / "snap")
    eager = Engine.load(tmp_path / "snap", small_catalog, engine.settings, engine.learner_settings)
    lazy = _load_deferred(engine, tmp_path / "snap")
    assert len(lazy.recommend("u1", 10, {}, now=world.t).items) == 10  # answers right away
    assert lazy._cf_ready.wait(30)
    a = eager.recommend("u3", 10, {}, explore=False, now=world.t, request_id="r")
    b = lazy.recommend("u3", 10, {}, explore=False, now=world.t, request_id="r")
    assert a.item_ids == b.item_ids
    lazy.save(tmp_path / "again")  # waits for the index: a complete snapshot
    assert (tmp_path / "again" / "cf_index").exists()


def test_a_save_under_the_engine_lock_does_not_deadlock_a_deferred_cf_index(
    small_catalog: Catalog, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A snapshot cut right after a rollback held the engine lock while its save waited for
    the deferred CF index, whose install waited for that lock: requests hung behind both."""
    from online import engine as engine_module

    engine = make_engine(small_catalog)
    list(run_world(engine, world, steps=30))
    engine.refresh_index()
    engine.save(tmp_path / "snap")
    load = engine_module.HNSWRetriever.load

    def slow_load(path: Path, **overrides: object) -> HNSWRetriever:
        time.sleep(0.5)  # still loading when the save below begins
        return load(path, **overrides)

    monkeypatch.setattr(engine_module.HNSWRetriever, "load", staticmethod(slow_load))
    lazy = _load_deferred(engine, tmp_path / "snap")
    assert not lazy.wait_loaded(0)
    done = threading.Event()

    def cut() -> None:
        with lazy.lock:  # as a snapshot cut takes it
            lazy.save(tmp_path / "again")
        done.set()

    threading.Thread(target=cut, daemon=True).start()
    assert done.wait(30), "the save and the index install wait for each other"
    assert lazy.wait_loaded(0) and (tmp_path / "again" / "cf_index").exists()


def lock_is_free(engine: Engine) -> bool:
    """Whether another thread, as a request would, can take the engine lock now."""
    got: list[bool] = []

    def take() -> None:
        got.append(engine.lock.acquire(timeout=5))
        if got[0]:
            engine.lock.release()

    probe = threading.Thread(target=take)
    probe.start()
    probe.join()
    return got[0]


def test_an_index_refresh_computes_thousands_of_vectors_while_requests_can_take_the_lock(
    small_catalog: Catalog, world: World, monkeypatch: pytest.MonkeyPatch
):
    """The learner re-indexes moved items every second: computing their vectors (tens of
    milliseconds for thousands of items) must not hold the lock every request needs, and
    the index must still end up with exactly the model's vectors."""
    from online.relevance import RelevanceModel

    # a sweep of the whole catalog per refresh: items moved only by a genre's latents are
    # re-indexed by the sweep alone, and the oracle below wants every vector current
    engine = make_engine(small_catalog, index_sweep_batch=len(small_catalog))
    list(run_world(engine, world, steps=30))
    free: list[bool] = []
    real = RelevanceModel.item_vectors_of

    def watched(self: RelevanceModel, columns: Any) -> np.ndarray:
        free.append(lock_is_free(engine))
        return real(self, columns)

    monkeypatch.setattr(RelevanceModel, "item_vectors_of", watched)
    assert engine.refresh_index() > 0
    assert free and all(free)
    view = small_catalog.view()
    stored, live = engine._cf_index.stored(np.arange(len(view.ids)))
    # the oracle: the model's vectors of the catalog's items, built whole
    items = small_catalog.get_many(view.ids[live].tolist())
    want = engine.relevance.item_vectors([i for i in items if i is not None])
    assert np.allclose(stored[live], want, atol=1e-6)


def test_saving_writes_the_largest_parts_while_requests_can_take_the_lock(
    small_catalog: Catalog, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A snapshot cut must not stall requests for the relevance model's pickle, the CF
    index's arrays, the counters or the expansion of moved artists into their items: the
    engine lock is free meanwhile, and the snapshot still loads into the same engine."""
    from online import engine as engine_module
    from online.relevance import RelevanceModel

    engine = make_engine(small_catalog)
    list(run_world(engine, world, steps=30))
    engine.refresh_index()
    free: dict[str, bool] = {}

    def watched(name: str, real: Any) -> Any:
        def write(self: Any, path: Path) -> None:
            free[name] = lock_is_free(engine)
            real(self, path)

        return write

    def dumped(name: str, real: Any) -> Any:
        def dump_parts(self: Any) -> Iterator[bytes]:
            for part in real(self):  # each piece is encoded with the lock free
                free[name] = free.get(name, True) and lock_is_free(engine)
                yield part

        return dump_parts

    monkeypatch.setattr(RelevanceModel, "dump", watched("relevance", RelevanceModel.dump))
    monkeypatch.setattr(
        engine_module.HNSWRetriever, "save", watched("cf_index", engine_module.HNSWRetriever.save)
    )
    for name in ("Popularity", "Exposure", "Transitions", "RewardJoiner"):
        cls = getattr(engine_module, name)
        monkeypatch.setattr(cls, "dump_parts", dumped(name, cls.dump_parts))
    real_mark = Engine._mark_dirty

    def mark(self: Engine, keys: Any, *, pause: bool = False) -> None:
        free["mark_dirty"] = lock_is_free(engine)
        real_mark(self, keys, pause=pause)

    monkeypatch.setattr(Engine, "_mark_dirty", mark)
    list(run_world(engine, world, steps=5))  # items moved since the refresh: queued at save
    engine.save(tmp_path / "snap")
    assert free == {
        "relevance": True,
        "cf_index": True,
        "Popularity": True,
        "Exposure": True,
        "Transitions": True,
        "RewardJoiner": True,
        "mark_dirty": True,
    }
    again = Engine.load(tmp_path / "snap", small_catalog, engine.settings, engine.learner_settings)
    a = engine.recommend("u3", 10, {}, explore=False, now=world.t, request_id="r")
    b = again.recommend("u3", 10, {}, explore=False, now=world.t, request_id="r")
    assert a.item_ids == b.item_ids
    assert list(again._dirty) == list(engine._dirty) != []  # the index's queue, in order


def test_a_snapshot_keeping_the_index_queue_in_its_json_still_loads(
    small_catalog: Catalog, world: World, tmp_path: Path
):
    """Snapshots cut by earlier releases kept the queue of moved items in engine.json; an
    operator can still roll back to them, and the queue comes back in its order."""
    engine = make_engine(small_catalog)
    list(run_world(engine, world, steps=30))
    engine.save(tmp_path / "snap")
    queue = np.load(tmp_path / "snap" / "dirty.npy").tolist()
    assert queue  # the world moved items the index has not taken yet
    meta = json.loads((tmp_path / "snap" / "engine.json").read_text())
    (tmp_path / "snap" / "engine.json").write_text(json.dumps({**meta, "dirty": queue[::-1]}))
    (tmp_path / "snap" / "dirty.npy").unlink()
    old = Engine.load(tmp_path / "snap", small_catalog, engine.settings, engine.learner_settings)
    assert list(old._dirty) == queue[::-1]


def test_a_cf_index_saved_in_the_ip_space_loads_into_the_configured_one(
    small_catalog: Catalog, world: World, tmp_path: Path
):
    """Snapshots cut before the CF index's graph moved to the L2 space hold an 'ip' graph:
    an operator rolling back to one gets it rebuilt in the configured space, same items."""
    engine = make_engine(small_catalog, cf_index_space="ip")
    list(run_world(engine, world, steps=40))
    while engine.index_lag()["dirty_items"]:
        engine.refresh_index()
    assert engine.cf_index.space == "ip" and len(engine.cf_index)
    engine.save(tmp_path / "snap")
    configured = engine.settings.model_copy(update={"cf_index_space": "l2"})
    loaded = Engine.load(tmp_path / "snap", small_catalog, configured, engine.learner_settings)
    assert loaded.cf_index.space == "l2"
    rows = np.arange(len(small_catalog))
    np.testing.assert_array_equal(loaded.cf_index.stored(rows)[0], engine.cf_index.stored(rows)[0])
    np.testing.assert_array_equal(loaded.cf_index.stored(rows)[1], engine.cf_index.stored(rows)[1])
    # the rebuilt graph finds what exact search over the same vectors finds
    held = np.flatnonzero(loaded.cf_index.stored(rows)[1])
    exact = BruteForceRetriever(loaded.cf_index.dim)
    exact.upsert(held, loaded.cf_index.stored(held)[0])
    for user in ("u1", "u2", "never-seen"):
        q = loaded.relevance.user_vector(user, {})
        np.testing.assert_allclose(loaded.cf_index.query(q, 10)[1], exact.query(q, 10)[1])
    assert make_engine(small_catalog).cf_index.space == "l2"  # the default


def _offered_one_by_one(
    view: SimpleNamespace, offers: list[tuple[str, np.ndarray]], banned: set[str]
) -> dict[str, set[str]]:
    """Channels per candidate id, offer by offer: the oracle for the array merge."""
    channels: dict[str, set[str]] = {}
    for channel, idx in offers:
        for i in idx.tolist():
            if not 0 <= i < len(view.ids) or not view.available_mask[i]:
                continue
            item_id = view.ids[i]
            if item_id not in banned:
                channels.setdefault(item_id, set()).add(channel)
    return channels


def test_merged_offers_keep_first_offer_order_and_every_channel():
    rng = np.random.default_rng(5)
    n = 300
    ids = np.array([f"t{i}" for i in range(n)], dtype=object)
    view = SimpleNamespace(ids=ids, available_mask=rng.random(n) > 0.2)
    for _ in range(50):
        offers = [
            (name, rng.integers(-3, n + 3, size=int(rng.integers(0, 80))))
            for name in ("cf", "content", "covisit", "trending", "fresh")
            if rng.random() < 0.8
        ]
        banned = {f"t{i}" for i in rng.integers(0, n, size=8)} | {"never-seen"}
        rows, offered = _merge_offers(
            view, offers, np.array([int(b[1:]) if b[1:].isdigit() else -1 for b in banned])
        )
        want = _offered_one_by_one(view, offers, banned)
        channels = offered.channels()
        assert list(channels) == list(want) == ids[rows].tolist()  # first-offer order
        assert channels == want


def test_trending_follows_plays_and_items_the_catalog_adds_later(small_catalog: Catalog):
    """The trending channel is mapped to catalog rows once per ranking and catalog version:
    an item played before the catalog had it is offered once the catalog adds it, and an
    item played more moves up when the ranking is next recomputed."""
    engine = make_engine(
        small_catalog, cf_candidates=0, content_candidates=0, fresh_candidates=0,
        covisit_candidates=0, trending_candidates=3,
    )  # fmt: skip
    old = [str(i) for i in small_catalog.ids[:3]]
    plays = [(old[0], 3), (old[1], 2), ("late-track", 5), (old[2], 1)]
    engine.learn(
        [
            Event(f"p{item}{n}", "play", f"fan{n}", item, T0, played_ms=60_000)
            for item, times in plays
            for n in range(times)
        ]
    )

    def trending(now: float) -> list[str]:
        pool = engine.candidates("listener", {}, now=now)
        return [i for i, c in pool.channels.items() if "trending" in c]

    # the catalog lacks the most played item: the channel offers the next ones
    assert trending(T0 + 1) == old[:2]
    small_catalog.upsert([Item("late-track", artist="new-artist", genres=("pop",))])
    assert trending(T0 + 2) == ["late-track", *old[:2]]
    # five more plays of the third: first once the ranking is recomputed (top_refresh_s)
    engine.learn(
        [Event(f"q{n}", "play", f"fan{n}", old[2], T0 + 3, played_ms=60_000) for n in range(5)]
    )
    later = T0 + 3 + engine.popularity.top_refresh_s
    assert trending(later) == [old[2], "late-track", old[0]]
