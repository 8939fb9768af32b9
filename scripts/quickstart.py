"""The README's 30-second example, run on a private embedded server."""

from __future__ import annotations

import threading

import rqueue


def main() -> None:
    with rqueue.connect("embedded://") as client:
        print(f"connected to {client.url}")
        q = client.create_queue("orders", visibility_timeout=30, max_receive_count=3)
        ids = q.send_batch([{"order": n, "total": 10 * n} for n in range(1, 6)])
        print(f"sent {len(ids)} orders: {ids[0]} .. {ids[-1]}")

        for m in q.receive(10):
            print(f"  received #{m.body['order']} (receive_count={m.receive_count})")
            q.delete(m.receipt)

        # Long polling: the receiver wakes the moment a message is sent.
        threading.Timer(0.5, lambda: q.send("late order")).start()
        (m,) = q.receive(wait_time=20)
        print(f"  long poll woke for {m.body!r}")
        q.delete(m.receipt)

        # A message that keeps failing ends in the dead-letter queue.
        q.send("poison")
        for _ in range(3):
            q.receive(visibility_timeout=0)
        q.receive()
        (dead,) = q.dead_letter_queue.receive()
        assert dead.dead_letter is not None
        print(f"  dead letter {dead.body!r}: {dead.dead_letter.reason} after {dead.dead_letter.detail} receives")
        print(q.stats())


if __name__ == "__main__":
    main()
