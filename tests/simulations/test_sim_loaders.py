"""Loaders: every supported format, from tiny files written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feedback.events import Decision, Event, SlateEntry
from simulations.loaders import (
    INTERACTION_COLUMNS,
    catalog_from_interactions,
    iter_events,
    load_decision_log,
    load_event_log,
    load_interactions,
    load_movielens,
    load_open_bandit,
    load_table,
)


def test_movielens_u_data(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    df = load_interactions(path, rating_threshold=3)
    assert list(df.columns) == list(INTERACTION_COLUMNS)
    assert df["timestamp"].tolist() == [878887116.0, 881250949.0, 891717742.0]
    assert df["user_id"].tolist() == ["22", "196", "186"]
    assert df["type"].tolist() == ["skip", "play", "play"]
    assert load_movielens(path)["type"].eq("play").all()  # no threshold: every row a play


def test_movielens_ratings_csv_and_dat(tmp_path: Path) -> None:
    csv = tmp_path / "ratings.csv"
    csv.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,4.0,1260759100\n")
    df = load_interactions(csv, rating_threshold=3.5)
    assert df["item_id"].tolist() == ["1029", "31"]
    assert df["rating"].tolist() == [4.0, 2.5]
    assert df["type"].tolist() == ["play", "skip"]
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    assert load_interactions(dat)["item_id"].tolist() == ["1193", "661"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_generic_table_with_column_mapping(tmp_path: Path, suffix: str) -> None:
    raw = pd.DataFrame(
        {
            "listener": ["a", "b", "a"],
            "track": [10, 11, 12],
            "ts_ms": [3000, 1000, 2000],
            "ms": [1000, 200_000, 150_000],
            "len": [200_000, 200_000, 160_000],
        }
    )
    path = tmp_path / f"log{suffix}"
    raw.to_csv(path, index=False) if suffix == ".csv" else raw.to_parquet(path, index=False)
    columns = {"user_id": "listener", "item_id": "track", "timestamp": "ts_ms",
               "played_ms": "ms", "duration_ms": "len"}  # fmt: skip
    df = load_table(path, columns, timestamp_unit="ms", min_played_fraction=0.5)
    assert df["timestamp"].tolist() == [1.0, 2.0, 3.0]
    assert df["item_id"].tolist() == ["11", "12", "10"]
    assert df["type"].tolist() == ["play", "play", "skip"]  # 1000 ms of 200000 is a skip
    assert df["played_ms"].tolist() == [200_000.0, 150_000.0, 1000.0]
    with pytest.raises(ValueError, match=r"has no column\(s\) \['user_id'\]"):
        load_table(path, {"item_id": "track", "timestamp": "ts_ms"})


def test_generic_table_parses_datetime_strings(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        "user_id,item_id,timestamp\nu,i,1970-01-01T00:01:00Z\nu,j,1970-01-01T00:00:30Z\n"
    )
    assert load_table(path)["timestamp"].tolist() == [30.0, 60.0]


def test_event_log_and_iter_events_round_trip(tmp_path: Path) -> None:
    events = [
        Event("e2", "play", "u1", "t9", 20.0, "r1", 0, 180_000, 200_000, {"device": "ios"}),
        Event("e1", "impression", "u1", "t9", 10.0, "r1", 0),
        Event("e3", "skip", "u2", "t8", 30.0, played_ms=4000, duration_ms=190_000),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e.to_dict()) for e in events) + "\n")
    df = load_event_log(path)
    assert df["event_id"].tolist() == ["e1", "e2", "e3"]
    assert df["request_id"].isna().tolist() == [False, False, True]
    plays = load_interactions(path)  # the replay view: plays and skips only
    assert plays["type"].tolist() == ["play", "skip"]
    back = list(iter_events(plays))
    assert back[0] == events[0]
    assert back[1].played_ms == 4000 and back[1].type == "skip"


def test_iter_events_without_ids_and_catalog(tmp_path: Path) -> None:
    df = pd.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": [5.0, 7.0],
                       "type": ["play", "play"]})  # fmt: skip
    assert [e.event_id for e in iter_events(df, source="ml")] == ["ml-0", "ml-1"]
    catalog = catalog_from_interactions(pd.concat([df, df.assign(timestamp=[9.0, 1.0])]))
    assert {i.item_id: i.release_time for i in catalog} == {"x": 5.0, "y": 1.0}


def _write_obd(tmp_path: Path) -> Path:
    folder = tmp_path / "random" / "all"
    folder.mkdir(parents=True)
    rows = [
        # ,timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,aff_0..2
        "0,2019-11-24 00:00:17.238334+00:00,1,2,0,0.3333333,aa,x1,0.1,0.2,0.3",
        "1,2019-11-24 00:00:17.238334+00:00,2,1,1,0.3333333,aa,x1,0.1,0.2,0.3",
        "2,2019-11-24 00:00:05.000000+00:00,0,1,0,0.3333333,bb,x1,0.0,0.5,0.0",
        "3,2019-11-24 00:00:05.000000+00:00,2,3,1,0.3333333,bb,x1,0.0,0.5,0.0",
    ]
    header = (
        ",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,"
        "user-item_affinity_0,user-item_affinity_1,user-item_affinity_2"
    )
    path = folder / "all.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    (folder / "item_context.csv").write_text(
        ",item_id,item_feature_0,item_feature_1\n0,0,-0.5,h1\n1,1,0.25,h2\n2,2,1.0,h1\n"
    )
    return path


def test_open_bandit_dataset_layout(tmp_path: Path) -> None:
    data = load_open_bandit(_write_obd(tmp_path))
    assert data.n_rows == 4 and data.n_actions == 3
    assert data.actions.tolist() == [0, 2, 1, 2]  # sorted by time
    assert data.positions.tolist() == [0, 2, 1, 0]  # 1-based 1, 2, 3 -> 0-based by dense rank
    assert data.rewards.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert data.propensities == pytest.approx([1 / 3] * 4, rel=1e-6)
    assert data.context_names == ("user_feature_0_aa", "user_feature_0_bb", "user_feature_1_x1",
                                  "user-item_affinity_0", "user-item_affinity_1",
                                  "user-item_affinity_2")  # fmt: skip
    assert data.contexts[0].tolist() == [0.0, 1.0, 1.0, 0.0, 0.5, 0.0]
    assert data.action_features.tolist() == [[-0.5, 0.0], [0.25, 1.0], [1.0, 0.0]]
    assert data.timestamps[2] - data.timestamps[0] == pytest.approx(12.238334)


def _decision(rid: str, user: str, t: float, items: list[str], **outcome) -> str:
    slate = tuple(
        SlateEntry(item, pos, 1.0 - pos / 10, 0.5 if pos else 0.8, pos > 0, {"rel": 0.1 * pos})
        for pos, item in enumerate(items)
    )
    d = Decision(rid, user, t, "v3", slate, {"device": "ios", "hour": 9}, {"age_days": 4.0})
    return json.dumps({**d.to_dict(), **outcome})


def test_decision_log_export(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    path.write_text(
        "\n".join(
            [
                _decision("r2", "u2", 20.0, ["b", "c"], played=["c"]),
                _decision("r1", "u1", 10.0, ["a", "b", "c"], rewards=[1, 0, 0], impressed=[0, 1]),
            ]
        )
    )
    data = load_decision_log(path)
    assert data.action_ids == ("a", "b", "c")
    assert [data.action_ids[a] for a in data.actions] == ["a", "b", "b", "c"]
    assert data.positions.tolist() == [0, 1, 0, 1]
    assert data.rewards.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert data.propensities.tolist() == [0.8, 0.5, 0.8, 0.5]
    assert data.context_names == ("context.device=ios", "context.hour", "shared.age_days")
    assert data.contexts[0].tolist() == [1.0, 9.0, 4.0]
    assert data.user_ids.tolist() == ["u1", "u1", "u2", "u2"]
    assert data.raw_contexts[0] == {"device": "ios", "hour": 9}


@pytest.mark.parametrize(
    ("outcome", "match"),
    [
        ({}, r"line 1: no outcome"),
        ({"rewards": [1]}, r"line 1: 1 rewards for a slate of 2 entries"),
    ],
)
def test_decision_log_errors(tmp_path: Path, outcome: dict, match: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(_decision("r", "u", 1.0, ["a", "b"], **outcome))
    with pytest.raises(ValueError, match=match):
        load_decision_log(path)


def test_unrecognized_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"unrecognized interaction file x\.txt"):
        load_interactions(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_interactions(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an Open Bandit Dataset file"):
        load_open_bandit(bad)
    assert np.isnan(load_interactions(_movielens_csv(tmp_path))["played_ms"]).all()


def _movielens_csv(tmp_path: Path) -> Path:
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,2,3.0,4\n")
    return path
