"""Disk images behind virtio-blk: a read-only base file plus, by default, an in-memory overlay.

Record/replay needs the disk to start identical on every run, so the default ``overlay``
mode never writes the image: guest writes land in a copy-on-write map of 512-byte sectors
that lives in ``state`` (``DiskState``), which the block device embeds in its own state so a
checkpoint carries it.  ``write_through`` (``--disk-write``) writes the file instead; such a
run is not replayable from the same image.

A file whose size is not a multiple of 512 exposes only its whole sectors; the tail is
neither readable nor writable by the guest (and still counts for ``sha256``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from rrvmm.inputfile import input_size, open_input

__all__ = ["Disk", "DiskError", "DiskState", "SECTOR_SIZE", "OVERLAY", "WRITE_THROUGH"]

SECTOR_SIZE = 512
OVERLAY = "overlay"
WRITE_THROUGH = "write_through"


class DiskError(OSError):
    """The image cannot be opened or used; ``str()`` is a one-line message naming the file."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass
class DiskState:
    """Sectors written in overlay mode, keyed by sector number as a string (state keys are str)."""

    overlay: dict[str, bytes] = field(default_factory=dict)


class Disk:
    """A disk image of ``sectors`` 512-byte sectors; close it with ``close`` (or ``with``)."""

    def __init__(
        self, path: str | os.PathLike[str], mode: str = OVERLAY, read_only: bool = False
    ) -> None:
        if mode not in (OVERLAY, WRITE_THROUGH):
            raise ValueError(f"disk mode must be {OVERLAY!r} or {WRITE_THROUGH!r}, not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.read_only = read_only
        writes_file = mode == WRITE_THROUGH and not read_only
        try:
            # a regular file or a block device; a FIFO or /dev/zero has no size to expose
            self._fd = open_input(
                self.path, block_device=True, flags=os.O_RDWR if writes_file else 0
            )
        except OSError as e:
            raise DiskError(e.errno, f"cannot open disk image {self.path}: {e.strerror}") from e
        try:
            size = input_size(self._fd)
        except OSError as e:
            os.close(self._fd)
            raise DiskError(e.errno, f"cannot read disk image {self.path}: {e.strerror}") from e
        self._size = size  # what sha256 hashes, even if the file grows meanwhile
        self.sectors = size // SECTOR_SIZE
        self.state = DiskState()
        self._sha256: str | None = None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Disk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, sector: int, count: int) -> None:
        if sector < 0 or count < 0 or sector + count > self.sectors:
            raise ValueError(f"sectors {sector}+{count} outside a disk of {self.sectors}")

    def read(self, sector: int, count: int) -> bytes:
        """``count`` sectors from ``sector``, overlay first."""
        self._check(sector, count)
        base = os.pread(self._fd, count * SECTOR_SIZE, sector * SECTOR_SIZE)
        overlay = self.state.overlay
        if not overlay:
            return base
        out = bytearray(base)
        for i in range(count):
            data = overlay.get(str(sector + i))
            if data is not None:
                out[i * SECTOR_SIZE : (i + 1) * SECTOR_SIZE] = data
        return bytes(out)

    def write(self, sector: int, data: bytes) -> None:
        """Write whole sectors (``len(data)`` a multiple of 512) at ``sector``."""
        if self.read_only:
            raise PermissionError(f"disk image {str(self.path)!r} is read-only")
        if len(data) % SECTOR_SIZE:
            raise ValueError(f"write of {len(data)} bytes is not whole sectors")
        count = len(data) // SECTOR_SIZE
        self._check(sector, count)
        if self.mode == WRITE_THROUGH:
            view = memoryview(data)
            done = 0
            while done < len(data):
                done += os.pwrite(self._fd, view[done:], sector * SECTOR_SIZE + done)
            return
        overlay = self.state.overlay
        for i in range(count):
            overlay[str(sector + i)] = bytes(data[i * SECTOR_SIZE : (i + 1) * SECTOR_SIZE])

    def flush(self) -> None:
        """Make written data durable: fsync in write_through, nothing to do for the overlay."""
        if self.mode == WRITE_THROUGH and not self.read_only:
            os.fsync(self._fd)

    def sha256(self) -> str:
        """Hex sha256 of the whole base file as first hashed (streamed, computed once)."""
        if self._sha256 is None:
            h = hashlib.sha256()
            offset, size = 0, self._size
            while offset < size and (
                chunk := os.pread(self._fd, min(1 << 20, size - offset), offset)
            ):
                h.update(chunk)
                offset += len(chunk)
            self._sha256 = h.hexdigest()
        return self._sha256
