"""Which ELF holds a trace's symbols, for gdb and the console, and getting stored files out.

In order: the symbol files a packed trace carries (``rrvmm pack --symbols``), so a packed
trace debugs with names after its originals are gone; then the recorded kernel itself if it
is a 64-bit ELF that still matches its sha256 (or the copy a packed trace carries); then, for
a 32-bit multiboot image ``NAME.mb``, ``NAME.elf`` beside it (the ELF64 that guests/ builds
it from, which gdb needs: it cannot debug a 64-bit guest with a 32-bit file). A Linux
bzImage has no symbols; for gdb, the ``vmlinux`` of the same build is taken when it lies
where builds put it (``vmlinux-VERSION`` beside ``vmlinuz-VERSION``, as distributions and
scripts/get-linux-guest.py do; ``vmlinux`` at the top of the tree of ``arch/x86/boot/
bzImage``) and holds the bzImage's own version string (release and build: "#1 SMP ... (date)").
Otherwise: ``--symbols vmlinux``, or pack it.

Every path here comes from a trace header (or sits beside one it names), so a crafted trace
may point at a FIFO, /dev/zero or a huge file: each is opened with ``open_input`` (regular
files only, never blocking) and the kernel read with ``read_image`` (bounded), and any of
those is simply no symbol file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rrvmm.errors import RrvmmError
from rrvmm.inputfile import open_input
from rrvmm.machine.boot.kernel import read_image
from rrvmm.replay.container import TraceReader
from rrvmm.replay.pack import PACKED_KEY, embedded_image, embedded_symbols

__all__ = ["is_elf64", "find_symbol_file", "extract_files", "vmlinux_for"]

_ELF64 = b"\x7fELF\x02"


def is_elf64(data: bytes) -> bool:
    return data[:5] == _ELF64


def _file_head(path: Path, size: int = 5) -> bytes:
    """The first ``size`` bytes of a regular file; b"" for anything else or none."""
    try:
        with os.fdopen(open_input(path), "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def _write(directory: Path, name: str, data: bytes) -> Path:
    base = os.path.basename(name)
    path = directory / (base if base not in ("", ".", "..") else "symbols.elf")
    path.write_bytes(data)
    return path


def find_symbol_file(reader: TraceReader, scratch: Path, *, elf64: bool = True) -> Path | None:
    """The best symbol file for ``reader``'s guest (see the module docstring), or None.

    ``elf64``: only 64-bit ELFs will do (gdb); the console reads symbols from any ELF, so
    there the recorded 32-bit multiboot image itself counts. Files that only exist inside
    the trace are written to ``scratch`` (a directory the caller removes afterwards).
    """
    usable = is_elf64 if elf64 else (lambda head: head[:4] == b"\x7fELF")
    for name, data in embedded_symbols(reader):
        if data.startswith(b"\x7fELF"):
            return _write(scratch, name, data)
    kernel = (reader.header.get("images") or {}).get("kernel") or {}
    kpath = Path(str(kernel.get("path", "")))
    if usable(_file_head(kpath)):
        try:
            if hashlib.sha256(read_image(kpath)).hexdigest() == kernel.get("sha256"):
                return kpath
        except RrvmmError:  # gone, unreadable, or no longer a regular file of sane size
            pass
    try:
        data = embedded_image(reader, "kernel")
    except Exception:  # noqa: BLE001 - a damaged copy: no symbols, the replay says more
        data = None
    if data is not None and usable(data):
        return _write(scratch, kpath.name, data)
    beside = kpath.with_suffix(".elf")
    if kpath.suffix == ".mb" and is_elf64(_file_head(beside)):
        return beside
    if elf64:
        return vmlinux_for(kpath)
    return None


def _bzimage_version(path: Path) -> tuple[bytes, bytes] | None:
    """(release, build) from a bzImage's setup header ``kernel_version`` string, e.g.
    (b"6.1.0-57-cloud-amd64", b"#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-3 (2026-11-26)")."""
    head = _file_head(path, 0x8000)
    if head[0x202:0x206] != b"HdrS" or len(head) < 0x210:
        return None
    at = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    text = head[at : at + 256].split(b"\0")[0]
    release, _, rest = text.partition(b" ")
    build = rest.partition(b") ")[2] if b") " in rest else rest
    return (release, build) if release and build else None


def vmlinux_for(kpath: Path) -> Path | None:
    """The vmlinux of bzImage ``kpath``'s own build where builds put it (see the module
    docstring), checked by its version string; None if there is none."""
    import mmap

    version = _bzimage_version(kpath)
    if version is None:
        return None
    release, build = version
    candidates = []
    if kpath.name.startswith("vmlinuz-"):
        candidates.append(kpath.with_name("vmlinux-" + kpath.name[len("vmlinuz-") :]))
    if kpath.parts[-4:-1] == ("arch", "x86", "boot"):
        candidates.append(kpath.parents[3] / "vmlinux")
    for candidate in candidates:
        if not is_elf64(_file_head(candidate)):
            continue
        try:
            with (
                os.fdopen(open_input(candidate), "rb") as f,
                mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m,
            ):
                if m.find(b"Linux version " + release + b" (") >= 0 and m.find(build) >= 0:
                    return candidate
        except (OSError, ValueError):
            continue
    return None


def extract_files(
    reader: TraceReader, symbols_dir: Path | None, images_dir: Path | None
) -> list[Path]:
    """Write the symbol files (to ``symbols_dir``) and images (to ``images_dir``) a packed
    trace carries, under their original names; the paths written."""
    written: list[Path] = []
    if symbols_dir is not None:
        for name, data in embedded_symbols(reader):
            written.append(_write(symbols_dir, name, data))
    if images_dir is not None:
        for what, entry in (reader.header.get("images") or {}).items():
            data = embedded_image(reader, what)
            if data is not None:
                written.append(_write(images_dir, Path(str(entry.get("path", what))).name, data))
    return written


def packed_symbol_names(reader: TraceReader) -> list[str]:
    return [str(e.get("name")) for e in reader.header.get(PACKED_KEY, {}).get("symbols", [])]
