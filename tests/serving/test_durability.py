"""Acknowledged means durable: SIGKILL the server mid-stream and count what was acknowledged."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from feedback.db import create_db_engine
from feedback.log import SQLEventLog
from tests.serving.live import live_server

pytestmark = pytest.mark.slow


def _batch(b: int, size: int) -> dict[str, object]:
    now_ms = int(time.time() * 1000)
    return {
        "events": [
            {
                "event_id": f"b{b}-{i}",
                "type": "impression" if i % 2 else "play",
                "user_id": f"u{i % 17}",
                "item_id": f"t{(b * size + i) % 501}",
                "timestamp": now_ms,
                **({"position": i % 30, "request_id": f"r{b}"} if i % 2 else {"played_ms": 1000}),
            }
            for i in range(size)
        ]
    }


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_every_acknowledged_event_survives_sigkill_exactly_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
):
    env: dict[str, str] = {}
    if backend == "postgres":
        env["SEGUE_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    url = env.get("SEGUE_DATABASE_URL", f"sqlite:///{(tmp_path / 'data' / 'segue.db').resolve()}")
    acked: list[str] = []
    sent_unacked: list[int] = []
    stop = threading.Event()

    with live_server(tmp_path / "data", env=env) as (base, proc):

        def stream() -> None:
            b = 0
            with httpx.Client(timeout=5) as client:
                while not stop.is_set():
                    body = _batch(b, 100)
                    try:
                        r = client.post(base + "/v1/feedback", json=body)
                    except httpx.HTTPError:
                        sent_unacked.append(b)
                        return  # the server is gone
                    if r.status_code == 200:
                        assert r.json()["rejected"] == []
                        acked.extend(e["event_id"] for e in body["events"])  # type: ignore[index]
                    else:
                        sent_unacked.append(b)
                    b += 1

        writer = threading.Thread(target=stream)
        writer.start()
        deadline = time.monotonic() + 30
        while len(acked) < 3000 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        writer.join(10)

    assert len(acked) >= 3000, "the stream did not get going before the kill"
    log = SQLEventLog(create_db_engine(url))
    stored = [x.event.event_id for x in log.iter_from(0)]
    assert len(stored) == len(set(stored)), "an event was stored twice"
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events were lost, e.g. {sorted(missing)[:3]}"
    # a client retrying after the crash stores nothing twice
    with live_server(tmp_path / "data", env=env) as (base, _):
        for b in sent_unacked[:2]:
            r = httpx.post(base + "/v1/feedback", json=_batch(b, 100), timeout=10)
            assert r.status_code == 200
    stored_after = [x.event.event_id for x in log.iter_from(0)]
    assert len(stored_after) == len(set(stored_after))
    log.close()
