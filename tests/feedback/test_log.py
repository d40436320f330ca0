"""The event log on SQLite and PostgreSQL: ordered, exactly once, durable answers."""

from __future__ import annotations

import threading

from feedback.attribution import DecisionOutcome
from feedback.contract import Rejection
from feedback.db import create_db_engine
from feedback.events import Decision, Event, SlateEntry
from feedback.log import SQLEventLog

T0 = 1_795_000_000.0


def ev(i: int, kind: str = "play", **kw: object) -> Event:
    fields: dict[str, object] = {
        "event_id": f"e{i}",
        "type": kind,
        "user_id": f"u{i % 3}",
        "item_id": f"t{i % 7}",
        "timestamp": T0 + i,
        "context": {"device": "ios", "hour": 9},
    }
    if kind == "play":
        fields["played_ms"] = 1000 * i
    fields.update(kw)
    return Event(**fields)  # type: ignore[arg-type]


def test_events_come_back_in_append_order_with_increasing_offsets(event_log: SQLEventLog):
    first = [ev(i) for i in range(5)]
    second = [ev(i, "skip") for i in range(5, 8)]
    event_log.append(first)
    event_log.append(second)
    logged = event_log.read(0, 100)
    assert [x.event for x in logged] == first + second
    offsets = [x.offset for x in logged]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert event_log.last_offset() == offsets[-1]
    assert [x.event for x in event_log.read(offsets[4], 2)] == second[:2]
    assert [x.event for x in event_log.iter_from(0, batch=3)] == first + second


def test_an_event_id_is_stored_once_however_often_it_is_sent(event_log: SQLEventLog):
    r1 = event_log.append([ev(1), ev(2)])
    r2 = event_log.append([ev(2), ev(3), ev(3)])
    assert (r1.accepted, r1.duplicates) == (2, 0)
    assert (r2.accepted, r2.duplicates) == (1, 2)
    assert [x.event.event_id for x in event_log.read(0, 10)] == ["e1", "e2", "e3"]


def test_a_retried_batch_gets_the_first_answer_even_after_a_restart(db_url: str):
    log = SQLEventLog(create_db_engine(db_url))
    rejection = Rejection(index=1, event_id="bad", code="wrong_type", reason="user_id: nope")
    raw = [ev(1).to_dict(), {"event_id": "bad"}]
    first = log.ingest([ev(1)], [rejection], raw=raw, batch_key="k1")
    log.close()
    restarted = SQLEventLog(create_db_engine(db_url))
    again = restarted.ingest([ev(1)], [rejection], raw=raw, batch_key="k1")
    assert (
        again.to_json()
        == first.to_json()
        == {
            "accepted": 1,
            "duplicates": 0,
            "rejected": [
                {"index": 1, "event_id": "bad", "code": "wrong_type", "reason": "user_id: nope"}
            ],
        }
    )
    assert again.replayed
    assert len(restarted.read(0, 10)) == 1
    assert len(restarted.dead_letters()) == 1  # the retry kept no second dead letter
    restarted.close()


def test_rejected_events_and_bodies_are_kept_as_dead_letters(event_log: SQLEventLog):
    raw = [{"event_id": "x", "type": "like"}, ev(2).to_dict()]
    event_log.ingest(
        [ev(2)],
        [Rejection(0, "x", "unknown_type", "type 'like' is not one of ...")],
        raw=raw,
        source="api:10.0.0.1",
    )
    event_log.dead_letter_body(b"{not json", code="malformed_json", reason="not JSON")
    letters = event_log.dead_letters()
    assert [(d.kind, d.code) for d in letters] == [
        ("body", "malformed_json"),
        ("event", "unknown_type"),
    ]
    assert letters[1].payload == '{"event_id":"x","type":"like"}'
    assert letters[1].source == "api:10.0.0.1"
    assert [d.code for d in event_log.dead_letters(kind="event")] == ["unknown_type"]
    assert event_log.stats().dead_letters_by_code == {"malformed_json": 1, "unknown_type": 1}
    assert event_log.stats().events_by_type == {"play": 1}


def test_a_huge_dead_letter_body_is_truncated_not_lost(event_log: SQLEventLog):
    event_log.dead_letter_body(b"x" * 200_000, code="body_too_large", reason="too large")
    (letter,) = event_log.dead_letters()
    assert letter.payload.startswith("x" * 1000)
    assert letter.payload.endswith("[truncated]")
    assert len(letter.payload) < 70_000


def test_concurrent_appenders_never_interleave_offsets_out_of_commit_order(db_url: str):
    # a generous lock wait: three writers contend on purpose, on a machine that may be busy
    logs = [SQLEventLog(create_db_engine(db_url, timeout_s=60)) for _ in range(3)]

    def writer(w: int) -> None:
        for b in range(10):
            logs[w].append([ev(w * 10_000 + b * 100 + i) for i in range(20)])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    logged = logs[0].read(0, 10_000)
    assert len(logged) == 600
    # each batch is contiguous in the log: a batch is one transaction
    by_batch: dict[int, list[int]] = {}
    for position, x in enumerate(logged):
        by_batch.setdefault(int(x.event.event_id[1:]) // 100, []).append(position)
    for positions in by_batch.values():
        assert positions == list(range(positions[0], positions[0] + 20))
    for log in logs:
        log.close()


def test_closed_lists_are_stored_once_and_read_in_decision_time_order(event_log: SQLEventLog):
    def outcome(request_id: str, t: float, version: str = "v1") -> DecisionOutcome:
        slate = (
            SlateEntry("a", 0, 0.9, 0.5, False, {"rel": 0.9, "pos": 0.0}),
            SlateEntry("b", 1, 0.8, 0.25, True, {"rel": 0.8, "pos": 0.6931}),
        )
        decision = Decision(request_id, "u1", t, version, slate, {"device": "ios"}, {"hour": 9})
        return DecisionOutcome(decision, impressed=(0, 1), rewards=(0.0, 1.0), closed_at=t + 60)

    first = [outcome("r3", 30.0), outcome("r1", 10.0), outcome("r2", 20.0, "v2")]
    event_log.record_outcomes(first)
    event_log.record_outcomes([outcome("r1", 10.0), outcome("r4", 40.0)])  # r1 again: ignored
    event_log.record_outcomes([])
    rows = list(event_log.iter_outcomes(batch=2))
    assert [r["request_id"] for r in rows] == ["r1", "r2", "r3", "r4"]
    assert rows[0] == outcome("r1", 10.0).to_dict()
    assert rows[0]["slate"][1]["propensity"] == 0.25 and rows[0]["rewards"] == [0.0, 1.0]
    assert [r["request_id"] for r in event_log.iter_outcomes(since=20.0, until=40.0)] == [
        "r2",
        "r3",
    ]
    assert [r["request_id"] for r in event_log.iter_outcomes(model_version="v2")] == ["r2"]
