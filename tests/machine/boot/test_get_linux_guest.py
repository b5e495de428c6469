"""scripts/get-linux-guest.py: the parts that need no network (cpio, modules, /init)."""

from __future__ import annotations

import gzip
import importlib.util
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "get-linux-guest.py"


def _load():
    spec = importlib.util.spec_from_file_location("get_linux_guest", SCRIPT)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


G = _load()


def _parse_newc(data: bytes) -> list[dict]:
    out, off = [], 0
    while True:
        assert data[off : off + 6] == b"070701", f"bad magic at {off}"
        fields = [int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = data[off + 110 : off + 110 + namesize - 1].decode()
        assert data[off + 110 + namesize - 1] == 0
        off = (off + 110 + namesize + 3) & ~3
        body = data[off : off + filesize]
        off = (off + filesize + 3) & ~3
        if name == "TRAILER!!!":
            assert len(data) % 512 == 0 and not data[off:].strip(b"\0")
            return out
        out.append({"name": name, "mode": fields[1], "rdev": (fields[9], fields[10]), "body": body})


def _ko(name: str, depends: str) -> bytes:
    return (
        b"\x7fELF junk\0license=GPL\0depends="
        + depends.encode()
        + b"\0name="
        + name.encode()
        + b"\0"
    )


def test_cpio_roundtrip() -> None:
    files = [
        ("bin", stat.S_IFDIR | 0o755, b"", (0, 0)),
        ("bin/x", stat.S_IFREG | 0o755, b"abcde", (0, 0)),
        ("bin/sh", stat.S_IFLNK | 0o777, b"x", (0, 0)),
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
    ]
    got = _parse_newc(G.build_cpio(files))
    assert [(e["name"], e["mode"], e["body"], e["rdev"]) for e in got] == files


def test_initramfs_contents() -> None:
    mods = [("virtio", b"ko1"), ("virtio_ring", b"ko2")]
    entries = {e["name"]: e for e in _parse_newc(gzip.decompress(G.initramfs(b"BB", mods)))}
    assert entries["bin/busybox"]["body"] == b"BB"
    assert entries["bin/busybox"]["mode"] == stat.S_IFREG | 0o755
    assert entries["bin/sh"]["body"] == b"busybox"
    assert entries["dev/console"]["rdev"] == (5, 1)
    init = entries["init"]["body"].decode()
    assert init.startswith("#!/bin/sh\n") and "rrvmm-linux: init" in init
    assert entries["lib/modules/rrvmm/load-order"]["body"] == b"virtio\nvirtio_ring\n"
    assert entries["lib/modules/rrvmm/virtio_ring.ko"]["body"] == b"ko2"
    # reproducible: the same inputs give the same bytes
    assert G.initramfs(b"BB", mods) == G.initramfs(b"BB", mods)
    no_mods = {e["name"] for e in _parse_newc(gzip.decompress(G.initramfs(b"BB", [])))}
    assert "lib/modules/rrvmm/load-order" not in no_mods


def test_module_closure_orders_dependencies() -> None:
    mods = {
        "lib/modules/v/kernel/drivers/virtio/virtio.ko": _ko("virtio", ""),
        "lib/modules/v/kernel/drivers/virtio/virtio_ring.ko": _ko("virtio_ring", ""),
        "lib/modules/v/kernel/drivers/net/virtio_net.ko": _ko(
            "virtio_net", "net_failover,virtio,virtio_ring"
        ),
        "lib/modules/v/kernel/drivers/net/net_failover.ko": _ko("net_failover", "failover"),
        "lib/modules/v/kernel/net/core/failover.ko": _ko("failover", ""),
        "lib/modules/v/kernel/drivers/char/hw_random/virtio-rng.ko": _ko(
            "virtio_rng", "virtio,virtio_ring"
        ),
        "lib/modules/v/kernel/fs/unrelated.ko": _ko("unrelated", ""),
    }
    order = [n for n, _ in G.module_closure(mods)]
    assert set(order) == {"virtio", "virtio_ring", "virtio_net", "net_failover", "failover",
                          "virtio_rng"}  # fmt: skip
    for mod, deps in [("virtio_net", ["net_failover", "virtio"]), ("net_failover", ["failover"])]:
        for d in deps:
            assert order.index(d) < order.index(mod)
    del mods["lib/modules/v/kernel/net/core/failover.ko"]
    with pytest.raises(G.Fail, match="failover"):
        G.module_closure(mods)


@pytest.mark.skipif(shutil.which("sh") is None or shutil.which("sed") is None, reason="no sh")
@pytest.mark.parametrize(
    ("cmdline", "name", "value"),
    [
        ('console=ttyS0 rrvmm.run="echo a; echo b" quiet', "rrvmm.run", "echo a; echo b"),
        ("rrvmm.run=uname rrvmm.shell=0", "rrvmm.run", "uname"),
        ("rrvmm.run=uname rrvmm.shell=0", "rrvmm.shell", "0"),
        ("xrrvmm.shell=0", "rrvmm.shell", ""),
        ("console=ttyS0", "rrvmm.run", ""),
    ],
)
def test_init_reads_kernel_parameters(tmp_path: Path, cmdline: str, name: str, value: str) -> None:
    func = G.INIT_SCRIPT.split("arg() {", 1)[1].split("\n}\n", 1)[0]
    cmdfile = tmp_path / "cmdline"
    cmdfile.write_text(cmdline + "\n")
    script = "arg() {" + func.replace("/proc/cmdline", str(cmdfile)) + "\n}\n" + f"arg {name}\n"
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == value


def _cache() -> Path:
    root = os.environ.get("RRVMM_CACHE")
    return Path(root) / "linux" if root else Path.home() / ".cache" / "rrvmm" / "linux"


@pytest.mark.qemu
@pytest.mark.slow
def test_cached_guest_reaches_init_in_qemu() -> None:
    """The cached kernel + initramfs run /init's commands under QEMU TCG (the reference)."""
    kernel, initrd = _cache() / "vmlinuz", _cache() / "initrd.img"
    if not (kernel.exists() and initrd.exists()):
        pytest.skip("no cached Linux guest (run scripts/get-linux-guest.py)")
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 not installed")
    append = (
        "console=ttyS0 noapic nolapic nokaslr panic=-1 rdinit=/init quiet"
        ' rrvmm.run="echo sum=$((40+2)); cat /proc/cmdline >/dev/null" rrvmm.shell=0'
    )
    cmd = [qemu, "-machine", "isapc", "-cpu", "qemu64", "-m", "256M", "-nographic", "-no-reboot"]
    cmd += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", append]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert "rrvmm-linux: init" in out.stdout
    assert "sum=42" in out.stdout
    assert "rrvmm-linux: run exited 0" in out.stdout
    assert "rrvmm-linux: reboot" in out.stdout
