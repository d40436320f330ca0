"""A writer killed by SIGKILL at random moments never leaves a bad CURRENT or a partial version."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from snapshots import SnapshotStore

WRITER = r"""
import os, sys
from snapshots import SnapshotStore

store = SnapshotStore(sys.argv[1], keep=3)
loaded = store.load_current()
offset = loaded.snapshot.manifest.offset if loaded else 0
print("ready", flush=True)
chunk = os.urandom(1 << 20)
while True:
    offset += 1000
    with store.stage() as staging:
        with open(staging.file("relevance.bin"), "wb") as fh:
            for _ in range(6):  # 6 MB in 1 MB writes, so kills land mid-file
                fh.write(chunk)
        staging.file("ann/index.bin").write_bytes(chunk[: 300_000])
        staging.file("counters.json").write_text('{"offset": %d}' % offset)
        staging.commit(offset=offset, events=1000, metrics={"relevance_auc": 0.8})
"""


@pytest.mark.slow
def test_sigkill_during_writes_always_leaves_a_loadable_current(tmp_path: Path):
    root = tmp_path / "snapshots"
    rng = random.Random(7)
    seen_versions: set[str] = set()
    for _round in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.15, 0.7))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

        store = SnapshotStore(root)
        loaded = store.load_current()
        if loaded is None:  # killed before the very first commit finished
            assert store.versions() == []
            continue
        assert not loaded.fell_back, loaded.skipped
        assert loaded.snapshot.version == store.pointer().version
        assert (loaded.snapshot.path / "counters.json").read_text() == (
            f'{{"offset": {loaded.snapshot.manifest.offset}}}'
        )
        for version in store.versions():  # no half-written version is ever visible
            store.verify(version)
        seen_versions.update(store.versions())

    assert len(seen_versions) >= 3, "the writer never got going; the test proved nothing"
    SnapshotStore(root).prune(3)
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".staging-")]
    assert leftovers == []
