"""How fast and how exactly the learner obeys a rollback: mid-batch, with per-phase timings."""

from __future__ import annotations

from pathlib import Path

import pytest

from online.catalog import Catalog
from online.learner import Learner
from snapshots import SnapshotStore
from tests.online.test_learner import Stream, straight_run


@pytest.fixture
def stream(small_catalog: Catalog, tmp_path: Path) -> Stream:
    s = Stream(small_catalog, tmp_path)
    yield s
    s.log.close()


def test_a_rollback_stops_a_batch_between_chunks_and_ends_exactly(stream: Stream, tmp_path: Path):
    stream.add(80)
    store = SnapshotStore(tmp_path / "snapshots")
    swaps: list[str] = []
    learner = Learner(
        stream.open(store), stream.log, store=store, on_swap=lambda e: swaps.append(e.base_version)
    )
    learner.step()
    v1 = learner.cut()
    assert v1 is not None
    learner.step()
    assert learner.cut() is not None
    operator = SnapshotStore(store.root, by="operator:test")

    chunks = 0
    learn = learner.engine.learn

    def learn_then_roll_back(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal chunks
        chunks += 1
        if chunks == 1:  # the operator acts while the first chunk is being learned
            operator.rollback(v1.version, mode="replay")
        return learn(*args, **kwargs)

    learner.engine.learn = learn_then_roll_back  # type: ignore[method-assign]
    report = learner.step()
    assert chunks == 1, "the rest of the batch was learned on the state being replaced"
    assert report.cut is None and swaps == []
    assert learner.step().swapped_to == v1.version
    assert swaps == [v1.version]
    assert {"verify", "cf_index", "relevance", "load"} <= set(learner.swap_timings)
    learner.run_until_caught_up()
    # replayed from v1: the same state as a learner that never stopped
    assert learner.engine.events_learned == stream.total
    assert stream.fingerprint(learner.engine) == stream.fingerprint(straight_run(stream))
