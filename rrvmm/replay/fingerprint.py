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

__all__ = ["fingerprint", "pages_of"]

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


def fingerprint(
    regs: dict[str, int], dirty: int, read_page: Callable[[int], bytes]
) -> int:
    """xxh3-64 of the registers, the dirty page set and the dirty pages' contents."""
    values = [regs[n] for n in GPR_NAMES]
    values[-1] &= ~_RFLAGS_IGNORED
    h = xxhash.xxh3_64(_GPRS.pack(*values))
    for page in pages_of(dirty):
        h.update(page.to_bytes(8, "little"))
        h.update(read_page(page * PAGE_SIZE))
    return h.intdigest()
