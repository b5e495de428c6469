"""Tests for the trace container: round trips, seeking, crash safety and damage detection."""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

import msgpack
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rrvmm
from rrvmm.replay.container import (
    CHUNK_HEADER_SIZE,
    TRACE_VERSION,
    NotATrace,
    TraceCorrupt,
    TraceError,
    TraceReader,
    TraceTruncated,
    TraceVersionError,
    TraceWriter,
)

REPO_ROOT = Path(rrvmm.__file__).resolve().parent.parent


def tup(value: Any) -> Any:
    """What msgpack gives back for a written event: arrays become tuples."""
    if isinstance(value, list | tuple):
        return tuple(tup(v) for v in value)
    return value


def pio(i: int) -> list[int]:
    return [1, 0x3F8, 1, i & 0xFF]


def mixed_events(n: int, seed: int = 1234) -> list[tuple[int, Any]]:
    """Events of assorted shapes, with repeated exit indices and gaps between them."""
    rng = random.Random(seed)
    out: list[tuple[int, Any]] = []
    exit_index = 0
    for i in range(n):
        exit_index += rng.choice((0, 0, 1, 1, 1, 2, 300, 70000))
        kind = rng.randrange(5)
        if kind == 0:
            event: Any = [1, rng.randrange(0x10000), rng.choice((1, 2, 4)), rng.getrandbits(32)]
        elif kind == 1:
            event = [2, rng.randbytes(rng.randrange(40))]
        elif kind == 2:
            event = ("note", f"event {i}", -i)
        elif kind == 3:
            event = [3, [rng.getrandbits(64), 0], b"", {"k": 1}]
        else:
            event = [4, rng.randbytes(3000) if i % 97 == 0 else b"x"]
        out.append((exit_index, event))
    return out


def write_trace(
    path: Path,
    events: list[tuple[int, Any]],
    *,
    footer: dict[str, Any] | None = None,
    finish: bool = True,
    **kwargs: Any,
) -> None:
    writer = TraceWriter(path, {"guest": "test", "mem": 1 << 20}, **kwargs)
    for exit_index, event in events:
        writer.append(exit_index, event)
    if finish:
        writer.close(footer if footer is not None else {"end": "halt", "events": len(events)})
    else:
        writer.abort()


def read_all(path: Path) -> tuple[TraceReader, list[tuple[int, Any]]]:
    with TraceReader(path) as reader:
        return reader, list(reader.events())


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def open_and_verify(path: Path) -> TraceReader:
    with TraceReader(path) as reader:
        reader.verify()
        return reader


def assert_one_line(err: TraceError, path: Path) -> None:
    text = str(err)
    assert "\n" not in text
    assert text.startswith(str(path))


# -- round trips and seeking ---------------------------------------------------------------


def test_round_trip_many_chunks(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    events = mixed_events(20000)
    write_trace(path, events, footer={"end": "halt", "exits": events[-1][0]}, chunk_bytes=1024)
    reader, got = read_all(path)
    assert got == [(e, tup(ev)) for e, ev in events]
    assert reader.header == {"guest": "test", "mem": 1 << 20}
    assert reader.footer == {"end": "halt", "exits": events[-1][0]}
    assert not reader.truncated and reader.tail_bytes == 0
    assert len(reader.chunks) > 50
    assert reader.event_count == len(events)
    stats = reader.stats()
    assert stats.events == len(events) and stats.chunks == len(reader.chunks)
    assert stats.first_exit == events[0][0] and stats.last_exit == events[-1][0]
    assert stats.file_bytes == path.stat().st_size
    with TraceReader(path) as again:
        assert again.verify() == len(events)


def test_chunk_events_limit_and_flush(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    with TraceWriter(path, {}, chunk_events=10) as writer:
        for i in range(95):
            writer.append(i, pio(i))
        assert writer.chunk_count == 9 and writer.pending_bytes > 0
        before = writer.bytes_written
        writer.flush()
        assert writer.chunk_count == 10 and writer.pending_bytes == 0
        assert writer.bytes_written == path.stat().st_size > before
        writer.flush()  # nothing open: no empty chunk
        assert writer.chunk_count == 10
    with TraceReader(path) as reader:
        assert [c.count for c in reader.chunks] == [10] * 9 + [5]
        assert reader.footer == {}


def test_empty_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    TraceWriter(path, {"a": 1}).close({"end": "nothing"})
    reader, got = read_all(path)
    assert got == [] and reader.chunks == [] and reader.footer == {"end": "nothing"}
    assert reader.stats().bytes_per_event == 0.0


def test_seek_by_exit_index(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    events = mixed_events(5000, seed=7)
    write_trace(path, events, chunk_bytes=512)
    exits = sorted({e for e, _ in events})
    with TraceReader(path) as reader:
        assert len(reader.chunks) > 20
        probes = [0, exits[-1], exits[-1] + 1, *random.Random(3).sample(exits, 40)]
        probes += [e + 1 for e in probes] + [e - 1 for e in probes if e > 0]
        for start in probes:
            expected = [(e, tup(ev)) for e, ev in events if e >= start]
            assert list(reader.events(start)) == expected, start


def test_seek_does_not_read_earlier_chunks(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    write_trace(path, [(i, pio(i)) for i in range(1000)], chunk_events=100)
    with TraceReader(path) as reader:
        bad = reader.chunks[0]
    flip(path, bad.offset + CHUNK_HEADER_SIZE + 1)
    with TraceReader(path) as reader:
        assert [e for e, _ in reader.events(750)] == list(range(750, 1000))
        with pytest.raises(TraceCorrupt) as info:
            list(reader.events(0))
        assert info.value.chunk == 0


def test_concurrent_iterators(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    write_trace(path, [(i, pio(i)) for i in range(3000)], chunk_events=64)
    with TraceReader(path) as reader:
        a, b = reader.events(0), reader.events(1500)
        pairs = list(zip(a, b, strict=False))
    assert all(x[0] + 1500 == y[0] for x, y in pairs) and len(pairs) == 1500


def test_append_validation_leaves_writer_usable(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    with TraceWriter(path, {}) as writer:
        writer.append(5, pio(5))
        with pytest.raises(ValueError):
            writer.append(4, pio(4))
        with pytest.raises(ValueError):
            writer.append(-1, pio(0))
        with pytest.raises(TypeError):
            writer.append(6, [object()])
        with pytest.raises(TypeError):
            writer.append("7", pio(7))  # type: ignore[arg-type]
        writer.append(5, pio(6))
        writer.append(9, pio(9))
    reader, got = read_all(path)
    assert got == [(5, tup(pio(5))), (5, tup(pio(6))), (9, tup(pio(9)))]
    with pytest.raises(ValueError):
        writer.append(10, pio(10))


def test_exception_in_with_block_leaves_truncated_trace(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    with pytest.raises(RuntimeError), TraceWriter(path, {}) as writer:
        for i in range(10):
            writer.append(i, pio(i))
        raise RuntimeError("guest exploded")
    reader, got = read_all(path)
    assert reader.truncated and reader.footer is None and len(got) == 10
    with pytest.raises(TraceTruncated) as info:
        TraceReader(path, require_complete=True)
    assert_one_line(info.value, path)


# -- crash safety --------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import sys
    from rrvmm.replay.container import TraceWriter

    w = TraceWriter(sys.argv[1], {"kind": "killtest"}, chunk_events=257)
    i = 0
    while True:
        w.append(i, [1, 0x3F8, 1, i & 0xFF])
        i += 1
        if i % 1000 == 0:
            w.flush()
            print(i, flush=True)  # every event before i is now in the OS
    """
)


def test_sigkill_mid_recording(tmp_path: Path) -> None:
    path = tmp_path / "killed.rrt"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    durable = 0
    deadline = time.monotonic() + 60
    try:
        while durable < 30000 and time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            assert line, f"writer died early: {proc.stderr.read() if proc.stderr else ''}"
            durable = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert durable >= 30000

    with TraceReader(path) as reader:
        assert reader.truncated and reader.footer is None
        assert reader.header == {"kind": "killtest"}
        assert reader.event_count >= durable
        assert reader.verify() == reader.event_count
        count = 0
        for exit_index, event in reader.events():
            assert (exit_index, event) == (count, tup(pio(count)))
            count += 1
        assert count == reader.event_count
    with pytest.raises(TraceTruncated):
        TraceReader(path, require_complete=True)


def test_readable_while_being_written(tmp_path: Path) -> None:
    path = tmp_path / "live.rrt"
    with TraceWriter(path, {"live": True}, chunk_events=50) as writer:
        for i in range(120):
            writer.append(i, pio(i))
        with TraceReader(path) as reader:
            assert reader.truncated and reader.event_count == 100  # the open chunk is not out
            assert [e for e, _ in reader.events(90)] == list(range(90, 100))
        writer.flush()
        with TraceReader(path) as reader:
            assert reader.event_count == 120
    with TraceReader(path, require_complete=True) as reader:
        assert reader.event_count == 120 and reader.footer == {}


def test_truncated_at_every_offset(tmp_path: Path) -> None:
    src = tmp_path / "full.rrt"
    events = [(i // 2, pio(i)) for i in range(60)]
    write_trace(src, events, chunk_events=16)
    data = src.read_bytes()
    with TraceReader(src) as reader:
        chunks = reader.chunks
        data_start = chunks[0].offset
    cut_path = tmp_path / "cut.rrt"
    for cut in range(len(data)):
        cut_path.write_bytes(data[:cut])
        if cut < data_start:
            expected_error = NotATrace if cut == 0 else TraceTruncated
            with pytest.raises(expected_error) as info:
                TraceReader(cut_path)
            assert_one_line(info.value, cut_path)
            continue
        with TraceReader(cut_path) as reader:
            complete = [c for c in chunks if c.end <= cut]
            assert reader.truncated and reader.footer is None, cut
            assert reader.chunks == complete, cut
            assert reader.tail_bytes == cut - (complete[-1].end if complete else data_start)
            n = sum(c.count for c in complete)
            assert list(reader.events()) == [(e, tup(ev)) for e, ev in events[:n]]
            assert reader.verify() == n


def test_zero_filled_tail_is_truncation(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    write_trace(path, [(i, pio(i)) for i in range(100)], chunk_events=10, finish=False)
    with path.open("ab") as f:
        f.write(bytes(5000))
    reader, got = read_all(path)
    assert reader.truncated and len(got) == 100 and reader.tail_bytes == 5000


# -- damage detection ----------------------------------------------------------------------


@pytest.mark.parametrize("finish", [True, False], ids=["footer", "no-footer"])
@pytest.mark.parametrize("where", ["payload", "header"])
def test_flipped_byte_in_chunk_names_the_chunk(tmp_path: Path, finish: bool, where: str) -> None:
    path = tmp_path / "t.rrt"
    write_trace(path, [(i, pio(i)) for i in range(2000)], chunk_events=100, finish=finish)
    with TraceReader(path) as reader:
        target = reader.chunks[7]
    at = target.offset + (CHUNK_HEADER_SIZE + 3 if where == "payload" else 13)
    flip(path, at, 0x04)
    with pytest.raises(TraceCorrupt) as info:
        open_and_verify(path)
    err = info.value
    assert err.chunk == 7 and err.offset == target.offset
    assert f"chunk 7 at offset {target.offset}" in str(err)
    assert_one_line(err, path)


def test_bad_last_chunk_without_footer_is_corruption(tmp_path: Path) -> None:
    """A complete final chunk that fails its checks is damage, not a short tail."""
    path = tmp_path / "t.rrt"
    write_trace(path, [(i, pio(i)) for i in range(300)], chunk_events=100, finish=False)
    with TraceReader(path) as reader:
        last = reader.chunks[-1]
    assert last.end == path.stat().st_size
    flip(path, last.offset + 20)
    with pytest.raises(TraceCorrupt) as info:
        TraceReader(path)
    assert info.value.chunk == 2


def test_flipped_byte_in_header(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    write_trace(path, [(0, pio(0))])
    for offset in (12, 20, 30, 35):  # header length, its checksum, the seal, the header dict
        copy = tmp_path / f"h{offset}.rrt"
        copy.write_bytes(path.read_bytes())
        flip(copy, offset, 0x01)
        with pytest.raises(TraceCorrupt) as info:
            TraceReader(copy)
        assert_one_line(info.value, copy)
        assert "header" in str(info.value)


@pytest.mark.parametrize("finish", [True, False], ids=["footer", "no-footer"])
def test_every_single_byte_flip_is_detected(tmp_path: Path, finish: bool) -> None:
    src = tmp_path / "src.rrt"
    write_trace(src, [(i // 3, pio(i)) for i in range(40)], chunk_events=15, finish=finish)
    data = src.read_bytes()
    path = tmp_path / "flipped.rrt"
    for offset in range(len(data)):
        for mask in (0x01, 0x80):
            damaged = bytearray(data)
            damaged[offset] ^= mask
            path.write_bytes(bytes(damaged))
            with pytest.raises(TraceError) as info:
                open_and_verify(path)
            assert not isinstance(info.value, TraceTruncated), (offset, mask, info.value)
            assert_one_line(info.value, path)


def test_garbage_after_complete_trace_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    write_trace(path, [(i, pio(i)) for i in range(50)])
    with path.open("ab") as f:
        f.write(b"junk")
    with pytest.raises(TraceCorrupt):
        TraceReader(path)


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "base.rrt"
    write_trace(path, mixed_events(120, seed=5), chunk_events=25)
    return path.read_bytes()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    cut=st.one_of(st.none(), st.integers(min_value=0)),
    extra=st.binary(max_size=64),
)
def test_damage_only_raises_trace_errors(
    tmp_path: Path, small_trace: bytes, edits: list[tuple[int, int]], cut: int | None, extra: bytes
) -> None:
    data = bytearray(small_trace)
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        del data[cut % (len(data) + 1) :]
    data += extra
    path = tmp_path / "fuzzed.rrt"
    path.write_bytes(bytes(data))
    try:
        with TraceReader(path) as reader:
            exits = [e for e, _ in reader.events()]
            assert exits == sorted(exits)
            reader.verify()
            reader.stats()
    except TraceError as err:
        assert_one_line(err, path)


# -- versions and foreign files ------------------------------------------------------------


def test_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    write_trace(path, [(0, pio(0))])
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, TRACE_VERSION + 1)
    struct.pack_into("<Q", data, 24, xxhash.xxh3_64_intdigest(bytes(data[:24])))
    path.write_bytes(bytes(data))
    with pytest.raises(TraceVersionError) as info:
        TraceReader(path)
    assert info.value.version == TRACE_VERSION + 1
    assert f"version {TRACE_VERSION + 1}" in str(info.value) and "newer" in str(info.value)
    assert_one_line(info.value, path)


def test_version_1_traces_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    events = [(0, pio(0)), (1, pio(1))]
    write_trace(path, events)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 8, 1)  # a version-1 file: same container, older events
    struct.pack_into("<Q", data, 24, xxhash.xxh3_64_intdigest(bytes(data[:24])))
    path.write_bytes(bytes(data))
    with TraceReader(path) as reader:
        assert reader.version == 1
        assert [(i, list(ev)) for i, ev in reader.events()] == [(i, list(e)) for i, e in events]


def test_damaged_version_field_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    write_trace(path, [(0, pio(0))])
    flip(path, 9, 0x01)
    with pytest.raises(TraceCorrupt, match="version"):
        TraceReader(path)


@pytest.mark.parametrize("content", [b"", b"hello world, this is not a trace\n", b"\x7fELF" * 20])
def test_not_a_trace(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "other.bin"
    path.write_bytes(content)
    with pytest.raises(NotATrace) as info:
        TraceReader(path)
    assert_one_line(info.value, path)


# -- size and memory -----------------------------------------------------------------------


def test_repetitive_events_cost_under_one_byte(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    n = 100_000
    write_trace(path, [(i, [1, 0x3F8, 1, 65]) for i in range(n)])
    assert path.stat().st_size / n < 1.0
    with TraceReader(path) as reader:
        stats = reader.stats()
    assert stats.bytes_per_event < 1.0 and stats.compression_ratio > 10


def test_writer_holds_at_most_one_chunk(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    rng = random.Random(9)
    chunk_bytes = 4096
    with TraceWriter(path, {}, chunk_bytes=chunk_bytes) as writer:
        for i in range(20000):
            event = [2, rng.randbytes(rng.randrange(200))]
            writer.append(i, event)
            biggest = len(msgpack.packb(event)) + 1  # + the one-byte exit delta
            assert writer.pending_bytes < chunk_bytes + biggest
        assert writer.chunk_count > 100


def test_bounded_memory_writing_and_reading(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    n = 100_000
    tracemalloc.start()
    try:
        with TraceWriter(path, {}) as writer:
            for i in range(n):
                writer.append(i, [1, i, 4, i * 2654435761 % (1 << 32), b"%32d" % i])
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with TraceReader(path) as reader:
            count = sum(1 for _ in reader.events())
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    raw = reader.stats().uncompressed_bytes
    assert count == n and raw > 4_000_000
    assert write_peak < 512 * 1024, write_peak  # one 64 KiB chunk, not the whole trace
    assert read_peak < 2 * 1024 * 1024, read_peak  # one decoded chunk, not all events
