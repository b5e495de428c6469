"""Crafted traces and packs: one line on stderr, a documented status, bounded memory, no hang.

Checksums are xxh3, which anyone can recompute, so every case here is *resealed*: the file
verifies, and only its content is hostile (issue 17). Each case runs the real CLI on a
small soft-backend recording of guests/demo.c and measures the child's peak RSS with
``wait4``: the limit is 512 MB whatever the file claims.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lz4.block
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rrvmm.errors import ExitStatus
from rrvmm.replay import inspect
from rrvmm.replay.container import (
    _CHUNK,
    _ENTRY,
    CHUNK_TAG,
    MAX_CHUNK_RAW,
    TraceReader,
    TraceWriter,
    _hash,
    _sealed,
    _write_all,
)
from rrvmm.replay.errors import TraceCorrupt
from rrvmm.replay.events import EventKind, describe
from rrvmm.replay.pack import carried
from rrvmm.replay.replayer import Replayer
from rrvmm.replay.schema import TRACE_SCHEMA
from rrvmm.replay.symbol_files import find_symbol_file
from rrvmm_cli import rrvmm

RSS_LIMIT_KB = 512 * 1024
TIMEOUT_S = 60  # a hang shows as a kill; the cases take about a second each
REPO = Path(__file__).resolve().parents[2]

# -- running the CLI with a memory measurement ------------------------------------------------


def run_measured(*args: str, timeout: float = TIMEOUT_S) -> tuple[int, str, int]:
    """``python -m rrvmm ARGS``: (status, stderr, peak RSS in KiB of that one child).

    The child is reaped with ``wait4``, whose rusage is the child's own (RUSAGE_CHILDREN
    would be the maximum over every child the test process ever had).
    """
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(
            [sys.executable, "-m", "rrvmm", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                os.wait4(p.pid, 0)
                p.returncode = -9  # reaped here: keep Popen from waiting again
                raise AssertionError(f"rrvmm {' '.join(args)} hung for {timeout} s")
            time.sleep(0.02)
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return p.returncode, text, usage.ru_maxrss


def assert_one_line(args: tuple[str, ...], status: int, pattern: str = "") -> str:
    code, err, rss = run_measured(*args)
    lines = err.strip().splitlines()
    assert code == status, f"rrvmm {' '.join(args)}: status {code}, stderr:\n{err}"
    assert len(lines) == 1 and lines[0].startswith("rrvmm: "), f"not one line:\n{err}"
    assert "Traceback" not in err
    assert pattern in lines[0], lines[0]
    assert rss < RSS_LIMIT_KB, f"peak RSS {rss // 1024} MB"
    return lines[0]


# -- crafting -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_trace(guest: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete soft-backend recording of demo (exits, timers, injections, TSC, clock)."""
    path = tmp_path_factory.mktemp("hostile") / "demo.rrt"
    r = rrvmm("record", "--backend", "soft", "--kernel", str(guest("demo")), "-o", str(path))
    assert r.status == 0, r.err
    return path


def _events(path: Path) -> list[tuple[int, Any]]:
    with TraceReader(path) as r:
        return [(i, list(e)) for i, e in r.events()]


def rewrite(
    src: Path,
    dst: Path,
    *,
    header: Callable[[dict], dict] = lambda h: h,
    events: Callable[[list[tuple[int, Any]]], list[tuple[int, Any]]] = lambda e: e,
    footer: Callable[[dict], dict] = lambda f: f,
) -> Path:
    """A resealed copy of ``src`` with its header, events and footer transformed."""
    with TraceReader(src) as r:
        h, f = dict(r.header), dict(r.footer or {})
    with TraceWriter(dst, header(h), chunk_bytes=4096) as w:
        for index, event in events(_events(src)):
            w.append(index, event)
        w.close(footer(f))
    return dst


def chunk_record(raw: bytes, count: int, first: int, last: int, *, raw_len: int | None = None,
                 comp: bytes | None = None) -> bytes:  # fmt: skip
    """A sealed chunk record around ``raw`` (or around ``comp``, claiming ``raw_len``)."""
    comp = lz4.block.compress(raw, store_size=False) if comp is None else comp
    size = len(raw) if raw_len is None else raw_len
    return _sealed(_CHUNK.pack(CHUNK_TAG, len(comp), size, count, first, last, _hash(comp))) + comp


def forge(path: Path, header: dict, records: list[bytes], footer: dict | None) -> Path:
    """A trace of hand-made chunk records, indexed and closed (or left without a footer)."""
    w = TraceWriter(path, header)
    for rec in records:
        _write_all(w._fd, rec)
        _, comp_len, raw_len, count, first, last, _ = _CHUNK.unpack_from(rec)
        w._index += _ENTRY.pack(w._offset, comp_len, raw_len, count, first, last)
        w._offset += len(rec)
        w._events += count
    if footer is None:
        w.abort()
    else:
        w.close(footer)
    return path


def items(events: list[tuple[int, bytes]]) -> bytes:
    """A chunk's raw payload: array32 header, then (delta, packed event) pairs."""
    out = bytearray(b"\xdd" + (2 * len(events)).to_bytes(4, "big"))
    prev = events[0][0]
    for index, packed in events:
        out += msgpack.packb(index - prev) + packed
        prev = index
    return bytes(out)


def lz4_bomb(raw_len: int) -> bytes:
    """An LZ4 block of about raw_len / 255 bytes that inflates to ``raw_len`` zero bytes,
    built directly (compressing 2 GB to make it would need 2 GB)."""
    match = raw_len - 1 - 5  # one literal, one long match, five closing literals
    extra = match - 4 - 15  # the token holds 15 (+4 minimum); 255s and a remainder follow
    out = bytearray(b"\x1f\x00\x01\x00")  # 1 literal (0), then offset 1
    out += b"\xff" * (extra // 255) + bytes([extra % 255])
    out += b"\x50" + b"\x00" * 5
    return bytes(out)


def header_of(path: Path) -> dict:
    with TraceReader(path) as r:
        return dict(r.header)


# -- the commands every trace goes through -----------------------------------------------------


def readers(
    trace: Path, tmp: Path, only: tuple[str, ...] = (), other: Path | None = None
) -> Iterator[tuple[str, ...]]:
    """Every command that reads a trace (replay, trace dump|stats|info|timeline|diff, pack),
    or ``only`` those named (each CLI start costs most of a second). ``trace diff`` compares
    with ``other`` (default: itself; chunks equal byte for byte are not decoded)."""
    t = str(trace)
    every = {
        "replay": ("replay", t),
        "dump": ("trace", "dump", t),
        "stats": ("trace", "stats", t),
        "info": ("trace", "info", t),
        "timeline": ("trace", "timeline", t, "-o", str(tmp / "t.json")),
        "diff": ("trace", "diff", t, str(other or trace)),
        "pack": ("pack", t, "-o", str(tmp / "p.rrt")),
    }
    for name, args in every.items():
        if not only or name in only:
            yield args


# The cases of a class all take the same path through the reader: the first of each runs
# every command, the others the two most different ones.
_SOME = ("replay", "dump")
_EVENT_READERS = ("replay", "dump", "stats", "timeline", "diff", "pack")


# -- header -----------------------------------------------------------------------------------

HEADER_CASES: dict[str, Callable[[dict], dict]] = {
    "no machine": lambda h: {k: v for k, v in h.items() if k != "machine"},
    "memory a string": lambda h: h | {"machine": h["machine"] | {"memory": "128M"}},
    "memory 2^63": lambda h: h | {"machine": h["machine"] | {"memory": 1 << 63}},
    "memory not whole pages": lambda h: h | {"machine": h["machine"] | {"memory": (1 << 27) + 1}},
    "machine a list": lambda h: h | {"machine": [1, 2]},
    "cpuid short rows": lambda h: h | {"cpuid": [[0, 0, 0]]},
    "cpuid not a list": lambda h: h | {"cpuid": "x"},
    "no kernel image": lambda h: h | {"images": {}},
    "kernel sha256 a number": lambda h: (
        h | {"images": {"kernel": h["images"]["kernel"] | {"sha256": 5}}}
    ),
    "images a string": lambda h: h | {"images": "kernel"},
    "deep nesting": lambda h: h | {"extra": _nested(400)},
    "irqchip unknown": lambda h: h | {"machine": h["machine"] | {"irqchip": "apic"}},
    "chaos a string": lambda h: h | {"chaos": "seed 5"},
    "chaos bound a string": lambda h: h | {"chaos": {"seed": 5, "timer_late_max_ns": "lots"}},
}


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_bad_header_is_one_line_bad_trace(base_trace: Path, tmp_path: Path, case: str) -> None:
    bad = rewrite(base_trace, tmp_path / "bad.rrt", header=HEADER_CASES[case])
    only = () if case in ("no machine", "deep nesting") else ("replay", "info")
    for args in readers(bad, tmp_path, only):
        assert_one_line(args, ExitStatus.BAD_TRACE, "header is invalid")


# -- events -----------------------------------------------------------------------------------

EVENT_CASES: dict[str, Any] = {
    "unknown event kind": [99, 1],
    "unknown exit kind": [int(EventKind.EXIT), 77, 0, 1, 0, 0],
    "short exit": [int(EventKind.EXIT), 2],
    "not a list": 5,
    "empty list": [],
    "kind a string": ["EXIT", 2, 0, 1, 0, 0],
    "exit addr a string": [int(EventKind.EXIT), 2, "0x3f8", 1, 0, 0],
    "serial bytes as text": [int(EventKind.SERIAL_RX), "abc"],
    "inject a map": [int(EventKind.INJECT), {"v": 1}],
    "too many fields": [int(EventKind.TIMER), 1, 2, 3],
    "wall clock infinite": [int(EventKind.WALL), float("inf")],
}


@pytest.mark.parametrize("case", sorted(EVENT_CASES))
def test_bad_event_is_one_line_bad_trace(base_trace: Path, tmp_path: Path, case: str) -> None:
    def put(events: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        at = len(events) // 2
        return [*events[:at], (events[at][0], EVENT_CASES[case]), *events[at:]]

    bad = rewrite(base_trace, tmp_path / "bad.rrt", events=put)
    # `trace info` reads the header, index and footer only: events do not concern it
    only = _EVENT_READERS if case == "unknown event kind" else _SOME
    for args in readers(bad, tmp_path, only, other=base_trace):
        assert_one_line(args, ExitStatus.BAD_TRACE, "corrupt chunk")


def test_event_nested_1000_deep_is_one_line_bad_trace(base_trace: Path, tmp_path: Path) -> None:
    deep = b"\x91" * 1000 + b"\x00"  # msgpack refuses to pack this deep; the bytes can be
    raw = items([(0, msgpack.packb([int(EventKind.CLOCK), 5])), (1, deep)])
    bad = forge(tmp_path / "bad.rrt", header_of(base_trace), [chunk_record(raw, 2, 0, 1)], {})
    for args in readers(bad, tmp_path, _EVENT_READERS):
        assert_one_line(args, ExitStatus.BAD_TRACE, "corrupt chunk 0")


# -- sizes ------------------------------------------------------------------------------------


def test_chunk_inflating_to_2_gb_fails_fast(base_trace: Path, tmp_path: Path) -> None:
    """An ~8 MB chunk that inflates to 2 GB: refused before decompressing (it claims more
    than a chunk can hold) or decompressed with a bounded output (it claims little)."""
    bomb = lz4_bomb(2 << 30)
    assert 8 << 20 < len(bomb) < 9 << 20
    header = header_of(base_trace)
    claims_all = chunk_record(b"", 1, 0, 0, raw_len=(2 << 30) - 1, comp=bomb)
    claims_little = chunk_record(b"", 1, 0, 0, raw_len=MAX_CHUNK_RAW, comp=bomb[: 1 << 16])
    for record in (claims_all, claims_little):
        bad = forge(tmp_path / "bomb.rrt", header, [record], {})
        for args in readers(bad, tmp_path, ("replay", "dump", "stats", "pack")):
            assert_one_line(args, ExitStatus.BAD_TRACE, "corrupt")


def test_chunk_claiming_more_events_than_bytes(base_trace: Path, tmp_path: Path) -> None:
    raw = items([(0, msgpack.packb([int(EventKind.CLOCK), 5]))])
    record = chunk_record(raw, (1 << 31) - 1, 0, 0)
    bad = forge(tmp_path / "bad.rrt", header_of(base_trace), [record], {})
    assert_one_line(("trace", "dump", str(bad)), ExitStatus.BAD_TRACE, "corrupt")


def test_event_claiming_a_1_gb_string(base_trace: Path, tmp_path: Path) -> None:
    huge = b"\xc6" + (1 << 30).to_bytes(4, "big") + b"x" * 64  # bin32 of 1 GiB, 64 bytes given
    raw = items([(0, b"\x92\x06" + huge)])
    bad = forge(tmp_path / "bad.rrt", header_of(base_trace), [chunk_record(raw, 1, 0, 0)], {})
    for args in readers(bad, tmp_path, _SOME):
        assert_one_line(args, ExitStatus.BAD_TRACE, "corrupt chunk 0")


ZEROS_1G_SHA256 = "49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"


def test_pack_carrying_a_1_gib_kernel_is_not_read_whole(base_trace: Path, tmp_path: Path) -> None:
    """A 1 GiB blob of zeros packs to ~4 MB; a 128 MB guest cannot take it as its kernel, and
    nothing reads it whole to find that out."""
    piece = bytes(1 << 20)
    header = header_of(base_trace)
    header["images"] = {"kernel": {"path": "/nonexistent", "sha256": ZEROS_1G_SHA256,
                                   "size": 1 << 30}}  # fmt: skip
    header["packed"] = {"symbols": []}
    packed = tmp_path / "big.packed.rrt"
    with TraceWriter(packed, header, blobs=[(ZEROS_1G_SHA256, (piece for _ in range(1024)))]) as w:
        for index, event in _events(base_trace):
            w.append(index, event)
        with TraceReader(base_trace) as r:
            w.close(r.footer)
    assert packed.stat().st_size < 8 << 20
    assert_one_line(("replay", str(packed)), ExitStatus.BAD_TRACE, "more than the")
    code, err, rss = run_measured("trace", "info", str(packed))
    assert code == 0 and rss < RSS_LIMIT_KB, err
    assert_one_line(("pack", str(packed)), ExitStatus.BAD_TRACE, "already packed")


# -- the footer -------------------------------------------------------------------------------


def test_resealed_shortened_trace_is_not_a_match(base_trace: Path, tmp_path: Path) -> None:
    """Tail events removed, footer kept: replay must not say it matched."""
    short = rewrite(base_trace, tmp_path / "short.rrt", events=lambda e: e[: len(e) // 6])
    line = assert_one_line(("replay", str(short)), ExitStatus.BAD_TRACE, "footer records")
    assert "corrupt" in line


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("serial hash", {"serial_sha256": "0" * 64}),
        ("end reason", {"reason": "guest wrote 0x7 to isa-debug-exit"}),
        ("exit count", {"exits": 10**6}),
    ],
)
def test_footer_disagreeing_with_replay_is_reported(
    base_trace: Path, tmp_path: Path, case: str, change: dict
) -> None:
    bad = rewrite(base_trace, tmp_path / "bad.rrt", footer=lambda f: f | change)
    code, err, rss = run_measured("replay", str(bad))
    assert code in (ExitStatus.DIVERGED, ExitStatus.BAD_TRACE), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert rss < RSS_LIMIT_KB


def test_recorded_memory_this_host_cannot_map(base_trace: Path, tmp_path: Path) -> None:
    """64 GiB is a valid size (what --memory accepts), but may be more than can be mapped
    here: then one line, status 64, never an OSError traceback."""
    big = rewrite(
        base_trace,
        tmp_path / "big.rrt",
        header=lambda h: h | {"machine": h["machine"] | {"memory": 64 << 30}},
    )
    code, err, rss = run_measured("replay", str(big))
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert code in (0, ExitStatus.USAGE, ExitStatus.DIVERGED) and rss < RSS_LIMIT_KB, err


def test_footer_of_the_wrong_types_is_corrupt(base_trace: Path, tmp_path: Path) -> None:
    bad = rewrite(base_trace, tmp_path / "bad.rrt", footer=lambda f: f | {"exits": "many"})
    for args in readers(bad, tmp_path, ("replay", "info", "pack")):
        assert_one_line(args, ExitStatus.BAD_TRACE, "footer is invalid")


@pytest.mark.parametrize(
    "extra",
    [
        {"guest_ns": "long"},
        {"guest_ns": float("inf")},
        {"chaos": [1]},
        {"chaos": {"timers_late": "x"}},
    ],
)
def test_footer_guest_time_or_chaos_of_the_wrong_types_is_corrupt(
    base_trace: Path, tmp_path: Path, extra: dict[str, Any]
) -> None:
    """`trace info` and `rrvmm ls` print these: a wrong type is corrupt, not a traceback."""
    bad = rewrite(
        base_trace,
        tmp_path / "bad.rrt",
        header=lambda h: h | {"chaos": {"seed": 7, "timer_late_max_ns": 400_000}},
        footer=lambda f: f | extra,
    )
    assert_one_line(("trace", "info", str(bad)), ExitStatus.BAD_TRACE, "footer is invalid")


def test_store_listing_a_crafted_footer(base_trace: Path, tmp_path: Path) -> None:
    """`rrvmm ls` lists a crafted trace in the store as damaged (and the good ones as usual)."""
    store = tmp_path / "store"
    store.mkdir()
    rewrite(base_trace, store / "good.rrt")
    rewrite(base_trace, store / "bad.rrt", footer=lambda f: f | {"guest_ns": "long"})
    env = {**os.environ, "RRVMM_TRACE_DIR": str(store)}
    r = subprocess.run(
        [sys.executable, "-m", "rrvmm", "ls"], env=env, cwd=REPO,
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    rows = {line.split()[0].lstrip("*"): line for line in r.stdout.splitlines()[1:]}
    assert "footer is invalid" in rows["bad"], r.stdout
    assert "footer is invalid" not in rows["good"], r.stdout


def test_untouched_trace_still_replays(base_trace: Path, tmp_path: Path) -> None:
    """The checks above must not refuse a real recording, nor its resealed copy."""
    copy = rewrite(base_trace, tmp_path / "copy.rrt")
    for trace in (base_trace, copy):
        code, err, _ = run_measured("replay", str(trace))
        assert code == 0, err


# -- files that are not files -----------------------------------------------------------------


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_recorded_image_path_naming_a_device_or_fifo(
    base_trace: Path, tmp_path: Path, fifo: Path
) -> None:
    for path in ("/dev/zero", str(fifo)):
        bad = rewrite(
            base_trace,
            tmp_path / "bad.rrt",
            header=lambda h, p=path: (
                h | {"images": {"kernel": h["images"]["kernel"] | {"path": p}}}
            ),
        )
        assert_one_line(("replay", str(bad)), ExitStatus.NO_INPUT, "not a regular file")


def test_symbol_search_on_recorded_paths_naming_a_fifo_or_device(
    base_trace: Path, tmp_path: Path
) -> None:
    """gdb and the console look for symbols at (and beside) the recorded kernel path: a FIFO
    or a device there is no symbol file, not a read that never returns."""
    fifos = tmp_path / "fifos"
    fifos.mkdir()
    for name in ("vmlinuz-6.1.0", "kernel.mb", "kernel.elf"):
        os.mkfifo(fifos / name)
    cases = [
        ("/dev/zero", False),  # the console: any ELF
        (str(fifos / "kernel.mb"), True),  # gdb: the .mb's .elf beside it (also a FIFO)
        (str(fifos / "kernel.mb"), False),
        (str(fifos / "vmlinuz-6.1.0"), True),  # gdb: a bzImage's version string, its vmlinux
    ]
    for path, elf64 in cases:
        bad = rewrite(
            base_trace,
            tmp_path / "bad.rrt",
            header=lambda h, p=path: (
                h | {"images": {"kernel": h["images"]["kernel"] | {"path": p}}}
            ),
        )
        found: list[Path | None] = []
        with TraceReader(bad, schema=TRACE_SCHEMA) as reader:
            search = threading.Thread(
                target=lambda r=reader, e=elf64, out=found: out.append(
                    find_symbol_file(r, tmp_path, elf64=e)
                ),
                daemon=True,  # a hung open must not keep the test process alive
            )
            search.start()
            search.join(TIMEOUT_S)
            assert not search.is_alive(), f"symbol search on {path} (elf64={elf64}) hung"
        assert found == [None], (path, elf64, found)


def test_trace_that_is_a_device_or_fifo(fifo: Path, tmp_path: Path) -> None:
    for path in (Path("/dev/zero"), Path("/dev/urandom"), fifo):
        for args in readers(path, tmp_path, ("replay", "dump", "pack")):
            assert_one_line(args, ExitStatus.NO_INPUT, "not a regular file")


@pytest.mark.parametrize("command", ["run", "record"])
def test_image_options_naming_a_device_or_fifo(
    guest: Callable[[str], Path], fifo: Path, tmp_path: Path, command: str
) -> None:
    kernel = str(guest("hello"))
    out = ["-o", str(tmp_path / "r.rrt")] if command == "record" else []
    for option, path in (
        ("--kernel", "/dev/zero"),
        ("--kernel", str(fifo)),
        ("--initrd", "/dev/urandom"),
        ("--initrd", str(fifo)),
        ("--disk", "/dev/zero"),
        ("--disk", str(fifo)),
    ):
        args = [command, "--backend", "soft", *out]
        args += [option, path] if option == "--kernel" else ["--kernel", kernel, option, path]
        assert_one_line(tuple(args), ExitStatus.NO_INPUT, "not a regular file")
    assert not (tmp_path / "r.rrt").exists() or command == "record"


def test_replay_image_overrides_naming_a_device_or_fifo(base_trace: Path, fifo: Path) -> None:
    for option, path in (("--kernel", "/dev/zero"), ("--kernel", str(fifo))):
        code, err, rss = run_measured("replay", str(base_trace), option, path)
        lines = err.strip().splitlines()
        assert code in (ExitStatus.NO_INPUT, ExitStatus.USAGE), err
        assert len(lines) == 1 and rss < RSS_LIMIT_KB, err


def test_block_device_is_accepted_as_a_disk_only() -> None:
    """A block device has a size (unlike /dev/zero), so --disk takes one; nothing else does."""
    dev = next((d for d in ("/dev/loop0", "/dev/sda", "/dev/vda") if Path(d).exists()), None)
    if dev is None or not os.access(dev, os.R_OK):
        pytest.skip("no readable block device here")
    from rrvmm.inputfile import NotRegularFile, open_input

    with pytest.raises(NotRegularFile):
        open_input(dev)
    os.close(open_input(dev, block_device=True))


# -- any value at all: accepted and usable, or corrupt ------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 63), (1 << 64) - 1),
    st.floats(allow_nan=False),
    st.binary(max_size=16),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=9) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=20,
)
# events near the real ones, so the schema's checks past the kind get exercised too
_EVENTS = st.one_of(
    _VALUES,
    st.builds(lambda k, rest: [k, *rest], st.integers(0, 12), st.lists(_VALUES, max_size=8)),
    st.builds(
        lambda k, rest: [int(EventKind.EXIT), k, *rest],
        st.integers(0, 14),
        st.lists(st.integers(0, 1 << 64 - 1) | st.binary(max_size=4), max_size=6),
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event=_EVENTS)
def test_any_event_is_usable_or_corrupt(
    tmp_path_factory: pytest.TempPathFactory, event: Any
) -> None:
    path = tmp_path_factory.mktemp("any-event") / "t.rrt"
    with TraceWriter(path, {}) as w:
        w.append(0, [int(EventKind.CLOCK), 1])
        w.append(0, event)
        w.close({})
    try:
        with TraceReader(path, schema=TRACE_SCHEMA) as r:
            events = [e for _, e in r.events()]
    except TraceCorrupt as e:
        assert "\n" not in str(e)
        return
    for e in events:  # what the schema lets through, dump/stats can use
        json.dumps(describe(e))
        Replayer._describe(None, (0, e))  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(["machine", "cpuid", "images", "backend",
                                                 "cmdline", "packed", "x"]), _VALUES))  # fmt: skip
def test_any_header_is_usable_or_corrupt(
    base_trace: Path, tmp_path_factory: pytest.TempPathFactory, changes: dict
) -> None:
    header = header_of(base_trace) | changes
    path = tmp_path_factory.mktemp("any-header") / "t.rrt"
    with TraceWriter(path, header) as w:
        w.close({})
    try:
        reader = TraceReader(path, schema=TRACE_SCHEMA)
    except TraceCorrupt as e:
        assert "\n" not in str(e)
        return
    with reader:  # `trace info`, pack's image listing and the replay set-up's reads work
        json.dumps(inspect.info(reader), default=str)
        carried(reader)
        h = reader.header
        assert isinstance(h["machine"]["memory"], int)
        assert all(len(row) == 7 for row in h["cpuid"])
        assert isinstance(h["images"]["kernel"]["sha256"], str)
