"""Hit probes: breakpoints and watchpoints that note where they hit and let the guest run on.

Going backwards, the debugger wants the *last* hit before a position. On the software CPU
every point of the run has an exact position (``instructions`` + ``deliveries``), so a probe
only has to note that position when unicorn calls it; nothing stops, and one forward
pass over a span finds every hit in it at the speed of plain replay.

Breakpoints are code hooks on their one address. Watchpoints are memory hooks bounded to
the watched bytes (by guest virtual address, as gdb names them; the bound starts a few
bytes early so that a wide access that only ends inside the range is seen, and the
callback checks the overlap): stores elsewhere on the same page cost nothing more.
Adding or removing a probe flushes the translated code, as breakpoint hooks need
(``soft.hooks``).
"""

from __future__ import annotations

import ctypes as C
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from rrvmm.soft import engine as E

__all__ = ["Probe", "ProbeHit", "HitProbes"]

# the widest single access that can start before a watched range and end in it
_WIDEST_ACCESS = 64
MEM_CB = C.CFUNCTYPE(None, C.c_void_p, C.c_int, C.c_uint64, C.c_int, C.c_int64, C.c_void_p)


class Probe(NamedTuple):
    """A breakpoint (``kind`` "exec", ``length`` 1) or watched range ("write", "read",
    "access") at guest virtual ``address`` (a plain tuple: callers need not import this)."""

    kind: str
    address: int
    length: int = 1


@dataclass(frozen=True)
class ProbeHit:
    """Where a probe hit: the position of the instruction (before it runs)."""

    probe: Probe
    instructions: int
    deliveries: int
    rip: int
    access: int = 0  # the accessed address, for watchpoints


class HitProbes:
    """Probes on one ``SoftBackend``; ``on_hit`` is called from inside unicorn."""

    def __init__(self, cpu: Any, on_hit: Callable[[ProbeHit], None]) -> None:
        self.cpu = cpu
        self.on_hit = on_hit
        self._handles: list[int] = []
        self._callbacks: list[Any] = []  # ctypes callbacks must outlive their hooks
        self.error: BaseException | None = None

    def arm(self, probes: list[tuple[str, int, int]]) -> None:
        self.disarm()
        e = self.cpu.engine
        uc = e.unicorn
        for p in map(Probe._make, probes):
            if p.kind == "exec":
                cb = E.CODE_CB(self._code(p))
                self._handles.append(e.hook(uc.UC_HOOK_CODE, cb, p.address, p.address))
            else:
                kinds = {"write": uc.UC_HOOK_MEM_WRITE, "read": uc.UC_HOOK_MEM_READ}
                mask = kinds["write"] | kinds["read"] if p.kind == "access" else kinds[p.kind]
                cb = MEM_CB(self._mem(p))
                begin = max(p.address - _WIDEST_ACCESS + 1, 0)
                self._handles.append(e.hook(mask, cb, begin, p.address + p.length - 1))
            self._callbacks.append(cb)
        if probes:
            e.flush_tb()

    def disarm(self) -> None:
        if not self._handles:
            return
        e = self.cpu.engine
        for h in self._handles:
            e.unhook(h)
        self._handles.clear()
        self._callbacks.clear()
        e.flush_tb()

    def _position(self) -> tuple[int, int, int]:
        """(instructions, deliveries, rip) of the instruction unicorn is running: its count
        was taken as it started, so the instructions before it are one fewer."""
        cpu = self.cpu
        e = cpu.engine
        return cpu.instructions + e.counter.value - 1, cpu.deliveries, e.rip.value

    def _code(self, p: Probe) -> Callable[..., None]:
        def hit(_uc: int, address: int, _size: int, _ud: int) -> None:
            try:
                n, f, _ = self._position()
                self.on_hit(ProbeHit(p, n, f, address))
            except BaseException as exc:  # noqa: BLE001 - must not unwind into C
                self.error = self.error or exc

        return hit

    def _mem(self, p: Probe) -> Callable[..., None]:
        def hit(_uc: int, _access: int, address: int, size: int, _value: int, _ud: int) -> None:
            try:
                if address < p.address + p.length and p.address < address + size:
                    n, f, rip = self._position()
                    self.on_hit(ProbeHit(p, n, f, rip, address))
            except BaseException as exc:  # noqa: BLE001
                self.error = self.error or exc

        return hit
