"""Shared fixtures: real PostgreSQL and Redis servers on loopback.

Tests that need a server take the ``postgres_url`` or ``redis_url`` fixture. Where the server
is unreachable the test is skipped with the reason shown, except when
``SEGUE_TEST_REQUIRE_SERVICES=1`` (set by ``.ci/run``): then it fails, so CI can never pass
with those tests silently skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def _unavailable(what: str, error: Exception) -> None:
    message = f"{what} is not reachable: {error}"
    if os.environ.get("SEGUE_TEST_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (SEGUE_TEST_REQUIRE_SERVICES=1, so this is a failure)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def _postgres_base_url() -> str:
    url = os.environ.get("SEGUE_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # any driver error means "not reachable" here
        _unavailable(f"PostgreSQL at {url}", exc)
    return url


@pytest.fixture
def postgres_url(_postgres_base_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose ``search_path`` is a fresh schema, dropped after the test."""
    import sqlalchemy as sa

    schema = f"segue_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(_postgres_base_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'create schema "{schema}"'))
    sep = "&" if "?" in _postgres_base_url else "?"
    yield f"{_postgres_base_url}{sep}options={quote(f'-csearch_path={schema}')}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'drop schema "{schema}" cascade'))
    admin.dispose()


@pytest.fixture(scope="session")
def _redis_base_url() -> str:
    url = os.environ.get("SEGUE_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:
        _unavailable(f"Redis at {url}", exc)
    return url


@pytest.fixture
def redis_url(_redis_base_url: str) -> Iterator[str]:
    """The Redis URL; keys under the test's ``redis_prefix`` are removed afterwards."""
    yield _redis_base_url


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix unique to this test; every key under it is deleted at teardown."""
    import redis

    prefix = f"segue-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


# Hypothesis: no per-example deadline (two shared cores make timings noisy) and derandomized,
# so the same code gives the same run everywhere.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "segue",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=60,
)
settings.load_profile("segue")
