"""The PC: devices on the port and MMIO buses, a CPU backend, and the exit loop.

The loop only dispatches: an exit goes to the bus and a device; between exits the machine
asks the seam whether a timer is due or input arrived, and lets the interrupt routing
(``machine.interrupts``: rrvmm's 8259 or the backend's own) deliver what is pending.
Nothing here reads host time or input directly: that is the seam's job, so recording can
see all of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from rrvmm.cpu.backend import GPR_NAMES, ExitKind, RecordableCpu, VcpuExit
from rrvmm.devices import state as device_state
from rrvmm.devices.acpi_pm import S5_SLP_TYP, AcpiPm
from rrvmm.devices.bus import Bus, IrqLine
from rrvmm.devices.debug_exit import DebugExit
from rrvmm.devices.fw_cfg import E820Entry, FwCfg
from rrvmm.devices.i8042 import I8042
from rrvmm.devices.ioapic import IOAPIC_DEFAULT_BASE, IOAPIC_MMIO_SIZE, IoApic
from rrvmm.devices.lapic import APIC_DEFAULT_BASE, APIC_PAGE_SIZE, LocalApic
from rrvmm.devices.misc import PciConfigAbsent, PostPort
from rrvmm.devices.pc_testdev import PcTestdev
from rrvmm.devices.pic import Pic8259Pair
from rrvmm.devices.pit import Pit8254
from rrvmm.devices.rtc import CmosRtc
from rrvmm.devices.uart import Uart16550
from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.host.terminal import SerialHost
from rrvmm.machine.acpi import AcpiMachine, ApicDescription, build_acpi
from rrvmm.machine.boot.kernel import load_kernel
from rrvmm.machine.boot.linux import BOOT_PARAMS_ADDR, e820_map, is_bzimage, long_mode_sregs
from rrvmm.machine.boot.multiboot import BootImage, protected_mode_sregs
from rrvmm.machine.interrupts import ApicLines, InterruptRouting, KernelLines, UserPic
from rrvmm.machine.virtio import VirtioHosts, VirtioSet
from rrvmm.seam import Seam

__all__ = ["Machine", "MachineConfig", "MachineStop", "RunResult"]

log = logging.getLogger("rrvmm")

COM1_BASE, COM1_IRQ = 0x3F8, 4
PIT_IRQ = 0
DEBUG_EXIT_PORT = 0xF4
ACPI_PM_PORT = 0x600  # PM1a event block (4 bytes) then control block (2), as the FADT says
RFLAGS_IF = 1 << 9
MIN_MEMORY = 2 << 20
_KICKED = (ExitKind.INTR, ExitKind.IRQ_WINDOW)  # exits that only say the guest was stopped


@dataclass
class MachineConfig:
    """What the machine is made of; stored in trace headers, so plain data only."""

    memory: int = 128 << 20
    cmdline: str = ""
    kernel_name: str = "demo"
    # announce the virtio devices on the command line too (multiboot guests; Linux kernels
    # built with VIRTIO_MMIO_CMDLINE_DEVICES); ACPI always describes them
    virtio_cmdline: bool = False
    disk: str | None = None  # virtio-blk image
    disk_write: bool = False  # write the image itself (else a copy-on-write overlay)
    net: str | None = None  # virtio-net host end, udp:HOST:PORT
    vconsole: str | None = None  # virtio-console host end, udp:HOST:PORT
    # the modern PC: local APIC, I/O APIC and the MADT (docs/apic.md); off = PIC only
    apic: bool = False
    # QEMU's pc-testdev, and isa-debug-exit statuses as QEMU computes them (kvm-unit-tests)
    test_devices: bool = False


@dataclass
class RunResult:
    """How a run ended: the process exit status and a one-line reason."""

    status: int
    reason: str
    exits: int = 0
    rip: int = 0
    stats: dict[str, int] = field(default_factory=dict)


class MachineStop(Exception):
    """Raised (by devices or the seam) to end the run with ``result``."""

    def __init__(self, result: RunResult) -> None:
        self.result = result


class Machine:
    """One PC. Build it, ``boot`` a kernel, then ``run`` until the guest ends."""

    def __init__(
        self,
        config: MachineConfig,
        cpu: RecordableCpu,
        seam: Seam,
        serial: SerialHost | None,
        hosts: VirtioHosts | None = None,
    ) -> None:
        if config.memory < MIN_MEMORY:
            raise RrvmmError(
                f"--memory {config.memory >> 10}K is too small (at least {MIN_MEMORY >> 20}M)",
                ExitStatus.MEMORY_TOO_SMALL,
            )
        self.config = config
        self.cpu = cpu
        self.seam = seam
        self.serial = serial
        self.exit_index = 0
        self.last_vector = 0
        self.pio = Bus()
        self.mmio = Bus()
        self._result: RunResult | None = None
        self._unknown_ports: set[int] = set()
        self.stats = {"exits": 0, "injected": 0, "kicks": 0, "halts": 0}

        class _SeamClock:
            now_ns = seam.clock_ns

        # with the backend's own 8259 (kernel irqchip) this one's ports never exit
        self.pic = Pic8259Pair()
        chip = cpu.kernel_irqchip()
        # the backend's own controller's lines (the debugger asks them too), or None
        self.kernel_lines = None if chip is None else KernelLines(chip, seam)
        self.lapic: LocalApic | None = None
        self.ioapic: IoApic | None = None
        self.interrupts: InterruptRouting
        if config.apic:
            if chip is not None:
                raise RrvmmError(
                    "--apic on needs --irqchip user (KVM's own APIC is not recordable here)",
                    ExitStatus.USAGE,
                )
            self.interrupts = self._apic_lines(_SeamClock())
        else:
            self.interrupts = self.kernel_lines or UserPic(cpu, self.pic, seam)
        irq = self.interrupts.set_line
        self.pit = Pit8254(_SeamClock(), IrqLine(PIT_IRQ, irq))
        self.uart = Uart16550(IrqLine(COM1_IRQ, irq), self._serial_tx)
        self.rtc = CmosRtc(seam.wall_time, config.memory)
        self.debug_exit = DebugExit(self._debug_exit, qemu_status=config.test_devices)
        self.i8042 = I8042(self._reset, IrqLine(1, irq), IrqLine(12, irq))
        self.post = PostPort()
        self.pci = PciConfigAbsent()
        self.pio.insert(self.pic, 0x20, 2, offset=0)
        self.pio.insert(self.pic, 0xA0, 2, offset=2)
        self.pio.insert(self.pic, 0x4D0, 2, offset=4)
        self.pio.insert(self.pit, 0x40, 4)
        self.pio.insert(self.pit.port61, 0x61, 1)
        self.pio.insert(self.i8042, 0x60, 1, offset=0)
        self.pio.insert(self.i8042, 0x64, 1, offset=4)
        self.pio.insert(self.rtc, 0x70, 2)
        self.pio.insert(self.post, 0x80, 1)
        self.pio.insert(self.debug_exit, DEBUG_EXIT_PORT, 4)
        self.pio.insert(self.uart, COM1_BASE, 8)
        self.pio.insert(self.pci, 0xCF8, 8)
        self.fw_cfg: FwCfg | None = None  # the modern PC's; built at boot (it tells the cmdline)
        self.testdev: PcTestdev | None = None
        if config.test_devices:
            self.testdev = PcTestdev(irq)
            self.pio.insert(self.testdev, 0xE0, 12)
            self.pio.insert(self.testdev, 0x2000, 24, offset=0x100)
            self.mmio.insert(self.testdev, 0xFF000000, 0x10000)
        self.acpi_pm = AcpiPm(self._sleep)
        self.pio.insert(self.acpi_pm, ACPI_PM_PORT, 6)
        self.virtio = VirtioSet(
            cpu, self.mmio, irq, hosts or VirtioHosts(),
            lambda n: self.seam.entropy(self.exit_index, n),
        )  # fmt: skip

    def _apic_lines(self, clock: Any) -> ApicLines:
        """The local APIC and I/O APIC on the MMIO bus, the 8259 behind LINT0.

        The APIC page stays at its reset base: neither backend lets rrvmm see a guest's
        IA32_APIC_BASE write (docs/apic.md), so a relocation is not followed.
        """
        holder: list[ApicLines] = []
        self.ioapic = IoApic(lambda msg: holder[0].route(msg))
        self.lapic = LocalApic(
            clock,
            extint=self.pic,
            eoi_broadcast=self.ioapic.eoi,
            x2apic=False,  # x2APIC and TSC-deadline are MSRs neither backend hands rrvmm
            tsc_deadline=False,
        )
        lines = ApicLines(self.cpu, self.pic, self.lapic, self.ioapic, self.seam)
        holder.append(lines)
        self.mmio.insert(self.lapic, APIC_DEFAULT_BASE, APIC_PAGE_SIZE)
        self.mmio.insert(self.ioapic, IOAPIC_DEFAULT_BASE, IOAPIC_MMIO_SIZE)
        return lines

    def next_deadline_ns(self) -> int | None:
        """The earliest guest-time deadline of the timers (the PIT's, the LAPIC timer's)."""
        pit = self.pit.next_deadline_ns()
        lapic = None if self.lapic is None else self.lapic.next_deadline_ns()
        if lapic is None:
            return pit
        return lapic if pit is None else min(pit, lapic)

    # --- device callbacks ---
    def _serial_tx(self, data: bytes) -> None:
        if self.serial is not None:
            self.serial.write(data)

    def _debug_exit(self, value: int) -> None:
        raise MachineStop(RunResult(value & 0xFF, f"guest wrote {value:#x} to isa-debug-exit"))

    def _sleep(self, slp_typ: int) -> None:
        if slp_typ == S5_SLP_TYP:
            raise MachineStop(RunResult(0, "guest powered off (ACPI S5)"))
        log.info("guest asked for ACPI sleep type %d: ignored", slp_typ)

    def _reset(self) -> None:
        raise MachineStop(RunResult(0, "guest reset the machine (i8042 reset)"))

    # --- boot ---
    def boot(self, kernel: bytes, initrd: bytes | None = None) -> BootImage:
        linux = is_bzimage(kernel)
        cmdline = self.config.cmdline
        if self.virtio.transports and self.config.virtio_cmdline:
            cmdline = f"{cmdline} {self.virtio.cmdline_words()}".strip()
        img, blobs = load_kernel(
            kernel, self.config.kernel_name, self.config.memory, cmdline, initrd
        )
        acpi = build_acpi(
            AcpiMachine(
                self.virtio.acpi_slots(),
                pm1a_evt_port=ACPI_PM_PORT,
                pm1a_cnt_port=ACPI_PM_PORT + 4,
            ),
            apic=ApicDescription() if self.lapic is not None else None,
        )
        blobs = [*blobs, *acpi.blobs]
        if linux:  # boot_params.acpi_rsdp_addr: no scan needed
            blobs.append((BOOT_PARAMS_ADDR + 0x70, acpi.rsdp_addr.to_bytes(8, "little")))
        if self.lapic is not None:
            self._add_fw_cfg(cmdline, img.cmdline_addr)
        for gpa, body in img.segments:
            self.cpu.write_memory(gpa, body)
        for gpa, length in img.zero:
            self.cpu.write_memory(gpa, bytes(length))
        for gpa, body in blobs:
            self.cpu.write_memory(gpa, body)
        if img.mode == "long64":
            self.cpu.set_sregs(long_mode_sregs(img.page_table))
        else:
            self.cpu.set_sregs(protected_mode_sregs(img.gdt_base))
        # every register defined: a fresh KVM vCPU holds the reset signature in RDX, the
        # software CPU zero, and a trace must start from the same state on both
        self.cpu.set_regs({**dict.fromkeys(GPR_NAMES, 0), "rflags": 0x2, **img.regs})
        self.seam.booted()
        return img

    def _add_fw_cfg(self, cmdline: str, cmdline_addr: int) -> None:
        """QEMU's fw_cfg on 0x510 (+ DMA at 0x514): guests written for QEMU learn the CPU
        count, RAM size and memory map there (docs/fw_cfg.md)."""
        memory = self.config.memory

        def read(gpa: int, size: int) -> bytes:
            try:
                return self.cpu.read_memory(gpa, size)
            except Exception as e:  # noqa: BLE001 - the backends raise their own errors
                raise ValueError(str(e)) from None

        def write(gpa: int, data: bytes) -> None:
            try:
                self.cpu.write_memory(gpa, data)
            except Exception as e:  # noqa: BLE001
                raise ValueError(str(e)) from None

        self.fw_cfg = FwCfg(
            ram_size=memory,
            e820=[E820Entry(a, n, t) for a, n, t in e820_map(memory)],
            nb_cpus=1,
            cmdline=cmdline.encode() if cmdline else None,
            cmdline_addr=cmdline_addr,
            read_memory=read,
            write_memory=write,
        )
        self.pio.insert(self.fw_cfg, 0x510, 2)
        self.pio.insert(self.fw_cfg, 0x514, 8, offset=4)

    # --- the exit loop ---
    def run(self) -> RunResult:
        cpu = self.cpu
        seam = self.seam
        try:
            while True:
                self.prepare_entry()
                self.handle_exit(seam.run(cpu))
        except MachineStop as stop:
            self._result = stop.result
        finally:
            if self.serial is not None:
                self.serial.flush()
        result = self._result
        result.exits = self.exit_index
        result.rip = cpu.exit.rip
        self.stats["exits"] = self.exit_index
        result.stats = dict(self.stats)
        return result

    def prepare_entry(self) -> None:
        """Between exits: timers, serial input, interrupt delivery; then tell the seam."""
        self._between_exits()
        stop = self.seam.stop_requested()
        if stop is not None:
            # a stop that came while the inputs were taken (a signal during a timer's
            # answer): the guest does not run again, so a replay that has just taken the
            # last recorded input ends at this same point
            raise MachineStop(RunResult(stop.status, stop.reason))
        self.seam.entering_guest(self.next_deadline_ns(), self.interrupts.poll_ns())

    def handle_exit(self, ex: VcpuExit) -> None:
        """Count, report and dispatch one exit; MachineStop when the guest ended."""
        if ex.kind in _KICKED and (stop := self.seam.stop_requested()) is not None:
            # The kick that brings a stop is no exit of the run: it ends at the last real
            # one. Logged, it would be a forced exit whose replay searches the whole span
            # the guest computed since that exit with breakpoints (minutes on KVM).
            raise MachineStop(RunResult(stop.status, stop.reason))
        self.exit_index += 1
        self.seam.on_exit(self.exit_index, ex)
        self._dispatch(ex)

    def devices(self) -> dict[str, Any]:
        """The devices whose state a checkpoint must carry, by name."""
        devs = self.interrupts.devices()  # the backend's own PIC is saved with the vCPU
        devs |= {
            "pit": self.pit, "uart": self.uart, "rtc": self.rtc, "i8042": self.i8042,
            "debug_exit": self.debug_exit, "post": self.post, "pci": self.pci,
        }  # fmt: skip
        devs["acpi_pm"] = self.acpi_pm
        if self.fw_cfg is not None:
            devs["fw_cfg"] = self.fw_cfg
        if self.testdev is not None:
            devs["pc_testdev"] = self.testdev
        devs.update(self.virtio.devices())
        return devs

    def snapshot(self) -> dict[str, Any]:
        """Machine-level state (devices and counters), plain data."""
        out: dict[str, Any] = {"exit_index": self.exit_index, "stats": dict(self.stats)}
        out |= self.interrupts.snapshot()
        for name, dev in self.devices().items():
            if hasattr(dev, "state"):
                out[name] = device_state.snapshot(dev)
        return out

    def restore(self, snap: dict[str, Any]) -> None:
        self.exit_index = snap["exit_index"]
        self.stats = dict(snap["stats"])
        self.interrupts.restore(snap)
        for name, dev in self.devices().items():
            if name in snap:
                device_state.restore(dev, snap[name])

    def _dispatch(self, ex: VcpuExit) -> None:
        kind = ex.kind
        if kind is ExitKind.IO_OUT:
            self._pio_write(ex)
        elif kind is ExitKind.IO_IN:
            self.cpu.complete_read(self.seam.read_value(self.exit_index, ex, self._pio_read(ex)))
        elif kind is ExitKind.MMIO_WRITE:
            self._mmio_write(ex)
        elif kind is ExitKind.MMIO_READ:
            self.cpu.complete_read(self.seam.read_value(self.exit_index, ex, self._mmio_read(ex)))
        elif kind is ExitKind.HLT:
            self._halt(ex)
        elif kind is ExitKind.INTR:
            self.stats["kicks"] += 1
            self._kicked(ex)
        elif kind is ExitKind.IRQ_WINDOW:
            pass
        else:
            self._crash(ex)

    def _pio_write(self, ex: VcpuExit) -> None:
        hit = self.pio.resolve(ex.addr)
        if hit is None:
            self._unknown_port(ex.addr, "write")
            return
        dev, off = hit
        size, data = ex.size, ex.data
        for i in range(ex.count):
            dev.pio_write(off, size, int.from_bytes(data[i * size : (i + 1) * size], "little"))

    def _pio_read(self, ex: VcpuExit) -> bytes:
        hit = self.pio.resolve(ex.addr)
        size = ex.size
        if hit is None:
            self._unknown_port(ex.addr, "read")
            return b"\xff" * (size * ex.count)
        dev, off = hit
        mask = (1 << (8 * size)) - 1
        return b"".join(
            (dev.pio_read(off, size) & mask).to_bytes(size, "little") for _ in range(ex.count)
        )

    def _mmio_write(self, ex: VcpuExit) -> None:
        hit = self.mmio.resolve(ex.addr)
        if hit is None:
            self._unknown_mmio(ex.addr, "write")
            return
        dev, off = hit
        dev.mmio_write(off, ex.size, int.from_bytes(ex.data, "little"))

    def _mmio_read(self, ex: VcpuExit) -> bytes:
        hit = self.mmio.resolve(ex.addr)
        if hit is None:
            self._unknown_mmio(ex.addr, "read")
            return b"\xff" * ex.size
        dev, off = hit
        value = dev.mmio_read(off, ex.size) & ((1 << (8 * ex.size)) - 1)
        return value.to_bytes(ex.size, "little")

    def _unknown_port(self, port: int, what: str) -> None:
        if port not in self._unknown_ports:
            self._unknown_ports.add(port)
            log.info("unknown port %#x (%s): reads all ones, writes ignored", port, what)

    def _unknown_mmio(self, addr: int, what: str) -> None:
        page = addr >> 12
        if -page - 1 not in self._unknown_ports:
            self._unknown_ports.add(-page - 1)
            log.info("unassigned MMIO %#x (%s): reads all ones, writes ignored", addr, what)

    def _between_exits(self) -> None:
        """Advance timers, take serial input, and deliver a pending interrupt."""
        stop = self.seam.stop_requested()
        if stop is not None:
            # before any input is taken: nothing is logged after the stop, so a replay
            # that runs out of events at this point ends here too
            raise MachineStop(RunResult(stop.status, stop.reason))
        self._take_inputs(self.next_deadline_ns())
        self._deliver_interrupt()

    def _take_inputs(self, deadline: int | None) -> None:
        """Advance the PIT if its deadline passed, then feed the UART what input fits."""
        now = self.seam.timer_due(self.exit_index, deadline)
        if now is not None:
            self.pit.update(now)
            if self.lapic is not None:
                self.lapic.advance(now)
        room = self.uart.rx_room()
        if room:
            data = self.seam.serial_input(self.exit_index, room)
            if data:
                self.uart.receive(data)
        self.virtio.take_inputs(self.exit_index, self.seam)

    def _kicked(self, ex: VcpuExit) -> None:
        """A kick. With the backend's own 8259, HLT does not exit: here a stuck guest shows."""
        problem = self.interrupts.unrecordable()
        if problem is not None:
            raise MachineStop(RunResult(ExitStatus.GUEST_CRASH, problem))
        if not self.interrupts.halted_in_backend():
            return
        self._halted_with_interrupts_disabled(ex)
        # what the host already sent may be what wakes it: take it first (as a HLT exit
        # with rrvmm's PIC does), then it is stuck only if no interrupt waits
        self._take_inputs(self.next_deadline_ns())
        if (
            self.next_deadline_ns() is None
            and not self.seam.input_possible()
            and not self.interrupts.pending()
        ):
            self._stuck(ex)

    def _deliver_interrupt(self) -> None:
        vector = self.interrupts.deliver(self.exit_index)
        if vector is not None:
            self.last_vector = vector
            self.stats["injected"] += 1

    def _halt(self, ex: VcpuExit) -> None:
        """HLT: wait (in the seam) until a timer or input can wake the guest."""
        self._halted_with_interrupts_disabled(ex)
        while True:
            deadline = self.next_deadline_ns()
            self._take_inputs(deadline)
            if self.interrupts.pending() or self.seam.stop_requested() is not None:
                return
            if deadline is None and not self.seam.input_possible():
                self._stuck(ex)
            self.seam.idle(deadline)

    def _halted_with_interrupts_disabled(self, ex: VcpuExit) -> None:
        """Count a halt; a CLI;HLT ends the run (nothing can wake it)."""
        self.stats["halts"] += 1
        if not self.cpu.get_regs()["rflags"] & RFLAGS_IF:
            raise MachineStop(
                RunResult(0, f"guest halted with interrupts disabled at RIP {ex.rip:#x}")
            )

    def _stuck(self, ex: VcpuExit) -> None:
        raise MachineStop(
            RunResult(
                ExitStatus.GUEST_STUCK,
                f"guest halted at RIP {ex.rip:#x} with no timer running and no"
                " input left: it can never wake up",
            )
        )

    def _crash(self, ex: VcpuExit) -> None:
        what = {
            ExitKind.SHUTDOWN: "triple fault (shutdown)",
            ExitKind.INTERNAL_ERROR: "KVM internal error",
            ExitKind.FAIL_ENTRY: "VM entry failed",
            ExitKind.DEBUG: "unexpected debug exit",
            ExitKind.SYSTEM_EVENT: "system event",
        }.get(ex.kind, "unexpected exit")
        detail = f" ({ex.detail})" if ex.detail else ""
        raise MachineStop(
            RunResult(ExitStatus.GUEST_CRASH, f"guest crashed: {what} at RIP {ex.rip:#x}{detail}")
        )
