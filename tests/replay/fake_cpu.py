"""A scripted CPU for unit tests of the recorder and the replayer (no KVM, no unicorn).

It implements ``rrvmm.cpu.backend.CpuBackend`` and the calls the record/replay seams make
beyond it (``RecordableCpu``'s dirty log, forged exits and debug registers; it is its own
``InstructionCounting``, as the software CPU is). The
guest is a script of ``Step``s: run so many instructions (storing to memory on the way),
then exit. The registers follow the instruction count, so two points of the script have
equal registers only if they are the same point, as with a real guest that makes progress.
"""

from __future__ import annotations

from dataclasses import dataclass

from rrvmm.cpu.backend import GPR_NAMES, ExitKind, InstructionCounting, KernelIrqchip, VcpuExit

PAGE = 4096


@dataclass
class Step:
    """``instructions`` more instructions (with ``writes`` to memory), then this exit."""

    instructions: int
    kind: ExitKind
    addr: int = 0
    size: int = 0
    data: bytes = b""
    writes: tuple[tuple[int, bytes], ...] = ()


class FakeCpu:
    name = "fake"

    def __init__(self, script: list[Step], memory_size: int = 16 * PAGE) -> None:
        self.memory_size = memory_size
        self.memory = bytearray(memory_size)
        self.exit = VcpuExit()
        self.script = list(script)
        self.instructions = 0  # retired so far (exact, as the software CPU counts)
        self._into_step = 0  # instructions of the current step already run
        self._limit: int | None = None
        self._dirty = 0
        self.dirty_log = False
        self.tsc_offset = 0
        self.cpuid: list[tuple[int, ...]] = []
        self.pending_vector: int | None = None
        self.injected: list[int] = []
        self.reads: list[bytes] = []
        self.forged: list[tuple[ExitKind, int]] = []
        self.debug: list[tuple[list[int], bool]] = []
        self.closed = False

    # --- CpuBackend ---
    def read_memory(self, gpa: int, size: int) -> bytes:
        return bytes(self.memory[gpa : gpa + size])

    def write_memory(self, gpa: int, data: bytes) -> None:
        self.memory[gpa : gpa + len(data)] = data
        for page in range(gpa // PAGE, (gpa + max(len(data), 1) - 1) // PAGE + 1):
            self._dirty |= 1 << page

    def set_cpuid(self, entries: list[tuple[int, ...]]) -> None:
        self.cpuid = list(entries)

    def get_regs(self) -> dict[str, int]:
        n = self.instructions
        regs = {name: (n * (i + 3)) & 0xFFFF_FFFF for i, name in enumerate(GPR_NAMES)}
        regs["rip"] = 0x100000 + n
        regs["rflags"] = 0x202
        return regs

    def set_regs(self, regs: dict[str, int]) -> None:
        raise NotImplementedError("the scripted guest's registers follow its script")

    def get_sregs(self) -> dict[str, object]:
        return {"cr0": 1, "cr3": 0, "cr4": 0, "efer": 0}

    def set_sregs(self, sregs: dict[str, object]) -> None:
        raise NotImplementedError("the scripted guest's registers follow its script")

    def run(self) -> VcpuExit:
        if not self.script:
            raise AssertionError("the guest script ran out: the test expected fewer runs")
        step = self.script[0]
        left = step.instructions - self._into_step
        if self._limit is not None and self.instructions + left > self._limit:
            ran = self._limit - self.instructions
            self.instructions += ran
            self._into_step += ran
            return self._report(ExitKind.INTR, 0, 0, b"")
        for gpa, data in step.writes:
            self.write_memory(gpa, data)
        self.instructions += left
        self.script.pop(0)
        self._into_step = 0
        return self._report(step.kind, step.addr, step.size, step.data)

    def _report(self, kind: ExitKind, addr: int, size: int, data: bytes) -> VcpuExit:
        ex = self.exit
        ex.kind, ex.addr, ex.size, ex.count, ex.data = kind, addr, size, 1, data
        ex.rip, ex.detail = self.get_regs()["rip"], ""
        return ex

    def complete_read(self, data: bytes) -> None:
        self.reads.append(data)

    def interrupts_enabled(self) -> bool:
        return True

    def inject_interrupt(self, vector: int) -> None:
        self.injected.append(vector)
        self.pending_vector = vector

    def request_interrupt_window(self, on: bool) -> None:
        pass

    def kick(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def instruction_counter(self) -> InstructionCounting | None:
        return self  # exact, as the software CPU counts

    def kernel_irqchip(self) -> KernelIrqchip | None:
        return None

    # --- what the recorder and the replayer use beyond it ---
    def enable_dirty_log(self) -> None:
        self.dirty_log = True

    def dirty_bitmap(self) -> int:
        bits, self._dirty = self._dirty, 0
        return bits

    def ram_page(self, page: int) -> bytes:
        return bytes(self.memory[page * PAGE : (page + 1) * PAGE])

    def injection_pending(self) -> bool:
        return self.pending_vector is not None

    def forge_exit(self, kind: ExitKind, rip: int) -> VcpuExit:
        self.forged.append((kind, rip))
        ex = self._report(kind, 0, 0, b"")
        ex.rip = rip
        return ex

    def set_debug(self, breakpoints: list[int], single_step: bool = False) -> None:
        self.debug.append((list(breakpoints), single_step))

    def set_instruction_limit(self, n: int | None) -> None:
        self._limit = n
