"""Read interaction logs and logged bandit feedback into the shapes the simulations use.

Interaction logs (for progressive replay) become a time-ordered pandas DataFrame with the
columns of :data:`INTERACTION_COLUMNS` and, through :func:`iter_events`, a stream of
:class:`~feedback.events.Event`. Sources:

- MovieLens: ``u.data`` (tab-separated ``user item rating timestamp``), ``ratings.dat``
  (``::``-separated, same fields) and ``ratings.csv`` (``userId,movieId,rating,timestamp``);
- any CSV or Parquet file, with a column mapping onto ``user_id, item_id, timestamp`` and the
  optional ``rating, played_ms, duration_ms``;
- segue's own event log export: JSON lines, one ``Event.to_dict()`` per line.

Plays and skips: every row is a ``play`` unless ``rating_threshold`` is given, in which case a
rating ``>= rating_threshold`` is a play and a lower one a ``skip`` (MovieLens users rate what
they watched, so a low rating is the closest thing to a skip); with ``min_played_fraction``,
a row whose ``played_ms < min_played_fraction * duration_ms`` is a skip. Rows are sorted by
timestamp, stably, so ties keep file order.

Logged bandit feedback (for off-policy evaluation) becomes a
:class:`~simulations.ope.LoggedBanditData`: from the Open Bandit Dataset layout
(:func:`load_open_bandit`) or from segue's decision-log export (:func:`load_decision_log`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from feedback.events import Event
from online.items import Item
from simulations.ope import LoggedBanditData

__all__ = [
    "INTERACTION_COLUMNS",
    "catalog_from_interactions",
    "iter_events",
    "load_decision_log",
    "load_event_log",
    "load_interactions",
    "load_movielens",
    "load_open_bandit",
    "load_table",
]

INTERACTION_COLUMNS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "timestamp",
    "type",
    "rating",
    "played_ms",
    "duration_ms",
)


def _finish(
    df: pd.DataFrame,
    *,
    rating_threshold: float | None,
    min_played_fraction: float | None = None,
) -> pd.DataFrame:
    """Canonical columns and dtypes, play/skip typing, stable time order."""
    out = pd.DataFrame(
        {
            "user_id": df["user_id"].astype(str),
            "item_id": df["item_id"].astype(str),
            "timestamp": df["timestamp"].astype(float),
        }
    )
    for col in ("rating", "played_ms", "duration_ms"):
        out[col] = df[col].astype(float) if col in df.columns else np.nan
    play = np.ones(len(out), dtype=bool)
    if rating_threshold is not None:
        if out["rating"].isna().all():
            raise ValueError("rating_threshold needs a rating column")
        play &= (out["rating"] >= rating_threshold).to_numpy()
    if min_played_fraction is not None:
        played, duration = out["played_ms"].to_numpy(), out["duration_ms"].to_numpy()
        known = ~np.isnan(played) & ~np.isnan(duration)
        play &= ~known | (played >= min_played_fraction * np.nan_to_num(duration))
    out.insert(3, "type", np.where(play, "play", "skip"))
    if out["timestamp"].isna().any():
        raise ValueError("some rows have no timestamp")
    return out.sort_values("timestamp", kind="stable").reset_index(drop=True)


def _to_seconds(values: pd.Series, unit: str) -> pd.Series:
    if unit not in ("s", "ms"):
        raise ValueError(f"timestamp_unit must be 's' or 'ms', got {unit!r}")
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float) / (1000.0 if unit == "ms" else 1.0)
    parsed = pd.to_datetime(values, utc=True, format="mixed")
    return (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()


def load_movielens(path: str | Path, *, rating_threshold: float | None = None) -> pd.DataFrame:
    """A MovieLens ratings file (``u.data``, ``ratings.dat`` or ``ratings.csv``)."""
    path = Path(path)
    names = ["user_id", "item_id", "rating", "timestamp"]
    if path.suffix == ".csv":
        df = pd.read_csv(path)
        df = df.rename(columns={"userId": "user_id", "movieId": "item_id"})
        missing = {"user_id", "item_id", "rating", "timestamp"} - set(df.columns)
        if missing:
            raise ValueError(f"{path.name}: not a MovieLens ratings.csv, missing {sorted(missing)}")
    elif path.suffix == ".dat":
        df = pd.read_csv(path, sep="::", names=names, engine="python")
    else:
        df = pd.read_csv(path, sep="\t", names=names)
    return _finish(df, rating_threshold=rating_threshold)


def load_table(
    path: str | Path,
    columns: Mapping[str, str] | None = None,
    *,
    rating_threshold: float | None = None,
    min_played_fraction: float | None = None,
    timestamp_unit: str = "s",
) -> pd.DataFrame:
    """A CSV or Parquet file of interactions; ``columns`` maps canonical names to the file's.

    Canonical names: ``user_id``, ``item_id``, ``timestamp`` (required), ``rating``,
    ``played_ms``, ``duration_ms`` (optional). Timestamps are epoch seconds (or
    milliseconds with ``timestamp_unit="ms"``) or date-time strings.
    """
    path = Path(path)
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    mapping = {"user_id": "user_id", "item_id": "item_id", "timestamp": "timestamp"}
    mapping.update({c: c for c in ("rating", "played_ms", "duration_ms") if c in df.columns})
    mapping.update(columns or {})
    unknown = set(mapping) - set(INTERACTION_COLUMNS)
    if unknown:
        raise ValueError(f"unknown canonical columns {sorted(unknown)}")
    absent = [src for src in mapping.values() if src not in df.columns]
    if absent:
        raise ValueError(f"{path.name} has no column(s) {absent}; it has {list(df.columns)}")
    df = pd.DataFrame({canon: df[src] for canon, src in mapping.items()})
    df["timestamp"] = _to_seconds(df["timestamp"], timestamp_unit)
    return _finish(df, rating_threshold=rating_threshold, min_played_fraction=min_played_fraction)


def load_event_log(path: str | Path, *, types: tuple[str, ...] | None = None) -> pd.DataFrame:
    """segue's event log export (JSON lines of ``Event.to_dict()``), in time order.

    Keeps every field of :class:`~feedback.events.Event` as a column (``context`` as dicts);
    ``types`` keeps only those event types (e.g. ``("play", "skip")``).
    """
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    events = [Event.from_dict(r) for r in records]
    if types is not None:
        events = [e for e in events if e.type in types]
    df = pd.DataFrame(
        {
            "event_id": [e.event_id for e in events],
            "user_id": [e.user_id for e in events],
            "item_id": [e.item_id for e in events],
            "timestamp": np.array([e.timestamp for e in events], dtype=float),
            "type": [e.type for e in events],
            "rating": np.nan,
            "played_ms": [np.nan if e.played_ms is None else e.played_ms for e in events],
            "duration_ms": [np.nan if e.duration_ms is None else e.duration_ms for e in events],
            "request_id": [e.request_id for e in events],
            "position": [np.nan if e.position is None else e.position for e in events],
            "context": [dict(e.context) for e in events],
        }
    )
    df["played_ms"] = df["played_ms"].astype(float)
    df["duration_ms"] = df["duration_ms"].astype(float)
    df["position"] = df["position"].astype(float)
    return df.sort_values("timestamp", kind="stable").reset_index(drop=True)


def load_interactions(
    path: str | Path,
    columns: Mapping[str, str] | None = None,
    *,
    rating_threshold: float | None = None,
    min_played_fraction: float | None = None,
    timestamp_unit: str = "s",
) -> pd.DataFrame:
    """Any supported interaction file, recognized by its name.

    ``*.jsonl`` / ``*.ndjson``: segue's event log (plays and skips kept); ``u.data``,
    ``ratings.dat``, or a ``*.csv`` with MovieLens's ``userId,movieId`` header: MovieLens;
    other ``*.csv`` / ``*.parquet``: a table read with ``columns``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix in (".jsonl", ".ndjson"):
        return load_event_log(path, types=("play", "skip"))
    if path.name == "u.data" or path.suffix == ".dat":
        return load_movielens(path, rating_threshold=rating_threshold)
    if path.suffix == ".csv" and columns is None:
        header = pd.read_csv(path, nrows=0).columns
        if {"userId", "movieId"} <= set(header):
            return load_movielens(path, rating_threshold=rating_threshold)
    if path.suffix in (".csv", ".parquet"):
        return load_table(
            path,
            columns,
            rating_threshold=rating_threshold,
            min_played_fraction=min_played_fraction,
            timestamp_unit=timestamp_unit,
        )
    raise ValueError(f"unrecognized interaction file {path.name}: expected {_KNOWN_FORMATS}")


_KNOWN_FORMATS = "u.data, ratings.dat, ratings.csv, *.csv, *.parquet or *.jsonl"


def iter_events(df: pd.DataFrame, *, source: str = "row") -> Iterator[Event]:
    """The rows of an interaction DataFrame as :class:`~feedback.events.Event` objects.

    Event ids come from an ``event_id`` column, else ``f"{source}-{row number}"``;
    ``request_id``, ``position`` and ``context`` columns are carried over when present.
    """
    ids = df["event_id"] if "event_id" in df.columns else None
    users, items = df["user_id"].to_numpy(), df["item_id"].to_numpy()
    times, types = df["timestamp"].to_numpy(dtype=float), df["type"].to_numpy()
    played = df["played_ms"].to_numpy(dtype=float) if "played_ms" in df.columns else None
    duration = df["duration_ms"].to_numpy(dtype=float) if "duration_ms" in df.columns else None
    contexts = df["context"].to_numpy() if "context" in df.columns else None
    requests = df["request_id"].to_numpy() if "request_id" in df.columns else None
    positions = df["position"].to_numpy(dtype=float) if "position" in df.columns else None
    for i in range(len(df)):
        yield Event(
            event_id=str(ids.iat[i]) if ids is not None else f"{source}-{i}",
            type=str(types[i]),
            user_id=str(users[i]),
            item_id=str(items[i]),
            timestamp=float(times[i]),
            request_id=None if requests is None or pd.isna(requests[i]) else str(requests[i]),
            position=_int_or_none(positions, i),
            played_ms=_int_or_none(played, i),
            duration_ms=_int_or_none(duration, i),
            context=dict(contexts[i] or {}) if contexts is not None else {},
        )


def _int_or_none(values: np.ndarray | None, i: int) -> int | None:
    if values is None or np.isnan(values[i]):
        return None
    return int(values[i])


def catalog_from_interactions(df: pd.DataFrame) -> list[Item]:
    """One :class:`~online.items.Item` per item, released when it was first seen.

    Using the first interaction as the release time keeps a replayed policy from placing an
    item before the log knows it exists (a leak of the future otherwise).
    """
    first = df.groupby("item_id", sort=False)["timestamp"].min()
    return [Item(item_id=str(i), release_time=float(t)) for i, t in first.items()]


# --------------------------------------------------------------------------- bandit logs


def load_open_bandit(
    path: str | Path, item_context: str | Path | None = None, *, affinity: bool = True
) -> LoggedBanditData:
    """An Open Bandit Dataset campaign CSV (and its ``item_context.csv``).

    Columns: ``timestamp, item_id, position, click, propensity_score, user_feature_*,
    user-item_affinity_*`` (an unnamed first index column is dropped). Positions (1-based in
    the data set) become 0-based by dense rank; rows are sorted by time. Contexts are the
    one-hot user features plus, with ``affinity``, the user-item affinities; action features
    come from ``item_context.csv`` (next to the CSV when not given): ``item_feature_0`` as a
    number, the other (hashed, categorical) features as integer codes.
    """
    path = Path(path)
    df = pd.read_csv(path)
    df = df.drop(columns=[c for c in df.columns if c == "" or str(c).startswith("Unnamed")])
    required = {"timestamp", "item_id", "position", "click", "propensity_score"}
    missing = required - set(df.columns)
    if missing:
        raise ValueError(f"{path.name}: not an Open Bandit Dataset file, missing {sorted(missing)}")
    df["timestamp"] = _to_seconds(df["timestamp"], "s")
    df = df.sort_values("timestamp", kind="stable").reset_index(drop=True)
    positions = pd.Series(df["position"]).rank(method="dense").to_numpy().astype(np.int64) - 1

    user_cols = [c for c in df.columns if str(c).startswith("user_feature")]
    parts, names = [], []
    if user_cols:
        onehot = pd.get_dummies(df[user_cols].astype(str), dtype=float)
        parts.append(onehot.to_numpy())
        names += list(onehot.columns)
    if affinity:
        aff_cols = [c for c in df.columns if str(c).startswith("user-item_affinity")]
        parts.append(df[aff_cols].to_numpy(dtype=float))
        names += aff_cols
    contexts = np.hstack(parts) if parts else None

    n_actions = int(df["item_id"].max()) + 1
    action_features = None
    ctx_path = Path(item_context) if item_context is not None else path.parent / "item_context.csv"
    if ctx_path.exists():
        items = pd.read_csv(ctx_path)
        items = items.drop(columns=[c for c in items.columns if str(c).startswith("Unnamed")])
        items = items.sort_values("item_id").reset_index(drop=True)
        n_actions = max(n_actions, int(items["item_id"].max()) + 1)
        feats = []
        for col in [c for c in items.columns if str(c).startswith("item_feature")]:
            if pd.api.types.is_numeric_dtype(items[col]):
                feats.append(items[col].to_numpy(dtype=float))
            else:
                feats.append(pd.factorize(items[col])[0].astype(float))
        table = np.zeros((n_actions, len(feats)))
        table[items["item_id"].to_numpy(dtype=np.int64)] = np.column_stack(feats)
        action_features = table
    elif item_context is not None:
        raise FileNotFoundError(f"no such item context file: {ctx_path}")
    return LoggedBanditData(
        actions=df["item_id"].to_numpy(dtype=np.int64),
        rewards=df["click"].to_numpy(dtype=float),
        propensities=df["propensity_score"].to_numpy(dtype=float),
        positions=positions,
        contexts=contexts,
        action_features=action_features,
        n_actions=n_actions,
        context_names=tuple(str(n) for n in names),
        timestamps=df["timestamp"].to_numpy(dtype=float),
    )


def load_decision_log(path: str | Path) -> LoggedBanditData:
    """segue's decision-log export: JSON lines of ``Decision.to_dict()`` plus outcomes, as
    ``segue feedback export-decisions`` writes them (``DecisionOutcome.to_dict()``).

    Each line is a served list with its outcome, given by any one of:

    - ``"rewards"``: a list of numbers aligned with ``slate``;
    - a ``"reward"`` key on each slate entry;
    - ``"played"``: the item ids played from the list (reward 1, others 0).

    ``"impressed"`` (optional): the positions actually shown; only those become rows (an
    item never shown teaches nothing). Each impressed slate entry is one row: its item is the
    action (ids in order of first appearance), its ``propensity`` the logged probability.
    Contexts are the numeric ``shared`` features and the ``context`` values (numbers as is,
    booleans as 0/1, strings one-hot as ``context.key=value``).
    """
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        d = json.loads(line)
        slate = d.get("slate") or []
        rewards = _decision_rewards(d, slate, lineno)
        impressed = set(d.get("impressed", [e["position"] for e in slate]))
        ctx = dict(d.get("context") or {})
        features = {f"shared.{k}": float(v) for k, v in (d.get("shared") or {}).items()
                    if isinstance(v, int | float)}  # fmt: skip
        for key, value in ctx.items():
            if isinstance(value, str):
                features[f"context.{key}={value}"] = 1.0
            else:
                features[f"context.{key}"] = float(value)
        for entry, reward in zip(slate, rewards, strict=True):
            if entry["position"] not in impressed:
                continue
            rows.append(
                {"request_id": d["request_id"], "user_id": d["user_id"],
                 "timestamp": float(d["timestamp"]), "item_id": str(entry["item_id"]),
                 "position": int(entry["position"]), "propensity": float(entry["propensity"]),
                 "reward": float(reward), "features": features, "context": ctx}
            )  # fmt: skip
    if not rows:
        raise ValueError(f"{Path(path).name}: no impressed slate entries")
    rows.sort(key=lambda r: r["timestamp"])
    action_ids = list(dict.fromkeys(r["item_id"] for r in rows))
    index = {a: j for j, a in enumerate(action_ids)}
    names = sorted({k for r in rows for k in r["features"]})
    contexts = np.array([[r["features"].get(k, 0.0) for k in names] for r in rows], dtype=float)
    return LoggedBanditData(
        actions=np.array([index[r["item_id"]] for r in rows], dtype=np.int64),
        rewards=np.array([r["reward"] for r in rows]),
        propensities=np.array([r["propensity"] for r in rows]),
        positions=np.array([r["position"] for r in rows], dtype=np.int64),
        contexts=contexts if names else None,
        action_ids=tuple(action_ids),
        context_names=tuple(names),
        user_ids=np.array([r["user_id"] for r in rows], dtype=object),
        timestamps=np.array([r["timestamp"] for r in rows]),
        raw_contexts=np.array([r["context"] for r in rows], dtype=object),
    )


def _decision_rewards(d: Mapping[str, Any], slate: list[Any], lineno: int) -> list[float]:
    if "rewards" in d:
        rewards = [float(r) for r in d["rewards"]]
        if len(rewards) != len(slate):
            raise ValueError(
                f"line {lineno}: {len(rewards)} rewards for a slate of {len(slate)} entries"
            )
        return rewards
    if slate and all("reward" in e for e in slate):
        return [float(e["reward"]) for e in slate]
    if "played" in d:
        played = set(d["played"])
        return [1.0 if e["item_id"] in played else 0.0 for e in slate]
    raise ValueError(f"line {lineno}: no outcome (expected 'rewards', 'played' or entry 'reward')")
