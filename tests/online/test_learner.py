"""The learner over a real event log and snapshot store: exactly once, rollbacks, the guard."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import orjson
import pytest

from feedback.db import create_db_engine
from feedback.decisions import InMemoryDecisionLog
from feedback.events import Event
from feedback.log import SQLEventLog
from online.catalog import Catalog
from online.engine import Engine
from online.learner import Learner, open_engine
from online.settings import EngineSettings, LearnerSettings
from snapshots import CorruptSnapshotError, CutSchedule, SnapshotStore
from snapshots.guard import PromotionGuard
from snapshots.settings import SnapshotSettings
from tests.online.conftest import World, make_engine

SETTINGS = EngineSettings(seed=11, n_factors=8)
LEARNER = LearnerSettings(attribution_window_s=600, read_batch=150, lock_chunk=50)
USERS = ("u0", "u1", "u3", "u4", "stranger")


class Stream:
    """Lists served by a driver engine and the listeners' answers, appended to a SQLite log."""

    def __init__(self, catalog: Catalog, tmp_path: Path) -> None:
        self.catalog = catalog
        self.world = World(catalog)
        self.driver = make_engine(catalog)
        # the decision log outlives learner restarts, as Redis does in the distributed mode
        self.decisions = InMemoryDecisionLog(ttl_s=1e9)
        self.log = SQLEventLog(create_db_engine(f"sqlite:///{tmp_path / 'events.db'}"))
        self.step = 0

    def add(self, steps: int, *, inverted: bool = False) -> None:
        """``inverted``: a broken client reports plays as skips and skips as plays."""
        for _ in range(steps):
            user = f"u{self.step % 6}"
            rec = self.driver.recommend(user, 8, {}, now=self.world.t, request_id=f"r{self.step}")
            self.decisions.put(self.driver.decisions.get(rec.request_id))  # type: ignore[arg-type]
            events: list[Event] = self.world.respond(user, rec.request_id, rec.item_ids)
            if inverted:
                flip = {"play": ("skip", 2_000), "skip": ("play", 120_000)}
                events = [
                    replace(e, type=flip[e.type][0], played_ms=flip[e.type][1])
                    if e.type in flip
                    else e
                    for e in events
                ]
            assert self.log.append(events).accepted == len(events)
            self.step += 1

    @property
    def total(self) -> int:
        """How many events the log holds."""
        return sum(self.log.stats().events_by_type.values())

    def fresh_engine(self) -> Engine:
        return Engine(self.catalog, SETTINGS, LEARNER, decisions=self.decisions)

    def open(self, store: SnapshotStore) -> Engine:
        return open_engine(self.catalog, store, SETTINGS, LEARNER, decisions=self.decisions)

    def fingerprint(self, engine: Engine) -> dict[str, object]:
        """What a listener would notice: scores, the greedy list, and the learned counts."""
        items = [self.catalog.get(str(i)) for i in self.catalog.ids[:60]]
        return {
            "relevance": {
                u: np.round(engine.relevance.predict_many(u, items, {}), 9).tolist()  # type: ignore[arg-type]
                for u in USERS
            },
            "lists": {
                u: engine.recommend(u, 8, {}, explore=False, now=self.world.t).item_ids
                for u in USERS
            },
            "bandit_learned": engine.bandit.n_learned,
            "join": engine.join_stats,
            "popular": engine.popular_now(20, now=self.world.t),
        }


@pytest.fixture
def stream(small_catalog: Catalog, tmp_path: Path) -> Stream:
    s = Stream(small_catalog, tmp_path)
    yield s
    s.log.close()


def straight_run(stream: Stream) -> Engine:
    engine = stream.fresh_engine()
    Learner(engine, stream.log).run_until_caught_up()
    return engine


def test_a_restart_learns_nothing_twice_and_loses_nothing(stream: Stream, tmp_path: Path):
    stream.add(80)  # 80 lists x 8 slots x 2 events = 1280 events, read 150 at a time
    total = stream.total
    expected = straight_run(stream)
    assert expected.events_learned == total

    store = SnapshotStore(tmp_path / "snapshots")
    first = Learner(stream.open(store), stream.log, store=store)
    for _ in range(3):
        first.step()
    cut = first.cut()
    assert cut is not None and cut.promoted
    assert cut.snapshot.manifest.offset == first.engine.offset + 1
    for _ in range(2):  # learned after the cut, then the process dies: not in any snapshot
        first.step()
    assert first.engine.events_learned == 5 * LEARNER.read_batch

    second = Learner(stream.open(store), stream.log, store=store)
    assert second.engine.model_version == f"{cut.version}+0"
    assert second.engine.events_learned == 3 * LEARNER.read_batch
    assert second.engine.offset + 1 == cut.snapshot.manifest.offset
    learned = second.run_until_caught_up()
    assert learned == total - 3 * LEARNER.read_batch
    assert second.engine.events_learned == expected.events_learned == total
    assert second.engine.offset == expected.offset == stream.log.last_offset()
    end = second.cut()
    assert end is not None
    assert end.snapshot.manifest.events_total == total
    assert stream.fingerprint(second.engine) == stream.fingerprint(expected)

    # a third start from the final snapshot has nothing left to learn
    third = Learner(stream.open(store), stream.log, store=store)
    assert third.run_until_caught_up() == 0
    assert stream.fingerprint(third.engine) == stream.fingerprint(expected)


def test_a_restart_after_many_cuts_adds_up(stream: Stream, tmp_path: Path):
    """Cut every batch, restart after each of several steps: the manifests' counts add up."""
    stream.add(60)
    total = stream.total
    store = SnapshotStore(tmp_path / "snapshots")
    for _ in range(4):
        learner = Learner(
            stream.open(store), stream.log, store=store, schedule=CutSchedule(200, 3600.0)
        )
        learner.step()
        learner.step()
    last = Learner(stream.open(store), stream.log, store=store)
    last.run_until_caught_up()
    last.cut()
    manifests = [store.manifest(v) for v in store.versions()]
    assert sum(m.events for m in manifests) == total == manifests[-1].events_total
    offsets = [m.offset for m in manifests]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert stream.fingerprint(last.engine) == stream.fingerprint(straight_run(stream))


def _running(stream: Stream, store: SnapshotStore) -> tuple[Learner, list[str]]:
    """A learner that has cut three snapshots and learned past the last one."""
    swaps: list[str] = []
    learner = Learner(
        stream.open(store), stream.log, store=store, on_swap=lambda e: swaps.append(e.model_version)
    )
    for _ in range(3):
        learner.step()
        assert learner.cut() is not None
    learner.step()  # 150 events past the last snapshot
    return learner, swaps


def test_continue_rollback_loads_v_and_learns_new_events_only(stream: Stream, tmp_path: Path):
    stream.add(60)
    store = SnapshotStore(tmp_path / "snapshots")
    learner, swaps = _running(stream, store)
    v1, _v2, v3 = store.versions()
    m1, m3 = store.manifest(v1), store.manifest(v3)
    before = learner.engine
    assert before.offset > m3.offset  # learned past the last cut

    operator = SnapshotStore(store.root, by="operator:test")
    rb = operator.rollback(v1, mode="continue")
    assert rb.pointer.resume_offset == m3.offset
    position = before.offset
    report = learner.step()
    assert report.swapped_to == v1
    assert swaps == [f"{v1}+0"]
    engine = learner.engine
    assert engine is not before
    # V's state, and nothing the learner had learned after V: only what it had not read yet
    unread = stream.log.read(position, LEARNER.read_batch)
    assert report.events == len(unread)
    assert engine.offset == (unread[-1].offset if unread else position)
    assert engine.events_learned == m1.events_total + len(unread)
    # the skip is durable at once: a snapshot of V at the position the learner had reached
    (marker,) = [m for v in store.versions() if (m := store.manifest(v)).extra.get("note")]
    assert marker.parent == v1 and marker.offset == position + 1 and marker.events == 0
    assert "rollback to" in str(marker.extra.get("note"))

    stream.add(20)  # new events arrive after the rollback
    learner.run_until_caught_up()
    new_events = len(stream.log.read(position, 10_000))
    assert learner.engine.events_learned == m1.events_total + new_events
    # a learner that restarts now agrees with the running one
    restarted = Learner(stream.open(SnapshotStore(store.root)), stream.log)
    restarted.run_until_caught_up()
    assert restarted.engine.events_learned == learner.engine.events_learned
    assert stream.fingerprint(restarted.engine) == stream.fingerprint(learner.engine)

    # the next cut builds on the rollback and is promoted: the operator's choice holds
    cut = learner.cut()
    assert cut is not None and cut.promoted
    assert cut.snapshot.manifest.parent == v1
    assert store.pointer().version == cut.version  # type: ignore[union-attr]


def test_replay_rollback_relearns_from_v(stream: Stream, tmp_path: Path):
    stream.add(60)
    store = SnapshotStore(tmp_path / "snapshots")
    learner, swaps = _running(stream, store)
    v1 = store.versions()[0]
    m1 = store.manifest(v1)

    SnapshotStore(store.root, by="operator:test").rollback(v1, mode="replay")
    report = learner.step()
    assert report.swapped_to == v1 and swaps == [f"{v1}+0"]
    # re-learned from V's offset: the first batch after V again
    again = stream.log.read(m1.offset - 1, LEARNER.read_batch)
    assert report.events == len(again)
    assert learner.engine.offset == again[-1].offset
    assert learner.engine.events_learned == m1.events_total + len(again)
    learner.run_until_caught_up()
    # the same as never having moved past V: a straight run of the whole log
    total = stream.total
    assert learner.engine.events_learned == total
    assert stream.fingerprint(learner.engine) == stream.fingerprint(straight_run(stream))


def test_a_held_back_snapshot_does_not_move_current(stream: Stream, tmp_path: Path):
    stream.add(100)
    stream.add(40, inverted=True)  # then a broken client: the models get worse
    guard = PromotionGuard.from_settings(SnapshotSettings())  # the defaults: AUC, log loss
    store = SnapshotStore(tmp_path / "snapshots", guard=guard)
    learner = Learner(stream.open(store), stream.log, store=store)
    promoted: list[str] = []
    held: list[str] = []
    while learner.step().events:
        result = learner.cut()
        assert result is not None
        if result.promoted:
            promoted.append(result.version)
        else:
            held.append(result.version)
            assert (result.reason or "").startswith("relevance_")
        current = store.pointer()
        assert current is not None and current.version == promoted[-1]
    assert promoted and held, "the guard never held a snapshot back; the test proved nothing"
    current = store.pointer().version  # type: ignore[union-attr]
    # a restart starts from what CURRENT names, never from a held-back snapshot
    restarted = stream.open(SnapshotStore(store.root, guard=guard))
    assert restarted.base_version == current
    assert restarted.offset + 1 >= store.manifest(current).offset


def test_a_corrupt_snapshot_is_refused_and_the_last_good_one_used(stream: Stream, tmp_path: Path):
    stream.add(40)
    store = SnapshotStore(tmp_path / "snapshots")
    learner = Learner(stream.open(store), stream.log, store=store)
    learner.step()
    good = learner.cut()
    learner.step()
    bad = learner.cut()
    assert good is not None and bad is not None and bad.promoted
    victim = bad.snapshot.path / "relevance.bin"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))

    engine = stream.open(SnapshotStore(store.root))
    assert engine.base_version == good.version
    assert engine.offset + 1 == good.snapshot.manifest.offset
    restarted = Learner(engine, stream.log)
    restarted.run_until_caught_up()
    assert restarted.engine.events_learned == stream.total
    assert stream.fingerprint(restarted.engine) == stream.fingerprint(straight_run(stream))


def test_a_rollback_that_cannot_be_loaded_yet_is_retried_not_overruled(
    stream: Stream, tmp_path: Path
):
    stream.add(60)
    store = SnapshotStore(tmp_path / "snapshots")
    learner, swaps = _running(stream, store)
    v1 = store.versions()[0]
    SnapshotStore(store.root, by="operator:test").rollback(v1)
    victim = store.root / v1 / "bandit.bin"
    good = victim.read_bytes()
    victim.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # damaged after it was verified
    offset = learner.engine.offset
    for _ in range(2):
        with pytest.raises(CorruptSnapshotError, match=r"bandit\.bin"):
            learner.step()
    assert learner.engine.offset == offset, "it learned on the old state meanwhile"
    assert store.pointer().version == v1  # type: ignore[union-attr]
    victim.write_bytes(good)  # repaired (say, restored from an exported archive)
    assert learner.step().swapped_to == v1
    assert swaps == [f"{v1}+0"]


def test_closed_lists_are_stored_once_for_off_policy_evaluation(stream: Stream, tmp_path: Path):
    """What a researcher exports with `segue feedback export-decisions`: every list whose window
    closed, with the propensities served and the rewards learned, stored once across a restart."""
    from simulations.loaders import load_decision_log

    stream.add(200)  # 5 s of event time per list, a 600 s window: the first ~80 lists close
    store = SnapshotStore(tmp_path / "snapshots")
    first = Learner(stream.open(store), stream.log, store=store)
    for _ in range(4):
        first.step()
    assert first.cut() is not None
    first.run_until_caught_up()
    stored = list(stream.log.iter_outcomes())
    assert 60 <= len(stored) <= 100

    # a second learner resumes from the snapshot and closes the same windows again
    second = Learner(stream.open(store), stream.log, store=store)
    second.run_until_caught_up()
    assert list(stream.log.iter_outcomes()) == stored

    # each stored list is what was served and what the listener did
    rewards_by_slot = {}
    for logged in stream.log.iter_from(0):
        e = logged.event
        if e.type != "impression":
            rewards_by_slot[e.request_id, e.item_id] = 1.0 if e.type == "play" else 0.0
    for row in stored:
        served = stream.decisions.get(row["request_id"])
        assert served is not None and row["slate"] == served.to_dict()["slate"]
        assert row["impressed"] == [e["position"] for e in row["slate"]]  # the world shows all
        assert row["rewards"] == [
            rewards_by_slot[row["request_id"], e["item_id"]] for e in row["slate"]
        ]
    assert [r["timestamp"] for r in stored] == sorted(r["timestamp"] for r in stored)
    assert list(stream.log.iter_outcomes(since=stored[10]["timestamp"], batch=7)) == stored[10:]

    # and the OPE loader reads them as logged bandit feedback: one row per impressed slot
    path = tmp_path / "decisions.jsonl"
    path.write_text("".join(orjson.dumps(r).decode() + "\n" for r in stored))
    data = load_decision_log(path)
    assert data.n_rows == sum(len(r["impressed"]) for r in stored)


def test_an_idle_learner_still_works_through_the_queue_of_moved_items(stream: Stream):
    """After the events stop, the moved items still waiting reach the CF index: a refresh
    ran only after a learned batch, so the index stopped filling with the traffic."""
    stream.add(30)
    settings = LEARNER.model_copy(update={"index_refresh_interval_s": 0.01})
    engine = Engine(
        stream.catalog,
        SETTINGS.model_copy(update={"index_refresh_batch": 5, "index_sweep_batch": 0}),
        settings,
        decisions=stream.decisions,
    )
    learner = Learner(engine, stream.log)
    learner.run_until_caught_up()
    waiting = engine.index_lag()["dirty_items"]
    assert waiting > 10  # five a refresh could not take them all
    stop = threading.Event()
    thread = learner.start(stop)
    deadline = time.monotonic() + 10
    while engine.index_lag()["dirty_items"] and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(10)
    assert engine.index_lag()["dirty_items"] == 0
    assert engine.events_learned == stream.total  # nothing new was learned meanwhile
