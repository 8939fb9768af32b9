"""The FIFO groups one consumer holds, without I/O: a line per group, one slot per line.

On a FIFO queue (SPEC 10) the server hands out a group's messages in order and
none while another of the group is in flight, but one receive may bring several
consecutive messages of a group. The consumer keeps them in a line per (queue,
group): the first runs (or waits for a worker), the others wait behind it and
start one by one, each when the one before has finished. So a group's messages
never run side by side and always in order, also across receives: the server
hands out nothing more of a group while the consumer holds some of it.

When a message fails (a retry or a dead letter), the messages behind it are
given back without running (``unreceive``: visible at once in their place,
their receive not counted), so once its retry backoff ends the failed message
comes first again. Stopping gives back the messages that have not started, as
for any queue, and a line keeps only its running message.

A line takes one slot, however many messages wait in it. Those behind the
first could not run anywhere else meanwhile (the server holds their group
while the first is in flight), and they start in the line's slot as soon as
the one before finishes, so holding them costs other consumers nothing, and a
long group cannot fill the slots that other groups need to run in parallel.
The consumer never holds more groups than it has slots (backpressure), and
no more messages of a group than one receive brought (at most batch_size).
Their leases are extended like those of running messages.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from rqueue._consumer.jobs import GroupJob

Line = collections.deque[GroupJob]


class HeldGroups:
    """The lines of the FIFO groups one consumer holds. Not thread-safe: the ledger's callers lock."""

    def __init__(self, fifo: Sequence[bool]) -> None:
        #: Per queue: is it a FIFO queue (its jobs are GroupJobs in lines)?
        self.fifo = list(fifo)
        #: (queue index, group) -> its held jobs in order; only the first may have started.
        self.lines: dict[tuple[int, str | None], Line] = {}

    def join(self, jobs: Sequence[GroupJob]) -> tuple[list[GroupJob], int, list[GroupJob]]:
        """Jobs of one receive join their groups' lines, in order.

        Returns the jobs that may start now (each the first of its line), the
        slots taken (one per new line) and the held jobs found stale. A receive
        brings a group the consumer holds only after the leases of what it
        holds of that group ended (the server hands out a group only while
        none of it is in flight); those messages come again in this receive,
        so the unstarted ones are dropped, and the new ones wait behind a
        running one (which cannot be stopped) until it finishes.
        """
        start: list[GroupJob] = []
        stale: list[GroupJob] = []
        opened = 0
        lines = self.lines
        joined: set[tuple[int, str | None]] = set()  # lines this receive has added to
        for job in jobs:
            key = (job.queue, job.message.group)
            line = lines.get(key)
            if line is None:
                lines[key] = collections.deque((job,))
                joined.add(key)
                start.append(job)
                opened += 1
                continue
            if key not in joined:
                joined.add(key)
                stale += [j for j in line if not j.started]
                if not line[0].started:
                    line.clear()
                    line.append(job)
                    start.append(job)
                    continue
                while len(line) > 1:
                    line.pop()
            line.append(job)
        return start, opened, stale

    def finished(self, job: GroupJob, ok: bool) -> tuple[GroupJob | None, list[GroupJob], bool]:
        """``job``, the first of its line, finished (``ok``, or failed).

        Returns the job to start next (the next of its line, after an ok), the
        jobs to give back unrun (the rest of its line, after a failure) and
        whether the line ended (its slot is free).
        """
        key = (job.queue, job.message.group)
        line = self.lines[key]
        line.popleft()
        if line and ok:
            return line[0], [], False
        del self.lines[key]
        return None, list(line), True

    def forget(self, job: GroupJob) -> bool:
        """``job`` is dropped unfinished (its worker crashed; the consumer stops): True if its line ended.
        The jobs behind it stay held and unstarted: the shutdown gives them back."""
        key = (job.queue, job.message.group)
        line = self.lines.get(key)
        if line is None or job not in line:
            return False
        line.remove(job)
        if line:
            return False
        del self.lines[key]
        return True

    def keep_started(self) -> int:
        """Stopping (the unstarted jobs are given back): each line keeps only its running job.
        Returns how many lines ended (their slots are free)."""
        ended = 0
        for key, line in list(self.lines.items()):
            if line[0].started:
                while len(line) > 1:
                    line.pop()
            else:
                del self.lines[key]
                ended += 1
        return ended
