"""The replay engine's watchpoints: what is watched, and how each way of watching sees it.

gdb names watched bytes by guest virtual address. Two ways to see an access:
- **pages** (KVM, and the software CPU going forward): the watched bytes' pages are made
  read-only (write watches) or absent (read/access watches) in the memory slots, so every
  access to those pages exits with its physical address and data; ``hit`` tells whether
  the access touched watched bytes. Costs an exit per access to the page.
- **probes** (the software CPU going backwards): memory hooks bounded to the watched bytes
  themselves note the exact position of each access and let the guest run on
  (``rrvmm.soft.probes``); other stores to the same page cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rrvmm.target import WatchKind

__all__ = ["Watch", "Watchpoints", "PAGE"]

PAGE = 4096
_KINDS_OF = {
    "write": (WatchKind.WRITE, WatchKind.ACCESS),
    "read": (WatchKind.READ, WatchKind.ACCESS),
}


@dataclass(frozen=True)
class Watch:
    address: int  # guest virtual
    length: int
    kind: WatchKind

    def overlaps(self, addr: int, size: int) -> bool:
        return addr < self.address + self.length and self.address < addr + size


class Watchpoints:
    """The watched ranges, in the order gdb set them.

    ``translate`` maps a guest virtual address to a physical one for the CPU's current
    page tables (None where unmapped: such a watch sees nothing until it is mapped).
    """

    def __init__(self, translate: Callable[[int], int | None]) -> None:
        self.translate = translate
        self._items: list[Watch] = []

    def __iter__(self) -> Iterator[Watch]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, address: int, length: int, kind: WatchKind) -> None:
        self._items.append(Watch(address, length, kind))

    def remove(self, address: int, length: int, kind: WatchKind) -> None:
        self._items = [w for w in self._items if w != Watch(address, length, kind)]

    # --- by pages ---
    def page_modes(self) -> dict[int, str]:
        """Physical page -> "ro" (writes exit) or "none" (every access exits)."""
        pages: dict[int, str] = {}
        for w in self._items:
            pa = self.translate(w.address)
            if pa is None:
                continue
            mode = "ro" if w.kind is WatchKind.WRITE else "none"
            for page in range(pa // PAGE, (pa + w.length - 1) // PAGE + 1):
                if pages.get(page) != "none":
                    pages[page] = mode
        return pages

    def hit(self, gpa: int, size: int, access: str) -> Watch | None:
        """The first watch a ``access`` ("write"/"read") of ``size`` bytes at physical
        ``gpa`` touches, if any."""
        kinds = _KINDS_OF[access]
        for w in self._items:
            if w.kind not in kinds:
                continue
            pa = self.translate(w.address)
            if pa is not None and gpa < pa + w.length and pa < gpa + size:
                return w
        return None

    # --- by probes ---
    def probes(self) -> list[tuple[str, int, int]]:
        """(kind, virtual address, length) for the software CPU's hit probes."""
        return [(w.kind.value, w.address, w.length) for w in self._items]
