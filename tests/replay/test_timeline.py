"""`rrvmm trace timeline`: the PNG decodes and its x axis is guest time, the Perfetto JSON
matches `rrvmm trace stats`, the serial lines rebuilt from port writes are what the guest
printed, and the guest time of each exit comes from the trace's clock readings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrvmm.replay.container import TraceReader, TraceWriter
from rrvmm.replay.guest_time import guest_time_map
from rrvmm.replay.timeline import SerialDecoder, figure, scan, write_json
from rrvmm_cli import rrvmm

kvm = pytest.mark.kvm

OUT, IN = 2, 1  # ExitKind.IO_OUT, IO_IN


def _exit(kind: int, port: int, size: int, value: int | bytes, rip: int = 0x1000) -> list:
    return [1, kind, port, size, value, rip]


def test_serial_decoder_follows_the_uart_bus() -> None:
    d = SerialDecoder()
    assert d.out(0x3F8, 1, ord("a")) == b"a"
    assert d.out(0x3FB, 1, 0x80) == b""  # DLAB on: 0x3f8 is the divisor latch
    assert d.out(0x3F8, 1, 0x01) == b""
    assert d.out(0x3FB, 1, 0x03) == b""  # DLAB off again
    assert d.out(0x3F8, 2, 0x4342) == b"B"  # outw: 0x42 to THR, 0x43 to IER
    assert d.out(0x3F8, 1, b"rep outsb\n") == b"rep outsb\n"  # rep outsb: raw bytes
    assert d.out(0x3FA, 4, 0x41414141) == b""  # FCR, LCR (0x41: DLAB off), MCR, LSR
    assert d.out(0x3FF, 2, 0x4141) == b""  # the byte past the UART window is dropped
    assert d.out(0x2F8, 1, ord("x")) == b""  # COM2 is not the console
    assert d.lines(b"one\ntw", 5) == [(5, "one")]
    assert d.lines(b"o\r\n", 9) == [(9, "two")]
    assert d.rest(10) == [] and d.lines(b"tail", 11) == [] and d.rest(12) == [(12, "tail")]


def _synthetic(path: Path) -> None:
    header = {"images": {"kernel": {"path": "/x/k.mb", "sha256": "0" * 64, "size": 1}}}
    with TraceWriter(path, header, chunk_events=7) as w:
        w.append(0, [6, b"hi"])  # SERIAL_RX before the first exit
        for i in range(1, 101):
            if i % 10 == 0:
                w.append(i, _exit(7, 0, 0, 0))  # INTR: forced
                w.append(i, [2, 1, 2, True])  # LANDING
                w.append(i, [7, 0x20])  # INJECT
            else:
                w.append(i, _exit(OUT, 0x3F8, 1, b"L\n"[i % 2]))
        w.close({"exits": 100})


def test_scan_counts_every_series(tmp_path: Path) -> None:
    path = tmp_path / "s.rrt"
    _synthetic(path)
    with TraceReader(path) as r:
        seen: list[tuple[str, int]] = []
        tl = scan(r, buckets=10, instant=lambda k, i, _x, _a: seen.append((k, i)))
    # no clock reading and no footer guest_ns: the axis falls back to the exit index
    assert tl.axis == "exit" and tl.width == 11 and tl.buckets == 10
    assert len(tl.lanes) == 1 and tl.lanes[0].vcpu == 0
    lane = tl.lanes[0]
    assert sum(lane.exits["IO_OUT"]) == 90 and sum(lane.exits["INTR"]) == 10
    assert tl.totals["injections"] == sum(lane.injections) == 10
    assert tl.totals["forced_exits"] == sum(lane.forced) == 10
    lines = [i for k, i in seen if k == "serial"]
    assert len(lines) == tl.totals["serial_lines"] == 50 and lines[:2] == [1, 3]
    assert tl.totals["serial_exact"] is None  # no serial_sha256 in this footer


def test_json_is_perfetto_trace_events(tmp_path: Path) -> None:
    path = tmp_path / "s.rrt"
    _synthetic(path)
    out = tmp_path / "s.json"
    with TraceReader(path) as r, open(out, "w") as f:
        write_json(r, f, buckets=4)
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    assert {e["ph"] for e in events} == {"M", "C", "i"}
    for e in events:
        assert isinstance(e["name"], str) and e["pid"] == 1
        if e["ph"] != "M":
            assert isinstance(e["ts"], int | float) and isinstance(e["args"], dict)
    counters = [e for e in events if e["ph"] == "C"]
    assert [c["ts"] for c in counters] == [0, 26, 52, 78]
    assert sum(sum(c["args"].values()) for c in counters) == 100


def _stats(trace: Path) -> dict:
    r = rrvmm("trace", "stats", str(trace), "--json")
    assert r.status == 0, r.err
    return json.loads(r.out)


@pytest.fixture(scope="module")
def irq_trace(tmp_path_factory: pytest.TempPathFactory, guest) -> tuple[Path, str]:  # noqa: ANN001
    """A guest with timer interrupts landing at forced exits, and some output."""
    trace = tmp_path_factory.mktemp("timeline") / "irqhash.rrt"
    rec = rrvmm(
        "record", "--kernel", str(guest("irqhash")), "--append", "hz=1000 loops=2",
        "-o", str(trace), stdin=None,
    )  # fmt: skip
    assert rec.status == 0, rec.err
    return trace, rec.out


@kvm
def test_png_decodes_with_a_sane_size(tmp_path: Path, irq_trace: tuple[Path, str]) -> None:
    import matplotlib.image

    trace, _ = irq_trace
    png = tmp_path / "t.png"
    r = rrvmm("trace", "timeline", str(trace), "-o", str(png))
    assert r.status == 0, r.err
    assert f"wrote {png}" in r.err and "\r" not in r.err  # quiet in a pipe
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(png)
    h, w = img.shape[:2]
    assert 600 <= w <= 4000 and 400 <= h <= 3000
    assert len({tuple(px) for px in img.reshape(-1, img.shape[2])[::97]}) > 5  # not blank


@kvm
def test_json_counts_equal_trace_stats(tmp_path: Path, irq_trace: tuple[Path, str]) -> None:
    trace, guest_out = irq_trace
    out = tmp_path / "t.json"
    r = rrvmm("trace", "timeline", str(trace), "-o", str(out))
    assert r.status == 0, r.err
    with open(out) as f:
        doc = json.load(f)
    events = doc["traceEvents"]
    stats = _stats(trace)

    counters = [e for e in events if e["ph"] == "C" and e["name"] == "exits"]
    by_kind: dict[str, int] = {}
    for c in counters:
        for kind, n in c["args"].items():
            by_kind[kind] = by_kind.get(kind, 0) + n
    assert sum(by_kind.values()) == stats["exits"]
    assert {k: v for k, v in by_kind.items() if v} == stats["exit_kinds"]

    instants = [e for e in events if e["ph"] == "i"]
    cats = [e["cat"] for e in instants]
    assert cats.count("interrupt") == stats["injections"] > 0
    assert cats.count("forced") == stats["events"]["LANDING"] > 0
    lines = [e["args"]["text"] for e in instants if e["cat"] == "serial"]
    assert lines == guest_out.splitlines()
    assert doc["otherData"]["serial_exact"] is True
    ts = [e["ts"] for e in instants]  # guest time in microseconds
    with TraceReader(trace) as r:
        guest_ns = r.footer["guest_ns"]
    assert ts == sorted(ts) and 0 <= ts[0] and ts[-1] <= guest_ns / 1000
    assert [e["args"]["exit"] for e in instants] == sorted(e["args"]["exit"] for e in instants)


@kvm
def test_timeline_errors(tmp_path: Path, irq_trace: tuple[Path, str]) -> None:
    trace, _ = irq_trace
    r = rrvmm("trace", "timeline", str(trace), "-o", str(tmp_path / "t.svg"))
    assert r.status == 64 and "must end in .png or .json" in r.err
    r = rrvmm("trace", "timeline", str(tmp_path / "none.rrt"), "-o", str(tmp_path / "t.png"))
    assert r.status == 66 and len(r.err.strip().splitlines()) == 1
    bad = tmp_path / "bad.rrt"
    data = bytearray(trace.read_bytes())
    data[len(data) // 2] ^= 0x10
    bad.write_bytes(bytes(data))
    r = rrvmm("trace", "timeline", str(bad), "-o", str(tmp_path / "t.json"))
    assert r.status == 73 and "corrupt" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "t.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.rrt"]  # no temporary left behind


def _clocked(path: Path) -> None:
    """Exits 1-40; clock readings at exits 10 and 20, a halt of 1 ms at exit 25 (the soft
    backend's TSC offset moves on), a landing with an instruction count at exit 30."""
    header = {"images": {"kernel": {"path": "/x/k.mb", "sha256": "0" * 64, "size": 1}}}
    with TraceWriter(path, header, chunk_events=5) as w:
        for i in range(1, 41):
            if i == 30:
                w.append(i, _exit(7, 0, 0, 0))  # INTR
                w.append(i, [2, 1, 2, 3, 4, True, 40_000])  # LANDING after 40,000 instructions
                continue
            w.append(i, _exit(OUT, 0x3F8, 1, ord("x")))
            if i in (10, 20):
                w.append(i, [4, i * 1000])  # CLOCK
            if i == 25:
                w.append(i, [8, 1_000_000])  # TSC: halted for 1 ms
        w.close({"exits": 40, "guest_ns": 1_050_000})


def test_guest_time_of_each_exit_comes_from_clock_anchors(tmp_path: Path) -> None:
    path = tmp_path / "c.rrt"
    _clocked(path)
    with TraceReader(path) as r:
        clock = guest_time_map(r)
    assert clock.known and clock.end_ns == 1_050_000
    assert clock.at(0) == 0 and clock.at(10) == 10_000 and clock.at(20) == 20_000
    assert clock.at(15) == 15_000  # spread evenly between two readings
    # instruction time runs evenly from 20 us (exit 20) to 40 us (exit 30); the exit that
    # halted happened before its halt, the next one after it
    assert clock.at(25) == 30_000 and clock.at(26) == 1_032_000
    assert clock.at(30) == 1_040_000  # 40,000 instructions plus 1 ms halted
    assert clock.at(40) == 1_050_000  # the footer: the clock at the end
    assert clock.exit_at(clock.at(17)) == 17
    ts = [clock.at(i) for i in range(41)]
    assert ts == sorted(ts)


def test_scan_buckets_by_guest_time(tmp_path: Path) -> None:
    path = tmp_path / "c.rrt"
    _clocked(path)
    with TraceReader(path) as r:
        seen: list[tuple[str, int, float]] = []
        tl = scan(r, buckets=10, instant=lambda k, i, x, _a: seen.append((k, i, x)))
    assert tl.axis == "guest_ns" and tl.span == 1_050_000 and tl.width == 105_000
    out = tl.lanes[0].exits["IO_OUT"]
    assert sum(out) == 39 and out[0] == 25  # exits 1-25 all within the first 30 us
    assert ("forced", 30, 1_040_000.0) in seen  # the forced exit, at its guest time


@pytest.fixture(scope="module")
def soft_irq_trace(tmp_path_factory: pytest.TempPathFactory, guest) -> Path:  # noqa: ANN001
    """irqhash on the software CPU: guest time is exact at every timer interrupt."""
    trace = tmp_path_factory.mktemp("timeline") / "irqhash-soft.rrt"
    rec = rrvmm(
        "record", "--backend", "soft", "--kernel", str(guest("irqhash")),
        "--append", "hz=1000 loops=20", "-o", str(trace), stdin=None,
    )  # fmt: skip
    assert rec.status == 0, rec.err
    return trace


def test_png_x_axis_is_guest_time_with_the_exit_index_above(soft_irq_trace: Path) -> None:
    import matplotlib.pyplot as plt

    with TraceReader(soft_irq_trace) as r:
        guest_ns = r.footer["guest_ns"]
        ticks = sum(1 for _, ev in r.events() if ev[0] == 2)  # LANDINGs: one per tick
        tl = scan(r)
    assert 0 < ticks <= guest_ns // 1_000_000 + 1  # 1000 Hz: at most one tick per ms
    fig = figure(tl, "t")
    try:
        serial = fig.axes[2]  # one vCPU: exits, interrupts, then the serial lane
        assert serial.get_xlabel() == "guest time (ms)"
        lo, hi = serial.get_xlim()
        assert lo == 0 and hi == pytest.approx(guest_ns / 1e6)
        for ax in fig.axes[:3]:
            assert ax.get_xlim() == (lo, hi)  # shared
        assert fig.axes[0].get_ylabel().endswith("exits per ms")
        top = [c for c in fig.axes[0].child_axes if c.get_xlabel().startswith("exit index")]
        assert len(top) == 1
        # the exit index above a guest time is the exit the trace puts there
        fmt = top[0].xaxis.get_major_formatter()
        half = hi / 2
        assert fmt(half, 0) == f"{round(tl.clock.exit_at(half * 1e6)):,}"
        # few interrupts: one mark each (at its guest time), not a rate
        marks = [seg[0][0] for c in fig.axes[1].collections for seg in c.get_segments()]
        assert len(marks) == tl.totals["injections"] + tl.totals["forced_exits"] == 2 * ticks
        assert all(0 < m < hi for m in marks)
        # legends sit beside the plots, not over the data
        for ax in fig.axes[:2]:
            box = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
            assert box.x0 >= ax.get_window_extent().x1
        # serial texts never overlap one another
        boxes = [t.get_window_extent() for t in serial.texts]
        assert boxes and all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
    finally:
        plt.close(fig)


def test_png_has_one_lane_per_vcpu(tmp_path: Path) -> None:
    """Traces hold one vCPU today; a timeline with two draws two pairs of lanes."""
    import dataclasses

    import matplotlib.pyplot as plt

    path = tmp_path / "c.rrt"
    _clocked(path)
    with TraceReader(path) as r:
        tl = scan(r, buckets=10)
    tl.lanes.append(dataclasses.replace(tl.lanes[0], vcpu=1))
    fig = figure(tl)
    try:
        assert len(fig.axes) == 5  # exits and interrupts per vCPU, then the serial lane
        labels = [ax.get_ylabel() for ax in fig.axes]
        assert labels[0].startswith("vCPU 0") and labels[2].startswith("vCPU 1")
        assert fig.axes[-1].get_xlabel() == "guest time (ms)"
    finally:
        plt.close(fig)
