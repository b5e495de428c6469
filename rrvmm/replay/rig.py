"""The replay rig: a recording's machine put together again, the one place that does it.

Plain replay (``rrvmm.launch.replay_trace``) and the debugger's engine
(``rrvmm.replay.engine.ReplayEngine``) replay the same way, so they build the same thing:
the recorded images and disk checked against their sha256, the recorded machine with its
virtio host ends, a CPU of the recorded kind with the recorded CPUID, the ``Replayer``
seam over the trace's events, a serial host that only collects output, and the booted
``Machine``. What differs is only who runs it afterwards.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from rrvmm.cpu.backend import RecordableCpu
from rrvmm.devices.virtio import OVERLAY, Disk
from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.host.terminal import SerialHost
from rrvmm.machine.boot.kernel import read_image
from rrvmm.machine.cpu_choice import make_backend
from rrvmm.machine.images import GuestImages
from rrvmm.machine.pc import Machine, MachineConfig
from rrvmm.machine.virtio import VirtioHosts, open_disk
from rrvmm.replay.container import TraceError, TraceReader
from rrvmm.replay.replayer import ExitCheck, Replayer

__all__ = [
    "ReplayRig",
    "build_rig",
    "images_for_replay",
    "replay_machine",
    "replay_backend",
    "counts_exactly",
    "checked_events",
]


@dataclass
class ReplayRig:
    """Everything a replay runs on, booted and standing before the first instruction."""

    reader: TraceReader
    images: GuestImages
    config: MachineConfig
    hosts: VirtioHosts
    cpu: RecordableCpu
    serial: SerialHost
    replayer: Replayer
    machine: Machine
    exact_flags: bool  # replayed on the recording's kind of CPU: RFLAGS compare in full
    exact_counts: bool  # ... and it counts instructions: forced exits land by count

    def close(self) -> None:
        self.replayer.close()
        if self.hosts.disk is not None:
            self.hosts.disk.close()
        self.cpu.close()


def build_rig(
    reader: TraceReader,
    *,
    kernel: str | None = None,
    initrd: str | None = None,
    disk: str | None = None,
    backend: str | None = None,
    kvm_device: str = "/dev/kvm",
    output: BinaryIO | None = None,
    check: ExitCheck | None = None,
) -> ReplayRig:
    """Put a replay of ``reader`` together (on ``backend``, default: the recording's own).

    ``kernel``/``initrd``/``disk`` name files to use instead of the recorded ones (they
    must still hash to the recorded sha256); ``output`` receives the guest's serial output.
    Every problem is a one-line RrvmmError, and nothing is left open when one is raised.
    """
    header = reader.header
    images = images_for_replay(header, kernel, initrd, reader)
    config, hosts = replay_machine(header, images, disk, reader)
    try:
        cpu = replay_backend(header, backend, kvm_device)
    except BaseException:
        if hosts.disk is not None:
            hosts.disk.close()
        raise
    replayer = None
    try:
        cpu.set_cpuid([tuple(r) for r in header["cpuid"]])
        recorded_on = header.get("backend", "kvm")
        exact_flags = recorded_on == cpu.name
        exact_counts = counts_exactly(recorded_on, cpu)
        serial = SerialHost(output=output or io.BytesIO(), input_fd=None)
        replayer = Replayer(
            lambda k: checked_events(reader.events(k)),
            cpu,
            check,
            exact_counts=exact_counts,
            exact_flags=exact_flags,
        )
        machine = Machine(config, cpu, replayer, serial, hosts)
        machine.boot(images.kernel, images.initrd)
    except BaseException:
        if replayer is not None:
            replayer.close()
        if hosts.disk is not None:
            hosts.disk.close()
        cpu.close()
        raise
    return ReplayRig(
        reader, images, config, hosts, cpu, serial, replayer, machine, exact_flags, exact_counts
    )


def counts_exactly(recorded_on: str, cpu: RecordableCpu) -> bool:
    """Forced exits are found by instruction count: the trace was recorded on a CPU that
    counts instructions exactly and ``cpu`` is the same kind (KVM counts none)."""
    return recorded_on == cpu.name and cpu.instruction_counter() is not None


def checked_events(events: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    """Trace damage found while replaying becomes the same one-line error as at open."""
    try:
        yield from events
    except TraceError as e:
        raise RrvmmError(str(e), ExitStatus.BAD_TRACE) from None


def images_for_replay(
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
            room = header["machine"]["memory"]  # an image larger than the RAM cannot boot
            kdata = None if kernel else embedded_image(trace, "kernel", room)
            idata = None if initrd or i is None else embedded_image(trace, "initrd", room)
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


def replay_machine(
    header: dict[str, Any],
    images: GuestImages,
    disk: str | None = None,
    trace: TraceReader | None = None,
) -> tuple[MachineConfig, VirtioHosts]:
    """The recorded machine, and its disk image (``disk``, else the copy a packed ``trace``
    carries, else the recorded path) checked against the recorded sha256 and opened
    read-only behind an overlay, whatever the recording did. Replay has no network peers:
    what they sent is in the trace."""
    mc = header["machine"]
    rec_disk = mc.get("disk")
    config = MachineConfig(
        memory=mc["memory"],
        cmdline=mc["cmdline"],
        kernel_name=images.kernel_path.name,
        virtio_cmdline=mc.get("virtio_cmdline", False),
        apic=mc.get("apic", False),  # traces from before --apic: the PIC-only PC
        test_devices=mc.get("test_devices", False),
        disk=(disk or rec_disk["path"]) if rec_disk else None,
    )
    if rec_disk and disk is None and trace is not None:
        hosts = _embedded_disk_hosts(trace)
        if hosts is not None:
            return config, hosts
    hosts = VirtioHosts(open_disk(config.disk, OVERLAY) if config.disk else None)
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


def _embedded_disk_hosts(trace: TraceReader) -> VirtioHosts | None:
    """A packed trace's disk image in an unlinked temporary file (the Disk keeps its fd)."""
    from rrvmm.replay.pack import write_embedded_disk

    fd, name = tempfile.mkstemp(prefix="rrvmm-disk-")
    try:
        with os.fdopen(fd, "wb") as f:
            carried = write_embedded_disk(trace, f)  # streamed: never whole in memory
        return VirtioHosts(Disk(name, OVERLAY)) if carried else None
    except TraceError as e:
        raise RrvmmError(str(e), ExitStatus.BAD_TRACE) from None
    finally:
        os.unlink(name)


def replay_backend(header: dict[str, Any], backend: str | None, kvm_device: str) -> RecordableCpu:
    """A CPU for replaying a trace with this header: its backend and interrupt controller.

    A kernel-irqchip trace needs KVM's own 8259 again: where its interrupts land is KVM's
    doing, and rrvmm's 8259 on the software CPU would not take them at the same points.
    """
    recorded_on = header.get("backend", "kvm")
    irqchip = header["machine"].get("irqchip", "user")
    # auto: KVM where usable, unless the trace is a software-CPU one (it replays there only)
    name = "soft" if backend == "auto" and recorded_on == "soft" else backend or recorded_on
    if recorded_on == "soft" and name == "kvm":
        # timer interrupts and kicks landed at instruction counts: KVM cannot stop there
        raise RrvmmError(
            "this trace was recorded on the software CPU and replays there only"
            " (drop --backend kvm)",
            ExitStatus.USAGE,
        )
    if irqchip == "kernel" and name != "kvm":
        raise RrvmmError(
            "this trace was recorded with --irqchip kernel and replays on the KVM backend only",
            ExitStatus.USAGE,
        )
    memory = header["machine"]["memory"]
    try:
        return make_backend(name, memory, kvm_device, irqchip)
    except OSError as e:  # a crafted header can ask for more than this host can map
        raise RrvmmError(
            f"cannot give the guest the {memory} bytes of RAM the trace records: {e.strerror}",
            ExitStatus.USAGE,
        ) from None
