"""The segue command as an operator and a researcher use it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from feedback.contract import Rejection
from feedback.db import create_db_engine
from feedback.events import Event
from feedback.log import SQLEventLog
from online.catalog import Catalog
from online.demo import generate_demo_catalog
from online.learner import Learner
from serving.cli import app
from snapshots import SnapshotStore
from tests.online.conftest import T0, World, make_engine
from tests.serving.live import live_server

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEGUE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("SEGUE_SNAPSHOT_DIR", raising=False)
    return tmp_path / "data"


def _log(data_dir: Path) -> SQLEventLog:
    data_dir.mkdir(parents=True, exist_ok=True)
    return SQLEventLog(create_db_engine(f"sqlite:///{(data_dir / 'segue.db').resolve()}"))


def test_feedback_stats_and_dead_letter_export(data_dir: Path, tmp_path: Path):
    log = _log(data_dir)
    log.ingest(
        [Event("a", "play", "u", "t1", T0, played_ms=1), Event("b", "skip", "u", "t2", T0)],
        [Rejection(2, "c", "unknown_type", "type 'like' is not one of ...")],
        raw=[{}, {}, {"event_id": "c", "type": "like"}],
    )
    log.dead_letter_body(b"{oops", code="malformed_json", reason="not JSON")
    r = runner.invoke(app, ["feedback", "stats", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {
        "last_offset": 2,
        "events_by_type": {"play": 1, "skip": 1},
        "dead_letters_by_code": {"unknown_type": 1, "malformed_json": 1},
    }
    out = tmp_path / "dl.jsonl"
    r = runner.invoke(
        app, ["feedback", "dead-letters", "--code", "unknown_type", "--export", str(out)]
    )
    assert r.exit_code == 0, r.output
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["payload"] == '{"event_id":"c","type":"like"}'
    r = runner.invoke(app, ["feedback", "dead-letters"])
    assert "malformed_json" in r.output and "unknown_type" in r.output


def test_a_bad_setting_stops_the_command_naming_the_variable(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("SEGUE_FEEDBACK_MAX_BATCH_EVENTS", "-1")
    r = runner.invoke(app, ["feedback", "stats"])
    assert r.exit_code == 2
    assert "SEGUE_FEEDBACK_MAX_BATCH_EVENTS" in r.output


def test_catalog_import_reports_rejected_rows(data_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SEGUE_EMBEDDING_DIM", "2")
    src = tmp_path / "items.jsonl"
    src.write_text(
        '{"id": "a", "artist": "x", "genres": ["pop"], "embedding": [1, 0]}\n'
        '{"id": "b", "artist": "y", "embedding": [1, 2, 3]}\n'
        '{"title": "no id"}\n'
    )
    rejected = tmp_path / "rejected.csv"
    r = runner.invoke(app, ["catalog", "import", str(src), "--rejected", str(rejected)])
    assert r.exit_code == 1  # some rows were rejected: scripts notice
    assert "3 rows, 1 accepted" in r.output
    lines = rejected.read_text().splitlines()
    assert lines[0] == "row,id,reason" and len(lines) == 3
    assert runner.invoke(app, ["catalog", "stats"]).output.startswith("items: 1, available: 1")


def test_ope_evaluates_a_snapshot_on_the_lists_the_service_logged(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A researcher exports the lists a service served (with their propensities and rewards,
    stored by the learner) and evaluates a model snapshot on them."""
    monkeypatch.setenv("SEGUE_EMBEDDING_DIM", "16")
    data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(f"sqlite:///{(data_dir / 'segue.db').resolve()}", embedding_dim=16)
    catalog.upsert(generate_demo_catalog(400, n_artists=40, n_genres=8, dim=16, seed=7, now=T0))
    engine = make_engine(catalog)
    world = World(catalog)
    log = _log(data_dir)
    impressions = 0
    for step in range(80):
        user = f"u{step % 6}"
        rec = engine.recommend(user, 5, {"device": "ios"}, now=world.t)
        events = world.respond(user, rec.request_id, rec.item_ids)
        impressions += sum(e.type == "impression" for e in events)
        log.append(events)
    # a later organic play moves event time past every list's attribution window
    window = engine.learner_settings.attribution_window_s
    log.append([Event("late", "play", "u0", rec.item_ids[0], world.t + 2 * window)])
    store = SnapshotStore(data_dir / "snapshots")
    learner = Learner(engine, log, store=store)
    learner.run_until_caught_up()
    result = learner.cut()
    assert result is not None and result.promoted

    log_file = tmp_path / "decisions.jsonl"
    r = runner.invoke(app, ["feedback", "export-decisions", str(log_file)])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"wrote 80 lists to {log_file}"
    rows = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert sum(len(row["impressed"]) for row in rows) == impressions
    assert all(0 < e["propensity"] <= 1 for row in rows for e in row["slate"])

    out = tmp_path / "ope"
    r = runner.invoke(
        app,
        ["ope", str(log_file), "--snapshot", result.version, "--n-boot", "20", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    summary = (out / "summary.csv").read_text()
    assert f"snapshot:{result.version}" in summary
    assert json.loads((out / "config.json").read_text())["snapshots"] == [result.version]


def test_the_event_log_exports_to_what_replay_reads(data_dir: Path, tmp_path: Path):
    log = _log(data_dir)
    events = [
        Event(f"e{i}", "play", f"u{i % 7}", f"t{(i * 3) % 40}", T0 + i, played_ms=60_000)
        for i in range(300)
    ]
    log.append(events)
    exported = tmp_path / "events.jsonl"
    r = runner.invoke(app, ["feedback", "export", str(exported)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [row["event_id"] for row in rows] == [e.event_id for e in events]
    assert [row["offset"] for row in rows] == sorted(row["offset"] for row in rows)
    out = tmp_path / "replay"
    r = runner.invoke(
        app,
        [
            "replay",
            str(exported),
            "--policies",
            "random,popular",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    summary = (out / "summary.csv").read_text()
    assert "random" in summary and "popular" in summary


def test_segue_serve_logs_its_own_lines_with_time_and_level(tmp_path: Path):
    """An operator reads what the service did (here: generating the demo catalog) in its
    log, with a time stamp and a level, not only uvicorn's lines."""
    with live_server(
        tmp_path / "data",
        env={"SEGUE_SERVING_DEMO_ITEMS": "300"},
        args=("--demo", "--log-level", "info"),
    ) as (_, proc):
        # live: the catalog was generated before the port opened
        proc.terminate()
        proc.wait(30)
        out = proc.stdout.read().decode() if proc.stdout else ""
    line = next(x for x in out.splitlines() if "generating a demo catalog" in x)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO segue\.serving ", line), line
