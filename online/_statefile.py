"""The file envelope both learned models are saved in: a pickle of plain data tagged with a
format string, refused on load when the tag is not the expected one (load only files segue
wrote: unpickling runs code)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from online._gil import dump_pickle


def write_state(path: Path, fmt: str, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` under the format tag ``fmt``."""
    # a pickle of the relevance model at a million items takes 100-300 ms: written through a
    # file that hands the interpreter lock to request threads between its frames
    dump_pickle({"format": fmt, **state}, path)


def read_state(path: Path, fmt: str, what: str) -> dict[str, Any]:
    """The state written by :func:`write_state` with tag ``fmt``; ``what`` names it in errors."""
    with Path(path).open("rb") as f:
        state = pickle.load(f)
    if not isinstance(state, dict) or state.get("format") != fmt:
        raise ValueError(f"{path} is not a segue {what} ({fmt})")
    return state
