"""The KVM CPU backend: one vCPU, guest RAM in an anonymous host mapping, sync regs.

Registers come from ``KVM_CAP_SYNC_REGS`` (kvm_run carries them at every exit), which saves a
~5 us ioctl per exit on the hot path. A kick is a signal to the vCPU thread
(``immediate_exit`` set from another thread does not stop a running vCPU here). A signal
that arrives while the thread is in Python is simply lost; the kicker repeats it. One that
arrives as KVM_RUN starts ends it before the guest's first instruction (after KVM finished
the previous exit's IN): a forced exit without guest progress, which replay reports
without running (``forge_exit``), as it does the refused KVM_RUN of ``immediate_exit``.
"""

from __future__ import annotations

import ctypes as C
import mmap
import signal
import threading

from rrvmm.cpu.backend import (
    CONTROL_NAMES,
    GPR_NAMES,
    SEGMENT_FIELDS,
    SEGMENT_NAMES,
    BackendError,
    BackendUnavailable,
    ExitKind,
    InstructionCounting,
    KernelIrqchip,
    PicRegisters,
    QueuedInterrupt,
    VcpuExit,
)
from rrvmm.kvm import linux_kvm as K
from rrvmm.kvm.kernel_irqchip import KvmIrqchip
from rrvmm.kvm.kvm import Kvm, KvmVcpu, KvmVm
from rrvmm.kvm.memslots import MemorySlots

__all__ = ["KvmBackend", "kvm_usable"]
_KICK_SIGNAL = signal.SIGUSR1
_TSS_ADDR = 0xFFFB_D000

_STATE_MSRS = (
    K.MSR_EFER, K.MSR_STAR, K.MSR_LSTAR, K.MSR_CSTAR, K.MSR_SYSCALL_MASK, K.MSR_FS_BASE,
    K.MSR_GS_BASE, K.MSR_KERNEL_GS_BASE, K.MSR_IA32_SYSENTER_CS, K.MSR_IA32_SYSENTER_ESP,
    K.MSR_IA32_SYSENTER_EIP, K.MSR_IA32_CR_PAT, K.MSR_IA32_MISC_ENABLE,
)  # fmt: skip

_EXIT_KIND = {
    K.KVM_EXIT_HLT: ExitKind.HLT,
    K.KVM_EXIT_IRQ_WINDOW_OPEN: ExitKind.IRQ_WINDOW,
    K.KVM_EXIT_INTR: ExitKind.INTR,
    K.KVM_EXIT_SHUTDOWN: ExitKind.SHUTDOWN,
    K.KVM_EXIT_INTERNAL_ERROR: ExitKind.INTERNAL_ERROR,
    K.KVM_EXIT_FAIL_ENTRY: ExitKind.FAIL_ENTRY,
    K.KVM_EXIT_DEBUG: ExitKind.DEBUG,
    K.KVM_EXIT_SYSTEM_EVENT: ExitKind.SYSTEM_EVENT,
}


def kvm_usable(path: str = "/dev/kvm") -> str | None:
    """None when KVM can run a VM here, else the one-line reason it cannot."""
    try:
        Kvm(path).close()
    except BackendUnavailable as e:
        return str(e)
    return None


def _install_kick_handler() -> None:
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(_KICK_SIGNAL) in (signal.SIG_DFL, signal.SIG_IGN, None):
            signal.signal(_KICK_SIGNAL, lambda _s, _f: None)


class KvmBackend:
    """A single-vCPU VM on /dev/kvm with ``memory_size`` bytes of RAM at GPA 0."""

    name = "kvm"

    def __init__(self, memory_size: int, path: str = "/dev/kvm", irqchip: str = "user") -> None:
        """``irqchip``: 'user' (rrvmm's 8259, KVM_INTERRUPT) or 'kernel' (KVM's, see
        ``rrvmm.kvm.kernel_irqchip``; ``kernel_irqchip()`` then hands it out)."""
        if irqchip not in ("user", "kernel"):
            raise BackendError(f"unknown irqchip {irqchip!r} (user or kernel)")
        self.kvm = Kvm(path)
        self.memory_size = memory_size
        self.vm: KvmVm = self.kvm.create_vm()
        try:
            self.vm.set_tss_addr(_TSS_ADDR)
        except BackendError:
            pass  # only Intel VMX needs it for real mode
        self.memory = mmap.mmap(-1, memory_size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._mem_addr = C.addressof(C.c_char.from_buffer(self.memory))
        self.slots = MemorySlots(self.vm, self._mem_addr, memory_size)
        self._chip = KvmIrqchip(self.vm) if irqchip == "kernel" else None
        self.vcpu: KvmVcpu = self.vm.create_vcpu(0)
        if self._chip is not None:
            self._chip.disable_lapic(self.vcpu)
        self._halted: bool | None = None  # mp_state at the last exit, read on demand
        self._state_msrs = _STATE_MSRS + ((K.MSR_IA32_APICBASE,) if self._chip else ())
        self._run = self.vcpu.run_struct
        self._sync = bool(self.kvm.check_extension(K.KVM_CAP_SYNC_REGS) & K.KVM_SYNC_X86_REGS)
        self._sync_regs = self._run.s.regs.regs
        self._io = self._run.u.io
        self._mmio = self._run.u.mmio
        self._synced = False  # the sync area holds the current registers
        self._read_buf: C.Array[C.c_char] | None = None
        self._thread_id: int | None = None
        self.exit = VcpuExit()
        self.int3_emulated = 0
        self._pending_completion = False  # a read answered, not yet applied by KVM
        self._debug_config: tuple[tuple[int, ...], bool] = ((), False)
        self._has_xsave = bool(self.kvm.check_extension(K.KVM_CAP_XSAVE))
        _install_kick_handler()

    # --- memory ---
    def _host_offset(self, gpa: int, size: int) -> int:
        off = self.slots.host_offset(gpa, size)
        if off is None:
            raise BackendError(f"guest physical range {gpa:#x}+{size:#x} is not RAM")
        return off

    def read_memory(self, gpa: int, size: int) -> bytes:
        off = self._host_offset(gpa, size)
        return self.memory[off : off + size]

    def ram_page(self, page: int) -> bytes:
        """Page ``page`` of the RAM buffer (host offset order, as ``dirty_bitmap`` counts)."""
        off = page << 12
        return self.memory[off : off + 4096]

    def write_memory(self, gpa: int, data: bytes) -> None:
        off = self._host_offset(gpa, len(data))
        self.memory[off : off + len(data)] = data

    # --- registers ---
    def set_cpuid(self, entries: list[tuple[int, ...]]) -> None:
        self.vcpu.set_cpuid2(entries)

    def get_regs(self) -> dict[str, int]:
        if self._pending_completion and self._read_buf is None:
            self.settle()  # a read's value is applied by KVM only at the next entry
        src = self._sync_regs if self._synced else self.vcpu.get(K.KVM_GET_REGS, K.kvm_regs)
        return {n: getattr(src, n) for n in GPR_NAMES}

    def set_regs(self, regs: dict[str, int]) -> None:
        if self._synced:
            dst = self._sync_regs
            for n, v in regs.items():
                setattr(dst, n, v)
            self._run.kvm_dirty_regs |= K.KVM_SYNC_X86_REGS
        else:
            cur = self.vcpu.get(K.KVM_GET_REGS, K.kvm_regs)
            for n, v in regs.items():
                setattr(cur, n, v)
            self.vcpu.set(K.KVM_SET_REGS, cur)

    def get_sregs(self) -> dict[str, object]:
        if self._pending_completion and self._read_buf is None:
            self.settle()
        s = self.vcpu.get(K.KVM_GET_SREGS, K.kvm_sregs)
        out: dict[str, object] = {}
        for seg in SEGMENT_NAMES:
            sv = getattr(s, seg)
            out[seg] = {f: getattr(sv, f) for f in SEGMENT_FIELDS} | {"unusable": sv.unusable}
        out["gdt"] = {"base": s.gdt.base, "limit": s.gdt.limit}
        out["idt"] = {"base": s.idt.base, "limit": s.idt.limit}
        for n in CONTROL_NAMES:
            out[n] = getattr(s, n)
        out["interrupt_bitmap"] = list(s.interrupt_bitmap)
        return out

    def set_sregs(self, sregs: dict[str, object]) -> None:
        s = self.vcpu.get(K.KVM_GET_SREGS, K.kvm_sregs)
        for seg in SEGMENT_NAMES:
            if seg in sregs:
                fields = sregs[seg]
                assert isinstance(fields, dict)
                for f, v in fields.items():
                    setattr(getattr(s, seg), f, v)
        for dt in ("gdt", "idt"):
            if dt in sregs:
                d = sregs[dt]
                assert isinstance(d, dict)
                getattr(s, dt).base, getattr(s, dt).limit = d["base"], d["limit"]
        for n in CONTROL_NAMES:
            if n in sregs:
                setattr(s, n, sregs[n])
        if "interrupt_bitmap" in sregs:
            bm = sregs["interrupt_bitmap"]
            assert isinstance(bm, list)
            for i, v in enumerate(bm):
                s.interrupt_bitmap[i] = v
        self.vcpu.set(K.KVM_SET_SREGS, s)

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        return self.vcpu.get_msrs(indices)

    def set_msrs(self, values: dict[int, int]) -> None:
        self.vcpu.set_msrs(values)

    # --- running ---
    def run(self) -> VcpuExit:
        run = self._run
        if self._sync:
            run.kvm_valid_regs = K.KVM_SYNC_X86_REGS
        self._thread_id = threading.get_ident()  # the thread a kick must signal
        entered = self.vcpu.run()
        self._halted = None
        self._pending_completion = False
        while entered and run.exit_reason == K.KVM_EXIT_INTERNAL_ERROR and self._emulate_int3():
            entered = self.vcpu.run()
        run.immediate_exit = 0
        run.kvm_dirty_regs = 0
        self._synced = self._sync
        ex = self.exit
        ex.rip = self._sync_regs.rip if self._sync else self.get_regs()["rip"]
        ex.count = 1
        if not entered:
            ex.kind, ex.addr, ex.size, ex.data, ex.detail = ExitKind.INTR, 0, 0, b"", ""
            return ex
        reason = run.exit_reason
        if reason == K.KVM_EXIT_IO or reason == K.KVM_EXIT_MMIO:
            self._pending_completion = True  # KVM finishes the access on the next entry
        if reason == K.KVM_EXIT_IO:
            io = self._io
            ex.addr, ex.size, ex.count = io.port, io.size, io.count
            buf = self.vcpu.io_buffer(io.data_offset, io.size * io.count)
            if io.direction == K.KVM_EXIT_IO_OUT:
                ex.kind = ExitKind.IO_OUT
                ex.data = buf.raw
            else:
                ex.kind = ExitKind.IO_IN
                ex.data = b""
                self._read_buf = buf
            return ex
        if reason == K.KVM_EXIT_MMIO:
            m = self._mmio
            ex.addr, ex.size = m.phys_addr, m.len
            if m.is_write:
                ex.kind = ExitKind.MMIO_WRITE
                ex.data = bytes(m.data[: m.len])
            else:
                ex.kind = ExitKind.MMIO_READ
                ex.data = b""
                self._read_buf = (C.c_char * 8).from_buffer(m.data)
            return ex
        ex.kind = _EXIT_KIND.get(reason, ExitKind.UNKNOWN)
        ex.addr = ex.size = 0
        ex.data = b""
        if reason == K.KVM_EXIT_INTERNAL_ERROR:
            ie = self._run.u.internal
            data = " ".join(f"{d:#x}" for d in ie.data[: min(ie.ndata, 16)])
            ex.detail = f"suberror {ie.suberror} ({_SUBERRORS.get(ie.suberror, '?')}) {data}"
        elif reason == K.KVM_EXIT_FAIL_ENTRY:
            fe = self._run.u.fail_entry
            ex.detail = f"hardware entry failure {fe.hardware_entry_failure_reason:#x}"
        elif reason == K.KVM_EXIT_DEBUG:
            d = self._run.u.debug
            ex.addr, ex.detail = d.pc, f"exception {d.exception} dr6={d.dr6:#x}"
        elif ex.kind == ExitKind.UNKNOWN:
            ex.detail = K.KVM_EXIT_NAMES.get(reason, f"exit reason {reason}")
        return ex

    def _emulate_int3(self) -> bool:
        """Deliver an INT3 the in-kernel emulator gave up on; True if it was one.

        KVM's instruction emulator (kvm_pvm hosts) stops with an emulation failure on INT3,
        which Linux uses for text patching. A trap-class #BP is simple to deliver: RIP past
        the instruction, then the exception queued through KVM_SET_VCPU_EVENTS.
        """
        ie = self._run.u.internal
        if ie.suberror != K.KVM_INTERNAL_ERROR_EMULATION or ie.ndata < 3 or not ie.data[0] & 1:
            return False
        insn = int(ie.data[1]).to_bytes(8, "little")
        if insn[0] == 0 or insn[1] != 0xCC:  # insn_size, then the instruction bytes
            return False
        regs = self.vcpu.get(K.KVM_GET_REGS, K.kvm_regs)
        regs.rip += 1
        self.vcpu.set(K.KVM_SET_REGS, regs)
        ev = self.vcpu.get(K.KVM_GET_VCPU_EVENTS, K.kvm_vcpu_events)
        ev.exception.injected = 1
        ev.exception.nr = 3
        ev.exception.has_error_code = 0
        ev.flags = 0
        self.vcpu.set(K.KVM_SET_VCPU_EVENTS, ev)
        self.int3_emulated += 1
        return True

    def complete_read(self, data: bytes) -> None:
        buf = self._read_buf
        assert buf is not None, "complete_read without a pending read exit"
        C.memmove(buf, data, len(data))
        self._read_buf = None

    def interrupts_enabled(self) -> bool:
        run = self._run
        return bool(run.ready_for_interrupt_injection and run.if_flag)

    def inject_interrupt(self, vector: int) -> None:
        self.vcpu.interrupt(vector)

    # --- capabilities ---
    def instruction_counter(self) -> InstructionCounting | None:
        return None  # no performance counters here: positions are exits (determinism.md)

    def kernel_irqchip(self) -> KernelIrqchip | None:
        return self if self._chip is not None else None

    # --- the kernel irqchip (``KernelIrqchip``; only while ``kernel_irqchip()`` is self) ---
    def set_irq_line(self, line: int, level: bool) -> None:
        """Drive an input of the in-kernel PIC (vCPU out of KVM_RUN)."""
        assert self._chip is not None
        self._chip.set_line(line, level)

    def pic_registers(self) -> tuple[PicRegisters, PicRegisters]:
        assert self._chip is not None
        return self._chip.pic_registers()

    def halted(self) -> bool:
        """The vCPU sits in HLT inside KVM (kernel irqchip: HLT does not exit)."""
        if self._halted is None:
            self._halted = self.mp_state() == K.KVM_MP_STATE_HALTED
        return self._halted

    def halt(self) -> None:
        """Execute the HLT at RIP the way KVM does, without running: RIP past it, halted.

        Single-stepping a HLT with the kernel irqchip would block inside KVM_RUN; the
        debugger steps over it with this instead.
        """
        regs = self.get_regs()
        self.set_regs({"rip": regs["rip"] + 1})
        self.flush_regs()
        self.vcpu.set(K.KVM_SET_MP_STATE, K.kvm_mp_state(K.KVM_MP_STATE_HALTED))
        self._halted = True

    def at_hlt(self) -> bool:
        """The instruction at RIP is HLT (flat code segments, as every guest here uses)."""
        from rrvmm.cpu.mmu import read_virtual

        sr = self.get_sregs()
        try:
            op = read_virtual(
                self.get_regs()["rip"], 1, sr["cr0"], sr["cr3"], sr["cr4"], sr["efer"],
                self.read_memory,
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - unmapped RIP: not a HLT, the run will tell
            return False
        return op == b"\xf4"

    def flush_regs(self) -> None:
        """Hand registers changed in the sync area to KVM now (before another vCPU ioctl)."""
        if self._synced and self._run.kvm_dirty_regs:
            self.vcpu.set(K.KVM_SET_REGS, self._sync_regs)
            self._run.kvm_dirty_regs = 0

    def queued_interrupt(self) -> QueuedInterrupt | None:
        """The vCPU's interrupt events, or None while RFLAGS.IF is clear (nothing is taken)."""
        if not self.get_regs()["rflags"] & (1 << 9):
            return None
        ev = self.vcpu.get(K.KVM_GET_VCPU_EVENTS, K.kvm_vcpu_events).interrupt
        return QueuedInterrupt(bool(ev.injected), ev.nr, bool(ev.shadow))

    def lapic_timer_armed(self) -> bool:
        return self._chip is not None and self._chip.lapic_timer_armed(self.vcpu)

    def request_interrupt_window(self, on: bool) -> None:
        self._run.request_interrupt_window = 1 if on else 0

    def refuse_next_entry(self) -> None:
        """Make the next ``run`` come back without running a guest instruction (an INTR
        exit, after KVM finished a pending access): what a kick that arrives between an
        exit and the next entry does. Tests place such a kick exactly with it."""
        self._run.immediate_exit = 1

    def kick(self) -> None:
        if self._thread_id is not None:
            try:
                signal.pthread_kill(self._thread_id, _KICK_SIGNAL)
            except (ProcessLookupError, OSError):
                pass  # that thread is gone: nothing is running

    # --- determinism support ---
    def enable_dirty_log(self) -> None:
        """Log guest writes per page from now on (see ``dirty_bitmap``)."""
        self.slots.enable_dirty_log()

    def dirty_bitmap(self, consumer: str = "landing") -> int:
        """Pages the guest wrote since ``consumer`` last asked: bit n = page n of RAM."""
        return self.slots.take_dirty(consumer)

    # --- whole vCPU state, for checkpoints ---
    def settle(self) -> VcpuExit | None:
        """Finish a pending IN/MMIO access inside KVM without running further guest code.

        KVM applies a read's value (and finishes an emulated instruction) on the next
        KVM_RUN; a KVM_RUN refused by ``immediate_exit`` still does that, so the registers
        are complete afterwards. If finishing the instruction needs another MMIO access
        (a read-modify-write, a page-crossing store), that exit is returned.
        """
        if not self._pending_completion:
            return None
        current = self.exit  # the exit the machine may still be dispatching
        ex = self._refused_run()
        if ex.kind is ExitKind.INTR:
            return None
        current.kind, current.addr, current.size = ex.kind, ex.addr, ex.size
        current.count, current.data, current.rip, current.detail = (
            ex.count,
            ex.data,
            ex.rip,
            ex.detail,
        )
        return current

    def _refused_run(self) -> VcpuExit:
        """A KVM_RUN that ``immediate_exit`` refuses: no guest instruction runs, but KVM
        finishes a pending IN/MMIO access and reports the interrupt state
        (``interrupts_enabled``) of the point the guest stands at. Returns what that run
        reported (an INTR, or an access that finishing the instruction needed); the exit
        being handled (``self.exit``) is left as it was."""
        current, self.exit = self.exit, VcpuExit()
        self._run.immediate_exit = 1
        try:
            ex = self.run()
        finally:
            self._run.immediate_exit = 0
            self.exit = current
        self._synced = False
        return ex

    def save_state(self) -> dict[str, object]:
        """Everything KVM holds for the vCPU, as bytes blobs (checkpoints copy this)."""
        self.settle()
        v = self.vcpu
        state: dict[str, object] = {
            "regs": bytes(v.get(K.KVM_GET_REGS, K.kvm_regs)),
            "sregs": bytes(v.get(K.KVM_GET_SREGS, K.kvm_sregs)),
            "fpu": bytes(v.get(K.KVM_GET_FPU, K.kvm_fpu)),
            "events": bytes(v.get(K.KVM_GET_VCPU_EVENTS, K.kvm_vcpu_events)),
            "debugregs": bytes(v.get(K.KVM_GET_DEBUGREGS, K.kvm_debugregs)),
            "mp_state": self.mp_state(),
            "msrs": v.get_msrs(list(self._state_msrs)),
        }
        if self._has_xsave:
            state["xsave"] = bytes(v.get(K.KVM_GET_XSAVE, K.kvm_xsave))
            state["xcrs"] = bytes(v.get(K.KVM_GET_XCRS, K.kvm_xcrs))
        if self._chip is not None:
            state["irqchip"] = self._chip.save(v)
        return state

    def restore_state(self, state: dict[str, object]) -> None:
        # KVM finishes a pending PIO/MMIO access on the next KVM_RUN, with what it saved
        # at the exit (its emulator context, the RIP to skip to): finish it now, on the
        # state it belongs to, or it lands on the restored registers (a checkpoint at an
        # OUT ran the OUT again)
        self.settle()
        v = self.vcpu
        self._read_buf = None
        self._pending_completion = False
        v.set(K.KVM_SET_SREGS, K.kvm_sregs.from_buffer_copy(state["sregs"]))  # type: ignore[arg-type]
        v.set_msrs(state["msrs"])  # type: ignore[arg-type]
        v.set(K.KVM_SET_REGS, K.kvm_regs.from_buffer_copy(state["regs"]))  # type: ignore[arg-type]
        v.set(K.KVM_SET_FPU, K.kvm_fpu.from_buffer_copy(state["fpu"]))  # type: ignore[arg-type]
        if "xsave" in state and self._has_xsave:
            v.set(K.KVM_SET_XCRS, K.kvm_xcrs.from_buffer_copy(state["xcrs"]))  # type: ignore[arg-type]
            v.set(K.KVM_SET_XSAVE, K.kvm_xsave.from_buffer_copy(state["xsave"]))  # type: ignore[arg-type]
        ev = K.kvm_vcpu_events.from_buffer_copy(state["events"])  # type: ignore[arg-type]
        ev.flags = K.KVM_VCPUEVENT_VALID_NMI_PENDING | K.KVM_VCPUEVENT_VALID_SHADOW
        v.set(K.KVM_SET_VCPU_EVENTS, ev)
        v.set(K.KVM_SET_DEBUGREGS, K.kvm_debugregs.from_buffer_copy(state["debugregs"]))  # type: ignore[arg-type]
        if self._chip is not None and "irqchip" in state:
            self._chip.restore(v, state["irqchip"])  # type: ignore[arg-type]
        v.set(K.KVM_SET_MP_STATE, K.kvm_mp_state(state["mp_state"]))  # type: ignore[arg-type]
        self._halted = None
        v.set_guest_debug(0)
        self._debug_config = ((), False)
        self._synced = False
        self._run.request_interrupt_window = 0
        # kvm_run's if_flag and ready_for_interrupt_injection (``interrupts_enabled``)
        # still describe the state before the restore; a KVM_RUN refused by
        # immediate_exit rewrites them from the restored one without running the guest
        current, self.exit = self.exit, VcpuExit()
        self._run.immediate_exit = 1
        try:
            self.run()
        finally:
            self._run.immediate_exit = 0
            self.exit = current
        self._synced = False

    def injection_pending(self) -> bool:
        """An injected interrupt is still queued: the last run never reached the guest."""
        ev = self.vcpu.get(K.KVM_GET_VCPU_EVENTS, K.kvm_vcpu_events)
        return bool(ev.interrupt.injected)

    def set_debug(self, breakpoints: list[int], single_step: bool = False) -> None:
        """Hardware execution breakpoints (at most 4) and/or single-stepping."""
        if len(breakpoints) > 4:
            raise BackendError("at most 4 hardware breakpoints")
        config = (tuple(breakpoints), single_step)
        if config == self._debug_config:
            return
        self._debug_config = config
        control = 0
        regs = [0] * 8
        if breakpoints or single_step:
            control = K.KVM_GUESTDBG_ENABLE
            # a step must be one instruction, not an interrupt delivery too; but a run to a
            # breakpoint must take the kernel irqchip's interrupts as the recording did
            if single_step or self._chip is None:
                control |= K.KVM_GUESTDBG_BLOCKIRQ
        if breakpoints:
            control |= K.KVM_GUESTDBG_USE_HW_BP
            dr7 = 0
            for i, addr in enumerate(breakpoints):
                regs[i] = addr
                dr7 |= 1 << (2 * i)  # L<i>; R/W=00 (execute), LEN=00
            regs[7] = dr7
        if single_step:
            control |= K.KVM_GUESTDBG_SINGLESTEP
        self.vcpu.set_guest_debug(control, regs)

    def forge_exit(self, kind: ExitKind, rip: int) -> VcpuExit:
        """Report an exit that happened without guest progress (replay of a lost entry).

        What the exit says about interrupts (``interrupts_enabled``) is asked of KVM, from
        a refused KVM_RUN at the point the guest stands at, as the recorded kick's
        KVM_EXIT_INTR was: no guess fits every forced exit without progress. A kick that
        cut short the entry carrying an injected interrupt leaves it queued (not ready
        for another); a kick that landed right after an I/O exit, before the guest's next
        instruction, found it ready if RFLAGS.IF was set (and the recording injected
        there).
        """
        self._refused_run()
        ex = self.exit
        ex.kind, ex.rip, ex.addr, ex.size, ex.count, ex.data = kind, rip, 0, 0, 1, b""
        ex.detail = ""
        return ex

    def mp_state(self) -> int:
        return self.vcpu.get(K.KVM_GET_MP_STATE, K.kvm_mp_state).mp_state

    def close(self) -> None:
        """Release the fds; guest RAM goes with the last reference to this object."""
        self.vcpu.close()
        self.vm.close()
        self.kvm.close()


_SUBERRORS = {
    K.KVM_INTERNAL_ERROR_EMULATION: "emulation failure",
    K.KVM_INTERNAL_ERROR_SIMUL_EX: "simultaneous exceptions",
    K.KVM_INTERNAL_ERROR_DELIVERY_EV: "event delivery failure",
}
