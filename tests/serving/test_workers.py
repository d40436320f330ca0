"""``segue serve --workers N``: several serving processes on one port, each following the
catalog that any of them (or ``segue catalog import``) writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from feedback.db import create_db_engine
from online.catalog import Catalog
from online.demo import generate_demo_catalog
from tests.serving.live import free_port

pytestmark = [pytest.mark.redis]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _serve(data_dir: Path, port: int, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", "from serving.cli import main; main()", "serve",
         "--port", str(port), "--log-level", "warning", *args],
        env={**os.environ, "SEGUE_DATA_DIR": str(data_dir), "SEGUE_EMBEDDING_DIM": "8", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the workers are the supervisor's children: stop them all
    )  # fmt: skip


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    if proc.stdout is None:
        return ""
    with proc.stdout:
        return proc.stdout.read().decode()


def test_more_than_one_worker_needs_a_separate_learner_and_redis(tmp_path: Path):
    for args, env, message in (
        (("--workers", "2"), {}, "--no-learner"),
        (("--workers", "2", "--no-learner"), {}, "SEGUE_REDIS_URL"),
    ):
        proc = _serve(tmp_path, free_port(), env, *args)
        assert proc.wait(60) == 2
        assert message in _stop(proc)


def test_workers_share_the_port_and_each_follows_catalog_changes_within_a_second(
    tmp_path: Path, redis_url: str, redis_prefix: str
):
    db = create_db_engine(f"sqlite:///{tmp_path / 'segue.db'}")
    with Catalog(db, embedding_dim=8) as catalog:
        catalog.upsert(generate_demo_catalog(400, dim=8, seed=3, unavailable_fraction=0.0))
    db.dispose()
    port = free_port()
    env = {"SEGUE_REDIS_URL": redis_url, "SEGUE_REDIS_PREFIX": redis_prefix,
           "SEGUE_SERVING_CATALOG_SYNC_S": "0.2"}  # fmt: skip
    proc = _serve(tmp_path, port, env, "--workers", "2", "--no-learner")
    base = f"http://127.0.0.1:{port}"

    def fresh(method: str, path: str, **kw: object) -> httpx.Response:
        # a new connection each time: the kernel hands it to either worker
        with httpx.Client(base_url=base, timeout=10) as client:
            return client.request(method, path, **kw)

    try:
        deadline = time.monotonic() + 120
        while len(_children(proc.pid)) < 2 or not all(
            _ready(fresh) for _ in range(6)
        ):  # both workers up
            assert proc.poll() is None, _stop(proc)
            assert time.monotonic() < deadline, "the workers did not become ready"
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert len(workers) >= 2

        # a new item posted to one worker is known to every worker a moment later
        new = {"id": "brand-new", "title": "New", "artist": "someone", "genres": ["pop"],
               "embedding": [0.1] * 8}  # fmt: skip
        assert fresh("POST", "/v1/items", json={"items": [new]}).json()["upserted"] == 1
        time.sleep(1.0)
        # DELETE answers 404 for an id the answering worker does not know
        assert {fresh("DELETE", "/v1/items/brand-new").status_code for _ in range(12)} == {204}

        # an item withdrawn through one worker leaves every worker's lists
        seen: dict[str, int] = {}
        for n in range(12):
            body = {"user_id": f"u{n}", "k": 30}
            for item in fresh("POST", "/v1/recommend", json=body).json()["items"]:
                seen[item["item_id"]] = seen.get(item["item_id"], 0) + 1
        popular = max(seen, key=lambda i: seen[i])
        assert seen[popular] >= 2  # an item lists kept showing
        assert fresh("DELETE", f"/v1/items/{popular}").status_code == 204
        time.sleep(1.0)
        for n in range(16):
            body = {"user_id": f"u{n}", "k": 30}
            rec = fresh("POST", "/v1/recommend", json=body).json()
            assert popular not in {i["item_id"] for i in rec["items"]}

        # a scrape reaching any worker counts every worker's lists (12 + 16 asked for), and
        # shows each worker's breakers and served version apart
        for _ in range(6):
            text = fresh("GET", "/metrics").text
            served = sum(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("segue_recommendations_total{")
            )
            assert served == 28
            breakers = {
                line.split('pid="')[1].split('"')[0]
                for line in text.splitlines()
                if line.startswith("segue_breaker_state{") and 'stage="candidates"' in line
            }
            # one series per worker (the supervisor's other children serve nothing)
            assert len(breakers) == 2 and breakers <= {str(pid) for pid in workers}
            assert text.count("segue_model_version_info{") >= 2
        assert proc.poll() is None
    finally:
        _stop(proc)


def _ready(fresh) -> bool:  # type: ignore[no-untyped-def]
    try:
        return fresh("GET", "/health/ready").status_code == 200
    except httpx.HTTPError:
        return False
