"""Shared helpers of the benchmark scripts: machine description, percentiles, server launch."""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def _probe_work() -> int:
    total = 0
    for i in range(200_000):
        total += i * i
    return total


def _probe(stop: Any, out: Any, period_s: float) -> None:
    samples: list[float] = []
    while not stop.wait(period_s):
        started = time.thread_time()
        _probe_work()
        samples.append((time.thread_time() - started) * 1000)
    out.put(samples)


@contextmanager
def speed_probe(period_s: float = 1.0) -> Iterator[list[float]]:
    """The machine's speed during the block: every ``period_s`` a separate process times the
    same pure-Python loop in CPU time (about 10 ms on an idle machine here). These shared
    machines drift between phases in which the same work costs up to twice the CPU; the
    probe's median labels each window with the phase it ran in, a baseline in the same run.
    (No package measures this; it costs about 1% of one core.) The list yielded holds the
    samples, in ms, once the block has ended."""
    samples: list[float] = []
    stop, out = mp.Event(), mp.Queue()
    proc = mp.Process(target=_probe, args=(stop, out, period_s), daemon=True)
    proc.start()
    try:
        yield samples
    finally:
        stop.set()
        samples.extend(out.get(timeout=30))
        proc.join(30)


def percentiles(values: Sequence[float], ps: Sequence[float] = (50, 99)) -> dict[str, float]:
    ordered = sorted(values)
    out = {}
    for p in ps:
        if not ordered:
            out[f"p{p:g}"] = float("nan")
            continue
        k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        out[f"p{p:g}"] = ordered[k]
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), in MiB."""
    path = Path(f"/proc/{pid or 'self'}/status")
    for line in path.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def serve(
    data_dir: Path,
    port: int,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
    timeout_s: float = 600,
    stderr: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``segue serve`` on 127.0.0.1:port until the block ends (its stderr into the file
    ``stderr`` when given)."""
    err = stderr.open("wb") if stderr is not None else None
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from serving.cli import main; main()",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *args,
        ],
        env={**os.environ, "SEGUE_DATA_DIR": str(data_dir), **(env or {})},
        cwd=ROOT,
        stderr=err,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"segue serve exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("segue serve did not become ready")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if err is not None:
            err.close()
