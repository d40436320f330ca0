"""The objects a running app works with, built once per app by :func:`serving.app.create_app`.

Routes get them through the :func:`get_services` dependency, never from module globals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from feedback.db import create_db_engine
from feedback.log import SQLEventLog
from serving.metrics import Metrics
from serving.settings import Settings


@dataclass
class Services:
    settings: Settings
    log: SQLEventLog
    metrics: Metrics
    clock: Callable[[], float] = time.time
    new_events: threading.Event = field(default_factory=threading.Event)

    def notify_new_events(self) -> None:
        """Wake the in-process learner: the log has grown."""
        self.new_events.set()

    @classmethod
    def build(cls, settings: Settings, *, clock: Callable[[], float] = time.time) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_db_engine(
            settings.resolved_database_url(),
            timeout_s=settings.db_timeout_s,
            sqlite_synchronous=settings.sqlite_synchronous,
        )
        return cls(
            settings=settings,
            log=SQLEventLog(engine, batch_memory_s=settings.feedback.batch_memory_s),
            metrics=Metrics(),
            clock=clock,
        )

    def close(self) -> None:
        self.log.close()


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
