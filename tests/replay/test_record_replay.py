"""Record then replay on each backend, through the real command line and real trace files."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from machines import MACHINES
from rrvmm.cpu.backend import ExitKind
from rrvmm.replay.container import TraceError, TraceReader
from rrvmm.replay.events import EventKind
from rrvmm_cli import rrvmm, rrvmm_after

COM1 = 0x3F8
GUESTS = [
    ("hello", "exit=0", b"", 0),
    ("timer", "", b"", 0),
    ("rtc", "", b"", 0),
    ("exceptions", "", b"", 0),
    ("echo", "", b"alpha\nbeta\nquit\n", 0),
    ("irqhash", "hz=1000 loops=1", b"", 0),
    ("corrupt", "", b"", 3),
    ("triplefault", "", b"", 70),
    ("pio", "n=500", b"", 0),
    ("compute", "n=5000", b"", 0),
]


def _record(  # noqa: ANN202
    machine: str | list[str],
    tmp_path: Path,
    kernel: str,
    append: str,
    stdin: bytes | None,
    name: str = "t",
):
    """Record ``kernel`` on a backend (by name) or a machine (`record` options)."""
    options = ["--backend", machine] if isinstance(machine, str) else machine
    trace = tmp_path / f"{name}.rrt"
    r = rrvmm(
        "record", *options, "--kernel", kernel, "--append", append,
        "-o", str(trace), stdin=stdin,
    )  # fmt: skip
    assert trace.exists(), r.err
    return trace, r


@pytest.mark.parametrize("machine", MACHINES)
@pytest.mark.parametrize(("name", "append", "stdin", "status"), GUESTS)
def test_replay_reprints_identical_output(  # noqa: PLR0913
    machine: list[str],
    tmp_path: Path,
    guest,
    name: str,
    append: str,
    stdin: bytes,
    status: int,  # noqa: ANN001
) -> None:
    trace, rec = _record(machine, tmp_path, str(guest(name)), append, stdin)
    assert rec.status == status, rec.err
    assert f"to {trace}" in rec.err
    rep = rrvmm("replay", str(trace), stdin=None)
    assert rep.status == 0, rep.err
    assert rep.out == rec.out
    assert "replay matched all" in rep.err


@pytest.mark.parametrize("machine", MACHINES)
def test_uart_guest_with_typed_lines(machine: list[str], tmp_path: Path, guest) -> None:  # noqa: ANN001
    """Typed lines reach the guest (with --irqchip kernel: waking it halted inside KVM)."""
    trace = tmp_path / "u.rrt"
    rec = rrvmm_after(
        "record", *machine, "--kernel", str(guest("uart")), "--append", "lines=2",
        "-o", str(trace),
        wait_for=b"ready\n", send=b"first line\nsecond\n",
    )  # fmt: skip
    assert rec.status == 0, rec.out + rec.err
    assert "got: first line\ngot: second\n" in rec.out
    rep = rrvmm("replay", str(trace), stdin=None)
    assert rep.status == 0, rep.err
    assert rep.out == rec.out


REPO = Path(__file__).resolve().parents[2]  # run from tmp_path: this checkout's rrvmm


def test_demo_is_the_default_and_records_into_the_store(backend: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    rec = subprocess.run(
        [sys.executable, "-m", "rrvmm", "record", "--backend", backend],
        cwd=tmp_path, input=b"hi\n", capture_output=True, timeout=60,
        env={**os.environ, "RRVMM_TRACE_DIR": str(store), "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert rec.returncode == 0, rec.stderr
    assert f"to {store}/demo-0.rrt (demo-0:".encode() in rec.stderr
    rep = rrvmm("replay", stdin=None, env={"RRVMM_TRACE_DIR": str(store)})  # the latest
    assert rep.status == 0, rep.err
    assert rep.out.encode() == rec.stdout


# ~90 landings on KVM (~1.7 s to replay); the software CPU's guest time is instruction time,
# so it needs a faster tick to be interrupted at all
IRQHASH_20 = {"kvm": "hz=1000 loops=1 iters=10000", "soft": "hz=10000 loops=3"}


def test_timer_landing_guest_replays_exactly_20_of_20(backend: str, tmp_path: Path, guest) -> None:  # noqa: ANN001
    hashes = set()
    for i in range(20):
        kernel = str(guest("irqhash"))
        trace, rec = _record(backend, tmp_path, kernel, IRQHASH_20[backend], None, f"i{i}")
        assert rec.status == 0, rec.err
        rep = rrvmm("replay", str(trace), stdin=None)
        assert rep.status == 0, f"recording {i}: {rep.err}"
        assert rep.out == rec.out
        hashes.add(re.search(r"hash=(0x[0-9a-f]+)", rec.out).group(1))
        assert int(re.search(r"ticks=(\d+)", rec.out).group(1)) > 5  # interrupts did land
    if backend == "kvm":
        # the guest really depends on where interrupts land: on KVM, the recordings differ
        assert len(hashes) > 1


def test_serial_input_replays_without_stdin(backend: str, tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace, rec = _record(backend, tmp_path, str(guest("echo")), "", b"typed\nquit\n")
    rep = rrvmm("replay", str(trace), stdin=None)
    assert rep.status == 0 and "> typed" in rep.out and rep.out == rec.out


def test_wrong_kernel_is_refused(any_backend: str, tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace, _ = _record(any_backend, tmp_path, str(guest("hello")), "", None)
    rep = rrvmm("replay", str(trace), "--kernel", str(guest("timer")))
    assert rep.status == 75
    assert len(rep.err.strip().splitlines()) == 1
    assert "not the image this trace was recorded with" in rep.err


def test_missing_kernel_for_replay(any_backend: str, tmp_path: Path, guest) -> None:  # noqa: ANN001
    kernel = tmp_path / "k.mb"
    kernel.write_bytes(guest("hello").read_bytes())
    trace, _ = _record(any_backend, tmp_path, str(kernel), "", None)
    kernel.unlink()
    rep = rrvmm("replay", str(trace))
    assert rep.status == 66 and "not found" in rep.err


def _big_trace(backend: str, tmp_path: Path, guest) -> tuple[Path, object]:  # noqa: ANN001
    return _record(backend, tmp_path, str(guest("pio")), "n=30000", None, "big")


def test_flipped_byte_in_a_chunk(any_backend: str, tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace, _ = _big_trace(any_backend, tmp_path, guest)
    data = bytearray(trace.read_bytes())
    data[len(data) // 3] ^= 0x40
    trace.write_bytes(bytes(data))
    rep = rrvmm("replay", str(trace), stdin=None)
    assert rep.status == 73
    line = rep.err.strip().splitlines()[-1]
    assert "corrupt" in line and "Traceback" not in rep.err


def test_truncated_trace_replays_its_prefix(any_backend: str, tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace, rec = _big_trace(any_backend, tmp_path, guest)
    data = trace.read_bytes()
    trace.write_bytes(data[: len(data) // 2])
    rep = rrvmm("replay", str(trace), stdin=None)
    assert rep.status == 73
    assert "was cut after exit" in rep.err and "Traceback" not in rep.err
    assert rec.out.startswith(rep.out)


def test_newer_format_version(any_backend: str, tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace, _ = _record(any_backend, tmp_path, str(guest("hello")), "", None)
    data = bytearray(trace.read_bytes())
    data[8:12] = (99).to_bytes(4, "little")
    trace.write_bytes(bytes(data))
    rep = rrvmm("replay", str(trace))
    assert rep.status == 73
    assert len(rep.err.strip().splitlines()) == 1 and "version" in rep.err


def test_not_a_trace(any_backend: str, tmp_path: Path) -> None:
    f = tmp_path / "x.rrt"
    f.write_bytes(b"hello" * 100)
    for cmd in (("replay", str(f)), ("trace", "info", str(f))):
        r = rrvmm(*cmd)
        assert r.status == 73 and len(r.err.strip().splitlines()) == 1


def _serial_on_disk(trace: Path) -> bytes:
    """What the guest wrote to COM1, as far as the (still growing) trace on disk tells."""
    try:
        with TraceReader(trace) as reader:
            return b"".join(
                ev[4].to_bytes(1, "little")
                for _, ev in reader.events()
                if ev[0] == EventKind.EXIT and ev[1] == ExitKind.IO_OUT and ev[2:4] == (COM1, 1)
            )
    except TraceError:
        return b""  # not even a header yet


def test_recording_killed_with_sigkill_stays_replayable(  # noqa: ANN001
    any_backend: str, tmp_path: Path, guest
) -> None:
    trace = tmp_path / "killed.rrt"
    p = subprocess.Popen(
        [sys.executable, "-m", "rrvmm", "record", "--backend", any_backend, "--kernel",
         str(guest("echo")), "-o", str(trace)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert p.stdin and p.stdout
    p.stdin.write(b"before the kill\n")
    p.stdin.flush()
    seen = b""
    deadline = time.monotonic() + 30
    while b"> before the kill" not in seen and time.monotonic() < deadline:
        seen += p.stdout.read1(4096)
    # the recorder flushes while the guest waits for input: kill once the echo is on disk
    while b"> before the kill" not in _serial_on_disk(trace) and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    rep = rrvmm("replay", str(trace), stdin=None)
    assert rep.status == 73, rep.err
    assert "was cut" in rep.err
    assert "> before the kill" in rep.out


def test_trace_info_dump_stats(any_backend: str, tmp_path: Path, guest) -> None:  # noqa: ANN001
    import json

    trace, rec = _record(any_backend, tmp_path, str(guest("timer")), "", None)
    info = json.loads(rrvmm("trace", "info", str(trace), "--json").out)
    assert info["backend"] == "kvm" and info["complete"] is True
    assert info["images"]["kernel"]["path"].endswith("timer.mb")
    assert info["end"]["status"] == 0
    stats = json.loads(rrvmm("trace", "stats", str(trace), "--json").out)
    assert stats["exits"] == info["end"]["exits"]
    assert stats["events"]["INJECT"] == stats["injections"] >= 20
    dump = rrvmm("trace", "dump", str(trace), "--json").out.splitlines()
    assert len(dump) == sum(stats["events"].values())
    assert json.loads(dump[0])["event"] == "EXIT"
    assert "EXIT" in rrvmm("trace", "dump", str(trace)).out


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a pty")
def test_progress_on_a_terminal_only(any_backend: str, tmp_path: Path, guest) -> None:  # noqa: ANN001
    trace, _ = _record(any_backend, tmp_path, str(guest("pio")), "n=60000", None, "long")
    plain = rrvmm("replay", str(trace), stdin=None)
    assert "replaying exit" not in plain.err  # quiet in pipes
    tty = subprocess.run(
        ["script", "-qc", f"{sys.executable} -m rrvmm replay {trace}", "/dev/null"],
        capture_output=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert b"replaying exit" in tty.stdout
    assert b"replay matched all" in tty.stdout


@pytest.mark.kvm
def test_kvm_recordings_replay_on_the_software_backend_10_of_10(tmp_path: Path, guest) -> None:  # noqa: ANN001
    for i in range(10):
        kernel = str(guest("irqhash"))
        trace, rec = _record("kvm", tmp_path, kernel, "hz=1000 loops=1", None, f"x{i}")
        assert rec.status == 0, rec.err
        rep = rrvmm("replay", "--backend", "soft", str(trace), stdin=None)
        assert rep.status == 0, f"recording {i}: {rep.err}"
        assert rep.out == rec.out
