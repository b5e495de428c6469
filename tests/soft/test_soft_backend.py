"""The software CPU backend (unicorn): repo guests and small hand-written programs.

The repo guests are built from source (``make -C guests``) and booted straight on the
backend, with a minimal device loop (COM1 LSR reads 0x60, isa-debug-exit ends the run) or
through ``Machine`` where they need the PIC and PIT. The hand-written programs (assembled
with GNU as) exercise what the guests do not: string I/O, MMIO, 32-bit protected-mode
exceptions, ring 3 with SYSCALL/SYSRET, TSS stacks and IST.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from rrvmm.cpu.backend import BackendUnavailable, ExitKind
from rrvmm.machine.boot.multiboot import load_multiboot, protected_mode_sregs
from rrvmm.soft.backend import SoftBackend

MB = 1 << 20
COM1_LSR = 0x3FD
DEBUG_EXIT = 0xF4


# --------------------------------------------------------------------------- helpers
def boot(path: Path, cmdline: str = "", memory: int = 64 * MB) -> SoftBackend:
    """A backend with ``path`` loaded as ``Machine.boot`` does it."""
    cpu = SoftBackend(memory, [])
    img, blobs = load_multiboot(path.read_bytes(), memory, cmdline)
    for gpa, body in img.segments:
        cpu.write_memory(gpa, body)
    for gpa, length in img.zero:
        cpu.write_memory(gpa, bytes(length))
    for gpa, body in blobs:
        cpu.write_memory(gpa, body)
    cpu.set_sregs(protected_mode_sregs())
    cpu.set_regs({"rflags": 0x2, **img.regs})
    return cpu


def serial_loop(cpu: SoftBackend, limit: int = 100_000) -> tuple[str, list[tuple], int | None]:
    """Run with COM1 output collected and LSR reads answered 0x60 (THRE|TEMT).

    Returns the output, every exit as (kind, addr, rip, instructions, data), and the
    isa-debug-exit status (None if the run ended otherwise).
    """
    out = bytearray()
    exits: list[tuple] = []
    dlab = False  # LCR bit 7: 0x3f8 is the divisor latch, not the transmitter
    for _ in range(limit):
        ex = cpu.run()
        exits.append((ex.kind, ex.addr, ex.rip, cpu.instructions, bytes(ex.data)))
        if ex.kind is ExitKind.IO_OUT:
            if ex.addr == 0x3FB:
                dlab = bool(ex.data[0] & 0x80)
            elif ex.addr == 0x3F8 and not dlab:
                out += ex.data
            elif ex.addr == DEBUG_EXIT:
                return out.decode(), exits, ex.data[0]
        elif ex.kind is ExitKind.IO_IN:
            cpu.complete_read(b"\x60" if ex.addr == COM1_LSR else b"\xff" * ex.size)
        elif ex.kind is not ExitKind.DEBUG:
            return out.decode(), exits, None
    raise AssertionError("guest did not finish")


def symbol(guest_dir: Path, name: str, sym: str) -> int:
    with (guest_dir / f"{name}.elf").open("rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        return table.get_symbol_by_name(sym)[0]["st_value"]


def assemble(tmp_path: Path, source: str, bits: int, base: int) -> tuple[bytes, dict[str, int]]:
    """Flat binary of ``source`` linked at ``base``, and its global symbols."""
    if not all(shutil.which(t) for t in ("as", "ld", "objcopy", "nm")):
        pytest.skip("GNU binutils are not installed")
    s, o, elf, binary = (tmp_path / f"prog.{x}" for x in ("s", "o", "elf", "bin"))
    s.write_text(source)
    emu = "elf_x86_64" if bits == 64 else "elf_i386"
    subprocess.run(["as", f"--{bits}", str(s), "-o", str(o)], check=True)
    subprocess.run(["ld", "-m", emu, f"-Ttext={base:#x}", "-e", "_start", str(o), "-o", str(elf)],
                   check=True)  # fmt: skip
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(elf), str(binary)], check=True)
    syms = {}
    for line in subprocess.run(["nm", str(elf)], capture_output=True, text=True).stdout.split("\n"):
        if line.strip():
            addr, _, name = line.split()
            syms[name] = int(addr, 16)
    return binary.read_bytes(), syms


# --------------------------------------------------------------------------- set-up
def test_refuses_other_unicorn_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    import unicorn

    monkeypatch.setattr(unicorn, "__version__", "2.0.1")
    with pytest.raises(BackendUnavailable, match="2.1.4"):
        SoftBackend(4 * MB, [])


def test_sregs_and_msrs_round_trip() -> None:
    cpu = SoftBackend(4 * MB, [])
    sregs = protected_mode_sregs()
    cpu.set_sregs(sregs)
    got = cpu.get_sregs()
    for seg in ("cs", "ds", "ss"):
        assert got[seg] == sregs[seg]
    assert got["gdt"] == sregs["gdt"] and got["cr0"] == 0x11 and got["efer"] == 0
    cpu.set_msrs({0xC000_0081: 0x0023_0010_0000_0000, 0xC000_0100: 0xFFFF_8000_1234_0000})
    msrs = cpu.get_msrs([0xC000_0081, 0xC000_0100, 0xC000_0080])
    assert msrs == {0xC000_0081: 0x0023_0010_0000_0000, 0xC000_0100: 0xFFFF_8000_1234_0000,
                    0xC000_0080: 0}  # fmt: skip
    assert cpu.get_sregs()["fs"]["base"] == 0xFFFF_8000_1234_0000
    cpu.set_regs({"rax": 1, "r15": 2, "rip": 0x1234, "rflags": 0x202})
    regs = cpu.get_regs()
    assert (regs["rax"], regs["r15"], regs["rip"], regs["rflags"]) == (1, 2, 0x1234, 0x202)


def test_native_cpuid_table_hides_rdrand() -> None:
    rows = SoftBackend(4 * MB, []).supported_cpuid()
    leaf1 = next(r for r in rows if r[0] == 1)
    assert not leaf1[5] & (1 << 30)
    ext = next(r for r in rows if r[0] == 0x8000_0001)
    assert ext[6] & (1 << 29)  # long mode


# --------------------------------------------------------------------------- repo guests
def test_hello_world(guest) -> None:  # noqa: ANN001
    out, _, status = serial_loop(boot(guest("hello"), "exit=5"))
    assert status == 5
    assert out.startswith("hello, world\n")
    assert 'cmdline: "exit=5"' in out


def test_exceptions_guest(guest) -> None:  # noqa: ANN001
    out, _, status = serial_loop(boot(guest("exceptions")))
    assert "#PF vector=14 err=0x2 cr2=0x40001234 rip ok" in out
    assert out.endswith("exceptions: 6/6 as expected\n")
    assert status == 0


def test_triple_fault_is_a_shutdown_exit(guest) -> None:  # noqa: ANN001
    out, exits, status = serial_loop(boot(guest("triplefault")))
    assert status is None and out == "about to triple fault\n"
    assert exits[-1][0] is ExitKind.SHUTDOWN


def test_compute_result_and_exact_instruction_counts(guest) -> None:  # noqa: ANN001
    counts = {}
    for n in (1000, 2000):
        out, exits, status = serial_loop(boot(guest("compute"), f"n={n}"))
        assert status == 0
        counts[n] = exits[-1][3]
    assert "compute result=0xae72ef9c1ff16ad3" in serial_loop(boot(guest("compute"), "n=1000"))[0]
    assert counts[2000] - counts[1000] == 14 * 1000  # 14 instructions per iteration


def test_same_guest_twice_gives_identical_exits(guest) -> None:  # noqa: ANN001
    a = serial_loop(boot(guest("exceptions")))[1]
    b = serial_loop(boot(guest("exceptions")))[1]
    assert len(a) > 400 and a == b


@pytest.mark.parametrize("name", ["exceptions", "triplefault"])
def test_single_stepping_counts_like_chunks(guest, name: str) -> None:  # noqa: ANN001
    """Every exit at the same instruction count whether the guest runs in chunks or one
    instruction at a time; each step advances the count by at most one."""
    plain = serial_loop(boot(guest(name)))[1]
    cpu = boot(guest(name))
    cpu.set_debug([], single_step=True)
    stepped, steps, prev = [], 0, 0
    while True:
        ex = cpu.run()
        assert cpu.instructions - prev in (0, 1)
        prev = cpu.instructions
        if ex.kind is ExitKind.DEBUG:
            steps += 1
            continue
        stepped.append((ex.kind, ex.addr, ex.rip, cpu.instructions, bytes(ex.data)))
        if ex.kind is ExitKind.IO_IN:
            cpu.complete_read(b"\x60")
        if ex.kind is ExitKind.SHUTDOWN or ex.kind is ExitKind.IO_OUT and ex.addr == DEBUG_EXIT:
            break
    assert stepped == plain
    assert steps > 2000


def test_breakpoint_and_single_step(guest, guest_dir: Path) -> None:  # noqa: ANN001
    target = symbol(guest_dir, "hello", "serial_putc")
    cpu = boot(guest("hello"))
    cpu.set_debug([target])
    seen = []
    while True:
        ex = cpu.run()
        if ex.kind is ExitKind.DEBUG:
            break
        seen.append(ex.kind)
        if ex.kind is ExitKind.IO_IN:
            cpu.complete_read(b"\x60")
    assert ex.rip == ex.addr == target == cpu.get_regs()["rip"]
    at = cpu.instructions
    again = cpu.run()  # like a KVM hardware breakpoint: it fires again, no progress
    assert again.kind is ExitKind.DEBUG and again.rip == target and cpu.instructions == at
    cpu.set_debug([], single_step=True)
    step = cpu.run()
    assert step.kind is ExitKind.DEBUG and cpu.instructions == at + 1 and step.rip != target
    # the same position, found by counting instructions instead
    other = boot(guest("hello"))
    other.set_instruction_limit(at)
    while (ex := other.run()).kind is not ExitKind.INTR:
        if ex.kind is ExitKind.IO_IN:
            other.complete_read(b"\x60")
    assert other.instructions == at and other.get_regs()["rip"] == target


def test_instruction_limit_lands_on_the_same_state(guest) -> None:  # noqa: ANN001
    def state_at(limits: list[int]) -> dict[str, int]:
        cpu = boot(guest("compute"), "n=5000")
        for limit in limits:
            cpu.set_instruction_limit(limit)
            while (ex := cpu.run()).kind is not ExitKind.INTR:
                if ex.kind is ExitKind.IO_IN:
                    cpu.complete_read(b"\x60")
        assert cpu.instructions == limits[-1]
        return cpu.get_regs()

    assert state_at([40_000]) == state_at([12_345, 33_333, 40_000])


def test_dirty_log_covers_every_changed_page(guest) -> None:  # noqa: ANN001
    cpu = boot(guest("exceptions"))
    cpu.enable_dirty_log()
    pages = 2 * MB // 4096

    def snapshot() -> list[bytes]:
        return [cpu.ram_page(i) for i in range(pages)]

    cpu.dirty_bitmap()
    before, reported = snapshot(), 0
    while True:
        ex = cpu.run()
        bits = cpu.dirty_bitmap()
        after = snapshot()
        changed = {i for i in range(pages) if before[i] != after[i]}
        assert all(bits >> i & 1 for i in changed), (ex, changed)
        reported |= bits
        before = after
        if ex.kind is ExitKind.IO_IN:
            cpu.complete_read(b"\x60")
        elif ex.kind is ExitKind.IO_OUT and ex.addr == DEBUG_EXIT:
            break
    assert reported  # the guest's stack and data pages


def test_save_and_restore_state_repeat_the_future(guest) -> None:  # noqa: ANN001
    cpu = boot(guest("exceptions"))
    for _ in range(150):
        ex = cpu.run()
        if ex.kind is ExitKind.IO_IN:
            cpu.complete_read(b"\x60")
    state, memory = cpu.save_state(), bytes(cpu.memory)
    first = serial_loop(cpu)
    cpu.memory[:] = memory
    cpu.restore_state(state)
    assert serial_loop(cpu) == first


def _machine_run(guest, name: str):  # noqa: ANN001, ANN202
    from rrvmm.host.live_seam import LiveSeam
    from rrvmm.machine.pc import Machine, MachineConfig

    class Capture:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, data: bytes) -> None:
            self.data += data

        def flush(self) -> None:
            pass

    cpu = SoftBackend(64 * MB, [])
    seam, out = LiveSeam(None), Capture()
    machine = Machine(MachineConfig(memory=64 * MB, kernel_name=name), cpu, seam, out)
    machine.boot(guest(name).read_bytes())
    seam.attach(cpu)
    try:
        result = machine.run()
    finally:
        seam.detach()
    return result, out.data.decode()


def test_timer_interrupts_reach_the_guest_through_machine(guest) -> None:  # noqa: ANN001
    result, out = _machine_run(guest, "timer")
    assert result.status == 0, result.reason
    assert "pit latch ok" in out and "pit read-back ok" in out
    assert out.endswith("ticks=20\n")
    assert result.stats["injected"] >= 20


def test_interrupts_inside_compute_loops(guest) -> None:  # noqa: ANN001
    result, out = _machine_run(guest, "irqhash")
    assert result.status == 0, result.reason
    assert "irqhash work=0x8dbec084dab7e152" in out


# --------------------------------------------------------------------------- hand-written
PM32 = """
.code32
.globl _start, de_handler, gp_handler, irq_handler, tsc_cpuid
_start:
  mov $0x3f8, %dx
  mov $0x20000, %edi
  mov $4, %ecx
  cld
  rep insb                  # four IN exits, one per iteration
  in $0x61, %al
  mov %al, 0x20004
  mov $0xfec00000, %ebx
  mov (%ebx), %eax          # MMIO read
  mov %eax, 0x20008
  addl $5, 4(%ebx)          # MMIO read, then write
  movl $0x12345678, 8(%ebx) # MMIO write
  mov $0x20000, %esi
  lea 0x10(%ebx), %edi
  mov $2, %ecx
  rep movsl                 # two MMIO writes
  movl $1f, 0x20100
  xor %edx, %edx
  xor %ecx, %ecx
  mov $1, %eax
  div %ecx                  # #DE
1: movl $2f, 0x20100
  mov $0x33, %ax
  mov %ax, %ds              # #GP(0x30)
2: sti
  hlt                       # the test injects vector 0x20 here
tsc_cpuid:
  rdtsc
  mov %eax, 0x20050
  xor %eax, %eax
  cpuid
  mov %ebx, 0x20054
  rdtsc
  mov %eax, 0x20058
  mov $0, %al
  out %al, $0xf4
de_handler:
  mov 0x20100, %eax
  mov %eax, (%esp)
  incl 0x20040
  iret
gp_handler:
  pop %eax
  mov %eax, 0x20044
  mov 0x20100, %eax
  mov %eax, (%esp)
  iret
irq_handler:
  incl 0x20048
  mov %esp, 0x2004c
  iret
"""


def _gate32(offset: int) -> bytes:
    return struct.pack("<HHBBH", offset & 0xFFFF, 0x10, 0, 0x8E, offset >> 16)


def _pm32(tmp_path: Path) -> tuple[SoftBackend, dict[str, int]]:
    code, syms = assemble(tmp_path, PM32, 32, 0x10000)
    cpu = SoftBackend(4 * MB, [(0, 0, 0, 0xD, 0x756E_6547, 0x6C65_746E, 0x4965_6E69)])
    cpu.write_memory(0x8000, struct.pack("<4Q", 0, 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF))
    idt = bytearray(8 * 256)
    for vector, name in ((0, "de_handler"), (13, "gp_handler"), (0x20, "irq_handler")):
        idt[vector * 8 : vector * 8 + 8] = _gate32(syms[name])
    cpu.write_memory(0x2000, bytes(idt))
    cpu.write_memory(0x10000, code)
    sregs = protected_mode_sregs()
    sregs["idt"] = {"base": 0x2000, "limit": 0x7FF}
    cpu.set_sregs(sregs)
    cpu.set_regs({"rflags": 2, "rip": 0x10000, "rsp": 0x30000})
    return cpu, syms


def _run_pm32(cpu: SoftBackend) -> list[tuple]:
    log = []
    ins = iter(b"abcd")
    while True:
        ex = cpu.run()
        if ex.kind is ExitKind.DEBUG:
            continue
        log.append((ex.kind.name, ex.addr, ex.size, bytes(ex.data), ex.rip, cpu.instructions))
        if ex.kind is ExitKind.IO_IN:
            cpu.complete_read(bytes([next(ins)]) if ex.addr == 0x3F8 else b"\x77")
        elif ex.kind is ExitKind.MMIO_READ:
            cpu.complete_read((0x1000 + ex.addr - 0xFEC0_0000).to_bytes(ex.size, "little"))
        elif ex.kind is ExitKind.HLT:
            assert cpu.interrupts_enabled()
            cpu.inject_interrupt(0x20)  # delivered on the next entry
        elif ex.kind is ExitKind.IO_OUT and ex.addr == DEBUG_EXIT:
            return log
        elif ex.kind is not ExitKind.MMIO_WRITE:
            raise AssertionError(f"unexpected {ex} {ex.detail}")


def test_string_io_mmio_and_protected_mode_events(tmp_path: Path) -> None:
    cpu, syms = _pm32(tmp_path)
    log = _run_pm32(cpu)
    kinds = [entry[0] for entry in log]
    assert kinds[:5] == ["IO_IN"] * 5
    assert [e[4] for e in log[:4]] == [0x1000F] * 4  # at the rep insb, RCX counting down
    assert cpu.read_memory(0x20000, 5) == b"abcd\x77"
    mmio = [(k, a, d) for k, a, _, d, _, _ in log if k.startswith("MMIO")]
    assert mmio == [
        ("MMIO_READ", 0xFEC0_0000, b""),
        ("MMIO_READ", 0xFEC0_0004, b""),
        ("MMIO_WRITE", 0xFEC0_0004, (0x1004 + 5).to_bytes(4, "little")),
        ("MMIO_WRITE", 0xFEC0_0008, (0x12345678).to_bytes(4, "little")),
        ("MMIO_WRITE", 0xFEC0_0010, b"abcd"),
        ("MMIO_WRITE", 0xFEC0_0014, b"\x77\0\0\0"),
    ]
    read_rip = next(e[4] for e in log if e[0] == "MMIO_READ")
    assert cpu.read_memory(read_rip, 2) == b"\x8b\x03"  # reads exit at the instruction
    assert cpu.read_memory(0x20008, 4) == (0x1000).to_bytes(4, "little")
    de, gp_err, irqs, irq_esp = struct.unpack("<4I", cpu.read_memory(0x20040, 16))
    assert (de, gp_err, irqs, irq_esp) == (1, 0x30, 1, 0x30000 - 12)
    t0, vendor, t1 = struct.unpack("<3I", cpu.read_memory(0x20050, 12))
    assert vendor == 0x756E_6547  # from the CPUID rows given to the backend
    assert t1 - t0 == 5  # RDTSC counts instructions: mov, xor, cpuid, mov, rdtsc


def test_hand_written_program_single_steps_identically(tmp_path: Path) -> None:
    plain = _run_pm32(_pm32(tmp_path)[0])
    cpu = _pm32(tmp_path)[0]
    cpu.set_debug([], single_step=True)
    assert _run_pm32(cpu) == plain


LM64 = """
.code64
.globl _start, user, sys_entry, int80, pf, gp, timer
_start:
  pushq $0x1b               # to ring 3 with IRETQ: SS, RSP, RFLAGS (IF), CS, RIP
  pushq $0x70000
  pushq $0x202
  pushq $0x23
  pushq $user
  iretq
user:
  mov $1, %rdi
  syscall
  mov %rax, 0x20000
  int $0x80
  mov %rax, 0x20008
  lea 1f(%rip), %rbx
  mov %rbx, 0x20100
  movabs $0x40001000, %rcx
  mov (%rcx), %rax          # #PF from ring 3, on the IST1 stack
1: lea 2f(%rip), %rbx
  mov %rbx, 0x20100
  cli                       # #GP(0): IOPL is 0
2: nop
  nop
  mov $2, %rdi
  syscall
sys_entry:
  mov %rcx, 0x20010
  mov %r11, 0x20018
  mov %rsp, 0x20020
  mov %cs, %rax
  mov %rax, 0x20028
  cmp $2, %rdi
  je 3f
  mov $0x5151, %rax
  sysretq
3: mov $0, %al
  out %al, $0xf4
int80:
  mov %rsp, 0x20030
  mov 8(%rsp), %rax
  mov %rax, 0x20038
  mov 32(%rsp), %rax
  mov %rax, 0x20040
  mov $0x8080, %rax
  iretq
pf:
  mov %rsp, 0x20048
  mov (%rsp), %rax
  mov %rax, 0x20050
  mov %cr2, %rax
  mov %rax, 0x20058
  mov 0x20100, %rax
  mov %rax, 8(%rsp)
  add $8, %rsp
  iretq
gp:
  mov %rsp, 0x20060
  mov (%rsp), %rax
  mov %rax, 0x20068
  mov 0x20100, %rax
  mov %rax, 8(%rsp)
  add $8, %rsp
  iretq
timer:
  incq 0x20070
  mov 8(%rsp), %rax
  mov %rax, 0x20078
  mov %rsp, 0x20080
  iretq
"""


def _seg(sel: int, typ: int, **kw: int) -> dict[str, int]:
    d = {"base": 0, "limit": 0xFFFF_FFFF, "selector": sel, "type": typ, "present": 1, "dpl": 0,
         "db": 0, "s": 1, "l": 0, "g": 1, "unusable": 0}  # fmt: skip
    d.update(kw)
    return d


def _gate64(offset: int, ist: int = 0, dpl: int = 0, gate: int = 0xE) -> bytes:
    lo = (offset & 0xFFFF) | (0x08 << 16) | (ist << 32) | ((0x80 | dpl << 5 | gate) << 40)
    lo |= (offset >> 16 & 0xFFFF) << 48
    return struct.pack("<QQ", lo, offset >> 32)


def _lm64(tmp_path: Path) -> tuple[SoftBackend, dict[str, int]]:
    """Long mode with paging, a GDT with ring 3 segments, a TSS (RSP0, IST1) and an IDT."""
    code, syms = assemble(tmp_path, LM64, 64, 0x10000)
    cpu = SoftBackend(4 * MB, [])
    gdt = [0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF, 0x00CFF3000000FFFF, 0x00AFFB000000FFFF]
    cpu.write_memory(0x1000, struct.pack("<5Q", *gdt))
    idt = bytearray(16 * 256)
    for vector, gate in ((14, _gate64(syms["pf"], ist=1)), (13, _gate64(syms["gp"])),
                         (0x80, _gate64(syms["int80"], dpl=3, gate=0xF)),
                         (0x20, _gate64(syms["timer"]))):  # fmt: skip
        idt[vector * 16 : vector * 16 + 16] = gate
    cpu.write_memory(0x2000, bytes(idt))
    tss = bytearray(104)
    struct.pack_into("<Q", tss, 4, 0x80000)  # RSP0
    struct.pack_into("<Q", tss, 36, 0x90000)  # IST1
    cpu.write_memory(0x3000, bytes(tss))
    cpu.write_memory(0x4000, struct.pack("<Q", 0x5000 | 7))  # PML4 -> PDPT, user
    cpu.write_memory(0x5000, struct.pack("<Q", 0x6000 | 7))  # PDPT[0] -> PD; 1 GiB+: absent
    cpu.write_memory(0x6000, struct.pack("<QQ", 0x87, 0x20_0000 | 0x87))  # 2 x 2 MiB, user
    cpu.write_memory(0x10000, code)
    data = _seg(0x10, 3, db=1)
    cpu.set_sregs({
        "cs": _seg(0x08, 0xB, l=1), "ds": data, "es": data, "ss": data, "fs": data, "gs": data,
        "tr": _seg(0x28, 0xB, s=0, base=0x3000, limit=0x67, g=0),
        "gdt": {"base": 0x1000, "limit": 39}, "idt": {"base": 0x2000, "limit": 0xFFF},
        "cr0": 0x8001_0011, "cr3": 0x4000, "cr4": 0x20, "efer": 0x501,
    })  # fmt: skip
    star = (0x10 << 48) | (0x08 << 32)  # SYSRET: CS 0x23, SS 0x1b; SYSCALL: CS 0x08, SS 0x10
    cpu.set_msrs({0xC000_0081: star, 0xC000_0082: syms["sys_entry"], 0xC000_0084: 0x200})
    cpu.set_regs({"rflags": 2, "rip": 0x10000, "rsp": 0x60000})
    return cpu, syms


def test_ring3_syscall_tss_stacks_and_ist(tmp_path: Path) -> None:
    cpu, syms = _lm64(tmp_path)
    cpu.set_instruction_limit(40)  # somewhere in user mode, between the #GP and the exit
    ex = cpu.run()
    assert ex.kind is ExitKind.INTR and cpu.instructions == 40
    assert cpu.get_sregs()["cs"]["selector"] == 0x23 and cpu.interrupts_enabled()
    cpu.inject_interrupt(0x20)
    ex = cpu.run()
    assert ex.kind is ExitKind.IO_OUT and ex.addr == DEBUG_EXIT
    names = (
        "sysret_rax int80_rax sys_rcx sys_r11 sys_rsp sys_cs int80_rsp int80_cs "
        "int80_ss pf_rsp pf_err pf_cr2 gp_rsp gp_err timer_n timer_cs timer_rsp"
    ).split()
    got = dict(zip(names, struct.unpack("<17Q", cpu.read_memory(0x20000, 17 * 8)), strict=True))
    assert got == {
        "sysret_rax": 0x5151, "int80_rax": 0x8080,
        "sys_rcx": syms["sys_entry"], "sys_r11": 0x202, "sys_rsp": 0x70000, "sys_cs": 0x08,
        "int80_rsp": 0x80000 - 40, "int80_cs": 0x23, "int80_ss": 0x1B,
        "pf_rsp": 0x90000 - 48, "pf_err": 0x4, "pf_cr2": 0x4000_1000,
        "gp_rsp": 0x80000 - 48, "gp_err": 0,
        "timer_n": 1, "timer_cs": 0x23, "timer_rsp": 0x80000 - 40,
    }  # fmt: skip


@pytest.mark.parametrize("mode", ["ro", "none"])
def test_protected_pages_exit_like_kvm_watchpoints(tmp_path: Path, mode: str) -> None:
    """Writes (and for 'none' reads) of a protected page exit as MMIO; the machine's
    handling completes them and the guest ends the same."""
    plain, _ = _lm64(tmp_path)
    end = plain.run()
    cpu, _ = _lm64(tmp_path)
    cpu.slots.protect({0x20: mode})
    reads = writes = 0
    while (ex := cpu.run()).kind in (ExitKind.MMIO_READ, ExitKind.MMIO_WRITE):
        assert ex.addr >> 12 == 0x20
        if ex.kind is ExitKind.MMIO_WRITE:
            writes += 1
            cpu.write_memory(ex.addr, ex.data)
        else:
            reads += 1
            cpu.complete_read(cpu.read_memory(ex.addr, ex.size))
    assert (ex.kind, ex.rip, cpu.instructions) == (end.kind, end.rip, plain.instructions)
    assert cpu.read_memory(0x20000, 0x200) == plain.read_memory(0x20000, 0x200)
    assert writes == 20 and reads == (2 if mode == "none" else 0)


def test_kick_and_interrupt_window(tmp_path: Path) -> None:
    cpu, _ = _lm64(tmp_path)
    cpu.kick()
    ex = cpu.run()
    assert ex.kind is ExitKind.INTR and cpu.instructions == 0
    cpu.request_interrupt_window(True)  # IF=0 now; IRETQ to ring 3 sets it
    ex = cpu.run()
    assert ex.kind is ExitKind.IRQ_WINDOW and cpu.interrupts_enabled()
    assert cpu.get_regs()["rflags"] & 0x200 and 0 < cpu.instructions <= 1024
    cpu.request_interrupt_window(False)
    assert cpu.run().kind is ExitKind.IO_OUT


def test_sysenter_enters_the_kernel() -> None:
    cpu = SoftBackend(4 * MB, [])
    cpu.write_memory(0x8000, struct.pack("<4Q", 0, 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF))
    cpu.write_memory(0x10000, b"\x0f\x34")  # sysenter
    cpu.write_memory(0x10010, b"\xf4")  # hlt
    cpu.set_sregs(protected_mode_sregs())
    cpu.set_msrs({0x174: 0x10, 0x175: 0x30000, 0x176: 0x10010})
    cpu.set_regs({"rflags": 0x202, "rip": 0x10000})
    ex = cpu.run()
    regs, sregs = cpu.get_regs(), cpu.get_sregs()
    assert ex.kind is ExitKind.HLT and ex.rip == 0x10011 and cpu.instructions == 2
    assert regs["rsp"] == 0x30000 and not regs["rflags"] & 0x200
    assert (sregs["cs"]["selector"], sregs["ss"]["selector"]) == (0x10, 0x18)


FETCH64 = """
.code64
.globl _start, back, pf
_start:
  mov $0x20000, %rsp
  movabs $0x201000, %rax
  call *%rax                # into an absent page: #PF on the fetch; the page holds a RET
  movabs $0x202ffa, %rax    # six NOPs at the end of a present page, then an absent one
  jmp *%rax
back:
  mov $0, %al
  out %al, $0xf4
pf:                         # map the page at CR2 with one PTE (PT covers 2-4 MiB), return
  push %rax
  push %rbx
  mov %cr2, %rax
  shr $12, %rax
  and $0x1ff, %rax
  mov %rax, %rbx
  shl $12, %rbx
  or $0x200003, %rbx
  mov %rbx, 0x7000(,%rax,8)
  incq 0x30000
  pop %rbx
  pop %rax
  add $8, %rsp
  iretq
"""


@pytest.mark.parametrize("stepping", [False, True])
def test_instruction_fetch_faults_count_exactly(tmp_path: Path, stepping: bool) -> None:
    """A fetch #PF happens before any instruction of the block runs, and is not counted:
    3 + 14 (handler) + RET + 2 + 14 + 6 NOPs + JMP + 2 = 43 instructions either way."""
    code, syms = assemble(tmp_path, FETCH64, 64, 0x10000)
    cpu = SoftBackend(4 * MB, [])
    cpu.write_memory(0x1000, struct.pack("<3Q", 0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF))
    idt = bytearray(16 * 256)
    idt[14 * 16 : 15 * 16] = _gate64(syms["pf"])
    cpu.write_memory(0x2000, bytes(idt))
    cpu.write_memory(0x4000, struct.pack("<Q", 0x5000 | 3))
    cpu.write_memory(0x5000, struct.pack("<Q", 0x6000 | 3))
    cpu.write_memory(0x6000, struct.pack("<QQ", 0x83, 0x7000 | 3))  # 2 MiB page; a PT
    cpu.write_memory(0x7000 + 2 * 8, struct.pack("<Q", 0x20_2000 | 3))  # only 0x202000
    cpu.write_memory(0x20_1000, b"\xc3")
    cpu.write_memory(0x20_2FFA, b"\x90" * 6)
    cpu.write_memory(0x20_3000, b"\xe9" + struct.pack("<i", syms["back"] - 0x20_3005))
    cpu.write_memory(0x10000, code)
    data = _seg(0x10, 3, db=1)
    cpu.set_sregs({
        "cs": _seg(0x08, 0xB, l=1), "ds": data, "es": data, "ss": data,
        "gdt": {"base": 0x1000, "limit": 23}, "idt": {"base": 0x2000, "limit": 0xFFF},
        "cr0": 0x8000_0011, "cr3": 0x4000, "cr4": 0x20, "efer": 0x500,
    })  # fmt: skip
    cpu.set_regs({"rflags": 2, "rip": 0x10000})
    cpu.set_debug([], single_step=stepping)
    while (ex := cpu.run()).kind is ExitKind.DEBUG:
        pass
    assert ex.kind is ExitKind.IO_OUT and ex.addr == DEBUG_EXIT
    assert cpu.read_memory(0x30000, 8) == (2).to_bytes(8, "little")
    assert cpu.instructions == 43


LOOP32 = """
.code32
.globl _start, again
_start:
  mov $100, %ecx
1: dec %ecx
again:
  jnz 1b
  out %al, $0xf4
"""


def test_breakpoint_in_a_loop_hits_every_iteration(tmp_path: Path) -> None:
    """The replayer's landing cycle: hit, disarm, single-step, re-arm, run on."""
    code, syms = assemble(tmp_path, LOOP32, 32, 0x10000)
    cpu = SoftBackend(4 * MB, [])
    cpu.write_memory(0x10000, code)
    cpu.set_sregs(protected_mode_sregs())
    cpu.set_regs({"rflags": 2, "rip": 0x10000})
    target, hits = syms["again"], 0
    cpu.set_debug([target])
    while (ex := cpu.run()).kind is ExitKind.DEBUG:
        assert ex.rip == target and cpu.instructions == 1 + 2 * hits + 1
        hits += 1
        cpu.set_debug([], single_step=True)
        assert cpu.run().kind is ExitKind.DEBUG
        cpu.set_debug([target])
    assert hits == 100 and ex.kind is ExitKind.IO_OUT
    cpu.set_debug([])


@pytest.mark.parametrize("name", ["timer", "irqhash"])
def test_record_and_replay_on_the_soft_backend(
    guest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,  # noqa: ANN001
) -> None:
    """The recorder and replayer (breakpoint + fingerprint landings) work unchanged."""
    import io

    import rrvmm.replay.rig as rig
    from rrvmm.host.terminal import SerialHost
    from rrvmm.launch import record_guest, replay_trace
    from rrvmm.machine.images import GuestImages
    from rrvmm.machine.pc import MachineConfig
    from rrvmm.replay.container import open_trace

    monkeypatch.setattr(rig, "make_backend", lambda _n, memory, *_a: SoftBackend(memory))
    images = GuestImages.load(guest(name))
    config = MachineConfig(memory=64 * MB, kernel_name=name)
    recorded = io.BytesIO()
    trace = tmp_path / "t.rrt"
    serial = SerialHost(output=recorded, input_fd=None)
    result, _ = record_guest(images, config, SoftBackend(64 * MB), serial, trace)
    assert result.status == 0, result.reason
    replayed = io.BytesIO()
    outcome = replay_trace(open_trace(trace), output=replayed)
    assert outcome.matched, outcome.divergence
    assert replayed.getvalue() == recorded.getvalue()
