#!/usr/bin/env python3
"""Fetch a Debian cloud kernel and build a busybox initramfs for rrvmm Linux guests.

    scripts/get-linux-guest.py [--dbg] [--no-modules] [--cache DIR] [--rebuild]

What it does, all cached under ``$RRVMM_CACHE/linux`` (default ``~/.cache/rrvmm/linux``):

1. ``apt-cache`` resolves ``linux-image-cloud-amd64`` to the versioned image package it
   depends on (e.g. ``linux-image-6.1.0-56-cloud-amd64``); ``apt-get download`` fetches it and
   ``busybox-static`` into ``debs/`` (runs ``apt-get update`` once if the lists are missing
   and we are root). Nothing but the configured Debian mirror is contacted.
2. ``dpkg-deb --fsys-tarfile`` streams the kernel package: ``vmlinuz-<ver>`` and the virtio
   modules (virtio, virtio_ring, virtio_mmio, virtio_pci, virtio_blk, virtio_net,
   virtio_console, virtio-rng and what they depend on, from ``.modinfo``) are kept.
3. The initramfs (cpio newc, gzip; written here in Python, no cpio tool needed) holds
   ``/bin/busybox``, ``/init``, ``/dev/console``, ``/dev/null`` and the modules with their load
   order. ``/init`` installs the busybox applets, mounts proc, sysfs and devtmpfs, prints
   ``rrvmm-linux: init``, loads the modules (skip with ``rrvmm.modules=0``), runs the commands
   of ``rrvmm.run="cmd; cmd"`` from the kernel command line, then starts a shell on the
   console (``rrvmm.shell=0``: no shell). When the shell exits, ``reboot -f`` resets the
   machine through the i8042, which ends an rrvmm run.
4. ``--dbg``: streams the matching ``-dbg`` package (283 MB .deb for 6.1.0-56) from the URL
   ``apt-get download --print-uris`` gives and keeps ``System.map`` (3.6 MB) and ``vmlinux``
   with DWARF (590 MB on disk) from the start of its data.tar, stopping as soon as both are
   out: 96 MB of the 283 MB are read (~15 s here). The stopped download cannot be checked
   against apt's sha256 of the whole .deb.

Prints ``vmlinuz=PATH`` and ``initrd=PATH`` (and ``system_map=``/``vmlinux=`` with ``--dbg``) on
stdout, so ``eval "$(scripts/get-linux-guest.py)"`` sets shell variables. Progress goes to
stderr. A second run with everything cached does no network access and rewrites nothing.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX_PACKAGE = "busybox-static"
# module names as in .modinfo (dashes become underscores); dependencies are added from .modinfo
WANTED_MODULES = (
    "virtio",
    "virtio_ring",
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
)
INITRAMFS_FORMAT = 2  # bump when the layout or /init changes: cached initrds are rebuilt

INIT_SCRIPT = r"""#!/bin/sh
# rrvmm Linux guest /init (built by scripts/get-linux-guest.py)
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin HOME=/root TERM=${TERM:-vt100}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /tmp /root
echo "rrvmm-linux: init"
arg() {  # value of NAME=... or NAME="..." on the kernel command line
    sed -n "s/.*\(^\| \)$1=\"\([^\"]*\)\".*/\2/p; t; s/.*\(^\| \)$1=\([^ ]*\).*/\2/p" /proc/cmdline
}
if [ -f /lib/modules/rrvmm/load-order ] && [ "$(arg rrvmm.modules)" != 0 ]; then
    while read -r m; do
        insmod "/lib/modules/rrvmm/$m.ko" || echo "rrvmm-linux: insmod $m failed"
    done < /lib/modules/rrvmm/load-order
    echo "rrvmm-linux: modules loaded"
fi
run=$(arg rrvmm.run)
if [ -n "$run" ]; then
    echo "rrvmm-linux: run: $run"
    sh -c "$run"
    echo "rrvmm-linux: run exited $?"
fi
if [ "$(arg rrvmm.shell)" != 0 ]; then
    echo "rrvmm-linux: shell"
    setsid cttyhack sh -l
fi
echo "rrvmm-linux: reboot"
reboot -f
"""


def log(msg: str) -> None:
    print(f"get-linux-guest: {msg}", file=sys.stderr, flush=True)


class Fail(Exception):
    pass


def run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise Fail(f"{cmd[0]} not found (this script needs Debian's apt and dpkg)") from None
    if p.returncode != 0:
        raise Fail(f"{' '.join(cmd)} failed: {p.stderr.strip().splitlines()[-1:]}")
    return p.stdout


# --- apt ---
@functools.cache
def _apt_record(package: str) -> str:
    return run(["apt-cache", "show", "--no-all-versions", package])


def _apt_field(package: str, field: str) -> str:
    m = re.search(rf"^{field}: (.*)$", _apt_record(package), re.M)
    if not m:
        raise Fail(f"apt-cache show {package}: no {field} field")
    return m.group(1).strip()


def apt_ready(update: bool) -> None:
    """Make sure apt knows the packages; run apt-get update once if it does not."""
    try:
        _apt_field(META_PACKAGE, "Version")
        return
    except Fail:
        if not update:
            raise
    if os.geteuid() != 0:
        raise Fail(
            f"apt does not know {META_PACKAGE}: run 'sudo apt-get update' first"
            " (Debian 12 main, amd64)"
        )
    log("apt-get update")
    run(["apt-get", "update"])
    _apt_record.cache_clear()
    _apt_field(META_PACKAGE, "Version")


def kernel_package() -> str:
    """The versioned image package the meta package depends on."""
    depends = _apt_field(META_PACKAGE, "Depends")
    m = re.search(r"(linux-image-[0-9][^ ,(]*-cloud-amd64)\b", depends)
    if not m:
        raise Fail(f"{META_PACKAGE} depends on no linux-image-*-cloud-amd64: {depends}")
    return m.group(1)


def download(package: str, debs: Path) -> Path:
    """``apt-get download`` into ``debs`` unless the same version is already there."""
    version = _apt_field(package, "Version")
    name = f"{package}_{version.split(':', 1)[-1]}_amd64.deb"
    path = debs / name
    if path.exists():
        return path
    debs.mkdir(parents=True, exist_ok=True)
    size = int(_apt_field(package, "Size"))
    log(f"downloading {package} {version} ({size / 1e6:.1f} MB)")
    with tempfile.TemporaryDirectory(dir=debs) as tmp:
        run(["apt-get", "download", f"{package}={version}"], cwd=Path(tmp))
        got = [p for p in Path(tmp).iterdir() if p.suffix == ".deb"]
        if len(got) != 1:
            raise Fail(f"apt-get download {package} left {len(got)} .deb files")
        got[0].rename(path)
    return path


def deb_members(deb: Path, want) -> dict[str, bytes]:
    """Regular files of the .deb's data.tar for which ``want(name)`` is true."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    out: dict[str, bytes] = {}
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for m in tar:
            name = m.name.removeprefix("./")
            if m.isfile() and want(name):
                f = tar.extractfile(m)
                assert f is not None
                out[name] = f.read()
    if proc.wait() != 0:
        raise Fail(f"dpkg-deb --fsys-tarfile {deb.name} failed")
    return out


# --- modules ---
def modinfo(ko: bytes) -> dict[str, str]:
    """The key=value strings of a module's .modinfo section (found by pattern, no ELF parse)."""
    info: dict[str, str] = {}
    for key in (b"name", b"depends"):
        m = re.search(rb"\0" + key + rb"=([^\0]*)\0", ko)
        if m:
            info[key.decode()] = m.group(1).decode()
    return info


def module_closure(mods: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """WANTED_MODULES plus their dependencies, in an order insmod accepts."""
    by_name: dict[str, tuple[bytes, list[str]]] = {}
    for path, body in mods.items():
        info = modinfo(body)
        name = info.get("name") or Path(path).stem.replace("-", "_")
        deps = [d for d in info.get("depends", "").split(",") if d]
        by_name[name] = (body, deps)
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in chain:
            raise Fail(f"module dependency loop: {' -> '.join(chain + (name,))}")
        if name not in by_name:
            raise Fail(f"module {name} (needed by {chain[-1] if chain else 'us'}) not found")
        for d in by_name[name][1]:
            visit(d, chain + (name,))
        order.append(name)

    for name in WANTED_MODULES:
        if name in by_name:
            visit(name, ())
        else:
            log(f"module {name} is not in the package (built in?), skipped")
    return [(n, by_name[n][0]) for n in order]


# --- cpio newc ---
def _cpio_entry(name: str, mode: int, body: bytes = b"", ino: int = 0, rdev=(0, 0)) -> bytes:
    nb = name.encode() + b"\0"
    hdr = "070701" + "".join(
        f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(nb), 0)
    )
    out = hdr.encode() + nb
    out += b"\0" * (-len(out) % 4)
    out += body + b"\0" * (-len(body) % 4)
    return out


def build_cpio(files: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """cpio newc of (path, mode, body, (rdev major, minor)); symlinks' body is the target."""
    out = [_cpio_entry(p, mode, body, i + 1, rdev) for i, (p, mode, body, rdev) in enumerate(files)]
    out.append(_cpio_entry("TRAILER!!!", 0))
    data = b"".join(out)
    return data + b"\0" * (-len(data) % 512)


def initramfs(busybox: bytes, modules: list[tuple[str, bytes]]) -> bytes:
    d, f, x, lnk = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755, stat.S_IFLNK
    files: list[tuple[str, int, bytes, tuple[int, int]]] = []
    for path in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp",
                 "root", "etc", "lib", "lib/modules", "lib/modules/rrvmm"):  # fmt: skip
        files.append((path, d, b"", (0, 0)))
    files.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    files.append(("dev/null", stat.S_IFCHR | 0o666, b"", (1, 3)))
    files.append(("bin/busybox", x, busybox, (0, 0)))
    files.append(("bin/sh", lnk | 0o777, b"busybox", (0, 0)))
    files.append(("init", x, INIT_SCRIPT.encode(), (0, 0)))
    files.append(("etc/passwd", f, b"root:x:0:0:root:/root:/bin/sh\n", (0, 0)))
    files.append(("etc/group", f, b"root:x:0:\n", (0, 0)))
    if modules:
        for name, body in modules:
            files.append((f"lib/modules/rrvmm/{name}.ko", f, body, (0, 0)))
        order = "".join(n + "\n" for n, _ in modules).encode()
        files.append(("lib/modules/rrvmm/load-order", f, order, (0, 0)))
    return gzip.compress(build_cpio(files), compresslevel=9, mtime=0)


# --- -dbg streaming ---
class _ArStream(io.RawIOBase):
    """The body of one member of an ar archive read from a stream."""

    def __init__(self, src, size: int) -> None:
        self.src, self.left, self.consumed = src, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.left <= 0:
            return 0
        n = self.src.readinto(memoryview(b)[: min(len(b), self.left)])
        self.left -= n
        self.consumed += n
        return n


def _open_data_tar(resp) -> tuple[io.BufferedIOBase, _ArStream]:
    """Skip through the .deb (ar) stream to data.tar.*: the decompressed tar, the raw reader."""
    if resp.read(8) != b"!<arch>\n":
        raise Fail("the -dbg download is not a .deb")
    while True:
        hdr = resp.read(60)
        if len(hdr) < 60:
            raise Fail("no data.tar in the -dbg package")
        name, size = hdr[:16].decode().strip().rstrip("/"), int(hdr[48:58])
        if name.startswith("data.tar"):
            raw = _ArStream(resp, size)
            body = io.BufferedReader(raw, 1 << 20)
            if name.endswith(".xz"):
                return lzma.LZMAFile(body), raw
            if name.endswith(".gz"):
                return gzip.GzipFile(fileobj=body), raw
            if name == "data.tar":
                return body, raw
            raise Fail(f"cannot decompress {name} here (need .xz or .gz)")
        resp.read(size + (size & 1))


def fetch_dbg(package: str, out_dir: Path, release: str) -> dict[str, Path]:
    """System.map and vmlinux from the start of ``package``'s data.tar, streamed."""
    want = {
        "system_map": out_dir / f"System.map-{release}",
        "vmlinux": out_dir / f"vmlinux-{release}",
    }
    if all(p.exists() for p in want.values()):
        return want
    uris = run(["apt-get", "download", "--print-uris", package]).split()
    if not uris:
        raise Fail(f"apt-get download --print-uris {package}: no URI")
    url = uris[0].strip("'")
    size = int(_apt_field(package, "Size"))
    log(f"streaming {package} ({size / 1e6:.0f} MB .deb) for System.map and vmlinux: {url}")
    got: dict[str, Path] = {}
    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (the apt mirror)
        data, raw = _open_data_tar(resp)
        with tarfile.open(fileobj=data, mode="r|") as tar:
            for m in tar:
                base = Path(m.name).name
                key = "system_map" if base == want["system_map"].name else (
                    "vmlinux" if base == want["vmlinux"].name else None)  # fmt: skip
                if key is None or not m.isfile():
                    continue
                f = tar.extractfile(m)
                assert f is not None
                tmp = want[key].with_name(want[key].name + ".part")
                with tmp.open("wb") as o:
                    shutil.copyfileobj(f, o, 1 << 20)
                tmp.rename(want[key])
                got[key] = want[key]
                log(f"{base}: {m.size / 1e6:.0f} MB")
                if len(got) == len(want):
                    break  # the rest (module debug info) is not needed: stop the download
        log(f"read {raw.consumed / 1e6:.0f} MB of the {size / 1e6:.0f} MB package")
    missing = set(want) - set(got)
    if missing:
        raise Fail(f"{package} has no {', '.join(sorted(missing))}")
    return got


# --- main ---
def cache_root(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("RRVMM_CACHE"):
        return Path(os.environ["RRVMM_CACHE"]) / "linux"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rrvmm" / "linux"


def _link(name: Path, target: Path) -> None:
    if name.is_symlink() and os.readlink(name) == target.name:
        return
    tmp = name.with_name(name.name + ".tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.name)
    tmp.replace(name)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cache", help="cache directory (default $RRVMM_CACHE/linux or ~/.cache/rrvmm/linux)"
    )
    ap.add_argument(
        "--dbg", action="store_true", help="also System.map and vmlinux from the -dbg package"
    )
    ap.add_argument("--no-modules", action="store_true", help="leave the virtio modules out")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the initramfs even if cached")
    args = ap.parse_args(argv)
    root = cache_root(args.cache)
    root.mkdir(parents=True, exist_ok=True)
    try:
        apt_ready(update=True)
        kpkg = kernel_package()
        release = kpkg.removeprefix("linux-image-")
        vmlinuz = root / f"vmlinuz-{release}"
        initrd = root / f"initrd-{release}{'-nomod' if args.no_modules else ''}.img"
        kdeb = download(kpkg, root / "debs")
        bdeb = download(BUSYBOX_PACKAGE, root / "debs")
        recipe = json.dumps(
            [INITRAMFS_FORMAT, INIT_SCRIPT, kdeb.name, bdeb.name, args.no_modules, WANTED_MODULES]
        ).encode()
        stamp = initrd.with_suffix(".recipe")
        digest = hashlib.sha256(recipe).hexdigest()
        fresh = (
            vmlinuz.exists() and initrd.exists() and stamp.exists()
            and stamp.read_text() == digest and not args.rebuild
        )  # fmt: skip
        if not fresh:
            log(f"extracting {kdeb.name}")
            mod_re = re.compile(r"lib/modules/[^/]+/kernel/.*\.ko$")
            kfiles = deb_members(kdeb, lambda n: n == f"boot/vmlinuz-{release}" or bool(
                mod_re.match(n) and not args.no_modules))  # fmt: skip
            if f"boot/vmlinuz-{release}" not in kfiles:
                raise Fail(f"{kdeb.name} has no boot/vmlinuz-{release}")
            vmlinuz.write_bytes(kfiles.pop(f"boot/vmlinuz-{release}"))
            modules = [] if args.no_modules else module_closure(kfiles)
            log(f"modules: {' '.join(n for n, _ in modules) or 'none'}")
            bb = deb_members(bdeb, lambda n: n == "bin/busybox")
            if "bin/busybox" not in bb:
                raise Fail(f"{bdeb.name} has no bin/busybox")
            tmp = initrd.with_suffix(".tmp")
            tmp.write_bytes(initramfs(bb["bin/busybox"], modules))
            tmp.replace(initrd)
            stamp.write_text(digest)
            log(f"initramfs {initrd.name}: {initrd.stat().st_size / 1e6:.2f} MB")
        _link(root / "vmlinuz", vmlinuz)
        _link(root / ("initrd-nomod.img" if args.no_modules else "initrd.img"), initrd)
        print(f"vmlinuz={vmlinuz}")
        print(f"initrd={initrd}")
        if args.dbg:
            dbg = fetch_dbg(f"{kpkg}-dbg", root, release)
            _link(root / "System.map", dbg["system_map"])
            _link(root / "vmlinux", dbg["vmlinux"])
            print(f"system_map={dbg['system_map']}")
            print(f"vmlinux={dbg['vmlinux']}")
    except Fail as e:
        log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
