"""segue's own log lines on stderr, for ``segue serve`` and ``segue learn``."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(level: str = "info") -> None:
    """segue's loggers (``segue.*``: breakers opening, snapshot cuts, rollbacks) to stderr at
    ``level``; uvicorn configures its own. Without this, ``segue serve`` sent only warnings to
    stderr, unformatted, and dropped the learner's lines."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
