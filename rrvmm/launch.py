"""Putting a machine together for run, record and replay: the one place that does it.

``GuestImages`` are the files a guest boots from (read once, hashed for the trace header);
``run``, ``record`` and ``replay`` build the same machine around a different seam.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from rrvmm import __version__
from rrvmm.cpu.backend import BackendUnavailable, CpuBackend
from rrvmm.cpu.cpuid import filter_cpuid
from rrvmm.devices.virtio import OVERLAY, WRITE_THROUGH, Disk, DiskError
from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.host.live_seam import InstructionClockSeam, LiveSeam
from rrvmm.host.terminal import SerialHost
from rrvmm.host.udp import UdpPort, parse_udp
from rrvmm.machine.boot.kernel import read_image
from rrvmm.machine.pc import Machine, MachineConfig, RunResult
from rrvmm.machine.virtio import VirtioHosts
from rrvmm.replay.container import TraceError, TraceReader, TraceWriter
from rrvmm.replay.recorder import Recorder
from rrvmm.replay.replayer import ExitCheck, ReplayDivergence, Replayer, TraceEnded

__all__ = [
    "GuestImages",
    "make_backend",
    "run_guest",
    "record_guest",
    "replay_trace",
    "ReplayOutcome",
    "open_trace",
]


@dataclass
class GuestImages:
    kernel_path: Path
    kernel: bytes
    initrd_path: Path | None = None
    initrd: bytes | None = None

    @classmethod
    def load(cls, kernel: str | Path, initrd: str | Path | None = None) -> GuestImages:
        kp = Path(kernel)
        ip = Path(initrd) if initrd else None
        return cls(kp, read_image(kp), ip, read_image(ip, "initrd") if ip else None)

    def describe(self) -> dict[str, Any]:
        out = {"kernel": _image_entry(self.kernel_path, self.kernel)}
        if self.initrd_path is not None and self.initrd is not None:
            out["initrd"] = _image_entry(self.initrd_path, self.initrd)
        return out


def _image_entry(path: Path, data: bytes) -> dict[str, Any]:
    return {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


DEFAULT_KVM_IRQCHIP = "user"  # bench/irqchip.py: the faster exact mode on KVM


def make_backend(
    name: str, memory: int, kvm_device: str = "/dev/kvm", irqchip: str | None = None
) -> CpuBackend:
    """The CPU backend ``name``: 'kvm', 'soft', or 'auto' (KVM where usable, else soft).

    ``irqchip``: 'user' or 'kernel' (KVM only); None picks the backend's default.
    RrvmmError (one line, a distinct status) when the named one cannot be had.
    """
    from rrvmm.kvm.kvm_backend import KvmBackend

    if irqchip not in (None, "user", "kernel"):
        raise RrvmmError(f"unknown irqchip {irqchip!r} (user or kernel)", ExitStatus.USAGE)
    if name == "soft" and irqchip == "kernel":
        raise RrvmmError(
            "--irqchip kernel needs the KVM backend (the software CPU has rrvmm's 8259 only)",
            ExitStatus.USAGE,
        )
    if name in ("kvm", "auto"):
        try:
            return KvmBackend(memory, kvm_device, irqchip or DEFAULT_KVM_IRQCHIP)
        except OSError as e:  # the guest RAM mapping
            raise _no_memory(memory, e) from None
        except BackendUnavailable as e:
            if name == "kvm" or irqchip == "kernel":
                raise RrvmmError(f"KVM is not usable: {e}", ExitStatus.NO_KVM) from None
            print(f"rrvmm: KVM is not usable ({e}); using the software backend", file=sys.stderr)
    elif name != "soft":
        raise RrvmmError(f"unknown backend {name!r} (kvm, soft or auto)", ExitStatus.USAGE)
    from rrvmm.soft.backend import SoftBackend

    try:
        return SoftBackend(memory)
    except OSError as e:
        raise _no_memory(memory, e) from None
    except BackendUnavailable as e:
        raise RrvmmError(f"the software backend is not usable: {e}", ExitStatus.NO_KVM) from None


def _no_memory(memory: int, e: OSError) -> RrvmmError:
    return RrvmmError(
        f"cannot map {memory >> 20}M of guest RAM on this host: {e.strerror or e}",
        ExitStatus.USAGE,
    )


def _guest_cpuid(cpu: CpuBackend) -> list[tuple[int, ...]]:
    """The CPUID table for a new recording: KVM's own, filtered, wherever KVM exists.

    XSAVE and what depends on it are hidden: KVM's instruction emulator (kvm_pvm hosts)
    cannot execute XRSTOR, and the software backend keeps the same table.
    """
    from rrvmm.kvm.kvm_backend import KvmBackend

    if isinstance(cpu, KvmBackend):
        return filter_cpuid(cpu.kvm.supported_cpuid(), hide_xsave=True)
    from rrvmm.cpu.cpuid_table import DEFAULT_CPUID

    return [tuple(r) for r in DEFAULT_CPUID]


def _live_seam(serial: SerialHost, cpu: CpuBackend, ports: dict[str, UdpPort]) -> LiveSeam:
    """Host inputs; guest time from the instruction count where the CPU counts exactly."""
    if hasattr(cpu, "set_instruction_limit"):
        return InstructionClockSeam(serial, cpu, ports)
    return LiveSeam(serial, ports)


def _close_hosts(hosts: VirtioHosts, ports: dict[str, UdpPort]) -> None:
    for port in ports.values():
        port.close()
    if hosts.disk is not None:
        hosts.disk.close()


def _virtio_hosts(config: MachineConfig, live: bool) -> tuple[VirtioHosts, dict[str, UdpPort]]:
    """The host ends of the virtio devices. Replay (``live`` False) opens the disk image
    read-only behind an overlay whatever the recording did, and has no network peers."""
    disk = None
    if config.disk:
        mode = WRITE_THROUGH if live and config.disk_write else OVERLAY
        try:
            disk = Disk(config.disk, mode)
        except (DiskError, ValueError) as e:
            raise RrvmmError(str(e), ExitStatus.NO_INPUT) from None
    ports: dict[str, UdpPort] = {}
    if live:
        for name, spec, option in (
            ("net", config.net, "--net"), ("console", config.vconsole, "--vconsole")
        ):  # fmt: skip
            if not spec:
                continue
            try:
                ports[name] = UdpPort(*parse_udp(spec, option))
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
        "irqchip": getattr(cpu, "irqchip", "user"),
        "virtio_cmdline": config.virtio_cmdline,
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
    cpu: CpuBackend,
    serial: SerialHost,
) -> RunResult:
    """Run live, no recording."""
    cpu.set_cpuid(_guest_cpuid(cpu))
    hosts, ports = _virtio_hosts(config, live=True)
    seam = _live_seam(serial, cpu, ports)
    machine = Machine(config, cpu, seam, serial, hosts)
    _boot(machine, images)
    seam.attach(cpu)
    try:
        with serial.terminal():
            return machine.run()
    finally:
        seam.detach()
        _close_hosts(hosts, ports)


def record_guest(
    images: GuestImages,
    config: MachineConfig,
    cpu: CpuBackend,
    serial: SerialHost,
    trace_path: Path,
) -> tuple[RunResult, Recorder]:
    """Run live and write every input to ``trace_path``."""
    cpuid = _guest_cpuid(cpu)
    cpu.set_cpuid(cpuid)
    hosts, ports = _virtio_hosts(config, live=True)
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
    live = _live_seam(serial, cpu, ports)
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
                result = machine.run()
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
            }
        )
    return result, recorder


def open_trace(path: str | Path) -> TraceReader:
    """Open a trace for reading; every failure is a one-line RrvmmError."""
    try:
        return TraceReader(path)
    except FileNotFoundError:
        raise RrvmmError(f"trace not found: {path}", ExitStatus.NO_INPUT) from None
    except IsADirectoryError:
        raise RrvmmError(f"trace path is a directory: {path}", ExitStatus.NO_INPUT) from None
    except TraceError as e:
        raise RrvmmError(str(e), ExitStatus.BAD_TRACE) from None
    except OSError as e:
        raise RrvmmError(f"cannot read trace {path}: {e.strerror}", ExitStatus.NO_INPUT) from None


def _images_for_replay(
    header: dict[str, Any],
    kernel: str | None,
    initrd: str | None,
    trace: TraceReader | None = None,
) -> GuestImages:
    """The recorded images: from ``trace`` if it is packed and carries them (by sha256,
    without touching the user's files), else from the recorded paths; ``kernel``/``initrd``
    name other files to use instead. Whatever the source, the sha256 must match."""
    imgs = header.get("images", {})
    k = imgs.get("kernel")
    if k is None:
        raise RrvmmError("trace header names no kernel image", ExitStatus.BAD_TRACE)
    kpath = Path(kernel) if kernel else Path(k["path"])
    i = imgs.get("initrd")
    ipath = Path(initrd) if initrd else (Path(i["path"]) if i else None)
    if trace is not None:
        from rrvmm.replay.pack import embedded_image

        try:
            kdata = None if kernel else embedded_image(trace, "kernel")
            idata = None if initrd or i is None else embedded_image(trace, "initrd")
        except TraceError as e:
            raise RrvmmError(str(e), ExitStatus.BAD_TRACE) from None
    else:
        kdata = idata = None
    images = GuestImages(
        kpath,
        kdata if kdata is not None else read_image(kpath),
        ipath,
        None if ipath is None else idata if idata is not None else read_image(ipath, "initrd"),
    )
    for what, entry, data in (("kernel", k, images.kernel), ("initrd", i, images.initrd)):
        if entry is None or data is None:
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            name = kpath if what == "kernel" else ipath
            raise RrvmmError(
                f"{what} {name} is not the image this trace was recorded with"
                f" (sha256 {digest[:16]}…, trace has {entry['sha256'][:16]}…)",
                ExitStatus.IMAGE_MISMATCH,
            )
    return images


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


def replay_machine(
    header: dict[str, Any],
    images: GuestImages,
    disk: str | None = None,
    trace: TraceReader | None = None,
) -> tuple[MachineConfig, VirtioHosts]:
    """The recorded machine, and its disk image (``disk``, else the copy a packed ``trace``
    carries, else the recorded path) checked against the recorded sha256 and opened
    read-only behind an overlay."""
    mc = header["machine"]
    rec_disk = mc.get("disk")
    config = MachineConfig(
        memory=mc["memory"],
        cmdline=mc["cmdline"],
        kernel_name=images.kernel_path.name,
        virtio_cmdline=mc.get("virtio_cmdline", False),
        disk=(disk or rec_disk["path"]) if rec_disk else None,
    )
    if rec_disk and disk is None and trace is not None:
        hosts = _embedded_disk_hosts(trace, config)
        if hosts is not None:
            return config, hosts
    hosts, _ = _virtio_hosts(config, live=False)
    if hosts.disk is not None:
        digest = hosts.disk.sha256()
        if digest != rec_disk["sha256"]:
            hosts.disk.close()
            written = " (the recording wrote to it: replay needs a copy from before)"
            raise RrvmmError(
                f"disk {config.disk} is not the image this trace was recorded with"
                f" (sha256 {digest[:16]}…, trace has {rec_disk['sha256'][:16]}…)"
                + (written if rec_disk.get("written") else ""),
                ExitStatus.IMAGE_MISMATCH,
            )
    return config, hosts


def _embedded_disk_hosts(trace: TraceReader, config: MachineConfig) -> VirtioHosts | None:
    """A packed trace's disk image in an unlinked temporary file (the Disk keeps its fd)."""
    import tempfile

    from rrvmm.replay.pack import embedded_disk

    try:
        data = embedded_disk(trace)
    except TraceError as e:
        raise RrvmmError(str(e), ExitStatus.BAD_TRACE) from None
    if data is None:
        return None
    fd, name = tempfile.mkstemp(prefix="rrvmm-disk-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return VirtioHosts(Disk(name, OVERLAY))
    finally:
        os.unlink(name)


def replay_backend(header: dict[str, Any], backend: str | None, kvm_device: str) -> CpuBackend:
    """A CPU for replaying a trace with this header: its backend and interrupt controller.

    A kernel-irqchip trace needs KVM's own 8259 again: where its interrupts land is KVM's
    doing, and rrvmm's 8259 on the software CPU would not take them at the same points.
    """
    recorded_on = header.get("backend", "kvm")
    irqchip = header["machine"].get("irqchip", "user")
    name = backend or recorded_on
    if irqchip == "kernel" and name != "kvm":
        raise RrvmmError(
            "this trace was recorded with --irqchip kernel and replays on the KVM backend only",
            ExitStatus.USAGE,
        )
    return make_backend(name, header["machine"]["memory"], kvm_device, irqchip)


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
    header = reader.header
    images = _images_for_replay(header, kernel, initrd, reader)
    config, hosts = replay_machine(header, images, disk, reader)
    recorded_on = header.get("backend", "kvm")
    cpu = replay_backend(header, backend, kvm_device)
    replayer = None
    try:
        cpu.set_cpuid([tuple(r) for r in header["cpuid"]])
        serial = SerialHost(output=output or io.BytesIO(), input_fd=None)
        replayer = Replayer(
            lambda k: _checked(reader.events(k)),
            cpu,
            check,
            exact_counts=recorded_on == "soft" and cpu.name == "soft",
            exact_flags=recorded_on == cpu.name,
        )
        if progress is not None:
            replayer.progress = progress
        machine = Machine(config, cpu, replayer, serial, hosts)
        _boot(machine, images)
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
        if replayer is not None:
            replayer.close()
        _close_hosts(hosts, {})
        cpu.close()


def _checked(events):  # noqa: ANN001, ANN202 - iterator passthrough
    """Trace damage found while replaying becomes the same one-line error as at open."""
    try:
        yield from events
    except TraceError as e:
        raise RrvmmError(str(e), ExitStatus.BAD_TRACE) from None
