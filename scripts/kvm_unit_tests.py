"""Run kvm-unit-tests' x86_64 entries on QEMU TCG and on rrvmm, and print one table.

    python scripts/kvm_unit_tests.py PATH_TO_BUILT_TREE [--only soft,kvm,qemu,replay]
        [-k SUBSTRING] [--timeout-cap SECONDS] [--json FILE]

PATH_TO_BUILT_TREE is a kvm-unit-tests checkout built for x86_64 outside this repository,
by its own instructions; nothing of it is committed here. Each entry of
``x86/unittests.cfg`` runs the way the suite's own ``x86/run`` would run it: ``-smp``,
``test_args`` (``-append``; older trees: ``extra_params``), pc-testdev and isa-debug-exit,
the entry's timeout (default 90 s), and its status read as ``scripts/runtime.bash`` reads
it: QEMU's ``(V << 1) | 1`` gives 1 = PASS, 77 = SKIP, 124 = timeout, anything else FAIL.

rrvmm runs the modern PC (``--apic on --test-devices``) with one CPU: entries with
``smp`` > 1 are marked ``smp>1`` for it. ``qemu_params`` (CPU models, extra devices) go to
QEMU only. The last column records the entry on the software CPU and replays the trace
(``exact`` when the replay matched every exit), for entries that passed there.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT_S = 90.0
QEMU_BASE = [
    "qemu-system-x86_64", "--no-reboot", "-nodefaults", "-device", "pc-testdev",
    "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4", "-display", "none",
    "-serial", "stdio", "-device", "pci-testdev", "-machine", "accel=tcg",
]  # fmt: skip
COLUMNS = ("qemu", "soft", "kvm", "replay")


@dataclass
class Entry:
    """One ``[name]`` section of unittests.cfg, as x86/run would use it."""

    name: str
    file: str
    smp: int = 1
    append: str = ""
    qemu_params: list[str] = field(default_factory=list)
    timeout_s: float = DEFAULT_TIMEOUT_S
    arch: str = ""
    accel: str = ""
    skip_reason: str = ""


def _seconds(text: str) -> float:
    text = text.strip()
    unit = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None)
    return float(text[:-1]) * unit if unit else float(text)


def _append_of(extra_params: str) -> str:
    """The ``-append`` argument inside an old-style ``extra_params`` value."""
    words = shlex.split(extra_params)
    for i, w in enumerate(words[:-1]):
        if w == "-append":
            return words[i + 1]
    return ""


def parse_cfg(path: Path) -> list[Entry]:
    cfg = configparser.ConfigParser(interpolation=None, strict=False)
    cfg.read_string(path.read_text())
    out: list[Entry] = []
    for name in cfg.sections():
        sec = cfg[name]
        e = Entry(name=name, file=sec.get("file", "").strip())
        e.smp = int(sec.get("smp", "1").split()[0]) if sec.get("smp", "1").strip() else 1
        if "test_args" in sec:
            e.append = " ".join(shlex.split(sec["test_args"]))
        elif "extra_params" in sec:
            e.append = _append_of(sec["extra_params"])
        params = sec.get("qemu_params", "") or ""
        if "extra_params" in sec:
            params += " " + sec["extra_params"].replace("-append", "").replace(e.append, "")
        e.qemu_params = [w for w in shlex.split(params) if w.strip("'\"")]
        if "timeout" in sec:
            e.timeout_s = _seconds(sec["timeout"])
        e.arch = sec.get("arch", "").strip()
        e.accel = sec.get("accel", "").strip()
        if sec.get("disabled_if", "").strip():
            e.skip_reason = "disabled_if"
        elif sec.get("check", "").strip():
            e.skip_reason = _check(sec["check"])
        out.append(e)
    return out


def _check(spec: str) -> str:
    """x86/run's ``check = PATH=VALUE``: the entry runs only where the file says so."""
    for item in spec.split():
        p, _, value = item.partition("=")
        try:
            if Path(p).read_text().strip() != value:
                return f"check {p}"
        except OSError:
            return f"check {p}"
    return ""


def _verdict(status: int, timed_out: bool) -> str:
    if timed_out or status == 124:
        return "TIMEOUT"
    if status == 1001:
        return "FAIL(qemu)"
    if status == 1:
        return "PASS"
    if status == 77:
        return "SKIP"
    return f"FAIL({status})"


def _run(cmd: list[str], timeout_s: float, env: dict[str, str] | None = None) -> tuple[int, bool]:
    try:
        p = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout_s,
            env=env,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        return 124, True
    if cmd[0].startswith("qemu") and p.returncode == 1 and _qemu_errors(p.stderr):
        return 1001, False  # QEMU itself failed (x86/run: status 1 with errors is not PASS)
    return p.returncode, False


def _qemu_errors(stderr: bytes) -> bool:
    """What ``qemu_fixup_return_code`` looks for: a stderr line that is not a warning."""
    return any(line.strip() and b"warning" not in line.lower() for line in stderr.splitlines())


def _rrvmm(*args: str) -> list[str]:
    return [sys.executable, "-m", "rrvmm", *args]


def _rrvmm_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_entry(e: Entry, tree: Path, columns: set[str], cap: float) -> dict[str, str]:
    kernel = tree / "x86" / e.file
    timeout_s = min(e.timeout_s, cap)
    row: dict[str, str] = {}
    if e.skip_reason or not kernel.exists():
        return dict.fromkeys(columns, "SKIP(check)" if e.skip_reason else "not built")
    append = ["-append", e.append] if e.append else []
    if "qemu" in columns:
        if e.accel == "kvm":
            row["qemu"] = "SKIP(kvm only)"
        else:
            cmd = [*QEMU_BASE, "-kernel", str(kernel), "-smp", str(e.smp), *e.qemu_params, *append]
            row["qemu"] = _verdict(*_run(cmd, timeout_s))
    ours = ["--apic", "on", "--test-devices", "--kernel", str(kernel)]
    if e.append:
        ours += ["--append", e.append]
    env = _rrvmm_env()
    for backend in ("soft", "kvm"):
        if backend not in columns:
            continue
        if e.smp > 1:
            row[backend] = "smp>1"
            continue
        cmd = _rrvmm("run", "--backend", backend, "--irqchip", "user", *ours)
        if backend == "soft":
            cmd.remove("--irqchip")
            cmd.remove("user")
        row[backend] = _verdict(*_run(cmd, timeout_s, env))
    if "replay" in columns:
        row["replay"] = _record_replay(e, ours, timeout_s, env, row.get("soft"))
    return row


def _record_replay(
    e: Entry, ours: list[str], timeout_s: float, env: dict[str, str], soft: str | None
) -> str:
    if e.smp > 1:
        return "smp>1"
    if soft is not None and soft != "PASS":
        return "-"
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "t.rrt"
        _status, timed_out = _run(
            _rrvmm("record", "--backend", "soft", *ours, "-o", str(trace)), timeout_s, env
        )
        if timed_out or not trace.exists():
            return "no trace"
        try:
            p = subprocess.run(
                _rrvmm("replay", str(trace)),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=max(timeout_s * 4, 60),
                env=env,
                cwd=REPO,
            )
        except subprocess.TimeoutExpired:
            return "replay timeout"
        # replay exits 0 when every exit matched (not with the guest's status)
        if p.returncode == 0 and b"replay matched all" in p.stderr:
            return "exact"
        return "DIVERGED"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tree", type=Path, help="a built kvm-unit-tests tree")
    ap.add_argument(
        "--only", default=",".join(COLUMNS), help="columns to run: qemu,soft,kvm,replay"
    )
    ap.add_argument("-k", dest="match", default="", help="entries whose name contains this")
    ap.add_argument(
        "--timeout-cap", type=float, default=1e9, help="cap every entry's timeout (seconds)"
    )
    ap.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = ap.parse_args(argv)
    cfg = args.tree / "x86" / "unittests.cfg"
    if not cfg.is_file():
        print(f"kvm_unit_tests: {cfg} not found (build the tree first)", file=sys.stderr)
        return 2
    columns = {c for c in args.only.split(",") if c}
    unknown = columns - set(COLUMNS)
    if unknown:
        print(f"kvm_unit_tests: unknown column(s) {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if "qemu" in columns and shutil.which("qemu-system-x86_64") is None:
        print("kvm_unit_tests: qemu-system-x86_64 not installed: no QEMU column", file=sys.stderr)
        columns.discard("qemu")
    entries = [e for e in parse_cfg(cfg) if e.arch in ("", "x86_64") and args.match in e.name]
    shown = [c for c in COLUMNS if c in columns]
    print(f"{'test':<28}" + "".join(f"{c:<16}" for c in shown), flush=True)
    table: dict[str, dict[str, str]] = {}
    for e in entries:
        start = time.monotonic()
        row = run_entry(e, args.tree, columns, args.timeout_cap)
        table[e.name] = row
        cells = "".join(f"{row.get(c, ''):<16}" for c in shown)
        print(f"{e.name:<28}{cells}{time.monotonic() - start:6.1f}s", flush=True)
    print()
    for c in shown:
        passed = sum(1 for r in table.values() if r.get(c) in ("PASS", "exact"))
        print(f"{c}: {passed} of {len(table)} pass" + (" (exact)" if c == "replay" else ""))
    qemu_pass = {n for n, r in table.items() if r.get("qemu") == "PASS"}
    smp1 = {e.name for e in entries if e.smp == 1}
    for c in ("soft", "kvm"):
        if c in columns and "qemu" in columns:
            both = sum(1 for n in qemu_pass & smp1 if table[n].get(c) == "PASS")
            print(f"{c}: {both} of {len(qemu_pass & smp1)} smp=1 entries that pass on QEMU")
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
