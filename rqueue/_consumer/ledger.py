"""The ledger of one consumer, without I/O: every message it holds and what it owes the queue.

``Ledger`` owns slots (backpressure), leases (heartbeat), finished work
waiting to be acknowledged (ack batching) and what each outcome means for the
queue (delete, retry after a backoff, dead-letter), and, on FIFO queues, the
held groups (``groups``: one line and one slot per group). Not thread-safe:
the thread runner calls it under its lock, the asyncio runner on its loop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rqueue._consumer.core import HEARTBEAT_SHARE, LEASE_FLOOR, Settings, clean, failure_reason, reject_reason
from rqueue._consumer.flush import Flush
from rqueue._consumer.groups import HeldGroups
from rqueue._consumer.handlers import Reject
from rqueue._consumer.jobs import GroupJob, Job
from rqueue._consumer.metrics import Outcome
from rqueue._protocol import operations as _core
from rqueue._protocol.keys import QueueKeys
from rqueue._protocol.models import Message
from rqueue._protocol.operations import Call

__all__ = ["Decision", "Job", "Ledger"]

log = logging.getLogger("rqueue.consumer")


#: What one handler outcome does: (its outcome, whether pending work must be flushed now, the job
#: to start next: on a FIFO queue the next held message of its group, after an ok).
#: A plain tuple: one is made per message, and a frozen dataclass costs ~1 us to build.
Decision = tuple[Outcome, bool, Job | None]


class Ledger:
    """Slots, leases and pending acks of one consumer. Not thread-safe: callers lock."""

    def __init__(
        self,
        settings: Settings,
        vts: Sequence[float],
        mrcs: Sequence[int | None],
        dlqs: Sequence[bool] = (),
        fifo: Sequence[bool] = (),
    ) -> None:
        self.settings = settings
        #: Per queue: the lease taken on receive and on each extension (seconds).
        self.leases = [max(float(vt), LEASE_FLOOR) for vt in vts]
        self.mrcs = list(mrcs)
        #: Per queue: is it a dead-letter queue (whose messages cannot be dead-lettered again)?
        self.dlqs = list(dlqs) or [False] * len(self.leases)
        #: The lines of held FIFO groups; None when no queue is FIFO.
        self.groups = HeldGroups(fifo) if any(fifo) else None
        self.free = settings.concurrency
        #: A busy receiver waits (briefly) for this many free slots, so a round trip carries a batch.
        self.want = max(1, min(settings.batch_size, settings.concurrency) // 2)
        #: Held jobs by (queue index, receipt): receipts are unique within a queue only.
        self.jobs: dict[tuple[int, str], Job] = {}
        self.pending = Flush()
        self.pending_count = 0
        self.pending_since: float | None = None
        #: Receivers with a receive round trip under way: each takes the pending acks when it
        #: sends its next receive, so reaching batch_size need not cost a round trip of its own.
        self.receiving = 0
        #: Earliest heartbeat due time of the held jobs, or earlier (a finished job's): never later.
        self.next_due = float("inf")

    # -- slots

    def reserve(self) -> int:
        """Claim up to batch_size free slots for one receive."""
        n = min(self.settings.batch_size, self.free)
        self.free -= n
        return n

    def unreserve(self, n: int) -> None:
        self.free += n

    def received(self, qi: int, messages: Sequence[Message], now: float) -> tuple[list[Job], int, list[Job]]:
        """Hold freshly received messages (their slots were reserved): the jobs that may start now,
        the slots they take and held jobs dropped as stale (FIFO: ``HeldGroups.join``)."""
        lease_end = now + self.leases[qi]
        groups = self.groups
        if groups is not None and groups.fifo[qi]:
            return self._received_groups(groups, [GroupJob(m, qi, lease_end) for m in messages])
        jobs = [Job(m, qi, lease_end) for m in messages]
        self.jobs.update(((qi, j.message.receipt), j) for j in jobs)
        if jobs:
            self.next_due = min(self.next_due, self._due(jobs[0]))
        return jobs, len(jobs), []

    def _received_groups(self, groups: HeldGroups, jobs: list[GroupJob]) -> tuple[list[Job], int, list[Job]]:
        """FIFO: every job is held (its lease extended), only the first of each line starts."""
        self.jobs.update(((j.queue, j.message.receipt), j) for j in jobs)
        if jobs:
            self.next_due = min(self.next_due, self._due(jobs[0]))
        start, slots, stale = groups.join(jobs)
        for j in stale:
            del self.jobs[j.queue, j.message.receipt]
        if stale:
            log.warning(
                "%d held message(s) of FIFO queue %r lost their lease before they ran (heartbeat failed?); "
                "their group came again and runs from its first message",
                len(stale),
                stale[0].message.queue,
            )
        return list(start), slots, list(stale)

    @property
    def running(self) -> int:
        return sum(1 for j in self.jobs.values() if j.started)

    # -- outcomes

    def finish(self, job: Job, reply: Any, error: BaseException | None, now: float) -> Decision:
        """Record a handler's outcome; free its slot (FIFO: its group's, when its line ends); queue the
        ack, retry or dead letter."""
        self.jobs.pop((job.queue, job.message.receipt), None)
        after: Job | None = None
        if self.groups is None or not isinstance(job, GroupJob):
            self.free += 1
        else:
            after = self._group_goes_on(job, error is None)
        outcome: Outcome
        if error is None:
            self.pending.deletes.setdefault(job.queue, []).append((job.message.receipt, reply))
            outcome = "ok"
        else:
            outcome = self._failed(job.queue, job.message, error)
        self.pending_count += 1
        if self.pending_since is None:
            self.pending_since = now
            return outcome, True, after
        return outcome, self.full, after

    def _group_goes_on(self, job: GroupJob, ok: bool) -> GroupJob | None:
        """FIFO: after ``job`` its group's next held job starts (ok), or the held ones behind it are
        given back unrun (failed: ``job.released``); the line's slot frees when it ends."""
        assert self.groups is not None
        after, rest, ended = self.groups.finished(job, ok)
        if ended:
            self.free += 1
        if rest:
            job.released = rest
            receipts = self.pending.unreceives.setdefault(job.queue, [])
            for j in rest:
                del self.jobs[j.queue, j.message.receipt]
                receipts.append(j.message.receipt)
            self.pending_count += len(rest)
        return after

    def forget(self, job: Job) -> None:
        """Drop a job whose worker crashed (its message comes back after its lease)."""
        if self.jobs.pop((job.queue, job.message.receipt), None) is None:
            return
        if not isinstance(job, GroupJob) or (self.groups is not None and self.groups.forget(job)):
            self.free += 1

    def _failed(self, qi: int, m: Message, error: BaseException) -> Outcome:
        """Queue the retry or dead letter a handler's exception calls for."""
        if isinstance(error, Reject):
            reason = reject_reason(error)
            outcome: Outcome = "rejected"
        else:
            mrc = self.mrcs[qi]
            if self.dlqs[qi] or mrc is None or m.receive_count < mrc:
                self.pending.retries.append((qi, m.receipt, self.settings.backoff.delay(m.receive_count)))
                return "retried"
            reason = clean(f"failed on receive {m.receive_count} of max_receive_count {mrc}: {failure_reason(error)}")
            outcome = "dead_lettered"
        if self.dlqs[qi]:
            # A dead letter cannot be dead-lettered again: keep it where it is and try it again later.
            delay = self.settings.backoff.delay(m.receive_count)
            log.warning(
                "message %s of dead-letter queue %r rejected (%s); it stays there and comes back in %.3g s",
                m.id,
                m.queue,
                reason,
                delay,
            )
            self.pending.retries.append((qi, m.receipt, delay))
            return "retried"
        self.pending.rejects.append((qi, m.receipt, reason))
        return outcome

    @property
    def full(self) -> bool:
        """Pending work must go out now: batch_size reached and no receive round trip will
        carry it (one is under way: its receiver takes it next; one more ack and it goes anyway)."""
        count, batch = self.pending_count, self.settings.batch_size
        return count > batch or (count == batch and not self.receiving)

    def take(self) -> Flush:
        """Everything waiting to be sent; the caller sends it (or gives it back)."""
        out = self.pending
        self.pending = Flush()
        self.pending_count = 0
        self.pending_since = None
        return out

    def give_back(self, flush: Flush, now: float) -> None:
        """Connection lost: keep the work for the next attempt."""
        if not flush:
            return
        flush.merge(self.pending)
        self.pending = flush
        self.pending_count = (
            sum(len(v) for v in flush.deletes.values())
            + len(flush.retries)
            + len(flush.rejects)
            + sum(len(v) for v in flush.releases.values())
            + sum(len(v) for v in flush.unreceives.values())
        )
        self.pending_since = self.pending_since or now

    def flush_in(self, now: float) -> float | None:
        """Seconds until the pending work must go out (0: now); None if nothing is pending."""
        if self.pending_since is None:
            return None
        if self.full:
            return 0.0
        return max(0.0, self.pending_since + self.settings.flush_interval - now)

    # -- leases

    def _due(self, j: Job) -> float:
        return j.lease_end - self.leases[j.queue] * HEARTBEAT_SHARE

    def heartbeat_in(self, now: float) -> float | None:
        """Seconds until some lease needs extending; None if nothing is held."""
        if not self.jobs:
            return None
        return max(0.0, self.next_due - now)

    def heartbeat(self, now: float) -> list[tuple[int, list[str]]]:
        """Leases to extend now, by queue; marks them extended to now + lease."""
        by_queue: dict[int, list[str]] = {}
        next_due = float("inf")
        for j in self.jobs.values():
            if self._due(j) <= now:
                by_queue.setdefault(j.queue, []).append(j.message.receipt)
                j.lease_end = now + self.leases[j.queue]
            next_due = min(next_due, self._due(j))
        self.next_due = next_due
        return list(by_queue.items())

    def heartbeat_calls(self, keys: Sequence[QueueKeys], due: list[tuple[int, list[str]]]) -> list[Call[Any]]:
        """The extensions: each asks for the full lease again (never less: 0 would show the message)."""
        calls: list[Call[Any]] = []
        for qi, receipts in due:
            for i in range(0, len(receipts), _core.MAX_BATCH):
                calls.append(_core.change_visibility(keys[qi], receipts[i : i + _core.MAX_BATCH], self.leases[qi]))
        return calls

    def heartbeat_failed(self, due: list[tuple[int, list[str]]], now: float) -> None:
        """Extension not sent: make those leases due again."""
        for qi, receipts in due:
            for r in receipts:
                j = self.jobs.get((qi, r))
                if j is not None:
                    j.lease_end = now
                    self.next_due = min(self.next_due, self._due(j))

    # -- stopping

    def take_unstarted(self) -> Flush:
        """Drop every held message not started yet; the flush makes them visible now."""
        out = Flush()
        for key, j in list(self.jobs.items()):
            if not j.started:
                del self.jobs[key]
                if not isinstance(j, GroupJob):
                    self.free += 1
                out.releases.setdefault(j.queue, []).append(key[1])
        if self.groups is not None:
            self.free += self.groups.keep_started()  # a FIFO group's slot frees with its line
        return out
