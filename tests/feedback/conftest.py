from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from feedback.db import create_db_engine
from feedback.log import SQLEventLog


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The event log's database: a SQLite file, then a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'segue.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def event_log(db_url: str) -> Iterator[SQLEventLog]:
    log = SQLEventLog(create_db_engine(db_url))
    yield log
    log.close()
