"""Parts in flight between the camera and the ejector, and the fail-safe reject.

Each actuating trigger enters a part at the back of a FIFO. Its decision arrives later from the
inference thread, or never: when no decision exists by the part's deadline (slow inference,
an error, a full queue, a camera failure) the part is rejected anyway and the reason counted
("default to reject": a late or lost result must never let a part through). The part leaves
the FIFO at the ejector: after a fixed conveyor delay, or after a number of encoder counts
(the belt moved that far whatever its speed); a reject then fires the ejector. A part that
reaches the ejector still undecided is rejected there.

With no conveyor delay (a station that holds the part until the result) a part leaves as
soon as it is decided or its deadline passed.

One thread sleeps until the next deadline or release; the encoder callback and the inference
thread only update the FIFO and wake it. The deadline check never waits for the inference
thread, which is exactly the thread that may be stuck.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

# why a part was rejected without a reject decision
REASONS = ("deadline", "undecided_at_ejector", "inference", "capture", "no_source", "decode", "queue_full")


@dataclass
class Part:
    id: int
    entered: float  # monotonic time of the trigger
    count: int  # encoder count at the trigger
    deadline: float | None  # monotonic; None: wait for the decision
    decision: str | None = None  # ok | reject, final once set
    reason: str | None = None  # set when rejected without a reject decision
    late: bool = False  # a decision arrived after the part had been failed safe


class PartFifo:
    """The FIFO of parts. ``eject(part)`` fires the ejector; ``on_final(part)`` reports each
    part's final decision once (handshake outputs, counters)."""

    def __init__(self, *, eject: Callable[[Part], None], on_final: Callable[[Part], None],
                 deadline_s: float | None, delay_s: float = 0.0, counts: int | None = None,
                 on_late: Callable[[], None] = lambda: None, clock: Callable[[], float] = time.monotonic):
        self._eject = eject
        self._on_late = on_late
        self._on_final = on_final
        self.deadline_s = deadline_s
        self.delay_s = delay_s
        self.counts = counts  # None: released by time
        self._clock = clock
        self._parts: deque[Part] = deque()
        self._by_id: dict[int, Part] = {}
        self._gone: dict[int, Part] = {}  # parts failed safe and released: their decisions come late
        self._ids = itertools.count(1)
        self._count = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="edgead-parts", daemon=True)
        self._thread.start()
        self.ejected: list[int] = []  # recent ejected part ids (status page, tests)
        self.late_results = 0

    # -- inputs --------------------------------------------------------------------------------
    def enter(self, at: float | None = None) -> Part:
        with self._cond:
            at = self._clock() if at is None else at
            part = Part(next(self._ids), at, self._count,
                        at + self.deadline_s if self.deadline_s is not None else None)
            self._parts.append(part)
            self._by_id[part.id] = part
            self._cond.notify()
            return part

    def decide(self, part_id: int, reject: bool) -> None:
        self._settle(part_id, "reject" if reject else "ok", None)

    def fail(self, part_id: int, reason: str) -> None:
        """The part will get no decision (error, capture failure, queue full): reject it."""
        self._settle(part_id, "reject", reason)

    def encoder_step(self) -> None:
        with self._cond:
            self._count += 1
            self._cond.notify()

    @property
    def position(self) -> int:
        """Encoder counts since start."""
        return self._count

    @property
    def in_flight(self) -> int:
        return len(self._parts)

    # -- the thread ---------------------------------------------------------------------------
    def _settle(self, part_id: int, decision: str, reason: str | None) -> None:
        final = None
        with self._cond:
            part = self._by_id.get(part_id) or self._gone.get(part_id)
            if part is None:
                return
            if part.decision is not None:  # failed safe already: the reject stands
                if reason is None:
                    part.late = True
                    self.late_results += 1
                    self._on_late()
                    log.warning("part %d: decision %s arrived after its deadline; it stays rejected (%s)",
                                part_id, decision, part.reason)
                return
            part.decision, part.reason = decision, reason
            final = part
            self._cond.notify()
        self._on_final(final)

    def _due(self, part: Part, now: float) -> bool:
        if self.counts is not None:
            return self._count - part.count >= self.counts
        if self.delay_s <= 0:  # the station holds the part: it leaves once decided
            return part.decision is not None
        return now >= part.entered + self.delay_s

    def _step(self, now: float) -> tuple[list[Part], list[Part], float | None]:
        """Under the lock: fail overdue parts, release due ones; the next wake-up time."""
        failed, released = [], []
        for part in self._parts:
            if part.decision is None and part.deadline is not None and now >= part.deadline:
                part.decision, part.reason = "reject", "deadline"
                failed.append(part)
        while self._parts and self._due(self._parts[0], now):
            part = self._parts.popleft()
            del self._by_id[part.id]
            if part.decision is None:
                part.decision, part.reason = "reject", "undecided_at_ejector"
                failed.append(part)
            if part.reason is not None:  # failed safe: its decision may still come, late
                self._gone[part.id] = part
                while len(self._gone) > 1000:
                    del self._gone[next(iter(self._gone))]
            released.append(part)
        wake = [p.deadline for p in self._parts if p.decision is None and p.deadline is not None]
        if self.counts is None and self.delay_s > 0 and self._parts:
            wake.append(self._parts[0].entered + self.delay_s)
        return failed, released, min(wake) if wake else None

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                failed, released, wake = self._step(self._clock())
                if not failed and not released:
                    self._cond.wait(None if wake is None else max(0.0, wake - self._clock()))
                    continue
            for part in failed:
                log.warning("part %d rejected without a result: %s", part.id, part.reason)
                self._on_final(part)
            for part in released:
                if part.decision == "reject":
                    self.ejected = (self.ejected + [part.id])[-100:]
                    try:
                        self._eject(part)
                    except Exception:
                        log.exception("ejector: cannot fire for part %d", part.id)

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(5)
