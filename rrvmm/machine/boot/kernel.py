"""Read a kernel file and pick its loader by looking at the bytes, not the name."""

from __future__ import annotations

from pathlib import Path

from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.inputfile import MAX_IMAGE_BYTES, NotRegularFile, TooLarge, read_limited
from rrvmm.machine.boot.linux import is_bzimage, load_bzimage
from rrvmm.machine.boot.multiboot import (
    BootImage,
    KernelFormatError,
    MemoryTooSmall,
    find_multiboot_header,
    load_multiboot,
)

__all__ = ["load_kernel", "read_image"]


def read_image(path: str | Path, what: str = "kernel", limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The file's bytes, or a one-line RrvmmError naming the file (NO_INPUT, 66).

    Only a regular file of at most ``limit`` bytes is read: a FIFO or a device such as
    /dev/zero is refused at once instead of blocking or filling memory.
    """
    p = Path(path)
    try:
        return read_limited(p, limit)
    except FileNotFoundError:
        raise RrvmmError(f"{what} file not found: {p}", ExitStatus.NO_INPUT) from None
    except IsADirectoryError:
        raise RrvmmError(f"{what} path is a directory: {p}", ExitStatus.NO_INPUT) from None
    except (NotRegularFile, TooLarge) as e:
        raise RrvmmError(f"{what} {p} is {e.strerror}", ExitStatus.NO_INPUT) from None
    except OSError as e:
        raise RrvmmError(f"cannot read {what} {p}: {e.strerror}", ExitStatus.NO_INPUT) from None


def load_kernel(
    data: bytes, name: str, memory_size: int, cmdline: str, initrd: bytes | None
) -> tuple[BootImage, list[tuple[int, bytes]]]:
    """Lay out any supported kernel format; errors are RrvmmError with a clear line."""
    try:
        if find_multiboot_header(data) is not None:
            modules = [(initrd, "initrd")] if initrd is not None else None
            return load_multiboot(data, memory_size, cmdline, modules)
        if is_bzimage(data):
            return load_bzimage(data, memory_size, cmdline, initrd)
        if data[:4] == b"\x7fELF":
            raise KernelFormatError(
                "ELF file without a multiboot header (for a 64-bit kernel, add a multiboot"
                " header and convert with objcopy -O elf32-i386)"
            )
        raise KernelFormatError("neither a multiboot kernel nor a Linux bzImage")
    except MemoryTooSmall as e:
        raise RrvmmError(f"{name}: {e} (raise --memory)", ExitStatus.MEMORY_TOO_SMALL) from None
    except KernelFormatError as e:
        raise RrvmmError(f"{name}: {e}", ExitStatus.NOT_A_KERNEL) from None
