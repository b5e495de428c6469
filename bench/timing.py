"""Timing one plain run or one recording of a guest, for the benchmarks beside it."""

from __future__ import annotations

import io
import time
from pathlib import Path

from rrvmm.host.terminal import SerialHost
from rrvmm.launch import record_guest, run_guest
from rrvmm.machine.cpu_choice import make_backend
from rrvmm.machine.images import GuestImages
from rrvmm.machine.pc import MachineConfig, RunResult


def timed(
    images: GuestImages, config: MachineConfig, backend: str, irqchip: str | None,
    trace: Path | None,
) -> tuple[float, RunResult, bytes]:  # fmt: skip
    """Wall seconds, result and serial output of a run (``trace`` None) or a recording."""
    cpu = make_backend(backend, config.memory, irqchip=irqchip)
    out = io.BytesIO()
    serial = SerialHost(output=out, input_fd=None)
    t0 = time.perf_counter()
    if trace is None:
        result = run_guest(images, config, cpu, serial)
    else:
        result, _ = record_guest(images, config, cpu, serial, trace)
    wall = time.perf_counter() - t0
    cpu.close()
    return wall, result, out.getvalue()
