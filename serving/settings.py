"""segue's settings: one section per package, composed here at the edge.

Every field reads an environment variable: ``SEGUE_<FIELD>`` at the top level,
``SEGUE_<SECTION>_<FIELD>`` in a section (``SEGUE_FEEDBACK_MAX_BATCH_EVENTS``). A bad value
stops start-up with a message naming the variable (:func:`load_settings`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.settings import FeedbackSettings
from online.settings import EngineSettings, LearnerSettings
from snapshots.settings import SnapshotSettings


class ServingSettings(BaseSettings):
    """The HTTP service (environment prefix ``SEGUE_SERVING_``)."""

    model_config = SettingsConfigDict(
        env_prefix="SEGUE_SERVING_", extra="forbid", use_attribute_docstrings=True
    )

    host: str = "127.0.0.1"
    """Address ``segue serve`` listens on."""

    port: int = Field(8000, ge=1, le=65535)
    """Port ``segue serve`` listens on."""

    budget_ms: float = Field(150.0, gt=0)
    """Total time a list may take; past it the answer is the popular-now fallback."""

    max_queue_ms: float = Field(50.0, gt=0)
    """A list that found every worker thread busy and waited longer than this for one is
    answered with the popular-now fallback (``fallback: "overloaded"``) instead of being
    computed: under overload, the lists computed then start fresh and finish within the
    budget, instead of every list waiting out the budget in the queue."""

    candidates_timeout_ms: float = Field(50.0, gt=0)
    """A candidates stage slower than this counts as a failure for its circuit breaker."""

    relevance_timeout_ms: float = Field(50.0, gt=0)
    """A relevance stage slower than this counts as a failure for its circuit breaker."""

    rerank_timeout_ms: float = Field(80.0, gt=0)
    """A rerank stage slower than this counts as a failure for its circuit breaker."""

    breaker_window: int = Field(50, ge=1)
    """How many of a stage's last calls its breaker judges."""

    breaker_min_calls: int = Field(20, ge=1)
    """Calls the window must hold before the breaker may open (no verdict on a handful)."""

    @field_validator("breaker_min_calls")
    @classmethod
    def _within_window(cls, value: int, info: ValidationInfo) -> int:
        window = info.data.get("breaker_window")
        if window is not None and value > window:
            raise ValueError(f"must be at most SEGUE_SERVING_BREAKER_WINDOW ({window})")
        return value

    breaker_failure_rate: float = Field(0.5, gt=0, le=1)
    """Share of failed calls (errors or timeouts) in the window that opens the breaker."""

    breaker_probes: int = Field(3, ge=1)
    """Requests a half-open breaker lets through; it closes when fewer than
    ``breaker_failure_rate`` of them fail."""

    breaker_open_s: float = Field(10.0, gt=0)
    """How long an open breaker sends every request to the fallback before probing."""

    workers: int = Field(4, ge=1, le=64)
    """Threads computing lists (the models hold one lock; more threads absorb slow stages)."""

    gil_switch_ms: float | None = Field(1.0, gt=0, le=100)
    """The interpreter's switch interval in the service (``sys.setswitchinterval``; unset:
    Python's 5 ms). A list's thread that hands the interpreter lock over (an ANN search, a
    numpy call) waits up to this long to get it back while another thread runs Python: at
    1M items and 150 lists/s, 1 ms brought the median p99 from 17.9 to 14.9 ms at the same
    CPU per list (BENCHMARKS.md)."""

    catalog_sync_s: float = Field(0.5, gt=0)
    """How often the service reads catalog rows other processes wrote (``segue catalog
    import``, other workers' ``POST /v1/items``): an item made unavailable anywhere leaves
    every process's lists within about this long."""

    reload_poll_s: float = Field(0.5, gt=0)
    """How often a service without an embedded learner checks CURRENT for a new snapshot."""

    demo_items: int = Field(20_000, ge=1)
    """Size of the catalog ``segue serve --demo`` generates when the catalog is empty."""

    content_index_dir: Path | None = None
    """Where the content index is saved after a build and read at the next start (unset:
    ``data_dir/content-index``), so a restart at millions of items takes seconds, not the
    half hour a build does; what changed in the catalog since is applied on top."""

    content_index_cache: bool = True
    """Read and write that saved copy (off: every start builds the index from the catalog)."""


class Settings(BaseSettings):
    """All of segue's settings (environment prefix ``SEGUE_``)."""

    model_config = SettingsConfigDict(
        env_prefix="SEGUE_", extra="forbid", use_attribute_docstrings=True
    )

    data_dir: Path = Path("segue-data")
    """Directory for the embedded database, snapshots and the catalog (created if missing)."""

    database_url: str | None = None
    """SQLAlchemy URL of the event log, dead letters and catalog. Unset: SQLite in
    ``data_dir/segue.db``. PostgreSQL: ``postgresql+psycopg://user@host:5432/db``."""

    redis_url: str | None = None
    """Redis URL for shared state (decision log, caches). Unset: kept in process."""

    redis_prefix: str = Field("segue:", min_length=1)
    """Prefix of every Redis key segue writes (several deployments can share one Redis)."""

    db_timeout_s: float = Field(5.0, gt=0)
    """How long a database statement may wait before it counts as failed."""

    sqlite_synchronous: str = Field("FULL", pattern="^(?i:OFF|NORMAL|FULL|EXTRA)$")
    """SQLite ``synchronous`` pragma: FULL survives power loss, NORMAL only a process crash."""

    embedding_dim: int | None = Field(64, ge=1)
    """Dimension of the catalog's content embeddings (unset: the catalog has none)."""

    gc_reclaim_s: float = Field(3600.0, ge=0)
    """``segue serve`` and ``segue learn`` keep their model state out of the garbage
    collector's way (it would stall requests); every this many seconds one deep pass frees
    what that kept back (one pause of about 0.1-0.2 s per million learned objects; 0: never)."""

    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    learner: LearnerSettings = Field(default_factory=LearnerSettings)
    snapshot: SnapshotSettings = Field(default_factory=SnapshotSettings)

    def snapshot_dir(self) -> Path:
        return self.snapshot.dir or self.data_dir / "snapshots"

    def content_index_path(self) -> Path | None:
        if not self.serving.content_index_cache:
            return None
        return self.serving.content_index_dir or self.data_dir / "content-index"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'segue.db').resolve()}"


class SettingsError(ValueError):
    """A setting has a bad value; the message names the environment variable."""


def _sections() -> dict[str, type[BaseSettings]]:
    return {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings)
    }


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment (and ``overrides``), with errors naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        sections = _sections()
        prefixes = {
            cls.__name__: cls.model_config.get("env_prefix", "") for cls in sections.values()
        }
        prefixes["Settings"] = "SEGUE_"
        lines = []
        for err in exc.errors(include_url=False):
            loc = [str(p) for p in err["loc"]]
            prefix = prefixes.get(exc.title, "SEGUE_")
            if exc.title == "Settings" and loc and loc[0] in sections:
                prefix = sections[loc[0]].model_config.get("env_prefix", "")
                loc = loc[1:]
            name = (prefix + "_".join(loc)).upper()
            lines.append(f"{name}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
