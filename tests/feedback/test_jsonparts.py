"""JSON in parts is byte for byte the JSON of one ``orjson.dumps`` (the oracle)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from feedback.jsonparts import Rows, json_parts


def _whole(doc: object) -> object:
    """The document with every Rows replaced by the list of its rows."""
    if isinstance(doc, Rows):
        rows = doc.rows
        return rows.tolist() if isinstance(rows, np.ndarray) else [_whole(r) for r in rows]
    if isinstance(doc, dict):
        return {k: _whole(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_whole(v) for v in doc]
    return doc


@pytest.mark.parametrize("per_part", [1, 2, 3, 7, 1000])
def test_parts_join_to_the_bytes_of_one_dump(per_part: int) -> None:
    rng = np.random.default_rng(per_part)
    values = rng.normal(size=50)

    def doc() -> dict:
        return {
            "kind": "x",
            "params": {"a": 1.5, "b": None},
            "state": {
                "empty": Rows([]),
                "users": Rows(
                    [[f"u{i}", [["t", float(v)]], {"n": i}] for i, v in enumerate(values)]
                ),
                "floats": Rows(values),
                "ints": Rows(np.arange(11), per_part=4),
                "nested": [1, Rows(iter(["a", "b", "c"]))],
                "fragment": Rows([orjson.Fragment(b'{"x":1}')] * 3),
            },
            "tail": '\u00e9\n"',
        }

    parts = list(json_parts(doc(), per_part))
    assert b"".join(parts) == orjson.dumps(_whole(doc()))
    assert orjson.loads(b"".join(parts))["state"]["ints"] == list(range(11))


def test_rows_are_built_a_part_at_a_time() -> None:
    built: list[int] = []

    def rows():
        for i in range(10):
            built.append(i)
            yield i

    parts = json_parts({"rows": Rows(rows())}, per_part=3)
    taken = [next(parts), next(parts)]
    assert b"".join(taken) == b'{"rows":[0,1,2' and built == [0, 1, 2]
    assert b"".join([*taken, *parts]) == b'{"rows":[0,1,2,3,4,5,6,7,8,9]}'


def test_a_part_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="per_part"):
        list(json_parts({}, per_part=0))
    with pytest.raises(ValueError, match="per_part"):
        Rows([], per_part=0)


def test_an_object_json_cannot_hold_is_refused() -> None:
    with pytest.raises(TypeError):
        list(json_parts({"x": object()}))
