"""A plain consumer in another process: ``python -m tests.worker URL PREFIX QUEUE``.

It receives, deletes each message with the reply ``{"echo": body, "pid": pid}``
and stops at the body ``"stop"`` (deleted with the reply ``"stopped"``).
Prints ``ready`` once its first long poll is about to start.
"""

from __future__ import annotations

import os
import sys

import rqueue


def main(url: str, prefix: str, queue: str) -> None:
    client = rqueue.connect(url, prefix=prefix)
    q = client.queue(queue)
    print("ready", flush=True)
    try:
        while True:
            for m in q.receive(10, wait_time=5):
                if m.body == "stop":
                    q.delete(m.receipt, reply="stopped")
                    return
                q.delete(m.receipt, reply={"echo": m.body, "pid": os.getpid()})
    finally:
        client.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
