"""The virtio test guest on the real machine: disk, entropy, console and network, recorded
and replayed, with a host peer on UDP while recording and none while replaying."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from machines import MACHINES
from rrvmm_cli import rrvmm


@pytest.fixture(params=MACHINES)
def machine(request: pytest.FixtureRequest) -> list[str]:
    """CPU backend and interrupt controller: completions are interrupts on each."""
    return request.param


def _disk(tmp_path: Path) -> Path:
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(range(256)) * 2 * 64)  # 64 sectors
    return img


def test_disk_entropy_and_malformed_chains_record_and_replay(
    machine: list[str], tmp_path: Path, guest
) -> None:  # noqa: ANN001
    img = _disk(tmp_path)
    before = (hashlib.sha256(img.read_bytes()).hexdigest(), img.stat().st_mtime_ns)
    trace = tmp_path / "v.rrt"
    rec = rrvmm(
        "record", *machine, "--kernel", str(guest("virtio")), "--virtio-cmdline",
        "--disk", str(img), "--append", "blkwrite malformed", "-o", str(trace), stdin=None,
    )  # fmt: skip
    assert rec.status == 0, rec.err
    assert "virtio-blk: sector 1 write+read back ok" in rec.out
    assert "malformed: needs-reset ok" in rec.out
    assert "malformed: bad-address needs-reset ok" in rec.out
    assert "virtio: done, 0 failures" in rec.out
    # each malformed chain: one log line, and rrvmm went on
    assert "virtio-rng: queue 0: descriptor chain from 0 is longer" in rec.err
    assert "is not guest RAM; device needs reset" in rec.err
    rep = rrvmm("replay", str(trace), stdin=None)
    assert rep.status == 0, rep.err
    assert rep.out == rec.out
    # the guest wrote sector 1, but only into the overlay
    assert (hashlib.sha256(img.read_bytes()).hexdigest(), img.stat().st_mtime_ns) == before


def test_disk_write_changes_the_image_and_replay_refuses_it_after(tmp_path: Path, guest) -> None:  # noqa: ANN001
    img = _disk(tmp_path)
    trace = tmp_path / "w.rrt"
    rec = rrvmm(
        "record", "--backend", "soft", "--kernel", str(guest("virtio")), "--virtio-cmdline",
        "--disk", str(img), "--disk-write", "--append", "blkwrite", "-o", str(trace),
        stdin=None,
    )  # fmt: skip
    assert rec.status == 0, rec.err
    assert img.read_bytes()[512:1024] != (bytes(range(256)) * 2)
    rep = rrvmm("replay", str(trace))
    assert rep.status == 75 and "replay needs a copy from before" in rep.err
    assert len(rep.err.strip().splitlines()) == 1


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_console_and_network_echo_replay_without_a_peer(
    machine: list[str], tmp_path: Path, guest
) -> None:  # noqa: ANN001
    trace = tmp_path / "e.rrt"
    net_port, con_port = _free_udp_port(), _free_udp_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "rrvmm", "record", *machine, "--kernel",
            str(guest("virtio")), "--virtio-cmdline", "--net", f"udp:127.0.0.1:{net_port}",
            "--vconsole", f"udp:127.0.0.1:{con_port}", "--append", "echo=console echo=net",
            "-o", str(trace),
        ],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not trace.exists():  # the ports are bound before the trace is created
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
        con = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        net = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        con.settimeout(20)
        net.settimeout(20)
        con.sendto(b"hello ", ("127.0.0.1", con_port))
        assert con.recvfrom(100)[0] == b"hello "
        con.sendto(b"world q", ("127.0.0.1", con_port))
        assert con.recvfrom(100)[0] == b"world q"
        for frame in (b"frame-one", b"frame-two" * 100):
            net.sendto(frame, ("127.0.0.1", net_port))
            assert net.recvfrom(2000)[0] == frame
        net.sendto(b"quit", ("127.0.0.1", net_port))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "virtio-console: echoed 13 bytes" in text
    assert "virtio-net: echoed 2 frames" in text
    rep = rrvmm("replay", str(trace), stdin=None)  # nobody listens now
    assert rep.status == 0, rep.err
    assert rep.out == text


def test_bad_virtio_options_are_one_line_errors(tmp_path: Path, guest) -> None:  # noqa: ANN001
    k = str(guest("hello"))
    r = rrvmm("run", "--backend", "soft", "--kernel", k, "--disk", str(tmp_path / "none.img"))
    assert r.status != 0 and len(r.err.strip().splitlines()) == 1 and "none.img" in r.err
    r = rrvmm("run", "--backend", "soft", "--kernel", k, "--net", "tcp:1.2.3.4")
    assert r.status == 64 and "expected udp:HOST:PORT" in r.err
    r = rrvmm("run", "--backend", "soft", "--kernel", k, "--disk", str(tmp_path))
    assert r.status == 66 and "Is a directory" in r.err
    r = rrvmm("run", "--backend", "soft", "--kernel", k, "--disk-write")
    assert r.status == 64 and "--disk-write goes with --disk" in r.err
    assert os.path.exists(k)


@pytest.mark.parametrize("flag", ["--vconsole", "--net"])
def test_a_port_in_use_is_refused(tmp_path: Path, guest, flag: str) -> None:  # noqa: ANN001
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        r = rrvmm("run", "--backend", "soft", "--kernel", str(guest("hello")), flag,
                  f"udp:127.0.0.1:{port}")  # fmt: skip
    assert r.status == 64 and "in use" in r.err
