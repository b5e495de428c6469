"""`rrvmm trace diff`: the first input at which two recordings of one guest differ."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from rrvmm.errors import RrvmmError
from rrvmm.replay.container import TraceReader, TraceWriter
from rrvmm.replay.diff import diff_traces, format_text
from rrvmm.replay.events import EventKind
from rrvmm_cli import rrvmm

kvm = pytest.mark.kvm

HEADER = {
    "images": {"kernel": {"path": "/x/k.mb", "sha256": "a" * 64, "size": 10}},
    "machine": {"memory": 1 << 27, "cmdline": "", "irqchip": "user"},
    "cmdline": "",
    "backend": "kvm",
}


def _exit(kind: int, port: int, value: int, rip: int) -> list:
    return [1, kind, port, 1, value, rip]


def _write(path: Path, events: list[tuple[int, list]], header: dict | None = None) -> Path:
    with TraceWriter(path, header or HEADER, chunk_events=16) as w:
        for idx, ev in events:
            w.append(idx, ev)
        w.close({"exits": events[-1][0]})
    return path


def _base(n: int = 200) -> list[tuple[int, list]]:
    """An OUT per exit, an IN of the PIT every 7th (with its CLOCK), a TIMER every 10th."""
    out: list[tuple[int, list]] = []
    for i in range(1, n + 1):
        if i % 7 == 0:
            out.append((i, [4, i * 1000]))
            out.append((i, _exit(1, 0x40, i & 0xFF, 0x2000 + i)))
        else:
            out.append((i, _exit(2, 0x80, i & 0xFF, 0x1000 + i)))
        if i % 10 == 0:
            out.append((i, [3, 5]))
            out.append((i, [7, 0x20]))
    return out


def _diff(tmp_path: Path, a: list, b: list, **kw) -> dict:  # noqa: ANN003
    pa, pb = _write(tmp_path / "a.rrt", a), _write(tmp_path / "b.rrt", b)
    with TraceReader(pa) as ra, TraceReader(pb) as rb:
        result = diff_traces(ra, rb, **kw)
    format_text(result)  # renders whatever the result
    return result.to_json() | {"skipped": result.skipped_chunks}


def test_identical_streams(tmp_path: Path) -> None:
    r = _diff(tmp_path, _base(), _base())
    assert r["identical"] is True and r["first"] is None
    assert r["skipped"] > 10  # compared chunk by chunk, without decoding


def test_timer_at_another_exit(tmp_path: Path) -> None:
    b = [item for item in _base() if item != (150, [3, 5])]
    b.insert(b.index((152, _exit(2, 0x80, 152, 0x1000 + 152))) + 1, (152, [3, 5]))
    r = _diff(tmp_path, _base(), b)
    f = r["first"]
    assert f["kind"] == "TIMER" and f["exit"] == 150
    assert f["a"]["exit"] == 150 and f["b"]["exit"] == 152
    assert f["a"]["rip"] == 0x1000 + 150 and f["b"]["rip"] == 0x1000 + 152
    assert "TIMER at exit 150 in A but at exit 152 in B" == f["what"]
    assert r["after"] == {
        "differing_exits": 2,
        "first_exit": 150,
        "last_exit": 152,
        "events_by_kind": {"TIMER": 2},
    }
    assert r["skipped"] > 0


def test_read_value_and_ignored_clock(tmp_path: Path) -> None:
    b = _base()
    at = b.index((70, [4, 70000]))
    b[at] = (70, [4, 70001])  # a different clock ...
    b[at + 1] = (70, _exit(1, 0x40, 0x99, 0x2000 + 70))  # ... so the PIT read differs
    r = _diff(tmp_path, _base(), b)
    assert r["first"]["kind"] == "CLOCK" and r["first"]["exit"] == 70
    assert (r["first"]["a"]["value"], r["first"]["b"]["value"]) == (70000, 70001)
    assert r["after"]["events_by_kind"] == {"CLOCK": 1, "EXIT": 1}
    r = _diff(tmp_path, _base(), b, ignore=frozenset({EventKind.CLOCK}))
    f = r["first"]
    assert f["kind"] == "EXIT" and f["what"] == "read value differs"
    assert (f["a"]["value"], f["b"]["value"], f["a"]["rip"]) == (70, 0x99, 0x2000 + 70)


def test_ignored_kinds_are_not_among_the_differences(tmp_path: Path) -> None:
    """--ignore CLOCK,TIMER: timer events that moved (one more here, one less there) and
    clock values that differ are not differences at all; the read value still is."""
    b = _base()
    b.remove((30, [3, 5]))  # a TIMER missing at exit 30 ...
    b.insert(b.index((41, _exit(2, 0x80, 41, 0x1000 + 41))), (41, [3, 9]))  # ... one more at 41
    at = b.index((70, [4, 70000]))
    b[at] = (70, [4, 70001])
    b[at + 1] = (70, _exit(1, 0x40, 0x99, 0x2000 + 70))
    r = _diff(tmp_path, _base(), b)
    assert {"TIMER", "CLOCK"} <= set(r["after"]["events_by_kind"])
    r = _diff(tmp_path, _base(), b, ignore=frozenset({EventKind.CLOCK, EventKind.TIMER}))
    assert r["after"]["events_by_kind"] == {"EXIT": 1}
    assert r["first"]["exit"] == 70 and r["first"]["what"] == "read value differs"


def test_longer_trace_and_event_only_in_one(tmp_path: Path) -> None:
    b = _base(220)
    b.insert(1, (1, [6, b"x"]))
    r = _diff(tmp_path, _base(), b)
    f = r["first"]
    assert f["kind"] == "SERIAL_RX" and f["a"] is None and f["b"]["value"] == "x"
    assert f["what"] == "SERIAL_RX at exit 1 in B, never in A"
    assert r["after"]["last_exit"] == 220 and r["b"]["exits"] == 220 and r["a"]["exits"] == 200


def test_input_delivered_by_a_kick_is_reported_before_the_kick(tmp_path: Path) -> None:
    a, b = _base(), _base()
    at = a.index((40, [3, 5]))
    a[at - 1 : at - 1] = [(40, _exit(7, 0, 0, 0x1040)), (40, [2, 1, 2, True])]  # a kick ...
    a.insert(at + 3, (40, [6, b"k"]))  # ... that delivered serial input
    b.insert(b.index((40, [3, 5])) + 1, (40, [6, b"j"]))
    f = _diff(tmp_path, a, b)["first"]
    assert f["kind"] == "SERIAL_RX" and f["what"] == "SERIAL_RX differs"
    assert (f["a"]["value"], f["b"]["value"]) == ("k", "j")
    a = [item for item in a if item != (40, [6, b"k"])]
    b = [item for item in b if item != (40, [6, b"j"])]
    f = _diff(tmp_path, a, b)["first"]
    assert f["kind"] == "EXIT" and f["what"] == "forced exit (INTR) in A, not in B"
    assert f["a"]["exit_kind"] == "INTR" and f["b"]["exit_kind"] == "IO_OUT"


def test_other_guests_are_refused(tmp_path: Path) -> None:
    other = json.loads(json.dumps(HEADER))
    other["machine"]["memory"] = 1 << 28
    other["images"]["kernel"]["sha256"] = "b" * 64
    pa = _write(tmp_path / "a.rrt", _base())
    pb = _write(tmp_path / "b.rrt", _base(), other)
    with TraceReader(pa) as ra, TraceReader(pb) as rb, pytest.raises(RrvmmError) as e:
        diff_traces(ra, rb)
    assert e.value.status == 75
    assert "kernel images differ" in str(e.value) and "memory differs" in str(e.value)


# --- real recordings -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_pair(tmp_path_factory: pytest.TempPathFactory, guest) -> tuple[Path, Path]:  # noqa: ANN001
    d = tmp_path_factory.mktemp("diff")
    traces = []
    for name, typed in (("hello", b"hello\nquit\n"), ("world", b"world\nquit\n")):
        trace = d / f"{name}.rrt"
        r = rrvmm("record", "--kernel", str(guest("echo")), "-o", str(trace), stdin=typed)
        assert r.status == 0 and f"> {name}" in r.out, r.err
        traces.append(trace)
    return traces[0], traces[1]


@kvm
def test_different_serial_input_is_the_first_difference(echo_pair: tuple[Path, Path]) -> None:
    a, b = echo_pair
    r = rrvmm("trace", "diff", str(a), str(b), "--json")
    assert r.status == 1, r.err
    d = json.loads(r.out)
    f = d["first"]
    assert d["identical"] is False and f["kind"] == "SERIAL_RX"
    assert f["a"]["kind"] == f["b"]["kind"] == "SERIAL_RX"
    assert f["a"]["value"].startswith("h") and f["b"]["value"].startswith("w")
    assert f["exit"] == min(f["a"]["exit"], f["b"]["exit"])
    assert isinstance(f["a"]["exit"], int) and isinstance(f["b"]["exit"], int)
    after = d["after"]
    assert after["first_exit"] == f["exit"] <= after["last_exit"]
    assert after["events_by_kind"]["SERIAL_RX"] >= 1
    assert d["a"]["exits"] > 0 and d["b"]["exits"] > 0

    text = rrvmm("trace", "diff", str(a), str(b))
    assert text.status == 1
    first = text.out.splitlines()
    assert first[0].startswith(f"first difference at exit {f['exit']}: SERIAL_RX")
    assert "'h" in text.out and "'w" in text.out and "rip" in text.out
    assert "after it:" in text.out


@kvm
def test_a_trace_and_its_copy_do_not_differ(tmp_path: Path, echo_pair: tuple[Path, Path]) -> None:
    a, _ = echo_pair
    copy = tmp_path / "copy.rrt"
    shutil.copyfile(a, copy)
    r = rrvmm("trace", "diff", str(a), str(copy))
    assert r.status == 0, r.err
    assert r.out.startswith("no difference") and r.err == ""
    d = json.loads(rrvmm("trace", "diff", str(a), str(copy), "--json").out)
    assert d["identical"] is True and d["first"] is None and d["after"] is None


@kvm
def test_different_guests_or_command_lines_are_an_error(
    tmp_path: Path,
    guest,  # noqa: ANN001
    echo_pair: tuple[Path, Path],
) -> None:
    a, _ = echo_pair
    hello = tmp_path / "hello.rrt"
    assert rrvmm("record", "--kernel", str(guest("hello")), "-o", str(hello)).status == 0
    r = rrvmm("trace", "diff", str(a), str(hello))
    assert r.status == 75 and r.out == ""
    line = r.err.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in r.err
    assert "are not recordings of the same guest: kernel images differ" in line
    other = tmp_path / "args.rrt"
    rec = rrvmm(
        "record", "--kernel", str(guest("echo")), "--append", "x=1", "-o", str(other),
        stdin=b"hello\nquit\n",
    )  # fmt: skip
    assert rec.status == 0
    r = rrvmm("trace", "diff", str(a), str(other))
    assert r.status == 75 and "command lines differ" in r.err
    junk = tmp_path / "junk.rrt"
    junk.write_bytes(b"not a trace at all")
    r = rrvmm("trace", "diff", str(a), str(junk))
    assert r.status == 73 and len(r.err.strip().splitlines()) == 1
    r = rrvmm("trace", "diff", str(a), str(a), "--ignore", "BOGUS")
    assert r.status == 64 and "not an event kind" in r.err


def test_entropy_is_an_input_and_shown_in_hex(tmp_path: Path, guest) -> None:  # noqa: ANN001
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(4096))
    traces = []
    for name in ("a", "b"):
        t = tmp_path / f"{name}.rrt"
        r = rrvmm(
            "record", "--backend", "soft", "--kernel", str(guest("virtio")), "--virtio-cmdline",
            "--disk", str(img), "-o", str(t), stdin=None,
        )  # fmt: skip
        assert r.status == 0, r.err
        traces.append(str(t))
    d = rrvmm("trace", "diff", *traces)
    assert d.status == 1
    first = d.out.splitlines()
    assert "ENTROPY differs" in first[0]
    assert re.search(r"ENTROPY [0-9a-f]{64}\b", first[1]), first[1]
