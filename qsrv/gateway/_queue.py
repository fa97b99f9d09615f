"""Which queued job starts next: per-user queues, oldest first, under a per-user cap.

Pure bookkeeping, no IO: the job lifecycle (``_jobs``) tells it what was queued, started,
stopped, ended and put back, and asks ``next_job()``. Every operation costs O(log U) (U: users
with queued jobs) whatever the number of queued jobs, so a user who queued thousands of jobs
does not slow anyone's request.

Invariants:

- Each user's queue holds their QUEUED jobs in submission order (an OrderedDict: the head
  in O(1), a stopped job leaves it in O(1)); a job put back (it could not start) is its head
  again.
- ``_ready`` is a heap of ``(created_at of the head, seq, user_id)``: every user who is under
  the running cap and has a queued job has a current entry; stale entries (the head changed or
  the user reached the cap) are skipped when popped. Across users the oldest head starts first.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, OrderedDict

__all__ = ["JobQueue"]


class JobQueue:
    def __init__(self, max_running_per_user: int) -> None:
        self.max_running = max(1, max_running_per_user)
        self._queues: dict[int, OrderedDict[str, float]] = {}  # user -> {job_id: created_at}
        self._running: Counter[int] = Counter()
        self._ready: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()

    def queued(self, user_id: int) -> int:
        """How many jobs of the user are waiting."""
        return len(self._queues.get(user_id, ()))

    def running(self, user_id: int) -> int:
        return self._running[user_id]

    def add(self, user_id: int, job_id: str, created_at: float) -> None:
        """A job was queued (submission order: ``add`` in order of creation)."""
        queue = self._queues.setdefault(user_id, OrderedDict())
        queue[job_id] = created_at
        if len(queue) == 1:
            self._offer(user_id)

    def remove(self, user_id: int, job_id: str) -> bool:
        """A queued job left the queue without starting (stopped); False if it was not queued."""
        queue = self._queues.get(user_id)
        if queue is None or queue.pop(job_id, None) is None:
            return False
        if not queue:
            del self._queues[user_id]
        else:
            self._offer(user_id)  # the head may have changed
        return True

    def started(self, user_id: int) -> None:
        """A job of the user runs that did not come from ``next_job`` (recovered at start)."""
        self._running[user_id] += 1

    def ended(self, user_id: int) -> None:
        """A running job of the user ended: the user may start another."""
        if self._running[user_id] > 0:
            self._running[user_id] -= 1
        if not self._running[user_id]:
            del self._running[user_id]
        self._offer(user_id)

    def next_job(self) -> tuple[int, str] | None:
        """The job to start now (removed from its queue and counted running), or None."""
        entry = self.next_entry()
        return entry[:2] if entry is not None else None

    def next_entry(self) -> tuple[int, str, float] | None:
        """``next_job``, with the job's ``created_at`` (for ``put_back``)."""
        while self._ready:
            _, _, user_id, job_id = heapq.heappop(self._ready)
            queue = self._queues.get(user_id)
            if not queue or next(iter(queue)) != job_id \
                    or self._running[user_id] >= self.max_running:
                continue  # stale
            created_at = queue.pop(job_id)
            if not queue:
                del self._queues[user_id]
            self._running[user_id] += 1
            self._offer(user_id)
            return user_id, job_id, created_at
        return None

    def put_back(self, user_id: int, job_id: str, created_at: float) -> None:
        """A job ``next_entry`` gave could not start: it waits again, first of its user's
        (call ``ended`` for it too). Put several back in the reverse of the order taken."""
        queue = self._queues.setdefault(user_id, OrderedDict())
        queue[job_id] = created_at
        queue.move_to_end(job_id, last=False)
        self._offer(user_id)

    def _offer(self, user_id: int) -> None:
        queue = self._queues.get(user_id)
        if queue and self._running[user_id] < self.max_running:
            job_id = next(iter(queue))
            heapq.heappush(self._ready, (queue[job_id], next(self._seq), user_id, job_id))
        elif not self._running[user_id]:
            self._running.pop(user_id, None)
        if len(self._ready) > 64 + 4 * (len(self._queues) + 1):
            self._compact()

    def _compact(self) -> None:
        """Drop stale heap entries (they pile up when one user's queue churns)."""
        fresh = []
        for entry in self._ready:
            _, _, user_id, job_id = entry
            queue = self._queues.get(user_id)
            if queue and next(iter(queue)) == job_id \
                    and self._running[user_id] < self.max_running:
                fresh.append(entry)
        # at most one entry per user: keep the first (any of equal heads is current)
        seen: set[int] = set()
        self._ready = []
        for entry in fresh:
            if entry[2] not in seen:
                seen.add(entry[2])
                self._ready.append(entry)
        heapq.heapify(self._ready)
