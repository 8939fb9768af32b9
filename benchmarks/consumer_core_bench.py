"""The consumer's I/O-free core, per message, without a server or threads.

    PYTHONPATH=<a checkout> python benchmarks/consumer_core_bench.py [label]

One standard queue, concurrency 200, batch 100: each round receives 100
messages (``Control.go``/``arrived``), takes and finishes each (``take``,
``finished``) and takes the acks (``Ledger.take``), as the runners do around
their I/O. Prints the median and the best of 15 runs of 1,000 rounds, in ns per
message: what the decisions cost, apart from the round trips and the handler.
Run it against two checkouts (PYTHONPATH) to compare them side by side.
"""

from __future__ import annotations

import statistics
import sys
import time

import rqueue
from rqueue._consumer.control import Control, Wakes
from rqueue._consumer.core import Settings
from rqueue._consumer.ledger import Ledger
from rqueue._consumer.lifecycle import Cause, Lifecycle, Outage
from rqueue._protocol.keys import QueueKeys


def control() -> Control:
    settings = Settings.of(200, 100, 0.5, 60, 0.005, 1, None)
    life = Lifecycle()
    life.to(Cause.START)

    def nop() -> None:
        return None

    wakes = Wakes(nop, nop, nop, nop, nop, bool)
    ledger = Ledger(settings, [30.0], [None], [False])
    return Control(ledger, life, [QueueKeys.for_queue("b", "q")], ["q"], [], [Outage()], wakes)


MESSAGES = [rqueue.Message(str(i), {}, {}, f"{i}.7", 1, 0, 0, "q") for i in range(100)]


def run(rounds: int = 1000) -> float:
    """ns per message over ``rounds`` rounds of 100 messages."""
    ctl = control()
    t0 = time.perf_counter()
    for _ in range(rounds):
        n, _ = ctl.go(0)
        ctl.receive_ended()
        ctl.arrived(0, n, (MESSAGES, -1, None), 0.0)
        while (job := ctl.take()) is not None:
            ctl.finished(job, None, None, 0.0)
        ctl.ledger.take()
    return (time.perf_counter() - t0) / (rounds * len(MESSAGES)) * 1e9


def main() -> None:
    label = sys.argv[1] if len(sys.argv) > 1 else "core"
    runs = [run() for _ in range(15)]
    print(f"{label}: median {statistics.median(runs):.0f} ns/message (best {min(runs):.0f})")


if __name__ == "__main__":
    main()
