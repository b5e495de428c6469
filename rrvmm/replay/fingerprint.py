"""Fingerprints that tell one guest state from another at a forced exit.

A kick lands at an arbitrary instruction. Replay finds the same point again by stopping
at the recorded RIP and comparing fingerprints; the first equal state is the landing.
Registers alone are not enough (a loop like ``add [x], 0x100; jnc`` repeats them while
memory changes), so the fingerprint also covers which pages the guest wrote since the
last fingerprint and what those pages now hold. Equal fingerprints mean equal futures.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import xxhash

from rrvmm.cpu.backend import GPR_NAMES, ExitKind
from rrvmm.replay.events import EventKind

if TYPE_CHECKING:
    from rrvmm.cpu.backend import RecordableCpu

__all__ = [
    "regs_fingerprint", "memory_fingerprint", "pages_of", "Landing", "STATUS_FLAGS",
    "landing_payload", "LandingProbe", "memory_fingerprints",
]  # fmt: skip

PAGE_SIZE = 4096
_RFLAGS_IGNORED = (1 << 16) | (1 << 8)  # RF and TF: debugging artefacts, not guest state
# CF PF AF ZF SF OF: instructions leave some of them "undefined", and CPU models (KVM's
# emulator, unicorn) fill those differently; compared only when replaying on the backend
# that recorded.
STATUS_FLAGS = 0x8D5
_GPRS = struct.Struct("<17Q")


def pages_of(bitmap: int) -> list[int]:
    """Page numbers of the set bits, lowest first.

    Skips zero stretches of the bitmap's bytes (``bytes.count``, in C) instead of peeling
    bits off the integer one at a time: a bitmap of guest RAM has tens of thousands of
    bits, and each big-integer operation costs time proportional to its length.
    """
    if not bitmap:
        return []
    raw = bitmap.to_bytes((bitmap.bit_length() + 7) // 8, "little")
    pages: list[int] = []
    for start in range(0, len(raw), _STRETCH):
        stretch = raw[start : start + _STRETCH]
        if stretch.count(0) == len(stretch):
            continue
        for i, byte in enumerate(stretch, start):
            if byte:
                pages += [i * 8 + bit for bit in _BITS[byte]]
    return pages


_STRETCH = 64
_BITS = [tuple(b for b in range(8) if v >> b & 1) for v in range(256)]


def regs_fingerprint(regs: dict[str, int]) -> int:
    """xxh3-64 of the general registers and RIP (RFLAGS is kept beside it, in clear).

    Checked first at every breakpoint hit: it is cheap, and most hits differ here.
    """
    return xxhash.xxh3_64_intdigest(_GPRS.pack(*(regs[n] for n in GPR_NAMES[:17])))


class Landing(NamedTuple):
    """Where a forced exit happened (from an EXIT event and its LANDING event)."""

    kind: ExitKind
    rip: int
    regs_hash: int
    rflags: int
    memory_hash: int
    portable_memory_hash: int
    progressed: bool
    instructions: int | None  # exact count, from backends that count instructions
    halted: bool = False  # kernel irqchip: the vCPU was in HLT (RIP is after it)

    @classmethod
    def from_events(cls, exit_ev: Sequence[Any], landing_ev: Sequence[Any]) -> Landing:
        _, regs_hash, rflags, mem, portable, progressed, count, *rest = landing_ev
        return cls(
            ExitKind(exit_ev[1]), exit_ev[5], regs_hash, rflags, mem, portable,
            bool(progressed), count, bool(rest and rest[0]),
        )  # fmt: skip

    def memory_matches(
        self, dirty: int, read_page: Callable[[int], bytes], exact: bool = True
    ) -> bool:
        if exact:
            return memory_fingerprint(dirty, read_page) == self.memory_hash
        return memory_fingerprint(dirty, read_page, portable=True) == self.portable_memory_hash

    def regs_match(self, regs: dict[str, int], exact_flags: bool = True) -> bool:
        if regs["rip"] != self.rip:
            return False
        ignored = _RFLAGS_IGNORED if exact_flags else _RFLAGS_IGNORED | STATUS_FLAGS
        if (regs["rflags"] ^ self.rflags) & ~ignored:
            return False
        return regs_fingerprint(regs) == self.regs_hash


class LandingProbe:
    """Tells whether a CPU stands at a recorded forced exit (plain replay and the debugger).

    The recorder hashed the pages written since the previous exit. The dirty log is read
    only once the registers match (most breakpoint hits end there, cheaply), and a read
    empties it, so the probe keeps the union of what it read until the landing is taken.
    On a CPU that counts instructions (``exact_counts``) the count alone decides.
    """

    def __init__(self, cpu: RecordableCpu, exact_flags: bool, exact_counts: bool) -> None:
        self.cpu = cpu
        self.counter = cpu.instruction_counter()
        self.exact_flags = exact_flags
        self.exact_counts = exact_counts and self.counter is not None
        self.dirty = 0  # pages read from the log since the last exit, not yet hashed away

    def counted(self, landing: Landing | None) -> bool:
        return landing is not None and self.exact_counts and landing.instructions is not None

    def matches(self, landing: Landing) -> bool:
        cpu = self.cpu
        if self.counted(landing):
            assert self.counter is not None  # exact_counts says so
            return self.counter.instructions == landing.instructions
        if not landing.regs_match(cpu.get_regs(), self.exact_flags):
            return False
        self.dirty |= cpu.dirty_bitmap()
        return landing.memory_matches(self.dirty, cpu.ram_page, self.exact_flags)

    def passed(self) -> None:
        """The exit is reported: what the guest wrote so far is behind the fingerprint
        (as the recorder's own read of the log was)."""
        self.cpu.dirty_bitmap()
        self.dirty = 0


def landing_payload(
    regs: dict[str, int],
    dirty: int,
    read_page: Callable[[int], bytes],
    progressed: bool,
    instructions: int | None,
    halted: bool = False,
) -> list[Any]:
    """The LANDING event for a forced exit with these registers and written pages.

    ``halted`` is written only when true, so traces without a kernel irqchip keep the
    seven-field form older readers know.
    """
    exact, portable = memory_fingerprints(dirty, read_page)
    event = [
        EventKind.LANDING, regs_fingerprint(regs), regs["rflags"] & ~_RFLAGS_IGNORED,
        exact, portable, progressed, instructions,
    ]  # fmt: skip
    if halted:
        event.append(True)
    return event


# A second, "portable" memory hash leaves out, in every 64-bit word, the bits where CPU
# models legitimately disagree: the status flags (0, 2, 4, 6, 7, 11) that instructions leave
# undefined and that reach memory through PUSHF and interrupt frames, RF (16), which KVM sets
# in the RFLAGS an interrupt frame saves and the software CPU does not, and the Accessed and
# Dirty bits (5, 6) of page-table entries, which KVM's emulator and the software CPU set
# differently. Replay on the recording's own backend compares the exact hash.
_PORTABLE_MASK = int.from_bytes(
    (0xFFFF_FFFF_FFFF_FFFF & ~0x108F5).to_bytes(8, "little") * (PAGE_SIZE // 8), "little"
)


def memory_fingerprint(
    dirty: int, read_page: Callable[[int], bytes], portable: bool = False
) -> int:
    """xxh3-64 of the set of pages written since the last landing and their contents."""
    h = xxhash.xxh3_64()
    for page in pages_of(dirty):
        h.update(page.to_bytes(8, "little"))
        data = read_page(page)
        if portable:
            data = (int.from_bytes(data, "little") & _PORTABLE_MASK).to_bytes(PAGE_SIZE, "little")
        h.update(data)
    return h.intdigest()


def memory_fingerprints(dirty: int, read_page: Callable[[int], bytes]) -> tuple[int, int]:
    """``memory_fingerprint`` exact and portable, from one pass over the pages."""
    exact, portable = xxhash.xxh3_64(), xxhash.xxh3_64()
    for page in pages_of(dirty):
        number = page.to_bytes(8, "little")
        data = read_page(page)
        exact.update(number)
        exact.update(data)
        portable.update(number)
        masked = int.from_bytes(data, "little") & _PORTABLE_MASK
        portable.update(masked.to_bytes(PAGE_SIZE, "little"))
    return exact.intdigest(), portable.intdigest()
