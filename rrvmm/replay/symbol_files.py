"""Which ELF holds a trace's symbols, for gdb and the console, and getting stored files out.

In order: the symbol files a packed trace carries (``rrvmm pack --symbols``), so a packed
trace debugs with names after its originals are gone; then the recorded kernel itself if it
is a 64-bit ELF that still matches its sha256 (or the copy a packed trace carries); then, for
a 32-bit multiboot image ``NAME.mb``, ``NAME.elf`` beside it (the ELF64 that guests/ builds
it from, which gdb needs: it cannot debug a 64-bit guest with a 32-bit file). A Linux
bzImage has no symbols: pass ``--symbols vmlinux`` (or pack it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rrvmm.replay.container import TraceReader
from rrvmm.replay.pack import PACKED_KEY, embedded_image, embedded_symbols

__all__ = ["is_elf64", "find_symbol_file", "extract_files"]

_ELF64 = b"\x7fELF\x02"


def is_elf64(data: bytes) -> bool:
    return data[:5] == _ELF64


def _file_head(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(5)
    except OSError:
        return b""


def _write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / os.path.basename(name or "symbols.elf")
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
            if hashlib.sha256(kpath.read_bytes()).hexdigest() == kernel.get("sha256"):
                return kpath
        except OSError:
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
