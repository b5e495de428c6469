"""The event layer of a trace: one flat enum of kinds, each with a fixed payload.

Every event is a msgpack array whose first element is its ``EventKind``; the container
stores it with the index of the exit it belongs to (0 = before the first exit). Events of
one exit appear in the order the machine consulted the seam, which is the order the
replayer consumes them. Append new kinds at the end and bump ``TRACE_VERSION`` when the
meaning or payload of an existing kind changes. The table is mirrored in
docs/trace-format.md.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["EventKind", "EVENT_FIELDS", "describe"]


class EventKind(IntEnum):
    EXIT = 1  # [1, exit_kind, addr, size, value, rip]: every VM exit, for verification
    LANDING = 2  # [2, regs_hash, rflags, mem_hash, portable_mem_hash, progressed, insns, halted]
    TIMER = 3  # [3, late_ns]: the device deadline passed; clock = deadline + late_ns
    CLOCK = 4  # [4, clock_ns]: a device read the guest clock (PIT counter/status read)
    WALL = 5  # [5, unix_seconds_float]: the RTC read the wall clock
    SERIAL_RX = 6  # [6, bytes]: host bytes pushed into the UART receive FIFO
    INJECT = 7  # [7, vector]: an external interrupt injected before the next entry
    TSC = 8  # [8, tsc_offset]: the virtual TSC's offset after the guest halted (soft backend)
    IRQ_LINE = 9  # [9, line, level]: kernel irqchip: a device line into KVM's PIC changed
    DEVICE_INPUT = 10  # [10, device, data]: host bytes for a virtio device (console, net)
    ENTROPY = 11  # [11, data]: random bytes the virtio entropy device gave the guest


EVENT_FIELDS: dict[EventKind, tuple[str, ...]] = {
    EventKind.EXIT: ("exit_kind", "addr", "size", "value", "rip"),
    EventKind.LANDING: (
        "regs_hash",
        "rflags",
        "memory_hash",
        "portable_memory_hash",
        "progressed",
        "instructions",
        "halted",
    ),  # fmt: skip
    EventKind.TIMER: ("late_ns",),
    EventKind.CLOCK: ("clock_ns",),
    EventKind.WALL: ("unix_seconds",),
    EventKind.SERIAL_RX: ("data",),
    EventKind.INJECT: ("vector",),
    EventKind.TSC: ("tsc_offset",),
    EventKind.IRQ_LINE: ("line", "level"),
    EventKind.DEVICE_INPUT: ("device", "data"),
    EventKind.ENTROPY: ("data",),
}


def describe(event: tuple | list) -> dict[str, object]:
    """A JSON-friendly dict of one event (for ``rrvmm trace dump``)."""
    from rrvmm.cpu.backend import ExitKind

    kind = EventKind(event[0])
    out: dict[str, object] = {"event": kind.name}
    for name, value in zip(EVENT_FIELDS[kind], event[1:], strict=False):
        if name == "exit_kind":
            value = ExitKind(value).name
        elif isinstance(value, bytes):
            value = value.hex()
        out[name] = value
    return out
