"""Opening files named by the user (or by a trace header) without trusting what they are.

A path may name a FIFO (``open`` blocks until a writer comes: forever), a character device
(/dev/zero, /dev/urandom: ``read`` never ends) or a file far larger than any image. Every
image rrvmm reads therefore goes through ``open_input``: opened non-blocking, ``fstat``-ed,
accepted only if a regular file (or a block device where a disk is wanted), then read with
``read_limited`` up to a size known in advance. The errors are ordinary ``OSError``s with
a one-line ``strerror`` so callers report them like a missing file.
"""

from __future__ import annotations

import errno
import os
import stat

__all__ = [
    "MAX_IMAGE_BYTES",
    "NotRegularFile",
    "TooLarge",
    "open_input",
    "input_size",
    "read_limited",
]

#: The largest kernel or initrd rrvmm reads (the guest RAM is at most a few GiB, and an
#: image must fit in it with room to spare).
MAX_IMAGE_BYTES = 1 << 30


class NotRegularFile(OSError):
    """The path names a FIFO, a device, a socket: nothing with a size known up front."""


class TooLarge(OSError):
    """The file is larger than the limit for what it is meant to be."""


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def open_input(path: str | os.PathLike[str], *, block_device: bool = False, flags: int = 0) -> int:
    """An fd open for reading (``flags`` added, e.g. O_RDWR instead) on a regular file, or
    a block device if ``block_device``; NotRegularFile or IsADirectoryError otherwise.

    O_NONBLOCK makes opening a FIFO return at once; it is cleared again before returning.
    """
    access = flags if flags & (os.O_WRONLY | os.O_RDWR) else os.O_RDONLY
    fd = os.open(path, access | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", os.fspath(path))
        if not (stat.S_ISREG(mode) or (block_device and stat.S_ISBLK(mode))):
            wanted = "a regular file or block device" if block_device else "a regular file"
            raise NotRegularFile(errno.EINVAL, f"{_kind(mode)}, not {wanted}", os.fspath(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def input_size(fd: int) -> int:
    """Bytes in the file or block device behind ``fd`` (a block device's st_size is 0)."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return st.st_size


def read_limited(path: str | os.PathLike[str], limit: int) -> bytes:
    """The whole regular file, refusing (TooLarge) one of more than ``limit`` bytes, even if
    it grows while being read."""
    fd = open_input(path)
    try:
        size = input_size(fd)
        if size > limit:
            raise TooLarge(errno.EFBIG, f"{size} bytes, more than the limit of {limit}", path)
        parts, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                raise TooLarge(errno.EFBIG, f"grew past the limit of {limit} bytes", path)
        return b"".join(parts)
    finally:
        os.close(fd)
