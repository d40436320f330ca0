"""Version names and the ``manifest.json`` every snapshot carries.

A version reads ``v<seq>-<UTC time>``, e.g. ``v000042-20261122T073000Z``: the sequence number
makes it unique and sortable (sort with :func:`version_key`, which stays right past six
digits), the time makes it readable.

>>> make_version(42, 1795332600.0)
'v000042-20261122T073000Z'
>>> version_key('v000042-20261122T073000Z')
42
>>> is_version('CURRENT')
False
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
VERSION_RE = re.compile(r"^v(\d{6,})-(\d{8}T\d{6}Z)$")


def make_version(seq: int, created_at: float) -> str:
    """The version name for sequence number ``seq`` cut at epoch seconds ``created_at``."""
    stamp = datetime.fromtimestamp(created_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"v{seq:06d}-{stamp}"


def is_version(name: str) -> bool:
    """Whether ``name`` is a well-formed version name."""
    return VERSION_RE.match(name) is not None


def version_key(name: str) -> int:
    """The sequence number of a version (its sort key)."""
    match = VERSION_RE.match(name)
    if match is None:
        raise ValueError(f"not a snapshot version: {name!r}")
    return int(match.group(1))


def iso_utc(ts: float) -> str:
    """Epoch seconds as an RFC 3339 UTC string with microseconds."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def settings_hash(settings: Any) -> str:
    """A stable sha256 of a settings object (a mapping, or anything with ``model_dump``).

    >>> settings_hash({"b": 1, "a": 2}) == settings_hash({"a": 2, "b": 1})
    True
    """
    if hasattr(settings, "model_dump"):
        settings = settings.model_dump(mode="json")
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class FileEntry:
    """Checksum and size of one state file (path relative to the snapshot, POSIX style)."""

    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Promotion:
    """The promotion guard's decision, recorded when the snapshot was written.

    ``baseline`` is the version the metrics were compared against; ``reason`` says why a
    held-back snapshot was not made current.
    """

    promoted: bool
    reason: str | None = None
    baseline: str | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything needed to trust, compare and resume from a snapshot.

    ``offset`` is the event-log position of the **next** event to learn: the snapshot includes
    exactly the events before it, so a restarted learner reads from ``offset`` and loses or
    repeats nothing. ``watermark`` is the learner's event-time watermark (epoch seconds) at
    the cut. ``events`` counts events learned since ``parent``; ``events_total`` since the
    first snapshot. Metric values are floats, ``None`` where undefined.
    """

    version: str
    parent: str | None
    created_at: str
    offset: int
    watermark: float | None
    events: int
    events_total: int
    metrics: Mapping[str, float | None]
    libraries: Mapping[str, str]
    settings_hash: str | None
    files: Mapping[str, FileEntry]
    promotion: Promotion = field(default_factory=lambda: Promotion(True))
    extra: Mapping[str, Any] = field(default_factory=dict)
    format: int = MANIFEST_FORMAT

    @property
    def size(self) -> int:
        """Total bytes of the state files."""
        return sum(entry.size for entry in self.files.values())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, including its own ``checksum``."""
        body = asdict(self)
        body["metrics"] = {k: _finite(v) for k, v in sorted(self.metrics.items())}
        body["files"] = {k: asdict(v) for k, v in sorted(self.files.items())}
        body["checksum"] = _checksum(body)
        return body

    def to_json(self) -> bytes:
        """Serialized manifest, pretty-printed for humans."""
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and check a manifest; ``ValueError`` says what is wrong."""
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        checksum = body.pop("checksum", None)
        if checksum != _checksum(body):
            raise ValueError("manifest checksum mismatch (edited or damaged)")
        if body.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unsupported manifest format {body.get('format')!r}")
        try:
            body["files"] = {k: FileEntry(**v) for k, v in body["files"].items()}
            body["promotion"] = Promotion(**body["promotion"])
            manifest = cls(**body)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed manifest ({exc})") from None
        if not is_version(manifest.version):
            raise ValueError(f"bad version name {manifest.version!r}")
        return manifest

    def with_promotion(self, promotion: Promotion) -> Manifest:
        """A copy with the guard's decision recorded."""
        return replace(self, promotion=promotion)


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _checksum(body: Mapping[str, Any]) -> str:
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()
