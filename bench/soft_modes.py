"""What unicorn 2.1.4's ways of running cost, on two guest loops, in one run.

The software CPU's speed is set by two things this measures in isolation, on raw unicorn
(no rrvmm code): how instructions are counted, and whether guest stores take unicorn's
slow path (``notdirty_write``).

- free: ``emu_start`` without a count (no exact position: the guest's ceiling);
- count: ``emu_start(count=32768)`` chunks, unicorn's per-instruction counter (what the
  soft backend runs in);
- block hook: no count, a native do-nothing callback on every translation block (what
  counting per block would cost at least);
- count + hook on all memory: count mode with a write-protection hook over every address,
  as the soft backend had before its hooks were bounded: unicorn then keeps every store on
  the slow path.

The loops run in 64-bit mode with 4-level paging; the data page is mapped no-execute,
as Linux maps its data (unicorn only lets stores to non-executable pages onto the fast
path).

    python bench/soft_modes.py [--iterations 2000000]
"""

from __future__ import annotations

import argparse
import ctypes as C
import struct
import time

import unicorn as U
from unicorn import x86_const as X

CODE, DATA, TABLES = 0x10_0000, 0x20_0000, 0x30_0000
LOOP_INSNS = 6
# top: mov [rbx],rax (or 3 NOPs); add rax,1; add rcx,rax; xor rdx,rcx; sub rdi,1; jnz top
STORE = bytes.fromhex("488903")
BODY = bytes.fromhex("4883c0014801c14831ca4883ef0175ed") + b"\xf4"
NX = 1 << 63
HOOK_CB = C.CFUNCTYPE(None, C.c_void_p, C.c_uint64, C.c_uint32, C.c_void_p)
PROT_CB = C.CFUNCTYPE(C.c_bool, C.c_void_p, C.c_int, C.c_uint64, C.c_int, C.c_int64, C.c_void_p)


def engine(store: bool, iterations: int) -> U.Uc:
    """A 64-bit engine with paging on: code page executable, data page NX."""
    uc = U.Uc(U.UC_ARCH_X86, U.UC_MODE_64)
    uc.mem_map(0, 0x40_0000)
    uc.mem_write(CODE, (STORE if store else b"\x90" * 3) + BODY)
    pml4, pdpt, pd, low, high = (TABLES + i * 0x1000 for i in range(5))
    uc.mem_write(pml4, struct.pack("<Q", pdpt | 3))
    uc.mem_write(pdpt, struct.pack("<Q", pd | 3))
    uc.mem_write(pd, struct.pack("<2Q", low | 3, high | 3))  # 4 MiB identity, 4 KiB pages
    for table, base in ((low, 0), (high, 0x20_0000)):
        pages = [base + (i << 12) for i in range(512)]
        ptes = [a | 3 | (NX if a == DATA else 0) for a in pages]
        uc.mem_write(table, struct.pack("<512Q", *ptes))
    uc.reg_write(X.UC_X86_REG_CR3, pml4)
    uc.reg_write(X.UC_X86_REG_CR4, uc.reg_read(X.UC_X86_REG_CR4) | 0x20)
    uc.msr_write(0xC000_0080, uc.msr_read(0xC000_0080) | 0x800 | 0x500)  # NXE, LME, LMA
    uc.reg_write(X.UC_X86_REG_CR0, uc.reg_read(X.UC_X86_REG_CR0) | 0x8000_0001)
    uc.reg_write(X.UC_X86_REG_RBX, DATA)
    uc.reg_write(X.UC_X86_REG_RDI, iterations)
    return uc


def add_raw_hook(uc: U.Uc, kind: int, cb: object) -> None:
    from unicorn.unicorn_py3.unicorn import uclib

    handle = C.c_size_t()
    err = uclib.uc_hook_add(uc._uch, C.byref(handle), kind, C.cast(cb, C.c_void_p), None,
                            C.c_uint64(1), C.c_uint64(0))  # fmt: skip
    if err:
        raise SystemExit(f"unicorn refused a hook: {err}")


def run(mode: str, store: bool, iterations: int) -> float:
    """MIPS of one mode on one loop."""
    uc = engine(store, iterations)
    keep: list[object] = []
    if mode == "block hook":
        libc = C.CDLL(None)
        cb = C.cast(libc.abs, C.c_void_p)  # native, harmless for any arguments
        keep.append(cb)
        add_raw_hook(uc, U.UC_HOOK_BLOCK, cb)
    if mode == "count + hook on all memory":
        cb = PROT_CB(lambda *_: False)
        keep.append(cb)
        add_raw_hook(uc, U.UC_HOOK_MEM_WRITE_PROT, cb)
    t0 = time.process_time()
    if mode == "free" or mode == "block hook":
        uc.emu_start(CODE, 0)
    else:
        pc = CODE
        while uc.reg_read(X.UC_X86_REG_RDI):
            uc.emu_start(pc, 0, count=32768)
            pc = uc.reg_read(X.UC_X86_REG_RIP)
    used = time.process_time() - t0
    if uc.reg_read(X.UC_X86_REG_RDI):
        raise SystemExit(f"{mode}: the loop did not finish")
    return LOOP_INSNS * iterations / used / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=2_000_000)
    args = ap.parse_args()
    modes = ("free", "block hook", "count", "count + hook on all memory")
    print(f"unicorn {U.__version__}, {LOOP_INSNS}-instruction loop, MIPS per CPU second")
    print(f"{'':28} {'registers only':>15} {'one store':>10}")
    for mode in modes:
        regs, stores = (run(mode, s, args.iterations) for s in (False, True))
        print(f"{mode:28} {regs:15.1f} {stores:10.1f}")


if __name__ == "__main__":
    main()
