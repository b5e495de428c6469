"""The stock Debian kernel on rrvmm's virtio devices, found through ACPI (no rebuild).

One boot: it mounts an ext4 image from virtio-blk, reads a file and writes one; brings up
eth0 and answers pings that the test sends as raw frames over the UDP host end; echoes
bytes on virtio-console (hvc0); then powers off (status 0). The recording replays exactly
with no peer attached, and the user's image is untouched.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest
from test_linux_guest import APPEND, INITRD, MACHINE, VMLINUZ

from rrvmm_cli import rrvmm, rrvmm_after

pytestmark = [
    pytest.mark.skipif(
        not (VMLINUZ.exists() and INITRD.exists()),
        reason="no Linux guest: run scripts/get-linux-guest.py first",
    ),
    pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4 (e2fsprogs)"),
]

GUEST_MAC, HOST_MAC = bytes.fromhex("525400123456"), bytes.fromhex("525400000002")
GUEST_IP, HOST_IP = bytes([10, 0, 2, 15]), bytes([10, 0, 2, 2])
RUN = (
    "mkdir -p /mnt; mount /dev/vda /mnt && cat /mnt/greeting.txt"
    " && echo written-by-guest > /mnt/new.txt && cat /mnt/new.txt && umount /mnt;"
    " ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0;"
    " stty -F /dev/hvc0 raw -echo; cat /dev/hvc0 > /dev/hvc0 &"
    " echo ready-$((6 * 7)); read x; poweroff -f"
)


def _image(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "greeting.txt").write_text("hello from the disk\n")
    img = tmp_path / "disk.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(img), "8M"], check=True)
    return img


def _fingerprint(p: Path) -> tuple[str, int]:
    return hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ping(seq: int, payload: bytes) -> bytes:
    """An Ethernet frame: ICMP echo request from the host to the guest."""
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x7272, seq) + payload
    icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), seq, 0, 64, 1, 0, HOST_IP,
                     GUEST_IP)  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return GUEST_MAC + HOST_MAC + b"\x08\x00" + ip + icmp


def _arp_reply(request: bytes) -> bytes | None:
    """Answer the guest's "who has 10.0.2.2" (it asks before it can reply to a ping)."""
    if request[12:14] != b"\x08\x06" or request[20:22] != b"\x00\x01" or request[38:42] != HOST_IP:
        return None
    sender_mac, sender_ip = request[22:28], request[28:32]
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + HOST_MAC + HOST_IP + sender_mac + sender_ip
    return sender_mac + HOST_MAC + b"\x08\x06" + arp


def _talk(net_port: int, con_port: int) -> None:
    net = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    con = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    net.settimeout(60)
    con.settimeout(60)
    for seq, payload in enumerate((b"rrvmm-ping-one", b"rrvmm-ping-two" * 40), 1):
        net.sendto(_ping(seq, payload), ("127.0.0.1", net_port))
        while True:
            frame = net.recvfrom(4096)[0]
            reply = _arp_reply(frame)
            if reply is not None:
                net.sendto(reply, ("127.0.0.1", net_port))
                continue
            if frame[12:14] == b"\x08\x00" and frame[34] == 0:  # IPv4, ICMP echo reply
                assert frame[40:42] == struct.pack("!H", seq) and frame[42:] == payload
                break
    for data in (b"console bytes ", b"for hvc0"):
        con.sendto(data, ("127.0.0.1", con_port))
        got = b""
        while len(got) < len(data):
            got += con.recvfrom(4096)[0]
        assert got == data


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_disk_network_console_poweroff_and_replay(tmp_path: Path) -> None:
    img = _image(tmp_path)
    before = _fingerprint(img)
    trace = tmp_path / "linux-virtio.rrt"
    net_port, con_port = _free_udp_port(), _free_udp_port()
    rec = rrvmm_after(
        "record", *MACHINE, "--disk", str(img), "--net", f"udp:127.0.0.1:{net_port}",
        "--vconsole", f"udp:127.0.0.1:{con_port}", "-o", str(trace),
        "--append", f'{APPEND} rrvmm.shell=0 rrvmm.run="{RUN}"',
        wait_for=b"ready-42", send=b"done\n", timeout=600,
        between=lambda: _talk(net_port, con_port),
    )  # fmt: skip
    assert rec.status == 0, rec.err[-2000:]  # poweroff: a clean power-off is status 0
    assert "[vda]" in rec.out
    assert "hello from the disk" in rec.out and "written-by-guest" in rec.out
    assert "reboot: Power down" in rec.out
    rep = rrvmm("replay", str(trace), stdin=None, timeout=600)  # no peer now
    assert rep.status == 0, rep.err[-2000:]
    assert rep.out == rec.out
    assert "powered off (ACPI S5)" in rep.err
    assert _fingerprint(img) == before
