"""The composition root: run, record and replay a guest.

``run`` and ``record`` build the machine around a live seam (the recorder writes what it
lets through), from ``GuestImages`` (rrvmm.machine.images) and a CPU from ``make_backend``
(rrvmm.machine.cpu_choice). ``replay`` runs the machine the replay rig
(rrvmm.replay.rig) puts together from a trace, to its end, and says whether it matched.
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from rrvmm import __version__
from rrvmm.cpu.backend import CpuBackend, RecordableCpu
from rrvmm.devices.virtio import OVERLAY, WRITE_THROUGH
from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.host.chaos import ChaosSeam, ChaosSettings
from rrvmm.host.live_seam import InstructionClockSeam, LiveSeam
from rrvmm.host.terminal import SerialHost
from rrvmm.host.udp import UdpPort, parse_udp
from rrvmm.machine.cpu_choice import guest_cpuid
from rrvmm.machine.images import GuestImages
from rrvmm.machine.pc import Machine, MachineConfig, RunResult
from rrvmm.machine.virtio import VirtioHosts, open_disk
from rrvmm.replay.container import TraceReader, TraceWriter
from rrvmm.replay.footer_check import end_disagreement
from rrvmm.replay.recorder import Recorder
from rrvmm.replay.replayer import ExitCheck, ReplayDivergence, Replayer, TraceEnded
from rrvmm.replay.rig import build_rig

Drive = Callable[[Machine], RunResult]  # runs a booted machine to its end (e.g. under gdb)

__all__ = [
    "run_guest",
    "record_guest",
    "replay_trace",
    "ReplayOutcome",
]


def _live_seam(serial: SerialHost, cpu: CpuBackend, ports: dict[str, UdpPort]) -> LiveSeam:
    """Host inputs; guest time from the instruction count where the CPU counts exactly."""
    counter = cpu.instruction_counter()
    if counter is not None:
        return InstructionClockSeam(serial, counter, ports)
    return LiveSeam(serial, ports)


def _close_hosts(hosts: VirtioHosts, ports: dict[str, UdpPort]) -> None:
    for port in ports.values():
        port.close()
    if hosts.disk is not None:
        hosts.disk.close()


def _virtio_hosts(config: MachineConfig) -> tuple[VirtioHosts, dict[str, UdpPort]]:
    """The host ends of the virtio devices for a live run: the disk image (written to only
    if asked), and UDP ports for the network and console peers. (Replay has its own:
    ``rrvmm.replay.rig.replay_machine``.)"""
    disk = None
    if config.disk:
        disk = open_disk(config.disk, WRITE_THROUGH if config.disk_write else OVERLAY)
    ports: dict[str, UdpPort] = {}
    for name, spec, option in (
        ("net", config.net, "--net"), ("console", config.vconsole, "--vconsole")
    ):  # fmt: skip
        if not spec:
            continue
        try:
            ports[name] = UdpPort(*parse_udp(spec, option), name=option)
        except ValueError as e:
            raise RrvmmError(str(e), ExitStatus.USAGE) from None
        except OSError as e:
            raise RrvmmError(f"{option} {spec}: {e.strerror}", ExitStatus.USAGE) from None
    hosts = VirtioHosts(
        disk,
        ports["net"].send if "net" in ports else None,
        ports["console"].send if "console" in ports else None,
    )
    return hosts, ports


def _machine_header(config: MachineConfig, cpu: CpuBackend, hosts: VirtioHosts) -> dict:
    out: dict[str, Any] = {
        "memory": config.memory,
        "cmdline": config.cmdline,
        "irqchip": "user" if cpu.kernel_irqchip() is None else "kernel",
        "virtio_cmdline": config.virtio_cmdline,
        "apic": config.apic,
        "test_devices": config.test_devices,
    }
    if hosts.disk is not None and config.disk:
        out["disk"] = {
            "path": str(Path(config.disk).resolve()),
            "sha256": hosts.disk.sha256(),
            "sectors": hosts.disk.sectors,
            "written": config.disk_write,
        }
    return out


def _boot(machine: Machine, images: GuestImages) -> None:
    machine.boot(images.kernel, images.initrd)


def run_guest(
    images: GuestImages,
    config: MachineConfig,
    cpu: RecordableCpu,
    serial: SerialHost,
    drive: Drive | None = None,
) -> RunResult:
    """Run live, no recording; ``drive`` runs the booted machine instead of ``Machine.run``
    (`run --gdb`)."""
    cpu.set_cpuid(guest_cpuid(cpu, config.apic))
    hosts, ports = _virtio_hosts(config)
    seam = _live_seam(serial, cpu, ports)
    machine = Machine(config, cpu, seam, serial, hosts)
    _boot(machine, images)
    seam.attach(cpu)
    try:
        with serial.terminal():
            return drive(machine) if drive is not None else machine.run()
    finally:
        seam.detach()
        _close_hosts(hosts, ports)


def record_guest(
    images: GuestImages,
    config: MachineConfig,
    cpu: RecordableCpu,
    serial: SerialHost,
    trace_path: Path,
    drive: Drive | None = None,
    chaos: ChaosSettings | None = None,
) -> tuple[RunResult, Recorder]:
    """Run live and write every input to ``trace_path``; ``drive`` runs the booted machine
    instead of ``Machine.run`` (`record --gdb`); ``chaos`` shakes the live answers
    (``rrvmm.host.chaos``) and goes into the header."""
    cpuid = guest_cpuid(cpu, config.apic)
    cpu.set_cpuid(cpuid)
    hosts, ports = _virtio_hosts(config)
    header = {
        "rrvmm": __version__,
        "backend": cpu.name,
        "machine": _machine_header(config, cpu, hosts),
        "cpuid": [list(r) for r in cpuid],
        "images": images.describe(),
        "cmdline": config.cmdline,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
    }
    live: Any = _live_seam(serial, cpu, ports)
    if chaos is not None:
        header["chaos"] = chaos.header()
        live = ChaosSeam(live, chaos)
    try:
        writer = TraceWriter(trace_path, header)
    except OSError as e:
        _close_hosts(hosts, ports)
        raise RrvmmError(
            f"cannot write trace {trace_path}: {e.strerror}", ExitStatus.NO_INPUT
        ) from None
    with writer:
        recorder = Recorder(live, writer, cpu)
        machine = Machine(config, cpu, recorder, serial, hosts)
        _boot(machine, images)
        live.attach(cpu)
        recorder.attach()
        try:
            with serial.terminal():
                result = drive(machine) if drive is not None else machine.run()
        finally:
            recorder.detach()
            live.detach()
            _close_hosts(hosts, ports)
        writer.close(
            {
                "status": result.status,
                "reason": result.reason,
                "exits": result.exits,
                "forced_exits": recorder.forced_exits,
                "serial_sha256": hashlib.sha256(serial.transcript).hexdigest(),
                "guest_ns": live.clock_ns(),  # guest time at the end (`rrvmm ls`, timeline axis)
                **({"chaos": live.footer()} if chaos is not None else {}),
            }
        )
    return result, recorder


@dataclass
class ReplayOutcome:
    """How a replay ended."""

    matched: bool  # every recorded exit was reproduced
    complete: bool  # the trace was complete (not cut)
    exits: int
    result: RunResult | None  # the guest's own end, when replay reached it
    divergence: ReplayDivergence | None
    serial: bytes
    replayer: Replayer


def replay_trace(
    reader: TraceReader,
    *,
    kernel: str | None = None,
    initrd: str | None = None,
    output: BinaryIO | None = None,
    check: ExitCheck | None = None,
    progress: Callable[[int], None] | None = None,
    kvm_device: str = "/dev/kvm",
    backend: str | None = None,
    disk: str | None = None,
) -> ReplayOutcome:
    """Re-execute a recording and check it exit by exit (on ``backend``, default: the
    recording's own)."""
    rig = build_rig(
        reader,
        kernel=kernel,
        initrd=initrd,
        disk=disk,
        backend=backend,
        kvm_device=kvm_device,
        output=output,
        check=check,
    )
    try:
        replayer, machine, serial = rig.replayer, rig.machine, rig.serial
        if progress is not None:
            replayer.progress = progress
        divergence = None
        result = None
        try:
            result = machine.run()
        except ReplayDivergence as d:
            divergence = d
        except TraceEnded:
            pass
        serial.flush()
        complete = not reader.truncated
        matched = divergence is None and (result is not None or replayer.at_end)
        if result is not None and not replayer.at_end:
            matched = False
        end = end_disagreement(reader.footer, machine.exit_index, result, serial.transcript)
        if matched and end is not None:
            if end.missing_events:
                raise RrvmmError(end.one_line(reader.path), ExitStatus.BAD_TRACE)
            matched = False
            divergence = ReplayDivergence(
                machine.exit_index, end.what, end.expected, end.actual,
                last_match=replayer.last_match,
            )  # fmt: skip
        return ReplayOutcome(
            matched=matched,
            complete=complete,
            exits=machine.exit_index,
            result=result,
            divergence=divergence,
            serial=serial.transcript,
            replayer=replayer,
        )
    finally:
        rig.close()
