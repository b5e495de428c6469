"""Reverse execution latency over a long trace, and what checkpoints cost in memory.

Part `hotguard` (the shape users debug): the `hotguard` guest recorded on the soft CPU
and on KVM; per backend, side by side: record, plain replay of the whole run, and with a
real gdb on `rrvmm replay --gdb`: `break panic` + `continue` (the forward replay of the
span), then `watch guard` + `reverse-continue` back to the corrupting store, and the
ratio of the two (targets: <= 1.5x soft, <= 3x KVM).

Part `pio`: records the `pio` guest (one exit per loop iteration), opens it in the replay engine
(checkpoints by replay work, or every --every exits), then measures:
  reverse-stepi at many positions (p50/p95; target p95 <= 50 ms),
  reverse-continue to a breakpoint hit d exits back, for d in 1e2, 1e4, 1e6 (as the trace
  allows), and the memory the checkpoints hold.

    python bench/reverse.py [--part hotguard|pio|all] [--exits 1100000] [--every N]
                            [--pio-backend soft]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from elftools.elf.elffile import ELFFile  # noqa: E402

from rrvmm.host.terminal import SerialHost  # noqa: E402
from rrvmm.launch import record_guest  # noqa: E402
from rrvmm.machine.cpu_choice import make_backend  # noqa: E402
from rrvmm.machine.images import GuestImages  # noqa: E402
from rrvmm.machine.pc import MachineConfig  # noqa: E402
from rrvmm.replay.container import open_trace  # noqa: E402
from rrvmm.replay.engine import ReplayEngine  # noqa: E402
from rrvmm.target import Position  # noqa: E402

sys.path.insert(0, str(REPO / "tests" / "gdbstub"))
from gdb_driver import Gdb, ReplayServer  # noqa: E402

MEMORY = 32 << 20
BACKENDS = ("soft", "kvm")
TARGET = {"soft": 1.5, "kvm": 3.0}


def symbol(elf_path: Path, name: str) -> int:
    with elf_path.open("rb") as f:
        for sym in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            if sym.name == name:
                return sym["st_value"]
    raise KeyError(name)


def _timed(argv: list[str], timeout: float = 900) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "rrvmm", *argv],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, cwd=REPO,
    )  # fmt: skip
    return time.perf_counter() - t0, p


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (the machine is shared: wall time
    mostly measures the load, CPU time what the work cost)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hotguard(backend: str, tmp: Path, append: str, server_args: list[str]) -> dict[str, float]:
    """One backend's row: record, plain replay, gdb forward to panic, watch + reverse."""
    kernel = REPO / "guests" / "build" / "hotguard.mb"
    elf = REPO / "guests" / "build" / "hotguard.elf"
    trace = tmp / f"hotguard-{backend}.rrt"
    argv = ["record", "--backend", backend, "--kernel", str(kernel), "-o", str(trace)]
    t_rec, p = _timed(argv + (["--append", append] if append else []))
    assert p.returncode == 3, p.stderr.decode()
    exits = p.stderr.decode().split("recorded ")[1].split()[0]
    t_rep, p = _timed(["replay", str(trace)])
    assert p.returncode == 0, p.stderr.decode()
    server = ReplayServer(trace, *server_args)
    g = Gdb(elf)
    try:
        g.cmd(f"target remote 127.0.0.1:{server.port}")
        g.cmd("break panic")
        pid = server.proc.pid
        t0, c0 = time.perf_counter(), cpu_seconds(pid)
        stop = g.run("continue", timeout=900)
        t_fwd, c_fwd = time.perf_counter() - t0, cpu_seconds(pid) - c0
        assert stop["frame"]["func"] == "panic", stop
        g.cmd("delete")
        g.cmd("watch guard")
        t0, c0 = time.perf_counter(), cpu_seconds(pid)
        stop = g.run("reverse-continue", timeout=1800)
        t_rev, c_rev = time.perf_counter() - t0, cpu_seconds(pid) - c0
        assert stop["reason"] == "watchpoint-trigger", stop
        assert stop["frame"]["func"] == "stale_store", stop
        assert g.eval("guard") == str(0x600DF00D), g.eval("guard")
        info = g.cmd("monitor info")
        t_int = ctrl_c_latency(g)
    finally:
        g.close()
        server.close()
    return {"exits": int(exits), "record": t_rec, "replay": t_rep, "forward": t_fwd,
            "reverse": t_rev, "ctrl_c": t_int, "cpu_forward": c_fwd, "cpu_reverse": c_rev,
            "info": info}  # type: ignore[dict-item]  # fmt: skip


def ctrl_c_latency(g: Gdb) -> float:
    """Seconds from gdb's Ctrl-C to the stop, 1 s into a reverse-continue that would search
    back to the start (a breakpoint never reached); nan if it ended first."""
    g.cmd("delete")
    g.cmd("break *0x1")
    responses = g.mi.write("reverse-continue", timeout_sec=1, raise_error_on_timeout=False)
    t0 = time.perf_counter()
    g.mi.gdb_process.send_signal(signal.SIGINT)
    while not any(r["type"] == "notify" and r["message"] == "stopped" for r in responses):
        responses += g.mi.get_gdb_response(timeout_sec=0.05, raise_error_on_timeout=False)
    dt = time.perf_counter() - t0
    stop = next(r for r in responses if r["type"] == "notify" and r["message"] == "stopped")
    g.cmd("delete")
    return dt if stop["payload"].get("signal-name") == "SIGINT" else float("nan")


def part_hotguard(args: argparse.Namespace) -> None:
    print(f"hotguard ({args.append or 'defaults'}): `break panic`+`continue` in gdb is the"
          " forward replay of the span; `watch guard`+`reverse-continue` goes back")  # fmt: skip
    print(f"{'backend':<8} {'exits':>6} {'record s':>9} {'replay s':>9} {'forward s':>10}"
          f" {'reverse s':>10} {'rev/fwd':>8} {'target':>7}   {'Ctrl-C s':>8}"
          f"   {'CPU s fwd':>9} {'CPU s rev':>9} {'CPU ratio':>9}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            r = hotguard(backend, Path(tmp), args.append, args.server_args)
            ratio = r["reverse"] / r["forward"]
            ok = "ok" if ratio <= TARGET[backend] else "MISSED"
            print(f"{backend:<8} {r['exits']:>6} {r['record']:>9.2f} {r['replay']:>9.2f}"
                  f" {r['forward']:>10.2f} {r['reverse']:>10.2f} {ratio:>7.2f}x"
                  f" {TARGET[backend]:>5.1f}x {ok:<6} {r['ctrl_c']:>8.3f}"
                  f"   {r['cpu_forward']:>9.2f} {r['cpu_reverse']:>9.2f}"
                  f" {r['cpu_reverse'] / max(r['cpu_forward'], 1e-9):>8.2f}x")  # fmt: skip
            if args.verbose:
                print(r["info"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("hotguard", "pio", "all"), default="all")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="hotguard: soft,kvm")
    ap.add_argument("--append", default="", help="hotguard's command line (hz= at= ticks=)")
    ap.add_argument("--server-arg", dest="server_args", action="append", default=[],
                    help="hotguard: one more argument of `rrvmm replay --gdb`")  # fmt: skip
    ap.add_argument("-v", "--verbose", action="store_true", help="hotguard: monitor info")
    ap.add_argument("--exits", type=int, default=1_100_000, help="trace length (pio loop count)")
    ap.add_argument("--every", type=int, default=None,
                    help="checkpoint interval in exits (default: by replay work)")  # fmt: skip
    ap.add_argument("--pio-backend", default="kvm", choices=BACKENDS, help="pio: the CPU")
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    subprocess.run(["make", "-s", "-C", str(REPO / "guests")], check=True)
    if args.part in ("hotguard", "all"):
        part_hotguard(args)
    if args.part in ("pio", "all"):
        part_pio(args)


def part_pio(args: argparse.Namespace) -> None:
    kernel = REPO / "guests" / "build" / "pio.mb"
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "pio.rrt"
        images = GuestImages.load(kernel)
        config = MachineConfig(memory=MEMORY, cmdline=f"n={args.exits}", kernel_name="pio.mb")
        cpu = make_backend(args.pio_backend, MEMORY)
        t0 = time.perf_counter()
        result, _ = record_guest(
            images, config, cpu, SerialHost(output=io.BytesIO(), input_fd=None), trace
        )
        cpu.close()
        print(f"recorded {result.exits} exits in {time.perf_counter() - t0:.1f}s,"
              f" {trace.stat().st_size / 1024:.0f} KiB")  # fmt: skip
        with open_trace(trace) as reader:
            eng = ReplayEngine(reader, checkpoint_every=args.every)
            t0 = time.perf_counter()
            eng.resume()  # to the end, taking checkpoints on the way
            fwd = time.perf_counter() - t0
            total = eng.position().exit_index
            mem = sum(c.memory_bytes for c in eng.checkpoints.values())
            cpu_state = sum(len(c.cpu["xsave"]) if "xsave" in c.cpu else 0
                            for c in eng.checkpoints.values())  # fmt: skip
            print(f"engine forward to exit {total}: {fwd:.1f}s ({total / fwd:,.0f} exits/s),"
                  f" {len(eng.checkpoints)} checkpoints")  # fmt: skip
            print(f"checkpoint memory: base image {len(eng.checkpoints.base) * 4} KiB, pages "
                  f"{mem / 1024:.0f} KiB total = {mem / max(1, len(eng.checkpoints)):.0f} B"
                  f" per checkpoint (+ ~{cpu_state // max(1, len(eng.checkpoints))} B vCPU"
                  " xsave each)")  # fmt: skip

            # reverse-stepi at spread-out positions (each a few steps into an interval)
            lat = []
            for i in range(args.samples):
                k = int(total * (i + 1) / (args.samples + 1))
                eng.goto(Position(k, 3))
                t0 = time.perf_counter()
                eng.resume(reverse=True, step=True)
                lat.append(time.perf_counter() - t0)
                assert eng.position() == Position(k, 2), eng.position()
            lat.sort()
            p95 = lat[max(0, int(len(lat) * 0.95) - 1)]
            print(f"reverse-stepi: p50 {statistics.median(lat) * 1e3:.1f} ms,"
                  f" p95 {p95 * 1e3:.1f} ms, max {lat[-1] * 1e3:.1f} ms"
                  f" over {len(lat)} positions (target p95 <= 50 ms)")  # fmt: skip

            # reverse-continue to the single hit of kmain's entry, d exits back
            bp = symbol(REPO / "guests" / "build" / "pio.elf", "kmain")
            eng.add_breakpoint(bp)
            eng.goto_exit(0)
            eng.resume()
            hit = eng.position().exit_index
            for d in (100, 10_000, 1_000_000):
                if hit + d > total:
                    print(f"reverse-continue d={d:>9,}: trace too short")
                    continue
                eng.goto_exit(hit + d)
                t0 = time.perf_counter()
                stop = eng.resume(reverse=True)
                dt = time.perf_counter() - t0
                assert eng.position().exit_index == hit, (stop, eng.position())
                print(f"reverse-continue d={d:>9,} exits: {dt * 1e3:9.1f} ms")
            eng.close()


if __name__ == "__main__":
    main()
