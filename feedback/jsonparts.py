"""JSON encoded in parts: the bytes of one ``orjson.dumps``, produced a few rows at a time.

A learned state at a million items encodes to tens of megabytes. In one ``orjson.dumps`` call
that holds the interpreter lock for 50-300 ms, and every request thread of the process waits
(a snapshot cut stalled lists by up to half a second). :func:`json_parts` gives the same bytes
in pieces of ``per_part`` rows, building the rows lazily too, so a writer can hand the
interpreter over between two pieces (:func:`online._gil.write_parts`).

>>> doc = {"kind": "demo", "state": {"users": Rows([["a", 1], ["b", 2], ["c", 3]]), "n": 3}}
>>> parts = list(json_parts(doc, per_part=2))
>>> b"".join(parts) == orjson.dumps(
...     {"kind": "demo", "state": {"users": [["a", 1], ["b", 2], ["c", 3]], "n": 3}}
... )
True
>>> len(parts) > 2
True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

import numpy as np
import orjson

__all__ = ["Part", "Rows", "json_parts"]

Part = bytes | memoryview  # a piece of the output (``bytes.join`` and ``write`` take both)


class Rows:
    """A JSON array inside a document for :func:`json_parts`: its rows are encoded in parts.

    ``rows`` is any iterable (a generator builds each row only when its part is encoded); a
    numpy array is encoded as its ``tolist()`` would be, a slice at a time. ``per_part``
    overrides :func:`json_parts`'s for these rows (small rows can go many to a part).
    """

    __slots__ = ("per_part", "rows")

    def __init__(self, rows: Iterable[Any] | np.ndarray, per_part: int | None = None) -> None:
        if per_part is not None and per_part < 1:
            raise ValueError(f"per_part must be >= 1, got {per_part}")
        self.rows = rows
        self.per_part = per_part


def _batches(rows: Iterable[Any] | np.ndarray, per_part: int) -> Iterator[Any]:
    if isinstance(rows, np.ndarray):
        for start in range(0, len(rows), per_part):
            yield rows[start : start + per_part].tolist()
        return
    it = iter(rows)
    while batch := list(islice(it, per_part)):
        yield batch


def json_parts(doc: Mapping[str, Any], per_part: int = 256) -> Iterator[Part]:
    """The bytes of ``orjson.dumps(doc)``, where every :class:`Rows` in ``doc`` stands for the
    JSON array of its rows, in pieces of at most ``per_part`` rows (or the :class:`Rows`'
    own), plus the document around them. Rows are consumed as the pieces are taken: their
    source must not change meanwhile.
    """
    if per_part < 1:
        raise ValueError(f"per_part must be >= 1, got {per_part}")
    found: list[Rows] = []

    def mark(obj: Any) -> str:
        if isinstance(obj, Rows):
            found.append(obj)
            return f"\x00segue-rows-{len(found) - 1}\x00"  # NUL never ends up in our data
        raise TypeError(f"cannot encode {type(obj).__name__}")

    # the document with a marker string where each array goes; orjson encodes in order, so
    # the markers come in the order they were handed out
    skeleton = orjson.dumps(doc, default=mark)
    pos = 0
    for n, rows in enumerate(found):
        marker = orjson.dumps(f"\x00segue-rows-{n}\x00")
        at = skeleton.index(marker, pos)
        yield skeleton[pos:at] + b"["
        sep = b""
        for batch in _batches(rows.rows, rows.per_part or per_part):
            if sep:
                yield sep
            yield memoryview(orjson.dumps(batch))[1:-1]  # the rows without their brackets
            sep = b","
        yield b"]"
        pos = at + len(marker)
    yield skeleton[pos:]
