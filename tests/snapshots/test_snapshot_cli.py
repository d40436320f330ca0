"""``segue snapshots ...`` through typer's CliRunner, as the operator sees it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from snapshots import SnapshotStore
from snapshots.cli import app

runner = CliRunner()


@pytest.fixture
def populated(store, cut):
    """Three snapshots: v1 (pinned), v2 held back (AUC drop), v3 current."""
    v1 = cut(store, 100, auc=0.80)
    v2 = cut(store, 200, auc=0.70)
    v3 = cut(store, 300, auc=0.81, size=4096)
    store.pin(v1.version)
    return store, [v1.version, v2.version, v3.version]


def run(store: SnapshotStore, *args: str, **kwargs):
    return runner.invoke(app, [*args, "--dir", str(store.root)], **kwargs)


def test_list_shows_current_pinned_and_held_back_with_reason(populated):
    store, (v1, v2, v3) = populated
    result = run(store, "list")
    assert result.exit_code == 0, result.output
    lines = {
        line.split()[0].lstrip("*") or line.split()[1]: line for line in result.stdout.splitlines()
    }
    assert lines[v1].rstrip().endswith("pinned")
    assert "held back: relevance_auc fell 0.1000" in lines[v2]
    assert lines[v3].startswith("*") and "0.8100" in lines[v3]


def test_list_json_for_scripts(populated):
    store, (v1, v2, v3) = populated
    rows = json.loads(run(store, "list", "--json").stdout)
    assert [r["version"] for r in rows] == [v1, v2, v3]
    assert rows[0]["pinned"] and rows[2]["current"]
    assert rows[1]["held_back"].startswith("relevance_auc fell")
    assert rows[2]["metrics"]["relevance_auc"] == 0.81 and rows[2]["offset"] == 300


def test_show_and_diff(populated):
    store, (v1, _v2, v3) = populated
    shown = run(store, "show", "3")  # a sequence number is enough
    assert shown.exit_code == 0
    assert f"parent        {_v2}" in shown.stdout and "offset        300" in shown.stdout
    assert json.loads(run(store, "show", v3, "--json").stdout)["current"] is True

    diff = run(store, "diff", v1, v3)
    assert diff.exit_code == 0
    assert "relevance_auc         0.8000 -> 0.8100 (+0.0100, better)" in diff.stdout
    assert "offset        100 -> 300 (+200)" in diff.stdout
    d = json.loads(run(store, "diff", v1, v3, "--json").stdout)
    assert d["files"]["relevance.pkl"] == {"a": 2048, "b": 4096, "delta": 2048, "changed": True}
    assert d["metrics"]["relevance_logloss"]["delta"] == 0.0


def test_rollback_prints_what_service_and_learner_do(populated):
    store, (v1, _v2, v3) = populated
    result = run(store, "rollback", v1, "--by", "ana")
    assert result.exit_code == 0, result.output
    assert f"CURRENT -> {v1} (was {v3}; mode continue" in result.stdout
    assert "service: reloads" in result.stdout
    assert "continues with new events only" in result.stdout
    pointer = store.pointer()
    assert (pointer.version, pointer.mode, pointer.by) == (v1, "continue", "ana")

    replay = run(store, "rollback", v1[:7], "--replay")
    assert replay.exit_code == 0
    assert "re-learns the event log from offset 100" in replay.stdout
    assert store.pointer().mode == "replay"
    assert store.pointer().by.startswith("operator:")


def test_unknown_version_exits_3(populated):
    store, _ = populated
    for command in (["rollback", "v999"], ["show", "42"], ["pin", "nope"], ["verify", "7"]):
        result = run(store, *command)
        assert result.exit_code == 3, command
        assert "unknown snapshot version" in result.stderr


def test_ambiguous_prefix_is_refused(populated):
    store, _ = populated
    result = run(store, "show", "v00000")
    assert result.exit_code == 1 and "ambiguous" in result.stderr


def test_verify_names_the_corrupt_file_and_exits_4(populated, corrupt):
    store, (v1, v2, v3) = populated
    assert run(store, "verify").exit_code == 0
    corrupt(store.root / v2 / "relevance.pkl")
    result = run(store, "verify")
    assert result.exit_code == 4
    assert f"CORRUPT {v2}: {store.root / v2 / 'relevance.pkl'}: sha256 mismatch" in result.stdout
    assert f"ok      {v3} (CURRENT)" in result.stdout
    assert "1 of 3 snapshots failed" in result.stderr
    assert run(store, "verify", v1).exit_code == 0
    refused = run(store, "rollback", v2)
    assert refused.exit_code == 4 and "relevance.pkl" in refused.stderr
    assert store.pointer().version == v3


def test_pin_unpin_prune(populated):
    store, (v1, v2, v3) = populated
    result = run(store, "prune", "--keep", "1")
    assert result.exit_code == 0
    assert f"removed {v2}" in result.stdout and store.versions() == [v1, v3]
    assert run(store, "unpin", v1).stdout.strip() == f"unpinned {v1}"
    assert "was not pinned" in run(store, "unpin", v1).stdout
    run(store, "prune", "--keep", "1")
    assert store.versions() == [v3]
    assert run(store, "pin", v3).stdout.strip() == f"pinned {v3}"
    assert run(store, "prune", "--keep", "0").exit_code == 2


def test_prune_defaults_to_the_keep_setting(populated, monkeypatch):
    store, (_v1, v2, v3) = populated
    monkeypatch.setenv("SEGUE_SNAPSHOT_KEEP", "1")
    result = run(store, "prune")
    assert result.exit_code == 0 and "newest 1 kept" in result.stdout
    assert v2 not in store.versions() and v3 in store.versions()


def test_export_import_round_trip_and_tampering(populated, tmp_path, corrupt):
    store, (_v1, _v2, v3) = populated
    archive = tmp_path / "v3.tar.gz"
    assert run(store, "export", v3, str(archive)).exit_code == 0
    other = SnapshotStore(tmp_path / "other")
    result = run(other, "import", str(archive))
    assert result.exit_code == 0 and f"segue snapshots rollback {v3}" in result.stdout
    assert other.verify(v3).manifest == store.manifest(v3)
    assert "already here" in run(other, "import", str(archive)).stdout

    corrupt(archive)  # a flipped byte in the compressed stream
    broken = run(SnapshotStore(tmp_path / "third"), "import", str(archive))
    assert broken.exit_code in (1, 4) and broken.stderr.startswith("error:")


def test_directory_from_environment_and_root_cli(populated, monkeypatch, tmp_path):
    store, (_v1, _v2, v3) = populated
    monkeypatch.setenv("SEGUE_SNAPSHOT_DIR", str(store.root))
    assert v3 in runner.invoke(app, ["list"]).stdout

    monkeypatch.delenv("SEGUE_SNAPSHOT_DIR")
    data = tmp_path / "data"
    (data / "snapshots").parent.mkdir()
    store.root.rename(data / "snapshots")
    monkeypatch.setenv("SEGUE_DATA_DIR", str(data))
    assert v3 in runner.invoke(app, ["list"]).stdout

    monkeypatch.delenv("SEGUE_DATA_DIR")
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = {"snapshot_dir": data / "snapshots"}

    root.add_typer(app, name="snapshots")
    assert v3 in runner.invoke(root, ["snapshots", "list"]).stdout
    group_dir = runner.invoke(app, ["--dir", str(data / "snapshots"), "list"])
    assert v3 in group_dir.stdout


def test_every_command_has_one_line_help_and_an_example():
    commands = ["list", "show", "diff", "rollback", "pin", "unpin", "prune", "verify"]
    for name in [*commands, "export", "import"]:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0
        assert f"Example: segue snapshots {name}" in result.stdout, name


def test_empty_directory(tmp_path: Path):
    result = runner.invoke(app, ["list", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and "no snapshots" in result.stdout
