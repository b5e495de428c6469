"""The replay engine's checkpoints: where it can go back to, when to take one, what to drop.

Going back is restoring the nearest checkpoint before the target and re-executing
forward, so a debugging step costs the replay work between the two. Checkpoints are
therefore taken by work done (seconds of replay), not by a count of exits that may be
microseconds or minutes apart; a run towards a target (a goto, a reverse search) also
takes them at exits that halve the distance left, so they are densest where the user is.
Each holds the vCPU and device state and the pages written since the previous one; above
the memory budget the ones far from the current position are merged away first (as rr
thins its checkpoints: the gap one leaves should grow with its distance from here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rrvmm.replay.fingerprint import pages_of

__all__ = [
    "Checkpoint",
    "CheckpointPolicy",
    "Checkpoints",
    "DEFAULT_INTERVAL_S",
    "DEFAULT_MEMORY",
    "PAGE",
]

PAGE = 4096
DEFAULT_INTERVAL_S = 0.25  # replay work between two checkpoints taken going forward
DEFAULT_MEMORY = 512 << 20  # the pages all checkpoints may hold beyond the base image
NEAR_MIN_S = 0.002  # halving towards a target: never closer than this much work
_STATE_BYTES = 8 << 10  # vCPU and device state of one checkpoint, roughly


@dataclass
class Checkpoint:
    exit_index: int
    cpu: dict[str, Any]
    machine: dict[str, Any]
    cursor: dict[str, Any]
    accumulators: dict[str, int]
    landing_dirty: int
    serial_len: int
    pages: dict[int, bytes] = field(default_factory=dict)  # changed since the previous one

    @property
    def memory_bytes(self) -> int:
        return len(self.pages) * PAGE


@dataclass
class CheckpointPolicy:
    """When a checkpoint is due: every ``every_exits`` exits if set (the old fixed rule,
    for tests), else after ``interval_s`` seconds of replay work; ``memory`` bounds the
    pages they hold."""

    every_exits: int | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    memory: int = DEFAULT_MEMORY

    def due(self, exit_index: int, work_s: float) -> bool:
        if self.every_exits:
            return exit_index % self.every_exits == 0
        return work_s >= self.interval_s

    def due_near(self, exit_index: int, last: int, target: int, work_s: float) -> bool:
        """On the way to ``target``: a checkpoint at each exit that halves what is left
        since the last one (a few, densest at the target)."""
        if self.every_exits or work_s < NEAR_MIN_S:
            return False
        return target - exit_index <= (target - last) // 2

    def describe(self) -> str:
        if self.every_exits:
            return f"every {self.every_exits} exits"
        return (
            f"every {self.interval_s:g} s of replay, denser near the position,"
            f" budget {self.memory >> 20} MiB"
        )


class Checkpoints:
    """The checkpoints by exit index, the power-on image under them, and thinning."""

    def __init__(self, policy: CheckpointPolicy) -> None:
        self.policy = policy
        self.base: dict[int, bytes] = {}  # non-zero pages at power-on
        self.by_exit: dict[int, Checkpoint] = {}
        self.order: list[int] = []  # ascending
        self.dropped = 0

    # a read-only mapping view, for callers that only look
    def __len__(self) -> int:
        return len(self.by_exit)

    def __contains__(self, k: object) -> bool:
        return k in self.by_exit

    def __getitem__(self, k: int) -> Checkpoint:
        return self.by_exit[k]

    def values(self) -> list[Checkpoint]:
        return [self.by_exit[k] for k in self.order]

    @property
    def memory_bytes(self) -> int:
        return sum(c.memory_bytes + _STATE_BYTES for c in self.by_exit.values())

    def add(self, cp: Checkpoint) -> None:
        self.by_exit[cp.exit_index] = cp
        self.order = sorted(self.by_exit)

    def last_at_or_before(self, k: int) -> int:
        return max(i for i in self.order if i <= k)

    def pages_between(self, a: int, b: int) -> int:
        """Pages whose contents may differ between the states at exits a and b."""
        lo, hi = min(a, b), max(a, b)
        bits = 0
        for i in self.order:
            if lo < i <= hi:
                for page in self.by_exit[i].pages:
                    bits |= 1 << page
        return bits

    def page_at(self, page: int, k: int, zero: bytes) -> bytes:
        for i in reversed(self.order):
            if i <= k and page in self.by_exit[i].pages:
                return self.by_exit[i].pages[page]
        return self.base.get(page, zero)

    def thin(self, here: int, keep: set[int]) -> None:
        """Merge checkpoints away, far ones first, until within the memory budget.

        The first and the newest checkpoint stay, and those in ``keep`` (what the memory
        and the dirty log are reckoned against). A dropped checkpoint's pages that the
        next one lacks move there (their contents did not change in between), so only
        pages rewritten in both spans are freed.
        """
        while self.memory_bytes > self.policy.memory and len(self.order) > 2:
            best = None
            for j in range(1, len(self.order) - 1):
                k = self.order[j]
                if k in keep:
                    continue
                gap = self.order[j + 1] - self.order[j - 1]
                score = gap / (abs(here - k) + 1)
                if best is None or score < best[0]:
                    best = (score, j)
            if best is None:
                return
            self._drop(best[1])

    def _drop(self, j: int) -> None:
        k, nxt = self.order[j], self.order[j + 1]
        gone = self.by_exit.pop(k)
        into = self.by_exit[nxt].pages
        for page, data in gone.pages.items():
            into.setdefault(page, data)
        self.order.pop(j)
        self.dropped += 1


def copy_pages(memory: Any, bitmap: int) -> dict[int, bytes]:
    """The pages of ``bitmap`` as they are now in ``memory`` (RAM-offset order)."""
    return {page: memory[page * PAGE : (page + 1) * PAGE] for page in pages_of(bitmap)}
