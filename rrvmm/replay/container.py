"""On-disk trace container: a header, a stream of opaque events grouped in chunks, an index.

The container knows nothing about event kinds (the event layer on top defines them); it only
stores msgpack-serializable events, each tagged with the non-decreasing exit index it belongs
to. The byte layout is specified in docs/trace-format.md; keep the two in sync.

Design constraints that shape the code:

* A recording must survive ``kill -9`` of the recorder, so the writer appends to the final
  path, writes each finished chunk with a single ``os.write`` and never holds more than one
  open chunk. The index and footer are only an optimisation plus a "closed cleanly" marker;
  a reader can always rebuild the index by scanning the chunk headers.
* A trace may carry *blobs* (a packed trace's kernel, initrd, symbol files): content-addressed
  byte strings stored, compressed, between the header and the first chunk, described by the
  ``blobs`` key of the header and checked piece by piece like chunks. Plain traces have none.
* A damaged file must never be mistaken for a merely short one. Every fixed-size header
  carries a checksum of itself, so a complete header that fails its check is corruption,
  while a record cut short by the end of the file (and only at the end) is truncation.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import lz4.block
import msgpack
import xxhash

from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.inputfile import open_input
from rrvmm.replay.errors import (
    NotATrace,
    TraceCorrupt,
    TraceError,
    TraceTruncated,
    TraceVersionError,
)

__all__ = [
    "TRACE_VERSION",
    "MAGIC",
    "ChunkInfo",
    "BlobInfo",
    "BLOBS_KEY",
    "TraceStats",
    "TraceSchema",
    "MAX_CHUNK_RAW",
    "TraceWriter",
    "TraceReader",
    "open_trace",
    "TraceError",
    "TraceCorrupt",
    "TraceVersionError",
    "TraceTruncated",
    "NotATrace",
]

#: Bump on any change an older reader could misread (see docs/trace-format.md). Version 2
#: added event kinds 9-11 and LANDING's optional ``halted`` field; the container is as in 1.
TRACE_VERSION = 2
#: The oldest version this reader still reads (every later one is a superset of it).
OLDEST_READABLE_VERSION = 1

MAGIC = b"RRVMMTRC"
END_MAGIC = b"RRVMMEND"
CHUNK_TAG = b"CHNK"
INDEX_TAG = b"INDX"
BLOB_TAG = b"BLOB"
#: The header key (owned by the container) that lists the blobs a trace carries.
BLOBS_KEY = "blobs"
FLAG_CLOSED_CLEANLY = 1

# File prefix: magic, version, header length, xxh3 of header bytes, xxh3 of the preceding 24.
_PREFIX = struct.Struct("<8sIIQ")
_PREFIX_SIZE = _PREFIX.size + 8
# Chunk header: tag, compressed len, raw len, events, first exit, last exit, payload xxh3,
# followed by xxh3 of these 40 bytes.
_CHUNK = struct.Struct("<4sIIIQQQ")
CHUNK_HEADER_SIZE = _CHUNK.size + 8
# Blob piece header: tag, compressed len, raw len, blob number, raw offset of this piece in the
# blob, reserved (0), payload xxh3; then self-xxh3. Same size as a chunk header.
_BLOB = struct.Struct("<4sIIIQQQ")
BLOB_HEADER_SIZE = _BLOB.size + 8
BLOB_PIECE_BYTES = 1 << 20  # raw bytes per piece the writer uses: bounds packing memory
_MAX_BLOB_PIECE = 4 << 20  # what a reader accepts (decompressed in one allocation)
# Index header: tag, entry count, footer length, reserved, xxh3 of the entries; then self-xxh3.
_INDEX = struct.Struct("<4sIIIQ")
_INDEX_SIZE = _INDEX.size + 8
# One index entry per chunk: offset, compressed len, raw len, events, first exit, last exit.
_ENTRY = struct.Struct("<QIIIQQ")
# Trailer at the very end: index offset, footer length, flags, xxh3 of the footer dict;
# then xxh3 of these 24 bytes and END_MAGIC.
_TRAILER = struct.Struct("<QIIQ")
_TRAILER_SIZE = _TRAILER.size + 8 + len(END_MAGIC)
_HASH = struct.Struct("<Q")

_ARRAY32 = b"\xdd"  # msgpack array32 marker; the writer reserves 5 bytes for it per chunk
_MAX_U64 = (1 << 64) - 1
# Header and footer maps: a real header is a few KiB (the CPUID table dominates). Decoded,
# msgpack can cost ~36 bytes of Python objects per byte, so this also bounds that memory.
_MAX_HEADER_BYTES = 1 << 20
# Bounds a reader can trust before it allocates anything. Every length in a trace is
# checksummed with xxh3, which anyone can recompute, so a crafted file may declare any size:
# the limits below are what the writer can produce, and a reader refuses more before
# decompressing. A decoded chunk costs up to ~40 bytes of Python objects per raw byte, so
# the raw limit keeps one chunk in memory well under 200 MB whatever the file says.
_MAX_CHUNK_BYTES = 2 << 20  # the writer's largest chunk_bytes (the default is 64 KiB)
_MAX_EVENT_BYTES = 2 << 20  # one packed event (the largest real ones are network frames)
_MAX_DELTA_BYTES = 9  # a packed exit delta (uint64)
#: The largest raw (decompressed) chunk: the chunk fills to just under chunk_bytes, then
#: one more delta and event close it.
MAX_CHUNK_RAW = 5 + _MAX_CHUNK_BYTES + _MAX_DELTA_BYTES + _MAX_EVENT_BYTES
_MAX_CHUNK_EVENTS = (1 << 31) - 1  # 2 * events must fit the array32 length
# Containers inside one event: the event layer's largest array has 8 items; maps have none.
_MAX_EVENT_ITEMS = 64
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

_hash = xxhash.xxh3_64_intdigest


def _lz4_bound(raw_len: int) -> int:
    """LZ4_COMPRESSBOUND: the most a block of ``raw_len`` bytes can compress to."""
    return raw_len + raw_len // 255 + 16


def _sealed(fields: bytes) -> bytes:
    """Append the xxh3 of a fixed header so a reader can trust its lengths before using them."""
    return fields + _HASH.pack(_hash(fields))


def _seal_ok(block: bytes, size: int) -> bool:
    return _HASH.unpack_from(block, size)[0] == _hash(block[:size])


def _write_all(fd: int, data: bytes) -> None:
    """One os.write per record; loop only because POSIX allows short writes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class BlobMismatch(ValueError):
    """A blob source's bytes do not hash to the sha256 it was declared with."""

    def __init__(self, source: BlobSource, expected: str, actual: str) -> None:
        self.source = source
        self.expected = expected
        self.actual = actual
        name = os.fspath(source) if isinstance(source, str | os.PathLike) else "blob data"
        super().__init__(f"{name}: sha256 is {actual}, expected {expected}")


def _blob_pieces(source: BlobSource) -> Iterator[bytes]:
    """The source's bytes in pieces of BLOB_PIECE_BYTES (the last one shorter)."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        for at in range(0, len(data), BLOB_PIECE_BYTES):
            yield data[at : at + BLOB_PIECE_BYTES]
        return
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            while piece := f.read(BLOB_PIECE_BYTES):
                yield piece
        return
    buf = bytearray()
    for part in source:
        buf += part
        while len(buf) >= BLOB_PIECE_BYTES:
            yield bytes(buf[:BLOB_PIECE_BYTES])
            del buf[:BLOB_PIECE_BYTES]
    if buf:
        yield bytes(buf)


def _pack_blobs(
    blobs: Sequence[tuple[str, BlobSource]], tmp_dir: str
) -> tuple[Any, list[dict[str, Any]]]:
    """Compress the blobs into a temporary file; return it (rewound) and the directory.

    Each blob is stored once however often it is listed. The sha256 of what was read must
    equal the declared one (BlobMismatch otherwise), so a file that changes while it is
    being packed cannot slip in.
    """
    tmp = tempfile.TemporaryFile(dir=tmp_dir)
    directory: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        for sha, source in blobs:
            if not isinstance(sha, str) or not _SHA256_RE.match(sha):
                raise ValueError(f"blob key must be a lower-case hex sha256, not {sha!r}")
            if sha in seen:
                continue
            seen.add(sha)
            number, start = len(directory), tmp.tell()
            digest, size, pieces = hashlib.sha256(), 0, 0
            for piece in _blob_pieces(source):
                digest.update(piece)
                comp = lz4.block.compress(piece, store_size=False)
                fields = _BLOB.pack(BLOB_TAG, len(comp), len(piece), number, size, 0, _hash(comp))
                tmp.write(_sealed(fields) + comp)
                size += len(piece)
                pieces += 1
            if digest.hexdigest() != sha:
                raise BlobMismatch(source, sha, digest.hexdigest())
            directory.append(
                {"sha256": sha, "size": size, "offset": start, "stored": tmp.tell() - start,
                 "pieces": pieces}
            )  # fmt: skip
        tmp.flush()
        tmp.seek(0)
    except BaseException:
        tmp.close()
        raise
    return tmp, directory


def _unpack_dict(data: bytes) -> dict[Any, Any]:
    """Decode a header/footer map; lists stay lists because callers print or dump them."""
    value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not isinstance(value, dict):
        raise ValueError(f"expected a map, found {type(value).__name__}")
    return value


class TraceSchema(Protocol):
    """What the layer above the container accepts in a header, an event and a footer.

    The container stores opaque msgpack values; a reader given a schema checks each value
    before handing it out and turns a ``ValueError`` into ``TraceCorrupt``, so code above
    can index events and header fields without guarding every access.
    """

    def check_header(self, header: dict[Any, Any]) -> None: ...
    def check_event(self, event: Any) -> None: ...
    def check_footer(self, footer: dict[Any, Any]) -> None: ...


class ChunkInfo(NamedTuple):
    """One index entry: where a chunk lives and which exits it covers."""

    offset: int
    comp_len: int
    raw_len: int
    count: int
    first_exit: int
    last_exit: int

    @property
    def end(self) -> int:
        """File offset just past this chunk (where the next record starts)."""
        return self.offset + CHUNK_HEADER_SIZE + self.comp_len


class BlobInfo(NamedTuple):
    """One blob a trace carries: its content hash, size, and where its pieces are."""

    sha256: str  # hex digest of the raw (uncompressed) bytes
    size: int  # raw bytes
    offset: int  # file offset of its first piece header
    stored: int  # bytes it occupies in the file (piece headers + compressed payloads)
    pieces: int

    @property
    def end(self) -> int:
        return self.offset + self.stored


#: What a blob is made from: its bytes, a file path, or an iterable of byte strings.
BlobSource = bytes | str | os.PathLike[str] | Iterable[bytes]


@dataclass(frozen=True)
class TraceStats:
    """Sizes and counts of a trace, for `rrvmm info` and compression tuning."""

    chunks: int
    events: int
    first_exit: int | None
    last_exit: int | None
    file_bytes: int
    header_bytes: int
    chunk_header_bytes: int
    payload_bytes: int
    uncompressed_bytes: int
    index_bytes: int
    tail_bytes: int
    truncated: bool
    blob_bytes: int = 0  # embedded blobs (packed traces), between the header and chunk 0

    @property
    def compression_ratio(self) -> float:
        """Uncompressed msgpack bytes per compressed payload byte."""
        return self.uncompressed_bytes / self.payload_bytes if self.payload_bytes else 0.0

    @property
    def bytes_per_event(self) -> float:
        """Whole-file bytes per event: the figure the <= 1 byte/exit target is about."""
        return self.file_bytes / self.events if self.events else 0.0


class TraceWriter:
    """Appends events to a trace file, crash-safely.

    Not thread-safe. The file is created (or truncated) at ``path`` immediately and the
    header written, so even a recorder killed at once leaves a recognisable file. Leaving a
    ``with`` block through an exception flushes the open chunk but writes no footer, so the
    trace reads back as truncated: the recording did not finish.

    ``blobs`` (``(sha256 hex, bytes or file path)`` pairs) are stored between the header and
    the first chunk and listed under the header's ``blobs`` key; they are compressed into a
    temporary file next to ``path`` first, so the trace file is only created once they are
    all read (and found to match their sha256).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: dict[Any, Any],
        chunk_bytes: int = 65536,
        chunk_events: int | None = None,
        *,
        fsync: bool = False,
        blobs: Sequence[tuple[str, BlobSource]] = (),
    ) -> None:
        if not isinstance(header, dict):
            raise TypeError(f"trace header must be a dict, not {type(header).__name__}")
        if BLOBS_KEY in header:
            raise ValueError(f"header key {BLOBS_KEY!r} is reserved for the trace container")
        if not 1 <= chunk_bytes <= _MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be in 1..{_MAX_CHUNK_BYTES}, got {chunk_bytes}")
        if chunk_events is not None and not 1 <= chunk_events <= _MAX_CHUNK_EVENTS:
            raise ValueError(f"chunk_events must be in 1..{_MAX_CHUNK_EVENTS}, got {chunk_events}")
        # Serialise before touching the file so a bad header cannot clobber an old trace.
        header_bytes = _packb(header)
        self.path = os.fspath(path)
        region = None
        if blobs:
            tmp_dir = os.path.dirname(os.path.abspath(self.path))
            region, directory = _pack_blobs(blobs, tmp_dir)
            header_bytes = _packb({**header, BLOBS_KEY: directory})
        try:
            if len(header_bytes) > _MAX_HEADER_BYTES:
                raise ValueError(
                    f"trace header is {len(header_bytes)} bytes, max {_MAX_HEADER_BYTES}"
                )
            self._open(header_bytes, region, chunk_bytes, chunk_events, fsync)
        finally:
            if region is not None:
                region.close()

    def _open(
        self,
        header_bytes: bytes,
        region: Any,
        chunk_bytes: int,
        chunk_events: int | None,
        fsync: bool,
    ) -> None:
        self.chunk_bytes = chunk_bytes
        self.chunk_events = chunk_events
        self._fsync = fsync
        self._packer = msgpack.Packer(use_bin_type=True, buf_size=16 << 10)  # grows if needed
        self._buf = bytearray(5)  # room for the array32 header, filled in when the chunk closes
        self._count = 0
        self._first = 0
        self._prev = 0  # exit index of the last appended event (across chunks)
        self._events = 0
        self._index = bytearray()
        self._closed = False
        self._fd = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644
        )
        prefix = _PREFIX.pack(MAGIC, TRACE_VERSION, len(header_bytes), _hash(header_bytes))
        record = _sealed(prefix) + header_bytes
        try:
            _write_all(self._fd, record)
            self._offset = len(record)
            while region is not None and (block := region.read(1 << 20)):
                _write_all(self._fd, block)
                self._offset += len(block)
        except BaseException:
            os.close(self._fd)
            self._closed = True
            raise

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def bytes_written(self) -> int:
        """Bytes handed to the OS so far (the open chunk is not included)."""
        return self._offset

    @property
    def pending_bytes(self) -> int:
        """Uncompressed bytes in the open chunk: all a SIGKILL could lose."""
        return len(self._buf) - 5

    @property
    def event_count(self) -> int:
        """Events appended so far, including those in the open chunk."""
        return self._events

    @property
    def chunk_count(self) -> int:
        """Chunks written so far."""
        return len(self._index) // _ENTRY.size

    @property
    def closed(self) -> bool:
        return self._closed

    def append(self, exit_index: int, event: Any) -> None:
        """Add one event belonging to ``exit_index`` (which must never decrease)."""
        if self._closed:
            raise ValueError(f"{self.path}: append to a closed trace writer")
        if not isinstance(exit_index, int) or isinstance(exit_index, bool):
            raise TypeError(f"exit index must be an int, not {type(exit_index).__name__}")
        if exit_index < self._prev or exit_index > _MAX_U64:
            raise ValueError(
                f"exit index {exit_index} out of order or range (last was {self._prev})"
            )
        packed = self._packer.pack(event)  # may raise; nothing has changed yet
        if len(packed) > _MAX_EVENT_BYTES:
            raise ValueError(f"event of {len(packed)} bytes exceeds {_MAX_EVENT_BYTES}")
        if self._count == 0:
            self._first = self._prev = exit_index
        delta = exit_index - self._prev
        if delta < 0x80:  # positive fixint: the common case is a single byte
            self._buf.append(delta)
        else:
            self._buf += self._packer.pack(delta)
        self._buf += packed
        self._count += 1
        self._events += 1
        self._prev = exit_index
        if len(self._buf) - 5 >= self.chunk_bytes or self._count == self.chunk_events:
            self._close_chunk()

    def append_chunk_record(self, record: bytes) -> None:
        """Append a whole chunk (header and payload) as another trace stored it.

        For copying chunks verbatim (``TraceReader.chunk_record``): the record's seal and
        payload checksum are checked and its exits must not go back in time.
        """
        if self._closed:
            raise ValueError(f"{self.path}: append to a closed trace writer")
        if len(record) < CHUNK_HEADER_SIZE or record[:4] != CHUNK_TAG:
            raise ValueError("not a chunk record")
        if not _seal_ok(record, _CHUNK.size):
            raise ValueError("chunk record header checksum mismatch")
        _, comp_len, raw_len, count, first, last, payload_hash = _CHUNK.unpack_from(record)
        if len(record) != CHUNK_HEADER_SIZE + comp_len:
            raise ValueError("chunk record length disagrees with its header")
        if _hash(memoryview(record)[CHUNK_HEADER_SIZE:]) != payload_hash:
            raise ValueError("chunk record payload checksum mismatch")
        info = ChunkInfo(self._offset, comp_len, raw_len, count, first, last)
        if not TraceReader._plausible(info, self._prev):
            raise ValueError(f"chunk record of exits {first}..{last} is out of order")
        self._close_chunk()
        _write_all(self._fd, record)
        self._index += _ENTRY.pack(self._offset, comp_len, raw_len, count, first, last)
        self._offset += len(record)
        self._events += count
        self._prev = last

    def flush(self) -> None:
        """Close the open chunk and hand it to the OS (no fsync)."""
        if self._closed:
            raise ValueError(f"{self.path}: flush of a closed trace writer")
        self._close_chunk()

    def close(self, footer: dict[Any, Any] | None = None) -> None:
        """Write the last chunk, the index and the footer (the "closed cleanly" marker).

        ``footer`` holds the caller's final totals (end reason, exit count, ...). Closing
        twice is a no-op.
        """
        if self._closed:
            return
        footer = {} if footer is None else footer
        if not isinstance(footer, dict):
            raise TypeError(f"trace footer must be a dict, not {type(footer).__name__}")
        footer_bytes = _packb(footer)
        if len(footer_bytes) > _MAX_HEADER_BYTES:
            raise ValueError(f"trace footer is {len(footer_bytes)} bytes, max {_MAX_HEADER_BYTES}")
        try:
            self._close_chunk()
            entries = bytes(self._index)
            index_offset = self._offset
            index = _sealed(
                _INDEX.pack(
                    INDEX_TAG, len(entries) // _ENTRY.size, len(footer_bytes), 0, _hash(entries)
                )
            )
            trailer = _sealed(
                _TRAILER.pack(
                    index_offset, len(footer_bytes), FLAG_CLOSED_CLEANLY, _hash(footer_bytes)
                )
            )
            record = b"".join((index, entries, footer_bytes, trailer, END_MAGIC))
            _write_all(self._fd, record)
            self._offset += len(record)
            if self._fsync:
                os.fsync(self._fd)
        finally:
            self._closed = True
            os.close(self._fd)

    def abort(self) -> None:
        """Flush the open chunk and close without a footer: the trace reads as truncated."""
        if self._closed:
            return
        try:
            self._close_chunk()
        finally:
            self._closed = True
            os.close(self._fd)

    def _close_chunk(self) -> None:
        if self._count == 0:
            return
        buf = self._buf
        buf[0:5] = _ARRAY32 + (2 * self._count).to_bytes(4, "big")
        comp = lz4.block.compress(buf, store_size=False)
        header = _sealed(
            _CHUNK.pack(
                CHUNK_TAG, len(comp), len(buf), self._count, self._first, self._prev, _hash(comp)
            )
        )
        _write_all(self._fd, header + comp)
        self._index += _ENTRY.pack(
            self._offset, len(comp), len(buf), self._count, self._first, self._prev
        )
        self._offset += len(header) + len(comp)
        self._buf = bytearray(5)
        self._count = 0


class TraceReader:
    """Reads a trace, complete or cut short by a killed writer, one chunk at a time.

    With a valid footer the index comes from it; otherwise (writer killed, or still running)
    the chunk headers are scanned and ``truncated`` is True. ``require_complete`` turns a
    truncated trace into a TraceTruncated error for callers that need the whole recording.
    Reads use ``os.pread``, so several ``events()`` iterators may run at once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        require_complete: bool = False,
        schema: TraceSchema | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.header: dict[Any, Any] = {}
        self.footer: dict[Any, Any] | None = None
        self.truncated = False
        self.tail_bytes = 0
        self._chunks: list[ChunkInfo] = []
        self._schema = schema
        self._first_chunk: tuple[int, list[tuple[int, Any]]] | None = None
        self._fd: int | None = open_input(self.path)  # a FIFO or /dev/zero: OSError
        try:
            self._size = os.fstat(self._fd).st_size
            self._read_header()
            problem = self._load_footer()
            if problem is not None:
                self._scan(problem)
            self._lasts = [c.last_exit for c in self._chunks]
            self._event_count = sum(c.count for c in self._chunks)
            if require_complete and self.truncated:
                raise TraceTruncated(
                    self.path,
                    f"trace is incomplete (no footer; {len(self._chunks)} complete chunks, "
                    f"{self.event_count} events, {self.tail_bytes} trailing bytes ignored)",
                )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def chunks(self) -> list[ChunkInfo]:
        """Index entries of every complete chunk, in file order."""
        return self._chunks

    @property
    def event_count(self) -> int:
        """Events in all complete chunks."""
        return self._event_count

    def events(self, start_exit: int = 0) -> Iterator[tuple[int, Any]]:
        """Yield ``(exit_index, event)`` from the first event with exit index >= start_exit.

        Seeks straight to the first chunk that may hold ``start_exit``. Each chunk is fully
        verified before any of its events is yielded; events come back as msgpack decodes
        them, with arrays as tuples.
        """
        first = bisect.bisect_left(self._lasts, start_exit)
        for number in range(first, len(self._chunks)):
            if number == first:
                # the debugger starts here again and again (going back): the last chunk
                # it started in stays decoded
                cached = self._first_chunk
                if cached is None or cached[0] != number:
                    cached = self._first_chunk = (number, self._read_chunk(number))
                events = cached[1]
                at = bisect.bisect_left(events, start_exit, key=_exit_of)
                yield from itertools.islice(events, at, None)
            else:
                events = self._read_chunk(number)
                yield from events
            del events  # drop this chunk before decoding the next (the first one stays)

    def check_chunk(self, number: int) -> int:
        """Verify and decode chunk ``number`` (schema included); return its event count.

        For copying chunks verbatim (``pack``) without passing on events no reader could use.
        """
        return len(self._read_chunk(number))

    def verify(self) -> int:
        """Check every blob and every chunk's header, checksum and decoding.

        Returns the event count.
        """
        for blob in self._blobs:
            for _ in self.iter_blob(blob.sha256):
                pass
        return sum(len(self._read_chunk(n)) for n in range(len(self._chunks)))

    @property
    def blobs(self) -> list[BlobInfo]:
        """The blobs this trace carries (empty for a plain trace), in file order."""
        return self._blobs

    def find_blob(self, sha256: str) -> BlobInfo | None:
        return next((b for b in self._blobs if b.sha256 == sha256), None)

    def blob(self, sha256: str) -> bytes:
        """The whole blob with this sha256, verified (KeyError if the trace lacks it)."""
        return b"".join(self.iter_blob(sha256))

    def iter_blob(self, sha256: str) -> Iterator[bytes]:
        """The blob's raw bytes piece by piece; each piece is verified before it is yielded,
        and the sha256 of the whole is checked after the last piece (TraceCorrupt if not)."""
        info = self.find_blob(sha256)
        if info is None:
            raise KeyError(sha256)
        number = self._blobs.index(info)
        where = f"embedded blob {number} ({sha256[:16]})"
        digest, raw_at, offset = hashlib.sha256(), 0, info.offset
        for _piece in range(info.pieces):
            head = self._pread(offset, BLOB_HEADER_SIZE)
            if len(head) < BLOB_HEADER_SIZE:
                raise TraceTruncated(self.path, f"file ends inside {where} at offset {offset}")
            if head[:4] != BLOB_TAG or not _seal_ok(head, _BLOB.size):
                raise self._corrupt(f"{where}: piece header damaged", offset=offset)
            _, comp_len, raw_len, blob_no, piece_at, _, payload_hash = _BLOB.unpack_from(head)
            end = offset + BLOB_HEADER_SIZE + comp_len
            if (
                blob_no != number
                or piece_at != raw_at
                or not 0 < raw_len <= _MAX_BLOB_PIECE
                or comp_len > _lz4_bound(raw_len)
                or raw_at + raw_len > info.size
                or end > info.end
            ):
                raise self._corrupt(f"{where}: piece header is inconsistent", offset=offset)
            payload = self._pread(offset + BLOB_HEADER_SIZE, comp_len)
            if len(payload) < comp_len:
                raise TraceTruncated(self.path, f"file ends inside {where} at offset {offset}")
            if _hash(payload) != payload_hash:
                raise self._corrupt(f"{where}: piece checksum mismatch", offset=offset)
            try:
                raw = lz4.block.decompress(payload, uncompressed_size=raw_len)
                if len(raw) != raw_len:
                    raise ValueError(f"decompressed to {len(raw)} bytes, expected {raw_len}")
            except Exception as exc:  # checksummed yet undecodable
                raise self._corrupt(
                    f"{where}: piece does not decompress: {exc}", offset=offset
                ) from None
            digest.update(raw)
            raw_at += raw_len
            offset = end
            yield raw
        if raw_at != info.size or offset != info.end or digest.hexdigest() != sha256:
            raise self._corrupt(f"{where}: content does not match its sha256", offset=info.offset)

    def chunk_record(self, number: int) -> bytes:
        """Chunk ``number`` as stored (header and compressed payload), checksums verified."""
        info = self._chunks[number]
        offset = info.offset
        blob = self._pread(offset, CHUNK_HEADER_SIZE + info.comp_len)
        if len(blob) < CHUNK_HEADER_SIZE + info.comp_len:
            raise self._corrupt(
                "chunk extends past the end of the file", chunk=number, offset=offset
            )
        if blob[:4] != CHUNK_TAG:
            raise self._corrupt("bad chunk tag", chunk=number, offset=offset)
        if not _seal_ok(blob, _CHUNK.size):
            raise self._corrupt("chunk header checksum mismatch", chunk=number, offset=offset)
        fields = _CHUNK.unpack_from(blob)
        if ChunkInfo(offset, *fields[1:6]) != info:
            raise self._corrupt(
                "chunk header disagrees with the index", chunk=number, offset=offset
            )
        if _hash(memoryview(blob)[CHUNK_HEADER_SIZE:]) != fields[6]:
            raise self._corrupt("chunk payload checksum mismatch", chunk=number, offset=offset)
        return blob

    def stats(self) -> TraceStats:
        """Counts and sizes from the index alone (no payload is read)."""
        chunks = self._chunks
        data_start = self._data_start
        data_end = chunks[-1].end if chunks else data_start
        return TraceStats(
            chunks=len(chunks),
            events=self.event_count,
            first_exit=chunks[0].first_exit if chunks else None,
            last_exit=chunks[-1].last_exit if chunks else None,
            file_bytes=self._size,
            header_bytes=self._blob_start,
            blob_bytes=data_start - self._blob_start,
            chunk_header_bytes=CHUNK_HEADER_SIZE * len(chunks),
            payload_bytes=sum(c.comp_len for c in chunks),
            uncompressed_bytes=sum(c.raw_len for c in chunks),
            index_bytes=0 if self.truncated else max(0, self._size - data_end),
            tail_bytes=self.tail_bytes,
            truncated=self.truncated,
        )

    # -- internals -------------------------------------------------------------------------

    def _pread(self, offset: int, size: int) -> bytes:
        if self._fd is None:
            raise ValueError(f"{self.path}: read from a closed trace reader")
        parts = []
        while size > 0:
            data = os.pread(self._fd, size, offset)
            if not data:
                break
            parts.append(data)
            offset += len(data)
            size -= len(data)
        return b"".join(parts)

    def _corrupt(
        self, problem: str, *, chunk: int | None = None, offset: int | None = None
    ) -> TraceCorrupt:
        return TraceCorrupt(self.path, problem, chunk=chunk, offset=offset)

    def _read_header(self) -> None:
        head = self._pread(0, _PREFIX_SIZE)
        if not head:
            raise NotATrace(self.path, "file is empty, not an rrvmm trace")
        if head[:8] != MAGIC[: len(head[:8])]:
            raise NotATrace(self.path, "not an rrvmm trace (bad magic)")
        if len(head) < 12:
            raise TraceTruncated(self.path, "file ends inside the trace file header")
        version = int.from_bytes(head[8:12], "little")
        readable = range(OLDEST_READABLE_VERSION, TRACE_VERSION + 1)
        if version not in readable:
            # A prefix whose only damage is the version field still matches its seal with a
            # known version put back; call that corruption rather than blame the rrvmm version.
            for known in readable:
                fixed = head[:8] + known.to_bytes(4, "little") + head[12:]
                if len(fixed) == _PREFIX_SIZE and _seal_ok(fixed, _PREFIX.size):
                    raise self._corrupt(f"format version field damaged (reads {version})", offset=8)
            if version > TRACE_VERSION:
                raise TraceVersionError(self.path, version, TRACE_VERSION)
            raise self._corrupt(f"invalid format version {version}", offset=8)
        self.version = version
        if len(head) < _PREFIX_SIZE:
            raise TraceTruncated(self.path, "file ends inside the trace file header")
        if not _seal_ok(head, _PREFIX.size):
            raise self._corrupt("file header checksum mismatch", offset=0)
        _, _, header_len, header_hash = _PREFIX.unpack_from(head)
        if header_len > _MAX_HEADER_BYTES:
            raise self._corrupt(f"header length {header_len} is implausible", offset=12)
        body = self._pread(_PREFIX_SIZE, header_len)
        if len(body) < header_len:
            raise TraceTruncated(self.path, "file ends inside the trace header")
        if _hash(body) != header_hash:
            raise self._corrupt("header checksum mismatch", offset=_PREFIX_SIZE)
        try:
            self.header = _unpack_dict(body)
        except Exception as exc:  # any decoding failure of checksummed bytes is corruption
            raise self._corrupt(f"header does not decode: {exc}", offset=_PREFIX_SIZE) from None
        if self._schema is not None:
            try:
                self._schema.check_header(self.header)
            except ValueError as exc:
                raise self._corrupt(f"header is invalid: {exc}", offset=_PREFIX_SIZE) from None
        self._blob_start = self._data_start = _PREFIX_SIZE + header_len
        self._blobs = self._blob_directory()
        if self._blobs:
            self._data_start = self._blobs[-1].end

    def _blob_directory(self) -> list[BlobInfo]:
        """The header's ``blobs`` list, checked to tile the region before chunk 0 exactly."""
        entries = self.header.get(BLOBS_KEY)
        if entries is None:
            return []
        blobs: list[BlobInfo] = []
        at = 0
        try:
            if not isinstance(entries, list):
                raise ValueError("not a list")
            for e in entries:
                sha, size, offset = e["sha256"], e["size"], e["offset"]
                stored, pieces = e["stored"], e["pieces"]
                if not isinstance(sha, str) or not _SHA256_RE.match(sha):
                    raise ValueError(f"bad sha256 {sha!r}")
                for v in (size, offset, stored, pieces):
                    if type(v) is not int or v < 0:
                        raise ValueError(f"bad number {v!r}")
                if offset != at or any(b.sha256 == sha for b in blobs):
                    raise ValueError(f"entry for {sha[:16]} is misplaced or repeated")
                if not pieces <= size <= pieces * _MAX_BLOB_PIECE or (
                    stored < pieces * BLOB_HEADER_SIZE
                ):
                    raise ValueError(f"entry for {sha[:16]} has implausible sizes")
                blobs.append(BlobInfo(sha, size, self._blob_start + offset, stored, pieces))
                at += stored
        except (ValueError, KeyError, TypeError) as exc:
            raise self._corrupt(
                f"header's blob directory is invalid: {exc}", offset=_PREFIX_SIZE
            ) from None
        return blobs

    def _load_footer(self) -> str | None:
        """Adopt the footer's index; return why not (None on success) for _scan to judge.

        Any problem here is only provisional: a killed writer has no footer at all, and
        _scan decides between truncation and corruption by walking the chunks.
        """
        size = self._size
        if size < self._data_start + _INDEX_SIZE + _TRAILER_SIZE:
            return "no footer"
        tail = self._pread(size - _TRAILER_SIZE, _TRAILER_SIZE)
        if tail[-len(END_MAGIC) :] != END_MAGIC:
            return "footer end marker missing"
        if not _seal_ok(tail, _TRAILER.size):
            return "footer trailer checksum mismatch"
        index_offset, footer_len, flags, footer_hash = _TRAILER.unpack_from(tail)
        if not flags & FLAG_CLOSED_CLEANLY:
            return "footer lacks the closed-cleanly marker"
        if not self._data_start <= index_offset <= size - _TRAILER_SIZE - _INDEX_SIZE:
            return f"footer points at index offset {index_offset} outside the file"
        index = self._pread(index_offset, _INDEX_SIZE)
        if index[:4] != INDEX_TAG or not _seal_ok(index, _INDEX.size):
            return f"index header at offset {index_offset} damaged"
        _, n_entries, index_footer_len, _, entries_hash = _INDEX.unpack_from(index)
        entries_at = index_offset + _INDEX_SIZE
        footer_at = entries_at + n_entries * _ENTRY.size
        if footer_len > _MAX_HEADER_BYTES:
            return f"footer length {footer_len} is implausible"
        if index_footer_len != footer_len or footer_at + footer_len + _TRAILER_SIZE != size:
            return "index and footer lengths disagree with the file size"
        entries = self._pread(entries_at, footer_at - entries_at)
        if _hash(entries) != entries_hash:
            return "index checksum mismatch"
        footer_bytes = self._pread(footer_at, footer_len)
        if _hash(footer_bytes) != footer_hash:
            return "footer checksum mismatch"
        try:
            footer = _unpack_dict(footer_bytes)
        except Exception as exc:  # checksummed yet undecodable: report, never crash
            return f"footer does not decode: {exc}"
        if self._schema is not None:
            try:
                self._schema.check_footer(footer)
            except ValueError as exc:
                return f"footer is invalid: {exc}"
        chunks = [ChunkInfo._make(e) for e in _ENTRY.iter_unpack(entries)]
        expected = self._data_start
        prev_last = 0
        for number, info in enumerate(chunks):
            if info.offset != expected or not self._plausible(info, prev_last):
                return f"index entry {number} is inconsistent"
            expected, prev_last = info.end, info.last_exit
        if expected != index_offset:
            return "index does not end where the chunks do"
        self._chunks, self.footer = chunks, footer
        return None

    @staticmethod
    def _plausible(info: ChunkInfo, prev_last: int) -> bool:
        return (
            # every item (delta or event) takes at least one byte after the array header
            1 <= info.count <= (info.raw_len - 5) // 2
            and 0 < info.raw_len <= MAX_CHUNK_RAW
            and 0 < info.comp_len <= _lz4_bound(info.raw_len)
            and prev_last <= info.first_exit <= info.last_exit
        )

    def _scan(self, footer_problem: str) -> None:
        """Rebuild the index from chunk headers; classify the end of the file.

        Only bytes that end at EOF may be incomplete: a record whose fixed header is all
        there but fails its checksum is corruption wherever it is, since one-write-per-record
        means a killed writer leaves a prefix of a valid record, never a garbled one.
        """
        self.truncated = True
        size, offset, prev_last = self._size, self._data_start, 0
        chunks: list[ChunkInfo] = []
        if size < offset:  # the file ends inside the embedded blobs
            self._chunks, self.tail_bytes = chunks, size - self._blob_start
            return
        while offset < size:
            number = len(chunks)
            head = self._pread(offset, CHUNK_HEADER_SIZE)
            tag = head[:4]
            if tag == INDEX_TAG:
                self._check_unfinished_close(head, offset, footer_problem)
                break
            if tag == CHUNK_TAG:
                if len(head) < CHUNK_HEADER_SIZE:
                    break  # killed while writing this chunk's header
                if not _seal_ok(head, _CHUNK.size):
                    raise self._corrupt(
                        "chunk header checksum mismatch", chunk=number, offset=offset
                    )
                info = ChunkInfo(offset, *_CHUNK.unpack_from(head)[1:6])
                if not self._plausible(info, prev_last):
                    raise self._corrupt("chunk header is inconsistent", chunk=number, offset=offset)
                if info.end > size:
                    break  # killed while writing this chunk's payload
                chunks.append(info)
                offset, prev_last = info.end, info.last_exit
                continue
            if len(tag) < 4 and (CHUNK_TAG.startswith(tag) or INDEX_TAG.startswith(tag)):
                break  # killed after the first bytes of a record
            if self._zero_from(offset):
                break  # a crash of the machine can leave a zero-filled tail
            raise self._corrupt(
                "expected a chunk header, found unknown bytes", chunk=number, offset=offset
            )
        self._chunks = chunks
        self.tail_bytes = size - offset

    def _check_unfinished_close(self, head: bytes, offset: int, footer_problem: str) -> None:
        """An index record without a usable footer: killed mid-close, or a damaged footer."""
        if len(head) < _INDEX_SIZE:
            return
        if not _seal_ok(head, _INDEX.size):
            raise self._corrupt("index header checksum mismatch", offset=offset)
        _, n_entries, footer_len, _, _ = _INDEX.unpack_from(head)
        end = offset + _INDEX_SIZE + n_entries * _ENTRY.size + footer_len + _TRAILER_SIZE
        if self._size >= end:
            raise self._corrupt(
                f"index and footer were written completely but do not verify ({footer_problem})",
                offset=offset,
            )

    def _zero_from(self, offset: int) -> bool:
        """True if every byte from ``offset`` to EOF is zero (read 1 MiB at a time)."""
        while offset < self._size:
            block = self._pread(offset, min(1 << 20, self._size - offset))
            if not block:
                break
            if block.count(0) != len(block):
                return False
            offset += len(block)
        return True

    def _read_chunk(self, number: int) -> list[tuple[int, Any]]:
        """Read, verify and decode one chunk entirely before any event of it is used."""
        info = self._chunks[number]
        offset = info.offset
        payload = self.chunk_record(number)[CHUNK_HEADER_SIZE:]
        check = self._schema.check_event if self._schema is not None else None
        try:
            # raw_len was bounded by _plausible; the output can never exceed it
            raw = lz4.block.decompress(payload, uncompressed_size=info.raw_len)
            del payload
            if len(raw) != info.raw_len:
                raise ValueError(f"decompressed to {len(raw)} bytes, expected {info.raw_len}")
            if raw[:1] != _ARRAY32 or int.from_bytes(raw[1:5], "big") != 2 * info.count:
                raise ValueError("payload is not an array of 2 x count items")
            unpacker = msgpack.Unpacker(
                use_list=False, raw=False, strict_map_key=False,
                max_buffer_size=len(raw), max_str_len=_MAX_EVENT_BYTES,
                max_bin_len=_MAX_EVENT_BYTES, max_array_len=_MAX_EVENT_ITEMS,
                max_map_len=_MAX_EVENT_ITEMS, max_ext_len=0,
            )  # fmt: skip
            unpacker.feed(memoryview(raw)[5:])
            del raw
            exit_index = info.first_exit
            events = []
            items = iter(unpacker)
            for i in range(info.count):
                delta = next(items)
                if type(delta) is not int or delta < 0 or (i == 0 and delta != 0):
                    raise ValueError(f"bad exit delta {delta!r}")
                exit_index += delta
                event = next(items)
                if check is not None:
                    try:
                        check(event)
                    except ValueError as exc:
                        raise ValueError(f"event {i} (exit {exit_index}): {exc}") from None
                events.append((exit_index, event))
            if unpacker.tell() != info.raw_len - 5:
                raise ValueError("bytes left over after the last event")
            if exit_index != info.last_exit:
                raise ValueError("last exit index disagrees with the chunk header")
        except Exception as exc:  # checksummed yet undecodable: a writer bug or forgery
            if isinstance(exc, StopIteration):
                why = "payload ends before its last event"
            else:
                why = str(exc) or type(exc).__name__  # msgpack's errors may have no message
            raise self._corrupt(
                f"chunk payload does not decode: {why}", chunk=number, offset=offset
            ) from None
        return events


def _exit_of(item: tuple[int, Any]) -> int:
    return item[0]


def open_trace(path: str | os.PathLike[str]) -> TraceReader:
    """Open a trace for reading, its header, events and footer checked against the event
    layer's schema (a crafted file is corrupt, not a traceback); every failure is a one-line
    RrvmmError (for the command line, which prints it and exits with its status)."""
    # Imported here: the container is the file format and knows no event kinds; only this
    # opener, for the command line, brings the event layer's schema in.
    from rrvmm.replay.schema import TRACE_SCHEMA

    try:
        return TraceReader(path, schema=TRACE_SCHEMA)
    except FileNotFoundError:
        raise RrvmmError(f"trace not found: {path}", ExitStatus.NO_INPUT) from None
    except IsADirectoryError:
        raise RrvmmError(f"trace path is a directory: {path}", ExitStatus.NO_INPUT) from None
    except TraceError as e:
        raise RrvmmError(str(e), ExitStatus.BAD_TRACE) from None
    except OSError as e:
        raise RrvmmError(f"cannot read trace {path}: {e.strerror}", ExitStatus.NO_INPUT) from None
