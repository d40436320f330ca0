"""Snapshots and rollback end to end, with real processes: SIGKILL, rollback under load.

- ``segue learn`` killed with SIGKILL at seeded random moments (many of them while it writes a
  snapshot) always leaves a ``CURRENT`` that loads and verifies, and a final clean run ends
  with exactly the models of a run that was never interrupted;
- ``segue snapshots rollback V`` while a client asks for lists without pause: no request fails
  or falls back, and the answers switch to ``V`` (a ``--no-learner`` service reloading
  ``CURRENT``, and ``segue serve`` with its embedded learner).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest

from feedback.db import create_db_engine
from feedback.log import SQLEventLog
from online.catalog import Catalog
from online.demo import generate_demo_catalog
from online.engine import Engine
from online.learner import Learner, open_engine
from serving.settings import Settings, load_settings
from snapshots import SnapshotStore
from tests.online.conftest import T0, World
from tests.serving.live import live_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "SEGUE_EMBEDDING_DIM": "16",
    "SEGUE_ENGINE_SEED": "5",
    "SEGUE_ENGINE_N_FACTORS": "8",
    "SEGUE_LEARNER_ATTRIBUTION_WINDOW_S": "600",
    "SEGUE_LEARNER_READ_BATCH": "50",
    "SEGUE_SNAPSHOT_EVERY_EVENTS": "1",  # a snapshot after every batch of 50 events
    "SEGUE_SNAPSHOT_KEEP": "4",
    "SEGUE_SERVING_BUDGET_MS": "3000",  # a slow shared machine must not look like a failure
}
ROUNDS = 4
USERS = ("u0", "u1", "u2", "u5", "stranger")


def _settings(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The very settings the processes read from ``ENV``."""
    for name, value in {**ENV, "SEGUE_DATA_DIR": str(data_dir)}.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def _fill(settings: Settings, lists: int) -> tuple[Catalog, SQLEventLog]:
    """A 300-item catalog and ``lists`` x 8 x 2 events (impressions, plays and skips)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = create_db_engine(settings.resolved_database_url())
    catalog = Catalog(db, embedding_dim=16)
    catalog.upsert(generate_demo_catalog(300, n_artists=30, n_genres=8, dim=16, seed=3, now=T0))
    log = SQLEventLog(db)
    world = World(catalog, seed=1)
    rng = np.random.default_rng(2)
    for step in range(lists):
        items = [str(i) for i in rng.choice(catalog.ids, 8, replace=False)]
        log.append(world.respond(f"u{step % 6}", f"r{step}", items))
    return catalog, log


def _fingerprint(engine: Engine, catalog: Catalog) -> dict[str, object]:
    items = [catalog.get(str(i)) for i in catalog.ids[:60]]
    return {
        "relevance": {
            u: np.round(engine.relevance.predict_many(u, items, {}), 9).tolist()  # type: ignore[arg-type]
            for u in USERS
        },
        "lists": {
            u: engine.recommend(u, 8, {}, explore=False, now=T0 + 3600).item_ids for u in USERS
        },
        "popular": engine.popular_now(20, now=T0 + 3600),
        "events_learned": engine.events_learned,
        "offset": engine.offset,
    }


def _learn_process(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from serving.cli import main; main()", "learn", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_sigkilled_learner_leaves_a_good_current_and_ends_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data = tmp_path / "data"
    settings = _settings(data, monkeypatch)
    # enough events that four kills land before the log is used up, however fast the learner
    catalog, log = _fill(settings, 400)  # 6400 events
    env = {**ENV, "SEGUE_DATA_DIR": str(data)}
    root = settings.snapshot_dir()
    rng = random.Random(11)
    offsets: list[int] = []
    mid_write = 0
    for _round in range(ROUNDS):
        proc = _learn_process(env, "--log-level", "error")
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline().decode()
            assert line.startswith("learning from offset"), line
            time.sleep(rng.uniform(0.2, 0.7))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            proc.stdout.close()

        mid_write += any(p.name.startswith(".staging-") for p in root.iterdir())
        store = SnapshotStore(root)
        loaded = store.load_current()
        assert loaded is not None, "no snapshot after a kill"
        assert not loaded.fell_back, loaded.skipped
        assert loaded.snapshot.version == store.pointer().version  # type: ignore[union-attr]
        for version in store.versions():  # no half-written version is ever visible
            store.verify(version)
        offsets.append(loaded.resume_offset)
        engine = open_engine(catalog, store, settings.engine, settings.learner)
        assert engine.events_learned == loaded.snapshot.manifest.events_total
        assert engine.offset + 1 == loaded.resume_offset

    assert offsets == sorted(offsets) and offsets[-1] > offsets[0], "the learner made no progress"
    assert offsets[-1] <= log.last_offset(), "the kills came too late to prove anything"
    # a staging directory left behind means the kill landed while a snapshot was written
    assert mid_write, "no kill landed while a snapshot was written; the test proved nothing"

    # the clean run cuts one snapshot at the end
    final = _learn_process(
        {**env, "SEGUE_SNAPSHOT_EVERY_EVENTS": "1000000"}, "--once", "--log-level", "error"
    )
    out, _ = final.communicate(timeout=120)
    assert final.returncode == 0, out.decode()
    store = SnapshotStore(root)
    resumed = open_engine(catalog, store, settings.engine, settings.learner)
    manifest = store.manifest(resumed.base_version)
    assert manifest.offset == log.last_offset() + 1
    assert manifest.events_total == log.last_offset() == resumed.events_learned

    straight = Engine(catalog, settings.engine, settings.learner)
    Learner(straight, log).run_until_caught_up()
    assert _fingerprint(resumed, catalog) == _fingerprint(straight, catalog)
    log.close()


# -- rollback under load ---------------------------------------------------------------------


def _two_snapshots(data: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Cut v1 (half the log) and v2 (all of it, CURRENT) as a learner would."""
    settings = _settings(data, monkeypatch)
    catalog, log = _fill(settings, 60)
    store = SnapshotStore(settings.snapshot_dir())
    learner = Learner(Engine(catalog, settings.engine, settings.learner), log, store=store)
    for _ in range(10):
        learner.step()
    v1 = learner.cut()
    learner.run_until_caught_up()
    v2 = learner.cut()
    assert v1 is not None and v2 is not None and store.pointer().version == v2.version  # type: ignore[union-attr]
    log.close()
    catalog.close()
    return v1.version, v2.version


class Client:
    """Asks for lists without pause in a thread; keeps every answer's status and body."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.answers: list[tuple[float, int, dict[str, object]]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        n = 0
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                body = {"user_id": USERS[n % len(USERS)], "k": 8}
                n += 1
                try:
                    r = client.post(self.base + "/v1/recommend", json=body)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    continue
                self.answers.append((time.monotonic(), r.status_code, r.json()))

    def versions_since(self, t: float) -> list[str]:
        return [str(a[2].get("model_version")) for a in self.answers if a[0] >= t]

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _rollback_under_load(base: str, data: Path, old: str, target: str) -> None:
    with Client(base) as client:
        deadline = time.monotonic() + 30
        while len(client.answers) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.answers, "the service answered nothing"
        assert client.answers[-1][2]["model_version"].startswith(old)  # type: ignore[union-attr]
        started = time.monotonic()
        rollback = subprocess.run(
            [
                sys.executable,
                "-c",
                "from serving.cli import main; main()",
                "snapshots",
                "--dir",
                str(data / "snapshots"),
                "rollback",
                target,
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )
        assert rollback.returncode == 0, rollback.stderr.decode()
        deadline = started + 20
        while time.monotonic() < deadline:
            seen = client.versions_since(started)
            if seen and seen[-1].startswith(target):
                break
            time.sleep(0.05)
        switched = time.monotonic()
        time.sleep(0.3)  # a few more answers after the switch
    failed = [(s, b) for _, s, b in client.answers if s != 200 or b.get("fallback") is not None]
    assert not client.errors, client.errors[:3]
    assert not failed, failed[:3]
    after = client.versions_since(switched)
    assert after and all(v.startswith(target) for v in after), after[:5]
    # once the new version is served, the old one never comes back
    versions = [str(b["model_version"]).split("+")[0] for _, _, b in client.answers]
    first = versions.index(target)
    assert set(versions[:first]) == {old} and set(versions[first:]) == {target}


def test_rollback_under_load_reloading_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = tmp_path / "data"
    v1, v2 = _two_snapshots(data, monkeypatch)
    with live_server(data, env=ENV, args=("--no-learner",)) as (base, _proc):
        _rollback_under_load(base, data, v2, v1)


def test_rollback_under_load_embedded_learner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = tmp_path / "data"
    v1, v2 = _two_snapshots(data, monkeypatch)
    with live_server(data, env=ENV) as (base, _proc):
        _rollback_under_load(base, data, v2, v1)


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in [n for n in os.environ if n.startswith("SEGUE_")]:
        monkeypatch.delenv(name)
    yield


def test_reloader_retries_a_snapshot_it_could_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from fastapi.testclient import TestClient

    import serving.services
    from serving.app import create_app

    data = tmp_path / "data"
    v1, v2 = _two_snapshots(data, monkeypatch)
    monkeypatch.setenv("SEGUE_SERVING_RELOAD_POLL_S", "0.05")
    real = serving.services.open_engine
    failures = []

    def flaky(*args: object, **kwargs: object) -> Engine:
        if not failures:
            failures.append("once")
            raise OSError("the shared file system hiccuped")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    with TestClient(create_app(load_settings(), embedded_learner=False)) as client:
        assert (
            client.post("/v1/recommend", json={"user_id": "u1"})
            .json()["model_version"]
            .startswith(v2)
        )
        monkeypatch.setattr(serving.services, "open_engine", flaky)
        SnapshotStore(data / "snapshots", by="operator:test").rollback(v1)
        deadline = time.monotonic() + 20
        version = ""
        while time.monotonic() < deadline and not version.startswith(v1):
            time.sleep(0.05)
            version = client.post("/v1/recommend", json={"user_id": "u1"}).json()["model_version"]
    assert failures == ["once"]
    assert version.startswith(v1), "the service kept the old snapshot after one failed load"
