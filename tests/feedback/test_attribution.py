"""The reward join: hand-built cases for each rule, then Hypothesis over arrival orders."""

from __future__ import annotations

import itertools
from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedback.attribution import (
    BanditSample,
    DecisionOutcome,
    JoinOutput,
    RelevanceSample,
    RewardJoiner,
)
from feedback.decisions import InMemoryDecisionLog, RedisDecisionLog
from feedback.events import Decision, Event, SlateEntry
from feedback.rewards import RewardFunction

WINDOW = 1800.0
SETTINGS = settings(
    derandomize=True,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)

_ids = itertools.count()


def decision(request_id: str, t: float, items: str = "abc", user: str = "u1") -> Decision:
    slate = tuple(
        SlateEntry(
            item,
            pos,
            score=1.0 - pos / 10,
            propensity=0.5 + pos / 10,
            explored=pos % 2 == 1,
            features={"relevance": 1.0 - pos / 10, "position": float(pos)},
        )
        for pos, item in enumerate(items)
    )
    return Decision(
        request_id,
        user,
        t,
        "v1",
        slate,
        context={"device": "phone"},
        shared={"hour": 9.0, "device": "phone"},
    )


def ev(kind: str, item: str, t: float, request_id: str | None = "r1", **kw) -> Event:
    kw.setdefault("event_id", f"e{next(_ids)}")
    kw.setdefault("user_id", "u1")
    return Event(type=kind, item_id=item, timestamp=t, request_id=request_id, **kw)


def full_play(item: str, t: float, request_id: str | None = "r1", **kw) -> Event:
    return ev("play", item, t, request_id, played_ms=200_000, duration_ms=200_000, **kw)


def partial_play(item: str, t: float, played_ms: int, **kw) -> Event:
    return ev("play", item, t, played_ms=played_ms, duration_ms=200_000, **kw)


@pytest.fixture
def log() -> InMemoryDecisionLog:
    log = InMemoryDecisionLog(ttl_s=1e9, clock=lambda: 0.0)
    log.put(decision("r1", 1000.0))
    return log


@pytest.fixture
def joiner(log: InMemoryDecisionLog) -> RewardJoiner:
    return RewardJoiner(log, RewardFunction(), window_s=WINDOW)


def run(joiner: RewardJoiner, events: list[Event], flush: bool = True) -> JoinOutput:
    out = joiner.process_many(events)
    if flush:
        out.extend(joiner.flush())
    return out


# -- one rule at a time ---------------------------------------------------------------------


def test_a_closed_list_reports_what_was_shown_and_what_each_slot_earned(
    log: InMemoryDecisionLog, joiner: RewardJoiner
) -> None:
    log.put(decision("r2", 1000.0, items="xyz"))  # served, never shown: no outcome
    out = run(
        joiner,
        [
            ev("impression", "a", 1001.0, position=0),
            ev("impression", "b", 1001.0, position=1),
            full_play("b", 1010.0),  # emitted at once: the outcome still says 1.0
            partial_play("c", 1020.0, 50_000),  # c was never shown: its slot stays default
            ev("impression", "x", 1001.0, request_id="r9", position=0),  # unknown list
        ],
        flush=False,
    )
    assert out.outcomes == []  # the window is still open
    closing = joiner.advance(1000.0 + WINDOW)
    assert closing.outcomes == [
        DecisionOutcome(
            decision=log.get("r1"),
            impressed=(0, 1),
            rewards=(0.0, 1.0, 0.0),
            closed_at=1000.0 + WINDOW,
        )
    ]
    row = closing.outcomes[0].to_dict()
    assert row["request_id"] == "r1" and row["impressed"] == [0, 1]
    assert row["rewards"] == [0.0, 1.0, 0.0]
    assert [e["propensity"] for e in row["slate"]] == [0.5, 0.6, 0.7]
    assert not joiner.flush().outcomes  # r2 was never shown; r1 reported once


def test_full_play_is_joined_at_once_with_served_features(joiner: RewardJoiner) -> None:
    out = run(joiner, [ev("impression", "b", 1001.0, position=1), full_play("b", 1010.0)], False)
    assert out.bandit == [
        BanditSample(
            request_id="r1",
            user_id="u1",
            item_id="b",
            position=1,
            shared={"hour": 9.0, "device": "phone"},
            features={"relevance": 0.9, "position": 1.0},
            propensity=0.6,
            reward=1.0,
            event_time=1001.0,
            decision_time=1000.0,
        )
    ]
    assert out.relevance == [RelevanceSample("u1", "b", 1.0, {"device": "phone"}, 1001.0)]
    assert joiner.stats["joined"] == 1
    assert not joiner.flush()  # exactly once


def test_impression_without_outcome_defaults_to_zero_only_when_window_closes(
    joiner: RewardJoiner,
) -> None:
    assert not joiner.process(ev("impression", "a", 1001.0))
    assert not joiner.advance(1000.0 + WINDOW - 1)
    out = joiner.advance(1000.0 + WINDOW)
    assert [(s.item_id, s.reward) for s in out.bandit] == [("a", 0.0)]
    assert [(s.item_id, s.reward) for s in out.relevance] == [("a", 0.0)]
    assert joiner.stats["defaulted"] == 1
    assert joiner.pending == 0


def test_play_before_its_impression_is_still_joined(joiner: RewardJoiner) -> None:
    out = run(joiner, [full_play("a", 1005.0), ev("impression", "a", 1001.0)], False)
    assert [(s.item_id, s.reward, s.event_time) for s in out.bandit] == [("a", 1.0, 1001.0)]


def test_skip_and_partial_plays_wait_for_close_and_take_the_best(joiner: RewardJoiner) -> None:
    events = [
        ev("impression", "a", 1001.0),
        partial_play("a", 1002.0, played_ms=10_000),
        ev("skip", "a", 1003.0),
        partial_play("a", 1004.0, played_ms=20_000),
        ev("impression", "b", 1001.0),
        ev("skip", "b", 1002.0, played_ms=5000),
    ]
    assert not joiner.process_many(events)
    out = joiner.advance(1000.0 + WINDOW)
    assert [(s.item_id, s.reward) for s in out.bandit] == [("a", 0.1), ("b", 0.0)]
    assert [(s.item_id, s.reward) for s in out.relevance] == [("a", 0.1), ("b", 0.0)]
    assert joiner.stats["joined"] == 2


def test_an_outcome_after_emission_changes_nothing(joiner: RewardJoiner) -> None:
    events = [ev("impression", "a", 1001.0), full_play("a", 1002.0), ev("skip", "a", 1003.0)]
    out = run(joiner, events)
    assert [s.reward for s in out.bandit] == [1.0]
    assert len(out.relevance) == 1


def test_placed_but_never_impressed_teaches_relevance_only(joiner: RewardJoiner) -> None:
    out = run(joiner, [full_play("c", 1010.0), partial_play("c", 1005.0, played_ms=3000)])
    assert out.bandit == []
    assert out.relevance == [RelevanceSample("u1", "c", 1.0, {"device": "phone"}, 1010.0)]
    assert joiner.stats["unimpressed_outcome"] == 1


def test_organic_play_teaches_relevance_at_once(joiner: RewardJoiner) -> None:
    play = full_play("z", 50.0, request_id=None, context={"device": "tv"})
    out = joiner.process(play)
    assert out.bandit == []
    assert out.relevance == [RelevanceSample("u1", "z", 1.0, {"device": "tv"}, 50.0)]
    assert joiner.stats["organic"] == 1


def test_unknown_request_teaches_relevance_only(joiner: RewardJoiner) -> None:
    out = run(joiner, [ev("impression", "a", 1001.0, "nope"), ev("skip", "a", 1002.0, "nope")])
    assert out.bandit == []
    assert [(s.item_id, s.reward) for s in out.relevance] == [("a", 0.0)]
    assert joiner.stats["unknown_request"] == 2


def test_unmatched_impression_is_counted_and_dropped(joiner: RewardJoiner) -> None:
    out = run(joiner, [ev("impression", "q", 1001.0), full_play("q", 1002.0)])
    assert out.bandit == []
    assert [(s.item_id, s.reward) for s in out.relevance] == [("q", 1.0)]
    assert joiner.stats["unmatched_impression"] == 1
    assert joiner.stats["unmatched_outcome"] == 1


def test_late_events_teach_relevance_only_and_are_counted(joiner: RewardJoiner) -> None:
    first = run(joiner, [ev("impression", "a", 1001.0), ev("impression", "b", 1001.0)], False)
    assert not first
    # Another list's event moves the watermark past r1's window: r1 closes with defaults.
    closing = joiner.process(full_play("x", 1000.0 + WINDOW + 5, request_id=None))
    assert [(s.item_id, s.reward) for s in closing.bandit] == [("a", 0.0), ("b", 0.0)]
    late = joiner.process_many([full_play("a", 1500.0), ev("impression", "c", 1002.0)])
    assert late.bandit == []
    assert [(s.item_id, s.reward, s.event_time) for s in late.relevance] == [("a", 1.0, 1500.0)]
    assert joiner.stats["late"] == 2


def test_an_outcome_beyond_the_window_closes_it_first_and_is_late(joiner: RewardJoiner) -> None:
    joiner.process(ev("impression", "a", 1001.0))
    out = joiner.process(full_play("a", 1000.0 + WINDOW + 1))
    assert [s.reward for s in out.bandit] == [0.0]
    assert [s.reward for s in out.relevance] == [0.0, 1.0]
    assert joiner.stats["late"] == 1


def test_duplicates_are_ignored(joiner: RewardJoiner) -> None:
    imp = ev("impression", "a", 1001.0)
    play = partial_play("a", 1002.0, played_ms=20_000)
    out = run(joiner, [imp, play, imp, play, play])
    assert [s.reward for s in out.bandit] == [0.1]
    assert joiner.stats["duplicates"] == 3


def test_repeat_impression_keeps_the_earliest(joiner: RewardJoiner) -> None:
    out = run(joiner, [ev("impression", "a", 1003.0), ev("impression", "a", 1002.0)])
    assert [s.event_time for s in out.bandit] == [1002.0]
    assert joiner.stats["repeat_impression"] == 1


def test_memory_is_released_once_the_window_has_passed(joiner: RewardJoiner) -> None:
    run(joiner, [ev("impression", "a", 1001.0), full_play("z", 1001.0, request_id=None)], False)
    assert joiner.pending == 1
    joiner.advance(1000.0 + 2 * WINDOW + 2)
    state = orjson.loads(joiner.dump())
    assert joiner.pending == 0
    assert state["pending"] == [] and state["seen"] == []


def test_a_new_event_type_joins_through_its_reward_mapping(log: InMemoryDecisionLog) -> None:
    joiner = RewardJoiner(log, RewardFunction(extra={"like": lambda e: 1.0}), window_s=WINDOW)
    out = run(joiner, [ev("impression", "a", 1001.0), ev("like", "a", 1002.0)], False)
    assert [s.reward for s in out.bandit] == [1.0]
    assert not joiner.process(ev("share", "a", 1003.0))
    assert joiner.stats["unknown_type"] == 1


def test_window_must_be_positive(log: InMemoryDecisionLog) -> None:
    with pytest.raises(ValueError, match="window_s must be positive"):
        RewardJoiner(log, window_s=0)


def test_load_rejects_an_unknown_format(joiner: RewardJoiner) -> None:
    with pytest.raises(ValueError, match="unsupported joiner dump format"):
        joiner.load(b'{"format": 99}')


@pytest.mark.redis
def test_joins_against_the_redis_decision_log(redis_url: str, redis_prefix: str) -> None:
    log = RedisDecisionLog(redis_url, prefix=redis_prefix, ttl_s=600)
    try:
        log.put(decision("r1", 1000.0))
        joiner = RewardJoiner(log, window_s=WINDOW)
        events = [ev("impression", "a", 1001.0), ev("play", "a", 1002.0, played_ms=40_000)]
        out = run(joiner, [*events, ev("impression", "a", 1001.0, "gone")])
        assert [(s.item_id, s.reward, s.propensity) for s in out.bandit] == [("a", 1.0, 0.5)]
        assert joiner.stats["unknown_request"] == 1
    finally:
        log.close()


# -- Hypothesis over event orderings --------------------------------------------------------

REWARD = RewardFunction()


@st.composite
def worlds(draw: st.DrawFn, spread: float = 100.0) -> tuple[list[Decision], list[Event]]:
    """Decisions and their events; with the default spread every event is inside its window."""
    n_decisions = draw(st.integers(1, 3))
    decisions: list[Decision] = []
    events: list[Event] = []
    counter = itertools.count()

    def new_event(**kw) -> Event:
        return Event(event_id=f"h{next(counter)}", **kw)

    for r in range(n_decisions):
        d_time = float(draw(st.integers(0, 100)))
        items = "".join(draw(st.permutations("abcd"))[: draw(st.integers(1, 4))])
        d = decision(f"r{r}", d_time, items, user=f"u{r}")
        decisions.append(d)
        for item in "abcde":  # "e" is never in a slate
            user = f"u{r}"
            base = dict(user_id=user, item_id=item, request_id=d.request_id)
            if draw(st.booleans()):
                t = d_time + draw(st.integers(0, int(spread)))
                events.append(new_event(type="impression", timestamp=t, position=0, **base))
            for _ in range(draw(st.integers(0, 2))):
                t = d_time + draw(st.integers(0, int(spread)))
                if draw(st.booleans()):
                    events.append(new_event(type="skip", timestamp=t, **base))
                else:
                    played = draw(st.sampled_from([0, 5000, 20_000, 100_000, 300_000]))
                    duration = draw(st.sampled_from([None, 60_000, 300_000]))
                    events.append(
                        new_event(
                            type="play",
                            timestamp=t,
                            played_ms=played,
                            duration_ms=duration,
                            **base,
                        )
                    )
    for _ in range(draw(st.integers(0, 2))):  # organic and unknown-request plays
        rid = draw(st.sampled_from([None, "unknown"]))
        t = float(draw(st.integers(0, int(spread) + 100)))
        events.append(
            new_event(
                type="play",
                user_id="u9",
                item_id="z",
                timestamp=t,
                request_id=rid,
                played_ms=40_000,
            )
        )
    duplicates = draw(st.lists(st.sampled_from(events), max_size=3)) if events else []
    events = events + duplicates
    return decisions, draw(st.permutations(events))


def make_joiner(decisions: list[Decision], window_s: float = WINDOW) -> RewardJoiner:
    log = InMemoryDecisionLog(ttl_s=1e9, clock=lambda: 0.0)
    for d in decisions:
        log.put(d)
    return RewardJoiner(log, REWARD, window_s=window_s)


def multiset(out: JoinOutput) -> tuple[Counter, Counter]:
    return Counter(map(repr, out.relevance)), Counter(map(repr, out.bandit))


def oracle(decisions: list[Decision], events: list[Event]) -> tuple[Counter, Counter]:
    """The join computed in one pass over the whole set, valid when no window closes early."""
    unique = list({e.event_id: e for e in events}.values())
    by_id = {d.request_id: d for d in decisions}
    relevance: list[RelevanceSample] = []
    bandit: list[BanditSample] = []
    for e in unique:
        if e.type != "impression" and (
            e.request_id not in by_id or by_id[e.request_id].entry(e.item_id) is None
        ):
            relevance.append(
                RelevanceSample(e.user_id, e.item_id, REWARD(e), e.context, e.timestamp)
            )
    for d in decisions:
        for entry in d.slate:
            key = (d.request_id, entry.item_id)
            mine = [e for e in unique if (e.request_id, e.item_id) == key]
            impressions = [e.timestamp for e in mine if e.type == "impression"]
            outcomes = [(REWARD(e), -e.timestamp) for e in mine if e.type != "impression"]
            if impressions:
                t = min(impressions)
                reward = max(outcomes)[0] if outcomes else 0.0
                relevance.append(RelevanceSample(d.user_id, entry.item_id, reward, d.context, t))
                bandit.append(
                    BanditSample(
                        d.request_id,
                        d.user_id,
                        entry.item_id,
                        entry.position,
                        d.shared,
                        entry.features,
                        entry.propensity,
                        reward,
                        t,
                        d.timestamp,
                    )
                )
            elif outcomes:
                reward, neg_t = max(outcomes)
                relevance.append(
                    RelevanceSample(d.user_id, entry.item_id, reward, d.context, -neg_t)
                )
    return multiset(JoinOutput(relevance, bandit))


@SETTINGS
@given(worlds())
def test_join_matches_the_one_pass_oracle(world: tuple[list[Decision], list[Event]]) -> None:
    decisions, events = world
    joiner = make_joiner(decisions)
    out = run(joiner, events)
    assert multiset(out) == oracle(decisions, events)
    # Each impressed slot yields exactly one bandit sample; nothing un-impressed yields one.
    served = {(d.request_id, entry.item_id) for d in decisions for entry in d.slate}
    impressed = {(e.request_id, e.item_id) for e in events if e.type == "impression"}
    slots = Counter((s.request_id, s.item_id) for s in out.bandit)
    assert set(slots) == served & impressed
    assert all(n == 1 for n in slots.values())
    stats = joiner.stats
    assert stats["joined"] + stats["defaulted"] == len(out.bandit)
    assert stats["duplicates"] == len(events) - len({e.event_id for e in events})
    assert joiner.pending == 0


@SETTINGS
@given(worlds(), st.randoms(use_true_random=False))
def test_arrival_order_inside_the_window_does_not_change_the_samples(
    world: tuple[list[Decision], list[Event]], rng
) -> None:
    decisions, events = world
    shuffled = list(events)
    rng.shuffle(shuffled)
    assert multiset(run(make_joiner(decisions), events)) == multiset(
        run(make_joiner(decisions), shuffled)
    )


@SETTINGS
@given(worlds(spread=400.0), st.integers(0, 60), st.sampled_from([50.0, 200.0, 1800.0]))
def test_restart_mid_stream_gives_the_same_outputs(
    world: tuple[list[Decision], list[Event]], cut: int, window_s: float
) -> None:
    decisions, events = world
    cut = min(cut, len(events))
    whole = make_joiner(decisions, window_s)
    expected = run(whole, events)

    first = make_joiner(decisions, window_s)
    got = first.process_many(events[:cut])
    blob = first.dump()
    second = make_joiner(decisions, window_s)
    second.load(blob)
    assert second.dump() == blob
    tail = second.process_many(events[cut:])
    # a dump after more events reuses the pending decisions encoded by the last one, and is
    # byte for byte what encoding everything afresh gives
    again = second.dump()
    for pending in second._pending.values():
        pending.encoded = None
    assert second.dump() == again
    got.extend(tail)
    got.extend(second.flush())
    assert got.relevance == expected.relevance
    assert got.bandit == expected.bandit
    assert got.outcomes == expected.outcomes
    assert second.stats == whole.stats
    assert second.watermark == whole.watermark


@SETTINGS
@given(worlds(spread=400.0), st.sampled_from([50.0, 200.0]))
def test_with_late_events_every_impressed_slot_still_yields_at_most_one_sample(
    world: tuple[list[Decision], list[Event]], window_s: float
) -> None:
    decisions, events = world
    joiner = make_joiner(decisions, window_s)
    out = run(joiner, events)
    slots = Counter((s.request_id, s.item_id) for s in out.bandit)
    assert all(n == 1 for n in slots.values())
    served = {(d.request_id, e.item_id) for d in decisions for e in d.slate}
    impressed = {(e.request_id, e.item_id) for e in events if e.type == "impression"}
    assert set(slots) <= served & impressed
    stats = joiner.stats
    # Every impressed slot is either sampled or its impression was late.
    assert len(served & impressed) - len(slots) <= stats["late"]
    assert all(0.0 <= s.reward <= 1.0 for s in out.bandit)


class FlakyLog(InMemoryDecisionLog):
    """A decision log that fails on demand, like an unreachable Redis."""

    failing = False

    def get(self, request_id: str) -> Decision | None:
        if self.failing:
            raise ConnectionError("decision log unreachable")
        return super().get(request_id)

    def get_many(self, request_ids):
        if self.failing:
            raise ConnectionError("decision log unreachable")
        return super().get_many(request_ids)


@pytest.mark.parametrize("batched", [False, True])
def test_a_failing_decision_log_leaves_the_state_untouched(batched: bool) -> None:
    log = FlakyLog(ttl_s=1e9, clock=lambda: 0.0)
    log.put(decision("r1", 1000.0))
    log.put(decision("r2", 1000.0 + WINDOW))
    joiner = RewardJoiner(log, window_s=WINDOW)
    joiner.process(ev("impression", "a", 1001.0))
    before = joiner.dump()
    log.failing = True
    # This event would close r1's window, then needs r2's decision.
    event = ev("impression", "a", 1000.0 + WINDOW + 1, "r2")
    with pytest.raises(ConnectionError):
        joiner.process_many([event]) if batched else joiner.process(event)
    assert joiner.dump() == before
    log.failing = False
    out = joiner.process_many([event]) if batched else joiner.process(event)
    assert [(s.request_id, s.item_id, s.reward) for s in out.bandit] == [("r1", "a", 0.0)]
    assert joiner.pending == 1
