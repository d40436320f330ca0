"""The operator commands work when River, VW, hnswlib, FastAPI and numpy are broken.

Both checks run in a fresh interpreter: the test process itself may have anything imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from snapshots import SnapshotStore

REPO = Path(__file__).resolve().parents[2]
# pydantic is not here: typer 0.29 coerces option values through it (and it needs no numpy).
HEAVY = ("river", "vowpalwabbit", "hnswlib", "fastapi", "numpy", "pandas", "sqlalchemy")
INTERNAL = ("online", "serving", "feedback", "simulations")


def _python(*args: str, env_extra: dict[str, str] | None = None, cwd: Path = REPO):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGUE_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def test_importing_the_cli_loads_nothing_heavy_or_internal():
    code = "import json, sys, snapshots, snapshots.cli; print(json.dumps(sorted(sys.modules)))"
    result = _python("-c", code)
    assert result.returncode == 0, result.stderr
    top_level = {name.split(".")[0] for name in json.loads(result.stdout)}
    assert top_level.isdisjoint(HEAVY + INTERNAL), top_level & set(HEAVY + INTERNAL)


@pytest.fixture
def broken_libraries(tmp_path: Path) -> Path:
    """A directory of packages that fail to import, shadowing the real ones."""
    stubs = tmp_path / "stubs"
    for name in (*HEAVY, *INTERNAL):
        (stubs / name).mkdir(parents=True)
        (stubs / name / "__init__.py").write_text(
            f"raise ImportError('{name} is broken in this test')\n"
        )
    return stubs


def test_cli_works_with_heavy_libraries_unimportable(broken_libraries, store, cut, tmp_path):
    v1 = cut(store, 100).version
    cut(store, 200)
    env = {"PYTHONPATH": f"{broken_libraries}{os.pathsep}{REPO}"}
    sanity = _python("-c", "import numpy", env_extra=env, cwd=tmp_path)
    assert "numpy is broken" in sanity.stderr  # the stubs really shadow the real packages

    def cli(*args: str):
        return _python(
            "-m", "snapshots.cli", *args, "--dir", str(store.root), env_extra=env, cwd=tmp_path
        )

    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["version"] == v1

    rolled = cli("rollback", v1, "--replay")
    assert rolled.returncode == 0, rolled.stderr
    assert "re-learns the event log from offset 100" in rolled.stdout
    pointer = SnapshotStore(store.root).pointer()
    assert (pointer.version, pointer.mode) == (v1, "replay")

    for args in (["verify"], ["show", v1], ["pin", v1], ["prune", "--keep", "1"]):
        result = cli(*args)
        assert result.returncode == 0, (args, result.stderr)
    archive = tmp_path / "v1.tar.gz"
    assert cli("export", v1, str(archive)).returncode == 0

    missing = cli("rollback", "v000077")
    assert missing.returncode == 3 and "unknown snapshot version" in missing.stderr
