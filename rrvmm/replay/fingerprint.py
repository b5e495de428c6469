"""Fingerprints that tell one guest state from another at a forced exit.

A kick lands at an arbitrary instruction. Replay finds the same point again by stopping
at the recorded RIP and comparing fingerprints; the first equal state is the landing.
Registers alone are not enough (a loop like ``add [x], 0x100; jnc`` repeats them while
memory changes), so the fingerprint also covers which pages the guest wrote since the
last fingerprint and what those pages now hold. Equal fingerprints mean equal futures.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import xxhash

from ..kvm.backend import GPR_NAMES

__all__ = ["regs_fingerprint", "memory_fingerprint", "pages_of"]

PAGE_SIZE = 4096
_RFLAGS_IGNORED = (1 << 16) | (1 << 8)  # RF and TF: debugging artefacts, not guest state
_GPRS = struct.Struct("<18Q")


def pages_of(bitmap: int) -> list[int]:
    """Page numbers of the set bits, lowest first."""
    pages = []
    while bitmap:
        low = bitmap & -bitmap
        pages.append(low.bit_length() - 1)
        bitmap ^= low
    return pages


def regs_fingerprint(regs: dict[str, int]) -> int:
    """xxh3-64 of the general registers, RIP and RFLAGS (without RF/TF).

    Checked first at every breakpoint hit: it is cheap, and most hits differ here.
    """
    values = [regs[n] for n in GPR_NAMES]
    values[-1] &= ~_RFLAGS_IGNORED
    return xxhash.xxh3_64_intdigest(_GPRS.pack(*values))


def memory_fingerprint(dirty: int, read_page: Callable[[int], bytes]) -> int:
    """xxh3-64 of the set of pages written since the last landing and their contents."""
    h = xxhash.xxh3_64()
    for page in pages_of(dirty):
        h.update(page.to_bytes(8, "little"))
        h.update(read_page(page))
    return h.intdigest()
