"""The HNSW retriever's saved form: hnswlib's state as arrays, and the older hnsw.bin."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from online.retrieval import HNSWRetriever


def _answers(r: HNSWRetriever, queries: np.ndarray) -> list[list[int]]:
    return [r.query(q, 20)[0].tolist() for q in queries]


def test_saved_graph_loads_identical_and_keeps_learning_identically(tmp_path: Path):
    rng = np.random.default_rng(3)
    r = HNSWRetriever(8, num_threads=1, capacity=256, seed=5)
    r.upsert(np.arange(3_000), rng.standard_normal((3_000, 8)).astype(np.float32))
    r.remove(np.arange(0, 3_000, 7))
    r.save(tmp_path / "new")
    assert not (tmp_path / "new" / "hnsw.bin").exists()
    # the format segue wrote before: hnswlib's own file beside the same table
    old = tmp_path / "old"
    old.mkdir()
    assert r._index is not None
    r._index.save_index(str(old / "hnsw.bin"))
    for name in ("vectors.npy", "masks.npz"):
        shutil.copy(tmp_path / "new" / name, old / name)
    meta = json.loads((tmp_path / "new" / "meta.json").read_text())
    del meta["graph"]
    (old / "meta.json").write_text(json.dumps(meta))

    loaded = [HNSWRetriever.load(tmp_path / "new"), HNSWRetriever.load(old)]
    queries = rng.standard_normal((40, 8)).astype(np.float32)
    for other in loaded:
        assert other.stats["graph_slots"] == r.stats["graph_slots"]
        assert len(other) == len(r)
        assert _answers(other, queries) == _answers(r, queries)
    fresh = rng.standard_normal((2_000, 8)).astype(np.float32)
    for x in (r, *loaded):  # incremental writes into the loaded graphs, past their capacity
        for start in range(0, 2_000, 250):
            x.upsert(np.arange(2_500 + start, 2_750 + start), fresh[start : start + 250])
        x.remove(np.arange(10, 60))
    for other in loaded:
        assert _answers(other, queries) == _answers(r, queries)
        assert other.stats["graph_slots"] == r.stats["graph_slots"]
