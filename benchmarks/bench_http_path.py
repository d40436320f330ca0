"""What the HTTP layers between uvicorn and the list handler cost per list, in process.

The app is built as ``segue serve`` builds it, on an empty data directory, with the
recommender's decision replaced by a canned 30-item list: what is left is the framework's
work (and the handler writing the JSON). Each variant sends ``--calls`` ``POST
/v1/recommend`` requests straight into the ASGI app (no socket, no uvicorn) and measures the
interpreter's CPU time per request (``time.process_time``); ``--runs`` rounds alternate the
variants, and the script prints the median and the slowest round:

* ``fast path``: the app as served (a valid list request skips the middleware stack);
* ``app stack``: the same app's FastAPI stack, as before the fast path (the baseline);
* ``422 (both)``: an invalid request, which takes the app's stack in both.

    .venv/bin/python benchmarks/bench_http_path.py --calls 3000 --runs 7
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import machine
from feedback.events import Decision, SlateEntry
from serving.app import create_app
from serving.recommend_api import RECOMMEND_PATH, RecommendFastPath
from serving.settings import Settings


def scope_for(app: Any, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": RECOMMEND_PATH,
        "raw_path": RECOMMEND_PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def measure(app: Any, asgi: Any, body: bytes, calls: int, status: int) -> float:
    """CPU microseconds per request of ``calls`` requests through ``asgi``."""
    sent: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    scope = scope_for(app, body)
    started = time.process_time()
    for _ in range(calls):
        await asgi(dict(scope), receive, send)
    took = time.process_time() - started
    assert sent == [status] * calls, sent[:3]
    return took / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {machine()}")

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(data_dir=Path(tmp)), embedded_learner=False)
        services = app.state.services
        canned = (
            Decision(
                request_id="0" * 32,
                user_id="listener-42",
                timestamp=0.0,
                model_version="v0+0",
                slate=tuple(
                    SlateEntry(f"track-{i}", i, 1.0 - i / 100, 0.9, i % 7 == 0) for i in range(30)
                ),
            ),
            None,
            1.0,
        )

        async def decide(*args: Any, **kwargs: Any) -> tuple[Decision, None, float]:
            return canned

        services.recommender.decide = decide
        stack = app.build_middleware_stack()
        assert isinstance(stack, RecommendFastPath)
        inner = stack.app

        async def through_app(scope: Any, receive: Any, send: Any) -> None:
            scope["app"] = app  # as Starlette's __call__ sets it
            await inner(scope, receive, send)

        good = orjson.dumps({"user_id": "listener-42", "k": 30, "context": {"device": "ios"}})
        bad = orjson.dumps({"user_id": "listener-42", "k": 0})
        variants = {
            "fast path": (app, good, 200),
            "app stack": (through_app, good, 200),
            "422 (both)": (app, bad, 422),
        }
        results: dict[str, list[float]] = {name: [] for name in variants}

        async def run() -> None:
            for asgi, body, status in variants.values():  # warm-up
                await measure(app, asgi, body, 200, status)
            for _ in range(args.runs):
                for name, (asgi, body, status) in variants.items():
                    results[name].append(await measure(app, asgi, body, args.calls, status))

        asyncio.run(run())
        services.close()

    print(f"{args.calls} requests per round, {args.runs} rounds, variants alternating")
    print("| variant | CPU per request (median) | slowest round |")
    print("|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.0f} us | {max(values):.0f} us |")


if __name__ == "__main__":
    main()
