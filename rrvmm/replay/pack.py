"""`rrvmm pack`: make a trace self-contained, so it replays on a machine without its files.

A packed trace is an ordinary trace (same events, same chunks byte for byte, same footer)
whose header additionally says ``packed`` and whose container carries, as blobs keyed by
sha256, every image the header's ``images`` names (kernel, initrd, ...) plus optional symbol
ELFs. Replay takes the images from the trace by their sha256 and never reads or writes the
user's files for them (see ``rrvmm.replay.rig.images_for_replay``). docs/trace-format.md, "Packed
traces", describes the layout.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from rrvmm import __version__
from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.inputfile import MAX_IMAGE_BYTES
from rrvmm.replay.container import (
    BLOBS_KEY,
    BlobMismatch,
    TraceError,
    TraceReader,
    TraceWriter,
    open_trace,
)

__all__ = [
    "PACKED_KEY",
    "PackResult",
    "default_output",
    "is_packed",
    "carried",
    "pack_trace",
    "embedded_image",
    "embedded_symbols",
    "write_embedded_disk",
]

#: Header key of a packed trace: {rrvmm, packed_at, source, symbols: [{name, path, sha256,
#: size}]}. The images themselves stay described by the header's ``images``.
PACKED_KEY = "packed"

Progress = Callable[[int, int], None]  # (done, total) in bytes
_READ_BYTES = 1 << 20


@dataclass
class PackResult:
    output: Path
    complete: bool  # False: the source was cut short, and so is the packed trace
    source_bytes: int
    packed_bytes: int
    chunks: int
    events: int
    carried: list[dict[str, Any]] = field(default_factory=list)


def default_output(trace: str | os.PathLike[str]) -> Path:
    """``rec.rrt`` -> ``rec.packed.rrt``; other names get ``.packed.rrt`` appended."""
    p = Path(trace)
    stem = p.name[: -len(".rrt")] if p.name.endswith(".rrt") else p.name
    return p.with_name(f"{stem}.packed.rrt")


def is_packed(reader: TraceReader) -> bool:
    return PACKED_KEY in reader.header or bool(reader.blobs)


def carried(reader: TraceReader) -> list[dict[str, Any]]:
    """What a packed trace carries: one row per image and symbol file (empty if plain).

    Rows share a blob when their contents are identical; ``stored`` is the blob's size in
    the file (compressed, with its piece headers).
    """
    rows: list[dict[str, Any]] = []
    for name, entry in _image_entries(reader.header):
        blob = reader.find_blob(str(entry.get("sha256")))
        if blob is not None:
            rows.append(_row(name, "image", entry, blob.stored))
    disk = _disk_entry(reader.header)
    if disk is not None and (blob := reader.find_blob(str(disk.get("sha256")))) is not None:
        rows.append(_row("disk", "disk image", disk | {"size": blob.size}, blob.stored))
    for entry in reader.header.get(PACKED_KEY, {}).get("symbols", []):
        blob = reader.find_blob(str(entry.get("sha256")))
        if blob is not None:
            name = str(entry.get("name", "?"))
            if any(r["name"] == name for r in rows):
                name += " (symbols)"
            rows.append(_row(name, "symbols", entry, blob.stored))
    return rows


def _row(name: str, what: str, entry: dict[str, Any], stored: int) -> dict[str, Any]:
    return {
        "name": name,
        "what": what,
        "sha256": entry.get("sha256"),
        "size": entry.get("size"),
        "stored": stored,
    }


def _image_entries(header: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    images = header.get("images") or {}
    if not isinstance(images, dict):
        return []
    return [(str(k), v) for k, v in images.items() if isinstance(v, dict)]


def embedded_image(reader: TraceReader, name: str, limit: int = MAX_IMAGE_BYTES) -> bytes | None:
    """The bytes of header image ``name`` if the trace carries them, else None.

    A carried image larger than ``limit`` (an image must fit in the guest's RAM) is refused
    before any of it is read: RrvmmError. Raises TraceError if the embedded copy is damaged
    or cut short.
    """
    entry = (reader.header.get("images") or {}).get(name)
    blob = reader.find_blob(str(entry.get("sha256"))) if entry else None
    if blob is None:
        return None
    limit = min(limit, MAX_IMAGE_BYTES)
    if blob.size > limit:
        raise RrvmmError(
            f"{reader.path}: the {name} it carries is {blob.size} bytes, more than the"
            f" {limit} an image may have here",
            ExitStatus.BAD_TRACE,
        )
    return reader.blob(blob.sha256)


def _disk_entry(header: dict[str, Any]) -> dict[str, Any] | None:
    disk = (header.get("machine") or {}).get("disk")
    return disk if isinstance(disk, dict) else None


def write_embedded_disk(reader: TraceReader, out: BinaryIO) -> bool:
    """Copy the virtio-blk image a packed trace carries (as it was before the recording) to
    ``out``, piece by piece: a disk may be far larger than memory. False if it carries none."""
    disk = _disk_entry(reader.header)
    if disk is None or reader.find_blob(str(disk.get("sha256"))) is None:
        return False
    for piece in reader.iter_blob(disk["sha256"]):
        out.write(piece)
    return True


def embedded_symbols(reader: TraceReader) -> list[tuple[str, bytes]]:
    """``(file name, ELF bytes)`` of every symbol file packed with the trace."""
    out = []
    for entry in reader.header.get(PACKED_KEY, {}).get("symbols", []):
        blob = reader.find_blob(str(entry.get("sha256")))
        if blob is not None and blob.size <= MAX_IMAGE_BYTES:  # read whole: bounded
            out.append((str(entry.get("name")), reader.blob(blob.sha256)))
    return out


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_READ_BYTES):
            h.update(block)
    return h.hexdigest()


def _check_file(what: str, path: Path, hint: str) -> int:
    """The file's size; a one-line RrvmmError if it is missing or unreadable."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise RrvmmError(f"{what} {path} not found{hint}", ExitStatus.NO_INPUT) from None
    except OSError as e:
        raise RrvmmError(f"cannot read {what} {path}: {e.strerror}", ExitStatus.NO_INPUT) from None
    if not path.is_file():
        raise RrvmmError(f"{what} {path} is not a regular file", ExitStatus.NO_INPUT)
    return st.st_size


def _mismatch(what: str, path: Path, actual: str, expected: str) -> RrvmmError:
    return RrvmmError(
        f"{what} {path} changed since the trace was recorded"
        f" (sha256 {actual[:16]}…, trace has {expected[:16]}…)",
        ExitStatus.IMAGE_MISMATCH,
    )


def pack_trace(
    trace: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    symbols: Sequence[str | os.PathLike[str]] = (),
    overrides: dict[str, str | os.PathLike[str]] | None = None,
    progress: Progress | None = None,
) -> PackResult:
    """Write a packed copy of ``trace``; every failure is a one-line RrvmmError.

    ``overrides`` maps image names (``kernel``, ``initrd``) to files to use instead of the
    recorded paths; they must still hash to the recorded sha256.
    """
    src_path = Path(trace)
    out = Path(output) if output is not None else default_output(src_path)
    overrides = dict(overrides or {})
    with open_trace(src_path) as reader:
        if is_packed(reader):
            names = ", ".join(r["name"] for r in carried(reader)) or "nothing"
            raise RrvmmError(
                f"{src_path} is already packed (it carries {names})", ExitStatus.BAD_TRACE
            )
        if out.exists() and out.resolve() == src_path.resolve():
            raise RrvmmError(f"pack output {out} is the trace itself", ExitStatus.USAGE)
        images = _image_entries(reader.header)
        if not any(name == "kernel" for name, _ in images):
            raise RrvmmError(
                f"{src_path}: trace header names no kernel image", ExitStatus.BAD_TRACE
            )
        disk = _disk_entry(reader.header)
        known = {name for name, _ in images} | ({"disk"} if disk else set())
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise RrvmmError(
                f"{src_path}: the trace has no {unknown[0]} image to replace", ExitStatus.USAGE
            )

        # Every file is checked before anything is written: missing, resized or replaced
        # images are the user's to fix, and the message names the file.
        blobs: list[tuple[str, str, Path, int]] = []  # (what, sha256, path, size)
        for name, entry in images:
            path = Path(overrides.get(name) or entry.get("path", ""))
            hint = "" if name in overrides else f" (move it back or pass --{name} PATH)"
            size = _check_file(name, path, hint)
            expected = str(entry.get("sha256", ""))
            if size != entry.get("size"):
                raise _mismatch(name, path, _sha256_of(path), expected)
            blobs.append((name, expected, path, size))
        if disk is not None:  # the image as recorded: its sha256 is checked while copying
            path = Path(overrides.get("disk") or disk.get("path", ""))
            hint = "" if "disk" in overrides else " (move it back or pass --disk PATH)"
            size = _check_file("disk", path, hint)
            blobs.append(("disk", str(disk.get("sha256", "")), path, size))
        symbol_entries = []
        for s in symbols:
            path = Path(s)
            size = _check_file("symbol file", path, "")
            with path.open("rb") as f:
                if f.read(4) != b"\x7fELF":
                    raise RrvmmError(f"symbol file {path} is not an ELF file", ExitStatus.USAGE)
            sha = _sha256_of(path)
            blobs.append((f"symbol file {path.name}", sha, path, size))
            symbol_entries.append(
                {"name": path.name, "path": str(path.resolve()), "sha256": sha, "size": size}
            )

        header = {k: v for k, v in reader.header.items() if k != BLOBS_KEY}
        header[PACKED_KEY] = {
            "rrvmm": __version__,
            "packed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": str(src_path.resolve()),
            "symbols": symbol_entries,
        }
        chunks = reader.chunks
        total = sum(size for *_, size in blobs) + sum(c.comp_len for c in chunks)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress(done[0], total)

        def read(path: Path) -> Iterator[bytes]:
            with path.open("rb") as f:
                while block := f.read(_READ_BYTES):
                    tick(len(block))
                    yield block

        if not out.parent.is_dir():
            raise RrvmmError(
                f"cannot write {out}: directory {out.parent} does not exist", ExitStatus.NO_INPUT
            )
        sources = [(sha, read(path)) for _, sha, path, _ in blobs]
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        try:
            try:
                writer = TraceWriter(tmp, header, blobs=sources)
            except BlobMismatch as e:
                what, _, path, _ = next(b for b in blobs if b[1] == e.expected)
                raise _mismatch(what, path, e.actual, e.expected) from None
            except FileNotFoundError as e:  # an image went away since it was checked
                raise RrvmmError(f"{e.filename} not found", ExitStatus.NO_INPUT) from None
            with writer:
                for number, chunk in enumerate(chunks):
                    reader.check_chunk(number)  # a crafted event is refused, not packed
                    writer.append_chunk_record(reader.chunk_record(number))
                    tick(chunk.comp_len)
                if reader.truncated:
                    writer.abort()
                else:
                    writer.close(reader.footer)
            os.replace(tmp, out)
        except TraceError as e:
            raise RrvmmError(str(e), ExitStatus.BAD_TRACE) from None
        except OSError as e:
            raise RrvmmError(f"cannot write {out}: {e.strerror}", ExitStatus.NO_INPUT) from None
        finally:
            tmp.unlink(missing_ok=True)
        complete = not reader.truncated
        source_bytes = reader.stats().file_bytes
        n_events = reader.event_count
    with TraceReader(out) as packed:
        rows = carried(packed)
        packed_bytes = packed.stats().file_bytes
    return PackResult(out, complete, source_bytes, packed_bytes, len(chunks), n_events, rows)
