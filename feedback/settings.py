"""Settings of the feedback intake (environment prefix ``SEGUE_FEEDBACK_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.contract import ContractLimits


class FeedbackSettings(BaseSettings):
    """How ``/v1/feedback`` reads, checks and stores what clients post."""

    model_config = SettingsConfigDict(
        env_prefix="SEGUE_FEEDBACK_", extra="forbid", use_attribute_docstrings=True
    )

    max_batch_events: int = Field(1000, ge=1, le=100_000)
    """Most events one POST may carry; a larger batch is refused with 413."""

    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    """Largest request body accepted, in bytes; a larger body is refused with 413."""

    max_context_keys: int = Field(32, ge=0, le=1000)
    """Most keys an event's ``context`` map may have."""

    max_future_s: float = Field(300.0, ge=0)
    """How far (seconds) an event's timestamp may lie ahead of the server's clock."""

    played_tolerance_ms: int = Field(2000, ge=0)
    """How much ``played_ms`` may exceed ``duration_ms`` (clients' clocks and rounding)."""

    write_timeout_s: float = Field(5.0, gt=0)
    """How long a batch may wait for the event log before the answer is 503."""

    retry_after_s: int = Field(2, ge=1)
    """The ``Retry-After`` header (seconds) sent with a 503."""

    batch_memory_s: float = Field(86_400.0, ge=0)
    """How long the answer to a batch is remembered for identical retries (event ids are
    deduplicated for ever)."""

    def limits(self) -> ContractLimits:
        return ContractLimits(
            max_context_keys=self.max_context_keys,
            max_future_s=self.max_future_s,
            played_tolerance_ms=self.played_tolerance_ms,
        )
