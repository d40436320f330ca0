"""The metrics' own bookkeeping (the multi-worker scrape itself is in test_workers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from serving.metrics import Metrics


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_starting_worker_forgets_the_live_gauges_of_dead_workers_only(tmp_path: Path):
    dead, alive = _dead_pid(), os.getpid()
    for pid in (dead, alive):
        (tmp_path / f"gauge_liveall_{pid}.db").write_bytes(b"")
        (tmp_path / f"counter_{pid}.db").write_bytes(b"")
    metrics = Metrics()
    assert metrics.forget_dead_workers() == []  # one process: nothing shared, nothing done
    metrics.shared_dir = str(tmp_path)
    assert metrics.forget_dead_workers() == [dead]
    # the dead worker's counts stay in the sums; its gauges no longer say anything
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"counter_{dead}.db", f"counter_{alive}.db", f"gauge_liveall_{alive}.db"]
    )


def test_the_served_version_is_the_one_series_at_one():
    metrics = Metrics()
    metrics.set_model_version("v1")
    metrics.set_model_version("v2")
    text = metrics.render().decode()
    lines = [line for line in text.splitlines() if line.startswith("segue_model_version_info{")]
    assert lines == ['segue_model_version_info{version="v2"} 1.0']
