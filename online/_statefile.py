"""The file envelope both learned models are saved in: a pickle of plain data tagged with a
format string, refused on load when the tag is not the expected one (load only files segue
wrote: unpickling runs code)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from online._gil import dump_pickle


def write_state(path: Path, fmt: str, state: dict[str, Any], *, offer: bool = True) -> None:
    """Write ``state`` to ``path`` under the format tag ``fmt``.

    ``offer``: hand the interpreter lock to request threads between the pickle's frames (a
    pickle of the relevance model at a million items takes 100-300 ms). Not while holding a
    lock requests wait for: offering it there only holds that lock longer.
    """
    dump_pickle({"format": fmt, **state}, path, offer=offer)


def read_state(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """The state written by :func:`write_state` with tag ``fmt``; ``what`` names it in errors."""
    with Path(path).open("rb") as f:
        state = pickle.load(f)
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise ValueError(f"{path} is not a segue {what} ({fmt})")
    return state
