"""The store as the learner and the service use it: write, load, verify, fall back, guard."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from snapshots import (
    CorruptSnapshotError,
    CutSchedule,
    Manifest,
    NoGoodSnapshotError,
    SnapshotError,
    SnapshotStore,
    UnknownVersionError,
)
from snapshots.manifest import is_version, version_key


def test_fresh_store_has_nothing_to_load(store):
    assert store.load_current() is None
    assert store.pointer() is None
    assert store.versions() == []


def test_commit_writes_manifest_and_moves_current(store, cut):
    first = cut(store, 100)
    second = cut(store, 250, events=150)
    assert first.promoted and second.promoted
    assert [first.version, second.version] == store.versions()
    assert version_key(first.version) == 1 and version_key(second.version) == 2
    assert is_version(second.version)

    m = json.loads((store.root / second.version / "manifest.json").read_text())
    assert m["parent"] == first.version
    assert m["offset"] == 250 and m["watermark"] == 1_700_000_250.0
    assert m["events"] == 150 and m["events_total"] == 250
    assert m["metrics"] == {"relevance_auc": 0.8, "relevance_logloss": 0.4}
    assert m["settings_hash"] == "abc123" and m["libraries"] == {"river": "0.26.1"}
    assert set(m["files"]) == {"relevance.pkl", "bandit/vw.model", "counters.json"}
    assert m["files"]["relevance.pkl"]["size"] == 2048
    assert len(m["files"]["relevance.pkl"]["sha256"]) == 64

    pointer = store.pointer()
    assert pointer.version == second.version and pointer.mode == "continue"
    assert pointer.resume_offset == 250 and pointer.by == "learner"

    loaded = SnapshotStore(store.root).load_current()
    assert loaded.snapshot.version == second.version and not loaded.fell_back
    assert (loaded.snapshot.path / "counters.json").read_text() == '{"offset": 250}'
    assert loaded.snapshot.manifest.offset == 250


def test_default_libraries_are_read_without_importing(tmp_path):
    store = SnapshotStore(tmp_path)
    with store.stage() as staging:
        staging.file("x").write_bytes(b"x")
        result = staging.commit(offset=1, events=1)
    assert "python" in result.snapshot.manifest.libraries


def test_leaving_the_block_without_commit_discards_staging(store, cut):
    cut(store, 10)
    with pytest.raises(RuntimeError), store.stage() as staging:
        staging.file("relevance.pkl").write_bytes(b"half")
        raise RuntimeError("learner crashed while saving")
    assert not any(p.name.startswith(".staging-") for p in store.root.iterdir())
    assert len(store.versions()) == 1


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: (p / "manifest.json").write_text("{}"), "reserved"),
        (lambda p: (p / "link").symlink_to("/etc/passwd"), "symbolic links"),
    ],
)
def test_commit_refuses_bad_staging_contents(store, make, match):
    with store.stage() as staging:
        make(staging.path)
        with pytest.raises(SnapshotError, match=match):
            staging.commit(offset=1, events=1)
    assert store.versions() == [] and store.pointer() is None


def test_flipped_byte_is_refused_naming_the_file_and_load_falls_back(store, cut, corrupt):
    good = cut(store, 100)
    bad = cut(store, 200)
    corrupt(bad.snapshot.path / "bandit" / "vw.model")

    with pytest.raises(CorruptSnapshotError, match=r"bandit/vw\.model: sha256 mismatch"):
        store.verify(bad.version)

    loaded = SnapshotStore(store.root).load_current()
    assert loaded.snapshot.version == good.version
    assert loaded.fell_back and loaded.resume_offset == 100
    (skipped_version, why), *_ = loaded.skipped
    assert skipped_version == bad.version and "vw.model" in why
    assert store.pointer().version == bad.version  # load does not move CURRENT


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: (p / "relevance.pkl").unlink(), r"relevance\.pkl: missing"),
        (lambda p: (p / "relevance.pkl").write_bytes(b"short"), r"relevance\.pkl: size 5 bytes"),
        (lambda p: (p / "stray.bin").write_bytes(b"?"), r"stray\.bin: not in the manifest"),
        (lambda p: (p / "manifest.json").unlink(), r"manifest\.json: missing"),
        (lambda p: (p / "manifest.json").write_text("{not json"), r"manifest\.json: not valid"),
        (
            lambda p: (p / "manifest.json").write_text(
                (p / "manifest.json").read_text().replace('"offset": 200', '"offset": 150')
            ),
            r"manifest\.json: manifest checksum mismatch",
        ),
    ],
)
def test_incomplete_or_edited_snapshots_are_refused(store, cut, damage, match):
    good = cut(store, 100)
    bad = cut(store, 200)
    damage(bad.snapshot.path)
    with pytest.raises(CorruptSnapshotError, match=match):
        store.verify(bad.version)
    assert SnapshotStore(store.root).load_current().snapshot.version == good.version


def test_fallback_skips_held_back_versions(store, cut, corrupt):
    base = cut(store, 100, auc=0.80)
    held = cut(store, 200, auc=0.60)
    assert not held.promoted
    top = cut(store, 300, auc=0.80)
    corrupt(top.snapshot.path / "relevance.pkl")
    loaded = SnapshotStore(store.root).load_current()
    assert loaded.snapshot.version == base.version
    assert [v for v, _ in loaded.skipped] == [top.version]


def test_nothing_good_raises_listing_every_refusal(store, cut, corrupt):
    a = cut(store, 100)
    b = cut(store, 200)
    for result in (a, b):
        corrupt(result.snapshot.path / "relevance.pkl")
    with pytest.raises(NoGoodSnapshotError) as info:
        store.load_current()
    assert [v for v, _ in info.value.skipped] == [b.version, a.version]


def test_unknown_version(store, cut):
    cut(store, 1)
    with pytest.raises(UnknownVersionError, match="v000099"):
        store.verify("v000099-20260101T000000Z")
    with pytest.raises(UnknownVersionError):
        store.rollback("../etc")


# ---------------------------------------------------------------- the guard


def test_guard_holds_back_an_auc_drop_and_a_logloss_rise(store, cut):
    base = cut(store, 100, auc=0.80, logloss=0.40)
    ok = cut(store, 200, auc=0.76, logloss=0.48)  # within 0.05 / 0.1
    drop = cut(store, 300, auc=0.70, logloss=0.40)
    rise = cut(store, 400, auc=0.76, logloss=0.70)
    assert ok.promoted
    assert not drop.promoted and "relevance_auc fell 0.0600" in drop.reason
    assert not rise.promoted and "relevance_logloss rose 0.2200" in rise.reason
    assert store.pointer().version == ok.version
    rows = {r.version: r for r in store.list_versions()}
    assert rows[drop.version].held_back.startswith("relevance_auc fell")
    assert rows[ok.version].current and rows[ok.version].held_back is None
    assert base.snapshot.manifest.promotion.baseline is None


def test_guard_compares_with_the_last_promoted_ancestor(store, cut):
    cut(store, 100, auc=0.80)
    held = cut(store, 200, auc=0.70)
    slid = cut(store, 300, auc=0.68)  # close to its held-back parent, far below the baseline
    assert slid.snapshot.manifest.parent == held.version
    assert not slid.promoted and "0.8000 -> 0.6800" in slid.reason
    assert slid.snapshot.manifest.promotion.baseline == store.versions()[0]


def test_missing_metric_does_not_block(store, cut):
    cut(store, 100, auc=0.80)
    assert cut(store, 200, auc=None).promoted


# ---------------------------------------------------------------- rollback and the pointer


def test_rollback_modes_are_visible_in_the_pointer(store, cut):
    v1 = cut(store, 100)
    cut(store, 200)
    v3 = cut(store, 300)

    operator = SnapshotStore(store.root, by="operator:ana@host")
    result = operator.rollback(v1.version)
    p = SnapshotStore(store.root).pointer()
    assert (p.version, p.mode, p.by, p.reason) == (
        v1.version,
        "continue",
        "operator:ana@host",
        "rollback",
    )
    assert p.previous == v3.version and p.seq == result.pointer.seq
    assert p.resume_offset == 300  # a restarted learner does not re-learn 100..300
    assert any("continues with new events only" in line for line in result.describe())

    restarted = SnapshotStore(store.root).load_current()
    assert restarted.snapshot.version == v1.version and restarted.resume_offset == 300

    replay = operator.rollback(v1.version, mode="replay")
    assert SnapshotStore(store.root).load_current().resume_offset == 100
    p = store.pointer()
    assert p.mode == "replay" and p.resume_offset == 100 and p.seq == result.pointer.seq + 1
    assert any("re-learns the event log from offset 100" in line for line in replay.describe())
    on_disk = json.loads((store.root / "CURRENT").read_text())
    assert on_disk["mode"] == "replay" and on_disk["version"] == v1.version

    with pytest.raises(ValueError, match="mode"):
        operator.rollback(v1.version, mode="rewind")


def test_rollback_refuses_a_corrupt_target(store, cut, corrupt):
    v1 = cut(store, 100)
    v2 = cut(store, 200)
    corrupt(v1.snapshot.path / "counters.json", at=0)
    with pytest.raises(CorruptSnapshotError, match=r"counters\.json"):
        store.rollback(v1.version)
    assert store.pointer().version == v2.version


def test_poll_reports_changes_made_by_others_once(store, cut):
    learner = SnapshotStore(store.root)
    service = SnapshotStore(store.root)
    assert service.poll() is None
    v1 = learner.stage()
    v1.file("m").write_bytes(b"1")
    first = v1.commit(offset=10, events=10)
    assert learner.poll() is None  # its own promotion
    assert service.poll().version == first.version
    assert service.poll() is None

    SnapshotStore(store.root, by="operator").rollback(first.version, mode="replay")
    seen = learner.poll()
    assert seen.mode == "replay" and seen.by == "operator"
    assert service.poll().mode == "replay"
    assert learner.poll() is None and service.poll() is None


def test_learner_that_missed_a_rollback_does_not_undo_it(store, cut):
    v1 = cut(store, 100)
    cut(store, 200)
    SnapshotStore(store.root, by="operator").rollback(v1.version)
    late = cut(store, 300)  # the learner has not polled since
    assert not late.promoted and "CURRENT was moved to" in late.reason
    assert store.pointer().version == v1.version

    assert store.poll().version == v1.version
    store.load(v1.version)
    after = cut(store, 400)
    assert after.promoted and after.snapshot.manifest.parent == v1.version


def test_a_crash_between_rename_and_pointer_leaves_previous_current(store, cut, monkeypatch):
    v1 = cut(store, 100)
    import snapshots.store as store_module

    def crash(*args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(store_module, "write_pointer", crash)
    with pytest.raises(OSError, match="power cut"):
        cut(store, 200)
    monkeypatch.undo()
    loaded = SnapshotStore(store.root).load_current()
    assert loaded.snapshot.version == v1.version and not loaded.fell_back
    assert len(store.versions()) == 2  # complete but never promoted


# ---------------------------------------------------------------- retention


def test_retention_keeps_last_n_plus_pinned_and_current(tmp_path, cut):
    store = SnapshotStore(tmp_path, keep=3)
    results = [cut(store, 100 * i) for i in range(1, 4)]
    store.pin(results[0].version)
    SnapshotStore(tmp_path, by="operator").rollback(results[1].version)
    store.poll()
    more = [cut(store, 100 * i) for i in range(4, 8)]
    kept = set(store.versions())
    newest3 = {r.version for r in more[-3:]}
    assert kept == newest3 | {results[0].version}  # CURRENT moved on with the new commits

    pinned_current = SnapshotStore(tmp_path, by="operator")
    pinned_current.rollback(more[1].version)
    removed = pinned_current.prune(1)  # keeps the newest, the pinned one and CURRENT only
    assert removed == [more[2].version]
    assert set(store.versions()) == {more[1].version, more[-1].version, results[0].version}
    store.unpin(results[0].version)
    assert store.prune(1) == [results[0].version]
    assert not (tmp_path / ".trash").exists() or not any((tmp_path / ".trash").iterdir())


def test_prune_validates_keep_and_pin_knows_versions(store, cut):
    cut(store, 1)
    with pytest.raises(ValueError, match="keep"):
        store.prune(0)
    with pytest.raises(UnknownVersionError):
        store.pin("v000009-20260101T000000Z")
    assert store.unpin(store.versions()[0]) is False


def test_prune_removes_staging_left_by_a_dead_writer_only(store, cut):
    cut(store, 1)
    dead = store.root / ".staging-deadbeef"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "x").write_bytes(b"partial")
    with store.stage() as live:
        live.file("m").write_bytes(b"in progress")
        store.prune(5)
        assert not dead.exists()
        assert live.path.exists()


# ---------------------------------------------------------------- manifest and schedule


def test_manifest_round_trip_and_checksum(store, cut):
    m = cut(store, 42).snapshot.manifest
    assert Manifest.from_json(m.to_json()) == m
    body = json.loads(m.to_json())
    body["events"] = 7
    with pytest.raises(ValueError, match="checksum"):
        Manifest.from_json(json.dumps(body).encode())


def test_non_finite_metrics_are_stored_as_null(store):
    with store.stage() as staging:
        staging.file("m").write_bytes(b"1")
        result = staging.commit(offset=1, events=1, metrics={"relevance_auc": float("nan")})
    raw = (Path(result.snapshot.path) / "manifest.json").read_text()
    assert '"relevance_auc": null' in raw
    assert store.verify(result.version).manifest.metrics["relevance_auc"] is None


def test_cut_schedule_by_events_or_time():
    s = CutSchedule(every_events=1000, every_seconds=30.0, now=0.0)
    assert not s.due(now=100.0)  # nothing learned, nothing to save
    s.record(999)
    assert not s.due(now=10.0)
    s.record()
    assert s.due(now=10.0)
    s.reset(now=10.0)
    s.record(5)
    assert not s.due(now=39.0) and s.due(now=40.0)
    with pytest.raises(ValueError):
        CutSchedule(0, 1.0)


def test_settings_env_prefix_and_bad_values(monkeypatch, tmp_path):
    from pydantic import ValidationError

    from snapshots import PromotionGuard, SnapshotSettings

    monkeypatch.setenv("SEGUE_SNAPSHOT_KEEP", "4")
    monkeypatch.setenv("SEGUE_SNAPSHOT_MAX_REWARD_DROP", "0.01")
    monkeypatch.setenv("SEGUE_SNAPSHOT_DIR", str(tmp_path / "snaps"))
    s = SnapshotSettings()
    assert s.keep == 4 and s.resolved_dir() == tmp_path / "snaps"
    assert {r.metric for r in PromotionGuard.from_settings(s).rules} == {
        "relevance_auc",
        "relevance_logloss",
        "bandit_reward",
    }
    store = SnapshotStore.from_settings(s)
    assert store.keep == 4 and store.root == tmp_path / "snaps"
    assert SnapshotSettings.model_fields["keep"].description.startswith("Retention")
    monkeypatch.setenv("SEGUE_SNAPSHOT_KEEP", "0")
    with pytest.raises(ValidationError, match="keep"):
        SnapshotSettings()


def test_default_dir_follows_the_environment(monkeypatch, tmp_path):
    from snapshots import default_dir

    monkeypatch.delenv("SEGUE_SNAPSHOT_DIR", raising=False)
    monkeypatch.delenv("SEGUE_DATA_DIR", raising=False)
    assert default_dir() == Path("segue-data") / "snapshots"
    monkeypatch.setenv("SEGUE_DATA_DIR", str(tmp_path))
    assert default_dir() == tmp_path / "snapshots"
    monkeypatch.setenv("SEGUE_SNAPSHOT_DIR", os.fspath(tmp_path / "x"))
    assert default_dir() == tmp_path / "x"
