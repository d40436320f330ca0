"""The catalog's unit: one track, episode or video, as every online stage sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Item:
    """A catalog item.

    ``release_time`` is epoch seconds (novelty is measured from it); ``embedding`` is an
    optional content vector of the catalog's fixed dimension; fields a catalog file carries
    beyond these are kept in ``attributes``.
    """

    item_id: str
    title: str = ""
    artist: str = ""
    genres: tuple[str, ...] = ()
    release_time: float | None = None
    duration_ms: int | None = None
    available: bool = True
    embedding: tuple[float, ...] | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
