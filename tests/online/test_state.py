"""Learner-side state: hand-computed decays, rankings, bounds and dump/load equality."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from feedback.events import Event
from online.state import Exposure, Popularity, Sessions, Transitions

_ids = itertools.count()


def event(kind: str, user: str, item: str, t: float) -> Event:
    return Event(f"e{next(_ids)}", kind, user, item, t)


def random_events(seed: int, n: int = 600) -> list[Event]:
    rng = random.Random(seed)
    return [
        event(
            rng.choice(["play", "play", "impression", "skip"]),
            f"u{rng.randrange(8)}",
            f"i{rng.randrange(40)}",
            float(rng.randrange(0, 50_000)),
        )
        for _ in range(n)
    ]


# -- Popularity -----------------------------------------------------------------------------


def test_popularity_ewma_by_hand() -> None:
    pop = Popularity(half_life_s=100.0, trend_half_life_s=10.0)
    pop.add("a", 1000.0)
    pop.add("a", 1100.0)
    assert pop.score("a", 1100.0) == 1.5  # 1 * 0.5 + 1
    assert pop.score("a", 1200.0) == 0.75  # exactly half after one half-life
    assert pop.count("a") == 2
    assert pop.score("nope", 1200.0) == 0.0 and pop.count("nope") == 0


def test_popularity_accepts_out_of_order_plays() -> None:
    in_order, shuffled = Popularity(half_life_s=60.0), Popularity(half_life_s=60.0)
    times = [0.0, 30.0, 60.0, 90.0, 300.0]
    for t in times:
        in_order.add("a", t)
    for t in [300.0, 0.0, 90.0, 60.0, 30.0]:
        shuffled.add("a", t)
    expected = sum(0.5 ** ((400.0 - t) / 60.0) for t in times)
    assert in_order.score("a", 400.0) == pytest.approx(expected, rel=1e-12)
    assert shuffled.score("a", 400.0) == pytest.approx(expected, rel=1e-12)


def test_popularity_ranking_vectorised_reads_and_trend() -> None:
    pop = Popularity(half_life_s=3600.0, trend_half_life_s=60.0, top_refresh_s=0.0)
    for t in range(0, 3600, 360):  # "old": 10 plays spread over the hour
        pop.add("old", float(t))
    for t in range(3590, 3600, 2):  # "new": 5 plays in the last ten seconds
        pop.add("new", float(t))
    pop.add("once", 0.0)
    now = 3600.0
    top = pop.top(3, now)
    assert [item for item, _ in top] == ["old", "new", "once"]
    assert top[0][1] == pytest.approx(pop.score("old", now))
    np.testing.assert_allclose(
        pop.scores(["once", "missing", "new"], now),
        [pop.score("once", now), 0.0, pop.score("new", now)],
    )
    assert pop.trend("new", now) > 1.0 > pop.trend("old", now)
    assert pop.trend("missing", now) == 0.0
    np.testing.assert_allclose(
        pop.trends(["new", "old"], now), [pop.trend(i, now) for i in ("new", "old")]
    )
    # by hand: the short-half-life rate over the long-half-life rate
    plays = range(3590, 3600, 2)
    long = sum(0.5 ** ((now - t) / 3600.0) for t in plays)
    short = sum(0.5 ** ((now - t) / 60.0) for t in plays)
    assert pop.trend("new", now) == pytest.approx((short / 60.0) / (long / 3600.0))
    scores, trends = pop.scores_and_trends(["new", "missing", "old"], now)
    np.testing.assert_allclose(scores, pop.scores(["new", "missing", "old"], now))
    np.testing.assert_allclose(trends, [pop.trend("new", now), 0.0, pop.trend("old", now)])
    assert scores[0] == pytest.approx(long)
    assert pop.top(1, now) == top[:1]


def test_popularity_top_is_recomputed_at_most_once_per_refresh() -> None:
    pop = Popularity(half_life_s=3600.0, top_refresh_s=60.0)
    pop.add("a", 0.0)
    assert [i for i, _ in pop.top(5, 0.0)] == ["a"]
    pop.add("b", 10.0)
    pop.add("b", 11.0)
    assert [i for i, _ in pop.top(5, 30.0)] == ["a"]  # cached order, current score
    assert pop.top(5, 30.0)[0][1] == pop.score("a", 30.0)
    assert [i for i, _ in pop.top(5, 60.0)] == ["b", "a"]


def test_popularity_survives_a_rebase_over_a_long_time() -> None:
    pop = Popularity(half_life_s=1.0, trend_half_life_s=1.0)
    pop.add("a", 0.0)
    pop.add("b", 10_000.0)  # 10_000 half-lives later: the origin moves
    pop.add("b", 10_001.0)
    assert pop.score("b", 10_001.0) == 1.5
    assert pop.score("a", 10_001.0) == 0.0
    assert np.isfinite(pop.scores(["a", "b"], 1e6)).all()


def test_popularity_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="half_life_s must be positive"):
        Popularity(half_life_s=0)
    with pytest.raises(ValueError, match="top_refresh_s must be >= 0"):
        Popularity(top_refresh_s=-1)


# -- Exposure -------------------------------------------------------------------------------


def test_exposure_by_hand_and_vectorised() -> None:
    exp = Exposure(half_life_s=10.0)
    exp.add("u1", "a", 0.0, artist="x")
    exp.add("u1", "b", 10.0, artist="x")
    exp.learn_one(event("play", "u1", "a", 10.0))  # plays are not exposure
    assert exp.item("u1", "a", 10.0) == 0.5
    assert exp.item("u1", "b", 20.0) == 0.5
    assert exp.artist("u1", "x", 10.0) == 1.5
    assert exp.item("u2", "a", 10.0) == 0.0 and exp.artist("u1", "y", 10.0) == 0.0
    np.testing.assert_array_equal(exp.items("u1", ["b", "zz", "a"], 10.0), [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(exp.artists("u1", ["x"], 20.0), [0.75])
    np.testing.assert_array_equal(exp.items("u9", ["a", "b"], 10.0), [0.0, 0.0])


def test_exposure_memory_is_bounded_per_user_and_in_users() -> None:
    exp = Exposure(half_life_s=100.0, max_items_per_user=3, max_artists_per_user=2, max_users=2)
    for t, item in enumerate("abcde"):
        exp.add("u1", item, float(t), artist=item.upper())
    assert [exp.item("u1", i, 5.0) > 0 for i in "abcde"] == [False, False, True, True, True]
    assert [exp.artist("u1", a, 5.0) > 0 for a in "CDE"] == [False, True, True]
    exp.add("u2", "a", 6.0)
    exp.add("u1", "a", 7.0)  # u1 is now the most recent
    exp.add("u3", "a", 8.0)  # so u2 is forgotten
    assert len(exp) == 2 and exp.item("u2", "a", 8.0) == 0.0 and exp.item("u1", "e", 8.0) > 0


# -- Sessions and Transitions ---------------------------------------------------------------


def test_sessions_keep_the_last_plays_in_time_order() -> None:
    s = Sessions(max_len=3)
    for item, t in [("a", 1.0), ("b", 2.0), ("d", 4.0), ("c", 3.0), ("e", 5.0)]:
        s.learn_one(event("play", "u1", item, t))
    s.learn_one(event("skip", "u1", "z", 6.0))
    assert s.recent("u1") == [("c", 3.0), ("d", 4.0), ("e", 5.0)]
    assert s.recent("nobody") == []


def test_sessions_forget_the_least_recent_users() -> None:
    s = Sessions(max_len=2, max_users=2)
    for user in ("u1", "u2", "u3"):
        s.add(user, "a", 1.0)
    assert len(s) == 2 and s.recent("u1") == []


def test_transitions_count_what_follows_what() -> None:
    tr = Transitions(max_gap_s=100.0)
    plays = [("a", 0), ("b", 10), ("b", 20), ("c", 30), ("a", 500), ("c", 510), ("b", 5)]
    for item, t in plays:
        tr.learn_one(event("play", "u1", item, float(t)))
    tr.add("u2", "a", 0.0)
    tr.add("u2", "c", 50.0)
    # a->b, b->c, a->c (twice); c->a not counted (gap 470 > 100); the late b (t=5) is ignored;
    # a repeat of the same item is not a transition.
    assert tr.next_items("a", 5) == [("c", 2.0), ("b", 1.0)]
    assert tr.next_items("b", 5) == [("c", 1.0)]
    assert tr.next_items("c", 5) == []
    np.testing.assert_array_equal(tr.scores("a", ["b", "c", "x"]), [1.0, 2.0, 0.0])


def test_transitions_are_bounded_per_item() -> None:
    tr = Transitions(max_next=3)
    tr.count("a", "x", 5.0)
    for i in range(10):
        tr.count("a", f"n{i}")
    top = tr.next_items("a", 10)
    assert len(top) == 3
    assert top[0] == ("x", 5.0) and ("n9", 1.0) in top  # the strong one stays, the newest enters


# -- conformance over every state class -----------------------------------------------------


def feed(state, events: list[Event]) -> None:
    for e in events:
        if isinstance(state, Exposure):
            state.learn_one(e, artist="A" + e.item_id[-1])
        else:
            state.learn_one(e)


def reads(state) -> object:
    items = [f"i{k}" for k in range(40)]
    users = [f"u{k}" for k in range(8)]
    now = 50_000.0
    if isinstance(state, Popularity):
        return (
            state.top(10, now),
            state.scores(items, now).tolist(),
            state.trends(items, now).tolist(),
            [state.count(i) for i in items],
        )
    if isinstance(state, Exposure):
        return [
            (state.items(u, items, now).tolist(), state.artists(u, ["A1", "A2"], now).tolist())
            for u in users
        ]
    if isinstance(state, Sessions):
        return [state.recent(u) for u in users]
    return [state.next_items(i, 5) for i in items]


STATES = [
    lambda: Popularity(half_life_s=3000.0, trend_half_life_s=200.0, top_refresh_s=100.0),
    lambda: Exposure(half_life_s=5000.0, max_items_per_user=10, max_users=6),
    lambda: Sessions(max_len=5, max_users=6),
    lambda: Transitions(max_next=4, max_gap_s=20_000.0, max_users=6),
]


@pytest.mark.parametrize("make", STATES, ids=["popularity", "exposure", "sessions", "transitions"])
@pytest.mark.parametrize("seed", [0, 1])
def test_dump_load_mid_stream_equals_uninterrupted(make, seed: int) -> None:
    events = random_events(seed)
    whole = make()
    feed(whole, events[:300])
    reads(whole)  # a read between the two halves (Popularity caches its top list)
    feed(whole, events[300:])

    first = make()
    feed(first, events[:300])
    reads(first)
    blob = first.dump()
    second = make()
    second.load(blob)
    assert second.dump() == blob
    feed(second, events[300:])
    assert reads(second) == reads(whole)
    assert second.dump() == whole.dump()


@pytest.mark.parametrize("make", STATES, ids=["popularity", "exposure", "sessions", "transitions"])
def test_clone_is_fresh_and_learning_does_not_touch_the_input(make) -> None:
    events = random_events(3, 200)
    before = [e.to_dict() for e in events]
    state = make()
    feed(state, events)
    clone = state.clone()
    assert clone.dump() == make().dump()
    assert reads(clone) != reads(state)
    assert [e.to_dict() for e in events] == before


def test_load_rejects_other_hyperparameters_and_kinds() -> None:
    blob = Popularity(half_life_s=10.0).dump()
    with pytest.raises(ValueError, match=r"half_life_s=10\.0"):
        Popularity(half_life_s=20.0).load(blob)
    with pytest.raises(ValueError, match="not a Sessions dump"):
        Sessions().load(blob)


def test_bounded_memory_under_a_long_stream() -> None:
    rng = random.Random(7)
    exp, ses, tr = Exposure(max_items_per_user=5, max_users=50), Sessions(5, 50), Transitions(3)
    for k in range(5000):
        user, item, t = f"u{rng.randrange(500)}", f"i{rng.randrange(300)}", float(k)
        exp.add(user, item, t, artist=f"a{rng.randrange(30)}")
        ses.add(user, item, t)
        tr.add(user, item, t)
    assert len(exp) == 50 and len(ses) == 50
    assert all(len(items) <= 5 for items, _ in exp._users.values())
    assert all(len(plays) <= 5 for plays in ses._users.values())
    assert all(len(table) <= 3 for table in tr._next.values())
