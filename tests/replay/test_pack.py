"""`rrvmm pack`: blobs in the container, packed traces that replay with no original file left,
and the errors for already packed, changed, missing and damaged inputs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from rrvmm.cli.progress import Progress, progress_for
from rrvmm.replay.container import (
    BLOB_PIECE_BYTES,
    BlobMismatch,
    TraceCorrupt,
    TraceReader,
    TraceTruncated,
    TraceWriter,
)
from rrvmm.replay.pack import default_output
from rrvmm_cli import rrvmm

kvm = pytest.mark.kvm


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the container's blobs (no KVM needed) -------------------------------------------------


def _events(n: int) -> list[tuple[int, tuple]]:
    return [(i // 2, (1, 2, 0x3F8, 1, i & 0xFF, 0x1000 + i)) for i in range(n)]


def _write_with_blobs(path: Path, blobs: list[tuple[str, object]], n: int = 500) -> None:
    with TraceWriter(path, {"test": True}, chunk_events=50, blobs=blobs) as w:
        for idx, ev in _events(n):
            w.append(idx, list(ev))
        w.close({"exits": n // 2})


def test_blobs_round_trip_and_are_stored_once(tmp_path: Path) -> None:
    big = os.urandom(BLOB_PIECE_BYTES) + bytes(BLOB_PIECE_BYTES + 123)  # three pieces
    small = b"kernel bytes " * 1000
    src = tmp_path / "small.bin"
    src.write_bytes(small)
    path = tmp_path / "t.rrt"
    _write_with_blobs(path, [(_sha(big), big), (_sha(small), src), (_sha(small), small)])
    with TraceReader(path) as r:
        assert [b.sha256 for b in r.blobs] == [_sha(big), _sha(small)]
        assert [b.pieces for b in r.blobs] == [3, 1]
        assert r.blob(_sha(big)) == big and r.blob(_sha(small)) == small
        assert r.blobs[1].stored < len(small) // 10  # compressed
        assert list(r.events()) == _events(500)
        assert r.verify() == 500 and r.footer == {"exits": 250}
        st = r.stats()
        assert st.blob_bytes == sum(b.stored for b in r.blobs)
        assert st.header_bytes + st.blob_bytes == r.chunks[0].offset
        with pytest.raises(KeyError):
            r.blob("0" * 64)


def test_a_blob_that_does_not_match_its_hash_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "t.rrt"
    with pytest.raises(BlobMismatch):
        TraceWriter(path, {}, blobs=[(_sha(b"one"), b"two")])
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # nor a temporary file


def test_damaged_or_cut_blobs_are_errors(tmp_path: Path) -> None:
    data = os.urandom(3000)
    path = tmp_path / "t.rrt"
    _write_with_blobs(path, [(_sha(data), data)])
    with TraceReader(path) as r:
        blob = r.blobs[0]
    raw = path.read_bytes()
    flipped = bytearray(raw)
    flipped[blob.offset + 60] ^= 1  # inside the compressed payload
    path.write_bytes(bytes(flipped))
    with TraceReader(path) as r, pytest.raises(TraceCorrupt, match="embedded blob 0"):
        r.blob(data and _sha(data))
    cut = tmp_path / "cut.rrt"
    cut.write_bytes(raw[: blob.offset + 100])
    with TraceReader(cut) as r:
        assert r.truncated and r.chunks == [] and r.tail_bytes == 100
        with pytest.raises(TraceTruncated, match="ends inside embedded blob"):
            r.blob(_sha(data))


def test_chunks_copy_verbatim(tmp_path: Path) -> None:
    a, b = tmp_path / "a.rrt", tmp_path / "b.rrt"
    _write_with_blobs(a, [])
    with TraceReader(a) as r, TraceWriter(b, r.header, blobs=[(_sha(b"x"), b"x")]) as w:
        for n in range(len(r.chunks)):
            w.append_chunk_record(r.chunk_record(n))
        w.close(r.footer)
    with TraceReader(a) as ra, TraceReader(b) as rb:
        assert list(ra.events()) == list(rb.events())
        assert [c[1:] for c in ra.chunks] == [c[1:] for c in rb.chunks]
        assert rb.blob(_sha(b"x")) == b"x"


def test_default_output_name() -> None:
    assert default_output("traces/run.rrt") == Path("traces/run.packed.rrt")
    assert default_output("x.trace") == Path("x.trace.packed.rrt")


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w") as f:
        assert progress_for("x", stream=f) is None
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as tty:
            p = progress_for("packing", unit="bytes", stream=tty)
            assert p is not None
            p.delay = p.interval = 0
            p(512, 2048)
            p.clear()
        out = os.read(master, 1000).decode()
        assert "packing  25% (512 bytes of 2.0 KiB)" in out and "\r" in out
    finally:
        os.close(master)
        os.close(slave)


def test_progress_waits_before_drawing() -> None:
    class Tty:
        text = ""

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    t = Tty()
    p = Progress("diff: exit", t)  # type: ignore[arg-type]
    p(5, 10)  # a short operation never draws anything
    p.clear()
    assert t.text == ""


# --- packing real recordings ----------------------------------------------------------------


def _record_echo(workdir: Path, guest) -> tuple[Path, Path, str]:  # noqa: ANN001
    """Record the echo guest from a private copy of its kernel; (trace, kernel, output)."""
    workdir.mkdir(parents=True, exist_ok=True)
    kernel = workdir / "echo.mb"
    shutil.copyfile(guest("echo"), kernel)
    trace = workdir / "echo.rrt"
    rec = rrvmm("record", "--kernel", str(kernel), "-o", str(trace), stdin=b"packed\nquit\n")
    assert rec.status == 0, rec.err
    return trace, kernel, rec.out


@kvm
def test_packed_trace_replays_with_every_original_file_gone(tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace, kernel, out = _record_echo(tmp_path / "box", guest)
    elf = tmp_path / "box" / "echo.elf"
    shutil.copyfile(Path(guest("echo")).with_suffix(".elf"), elf)
    packed = tmp_path / "share" / "echo.packed.rrt"
    packed.parent.mkdir()
    r = rrvmm("pack", str(trace), "-o", str(packed), "--symbols", str(elf), "--json")
    assert r.status == 0, r.err
    summary = json.loads(r.out)
    assert summary["packed_bytes"] == packed.stat().st_size
    print(
        f"\npacked trace: {packed.stat().st_size} bytes (trace {trace.stat().st_size}, kernel"
        f" {kernel.stat().st_size} -> {summary['carries'][0]['stored']}, symbols"
        f" {elf.stat().st_size} -> {summary['carries'][1]['stored']})"
    )
    kernel_sha = _sha(kernel.read_bytes())

    shutil.rmtree(tmp_path / "box")  # the recording box's files are gone, trace and all
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    rep = rrvmm("replay", str(packed), stdin=None, cwd=str(laptop))
    assert rep.status == 0, rep.err
    assert rep.out == out and "> packed" in out
    assert "replay matched all" in rep.err
    assert list(laptop.iterdir()) == [] and not kernel.exists()  # nothing was extracted

    info = json.loads(rrvmm("trace", "info", str(packed), "--json").out)
    assert info["packed"] is True and info["complete"] is True
    carries = info["carries"]
    assert carries["kernel"]["what"] == "image"
    assert carries["kernel"]["sha256"] == kernel_sha == info["images"]["kernel"]["sha256"]
    assert carries["kernel"]["size"] == info["images"]["kernel"]["size"]
    assert 0 < carries["kernel"]["stored"] < carries["kernel"]["size"]
    assert carries["echo.elf"]["what"] == "symbols"
    text = rrvmm("trace", "info", str(packed)).out
    assert "\npacked      yes, carries kernel" in text and kernel_sha in text


@kvm
def test_plain_and_packed_trace_hold_the_same_events(tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace, _, _ = _record_echo(tmp_path, guest)
    r = rrvmm("pack", str(trace))
    assert r.status == 0, r.err
    packed = tmp_path / "echo.packed.rrt"
    assert f"into {packed}" in r.err and "\r" not in r.err  # no progress line in a pipe
    with TraceReader(trace) as a, TraceReader(packed) as b:
        assert list(a.events()) == list(b.events())
        assert a.footer == b.footer
        assert {k: v for k, v in b.header.items() if k not in ("packed", "blobs")} == a.header
    assert json.loads(rrvmm("trace", "info", str(trace), "--json").out)["packed"] is False
    d = rrvmm("trace", "diff", str(trace), str(packed))
    assert d.status == 0 and "no difference" in d.out


@kvm
def test_packing_twice_is_an_error(tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace, _, _ = _record_echo(tmp_path, guest)
    assert rrvmm("pack", str(trace)).status == 0
    packed = tmp_path / "echo.packed.rrt"
    again = rrvmm("pack", str(packed), "-o", str(tmp_path / "again.rrt"))
    assert again.status == 73
    assert f"{packed} is already packed" in _one_line(again.err)
    assert not (tmp_path / "again.rrt").exists()


@kvm
def test_changed_or_missing_image_is_an_error(tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace, kernel, _ = _record_echo(tmp_path, guest)
    out = tmp_path / "p.rrt"
    data = bytearray(kernel.read_bytes())
    data[-1] ^= 0xFF  # same size, other contents
    kernel.write_bytes(bytes(data))
    r = rrvmm("pack", str(trace), "-o", str(out))
    assert r.status == 75
    assert f"kernel {kernel} changed since the trace was recorded" in _one_line(r.err)
    kernel.write_bytes(bytes(data) + b"more")  # other size
    assert rrvmm("pack", str(trace), "-o", str(out)).status == 75
    kernel.unlink()
    r = rrvmm("pack", str(trace), "-o", str(out))
    assert r.status == 66
    assert f"kernel {kernel} not found" in _one_line(r.err)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["echo.rrt"]
    # --kernel points at the right image elsewhere
    r = rrvmm("pack", str(trace), "-o", str(out), "--kernel", str(guest("echo")))
    assert r.status == 0, r.err
    r = rrvmm("pack", str(trace), "-o", str(out), "--kernel", str(guest("hello")))
    assert r.status == 75


@kvm
def test_damaged_packed_traces_give_one_line_errors(tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace, kernel, out = _record_echo(tmp_path, guest)
    packed = tmp_path / "p.rrt"
    assert rrvmm("pack", str(trace), "-o", str(packed)).status == 0
    kernel.unlink()
    good = packed.read_bytes()
    with TraceReader(packed) as r:
        blob_at = r.blobs[0].offset
        chunk_at = r.chunks[0].offset

    for where in (blob_at + 200, chunk_at + 60, len(good) - 50):  # kernel, events, footer
        bad = bytearray(good)
        bad[where] ^= 0x40
        packed.write_bytes(bytes(bad))
        rep = rrvmm("replay", str(packed), stdin=None)
        assert rep.status == 73, (where, rep.err)
        assert "corrupt" in _one_line(rep.err)

    packed.write_bytes(good[: blob_at + 500])  # cut inside the kernel
    rep = rrvmm("replay", str(packed), stdin=None)
    assert rep.status == 73
    assert "ends inside embedded blob" in _one_line(rep.err)

    packed.write_bytes(good[: chunk_at + 100])  # cut inside the events
    rep = rrvmm("replay", str(packed), stdin=None)
    assert rep.status == 73 and "was cut" in rep.err and "Traceback" not in rep.err
    assert out.startswith(rep.out)

    packed.write_bytes(good)
    rep = rrvmm("replay", str(packed), stdin=None)
    assert rep.status == 0 and rep.out == out


def test_packed_trace_carries_the_disk_image_as_recorded(tmp_path: Path, guest) -> None:  # noqa: ANN001
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(range(256)) * 2 * 16)
    trace = tmp_path / "disk.rrt"
    rec = rrvmm(
        "record", "--backend", "soft", "--kernel", str(guest("virtio")), "--virtio-cmdline",
        "--disk", str(img), "--append", "blkwrite", "-o", str(trace), stdin=None,
    )  # fmt: skip
    assert rec.status == 0, rec.err
    packed = tmp_path / "disk.packed.rrt"
    r = rrvmm("pack", str(trace), "-o", str(packed))
    assert r.status == 0, r.err
    assert "disk (8192" in r.err
    img.rename(tmp_path / "elsewhere.img")
    rep = rrvmm("replay", str(packed), stdin=None)
    assert rep.status == 0, rep.err
    assert rep.out == rec.out
    plain = rrvmm("replay", str(trace))
    assert plain.status != 0 and "cannot open disk image" in plain.err
    assert len(plain.err.strip().splitlines()) == 1
