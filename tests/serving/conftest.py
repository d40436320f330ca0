from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.settings import Settings

NOW = 1_795_000_000.0


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Build an app on a data directory under ``tmp_path`` with the clock fixed at ``NOW``."""
    clients: list[TestClient] = []

    def make(data_dir: Path | None = None, **settings: Any) -> TestClient:
        s = Settings(data_dir=data_dir or tmp_path / "data", **settings)
        client = TestClient(create_app(s, clock=lambda: NOW))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
