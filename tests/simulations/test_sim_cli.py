"""The CLI and the Python run functions: what they compute and what they write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from simulations.cli import make_app
from simulations.policy import RandomPolicy
from simulations.runs import (
    default_replay_jobs,
    load_config,
    resolve_config,
    run_ope,
    run_replay,
    run_simulation,
)
from simulations.world import synthetic_interactions


def _obd_file(tmp_path: Path, n: int = 3000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n_items = 6
    ctr = np.linspace(0.02, 0.2, n_items)
    items = rng.integers(0, n_items, n)
    df = pd.DataFrame(
        {
            "timestamp": pd.Timestamp("2019-11-24", tz="UTC")
            + pd.to_timedelta(np.arange(n) // 3, unit="s"),
            "item_id": items,
            "position": np.arange(n) % 3 + 1,
            "click": (rng.random(n) < ctr[items]).astype(int),
            "propensity_score": 1 / n_items,
            "user_feature_0": rng.choice(["a", "b"], n),
        }
    )
    path = tmp_path / "all.csv"
    df.to_csv(path)
    return path


def test_simulate_command_writes_everything(tmp_path: Path) -> None:
    config = tmp_path / "sim.toml"
    config.write_text("n_steps = 120\n[world]\nn_users = 15\nn_items = 80\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        make_app(), ["simulate", "--config", str(config), "--seed", "2", "--k", "5",
                     "--out", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "steps.csv", "steps.parquet", "summary.csv",
            "cumulative_regret.png", "learning_curves.png"} <= names  # fmt: skip
    saved = json.loads((out / "config.json").read_text())
    assert saved["seed"] == 2 and saved["k"] == 5 and saved["n_steps"] == 120
    assert saved["world"] == {"n_users": 15, "n_items": 80}
    steps = pd.read_parquet(out / "steps.parquet")
    assert len(steps) == 3 * 120
    summary = pd.read_csv(out / "summary.csv").set_index("policy")
    assert summary.loc["oracle", "total_regret"] == 0.0
    assert summary.loc["random", "total_regret"] > 0.0
    assert "oracle" in result.output  # the summary table is printed
    assert (out / "cumulative_regret.png").read_bytes()[:4] == b"\x89PNG"


def test_replay_command(tmp_path: Path) -> None:
    log = tmp_path / "plays.parquet"
    synthetic_interactions(3000, n_users=100, n_items=300, seed=0).to_parquet(log)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        make_app(), ["replay", str(log), "--out", str(out), "--k", "5", "--eval-every", "3",
                     "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(out / "summary.csv")
    assert summary["policy"].tolist() == ["random", "popular"]
    assert (summary["evaluated"] == 1000).all()
    assert (out / "learning_curves.png").exists()
    assert json.loads((out / "config.json").read_text())["file"] == str(log)


def test_replay_command_jobs(tmp_path: Path) -> None:
    log = tmp_path / "plays.parquet"
    synthetic_interactions(600, n_users=40, n_items=100, seed=1).to_parquet(log)
    tables = []
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        args = ["replay", str(log), "--out", str(out), "--jobs", jobs, "--no-progress"]
        result = CliRunner().invoke(make_app(), args)
        assert result.exit_code == 0, result.output
        assert json.loads((out / "config.json").read_text())["jobs"] == int(jobs)
        tables.append(pd.read_parquet(out / "steps.parquet"))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    # without --jobs: one worker per usable CPU, no more than there are policies
    out = tmp_path / "default"
    args = ["replay", str(log), "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(make_app(), args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["jobs"] == default_replay_jobs(["random", "popular"])
    assert 1 <= saved["jobs"] <= 2
    # a config file's jobs is kept
    config = tmp_path / "replay.toml"
    config.write_text("jobs = 1\n")
    args = ["replay", str(log), "--config", str(config), "--out", str(out), "--no-progress"]
    assert CliRunner().invoke(make_app(), args).exit_code == 0
    assert json.loads((out / "config.json").read_text())["jobs"] == 1
    result = CliRunner().invoke(make_app(), ["replay", str(log), "--jobs", "0", "--no-progress"])
    assert result.exit_code != 0


def test_ope_command_and_function(tmp_path: Path) -> None:
    path = _obd_file(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(make_app(), ["ope", str(path), "--out", str(out), "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    assert (out / "ope_estimates.png").exists()
    summary = pd.read_csv(out / "summary.csv")
    uniform = summary[summary["target"] == "uniform"].set_index("estimator")
    logged = summary[summary["estimator"] == "on_policy"]["value"].item()
    # the log is uniform, so the uniform target's IPS is exactly the logged mean
    assert uniform.loc["ips", "value"] == pytest.approx(logged, rel=1e-12)
    popular = summary[summary["target"] == "popular"].set_index("estimator")
    assert (popular["value"] > logged).all()  # the best item per position clicks more
    steps = pd.read_csv(out / "steps.csv")
    assert set(steps["position"].astype(str)) == {"all", "0", "1", "2"}

    again = run_ope(path, {"n_boot": 50})
    pd.testing.assert_frame_equal(again.summary, run_ope(path, {"n_boot": 50}).summary)


def test_python_runs_and_engine_factory(tmp_path: Path) -> None:
    made = []

    def factory(name, catalog, seed):
        made.append(name)
        return RandomPolicy(catalog, seed + 1, name=name)

    result = run_simulation(
        {"n_steps": 50, "policies": ["random", "segue"], "world": {"n_users": 5, "n_items": 40}},
        engine_factory=factory,
    )
    assert made == ["segue"]
    assert list(result.summary["policy"]) == ["random", "segue"]
    log = tmp_path / "u.data"
    log.write_text("1\t10\t5\t100\n2\t10\t4\t200\n1\t11\t2\t300\n3\t10\t5\t400\n")
    replay = run_replay(log, {"rating_threshold": 3, "k": 1})
    assert replay.summary.set_index("policy").loc["popular", "evaluated"] == 3
    with pytest.raises(ValueError, match="jobs must be a whole number of at least 1"):
        run_replay(log, {"jobs": 0})


def test_config_files_and_unknown_keys(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("k = 3\n")
    js = tmp_path / "c.json"
    js.write_text('{"k": 4}')
    assert load_config(toml) == {"k": 3} and load_config(js) == {"k": 4}
    with pytest.raises(ValueError, match=r"config must be \.toml or \.json"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="unknown config key 'kk'"):
        resolve_config({"k": 10}, {"kk": 3})
    args = ["simulate", "--policies", "nope", "--steps", "5", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(make_app(), [*args, "--no-progress"])
    assert result.exit_code != 0
    assert "unknown policy 'nope'" in str(result.exception)
