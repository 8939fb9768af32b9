"""rqueue in the peers' harness (``../shared/bench-peers/common.py``), so its drain is measured
exactly as every peer's and raw Redis Streams' (``streams_bench.py``) are: N pre-filled ~200-byte
JSON jobs, ``--workers`` forked processes, the clock from the fork barrier to the N-th handler
call, each handler call one ``common.hit()``.

    python benchmarks/peer_rqueue.py --mode asyncio --port 6395 --n 50000   # a THROWAWAY server
    python benchmarks/peer_rqueue.py --mode threads --port 6395 --n 50000

``benchmarks/vs_streams.sh`` runs it beside ``streams_bench.py`` in one run, rounds alternated.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

PEERS = Path(os.environ.get("RQUEUE_BENCH_PEERS", Path(__file__).resolve().parents[2] / "shared" / "bench-peers"))
sys.path.insert(0, str(PEERS))

import common  # noqa: E402  (the shared harness, found through PEERS)

import rqueue  # noqa: E402
import rqueue.asyncio as rqa  # noqa: E402

QUEUE, BATCH = "bench", 100


def enqueue(args: Any, payloads: list[Any]) -> None:
    with rqueue.connect(common.redis_url(args)) as c:
        q = c.create_queue(QUEUE, visibility_timeout=60)
        for i in range(0, len(payloads), 1000):
            q.send_batch(payloads[i : i + 1000])


def _handler(body: Any) -> None:
    common.hit()


async def _handler_async(body: Any) -> None:
    common.hit()


def work(args: Any) -> None:
    """One worker process: a consumer until the harness's SIGTERM."""
    url = common.redis_url(args)
    if args.mode == "threads":
        c = rqueue.connect(url)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with rqueue.Consumer(c.queue(QUEUE), _handler, concurrency=args.concurrency, batch_size=BATCH):
            stop.wait()
        return

    async def main() -> None:
        c = await rqa.connect(url)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with rqa.Consumer(c.queue(QUEUE), _handler_async, concurrency=args.concurrency, batch_size=BATCH):
            await stop.wait()

    asyncio.run(main())


if __name__ == "__main__":
    args = common.parse_args(
        default_n=50_000,
        default_concurrency=200,
        extra=lambda ap: ap.add_argument("--mode", choices=["threads", "asyncio"], default="asyncio"),
    )
    common.run(
        f"rqueue-{args.mode}",
        rqueue.__version__,
        f"Consumer({args.mode}) x{args.workers} proc, concurrency={args.concurrency}, batch={BATCH}",
        enqueue,
        work,
        args,
        bulk=True,
    )
