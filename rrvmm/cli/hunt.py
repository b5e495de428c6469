"""`rrvmm hunt [options] -- <record options>`: record until a failure is caught on tape.

Exit status: 0 when the condition held at least once, 1 when it never did within the
runs, 130 when interrupted (the failing traces found so far are kept), and rrvmm's usual
statuses for bad options or a recording that could not be made at all.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rrvmm.errors import ExitStatus, RrvmmError

__all__ = ["add_parser"]

NOT_FOUND = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hunt",
        help="record a guest again and again (with chaos) until a failure is caught",
        description="Runs `rrvmm record --chaos SEED` with a new seed each time until the"
        " condition held --keep times or --runs runs are done; keeps the failing traces"
        " (packed, so they replay anywhere) and deletes the others.",
    )
    p.add_argument(
        "--until",
        default="panic",
        metavar="COND",
        help="what a failure is: panic (the guest printed PANIC or a Linux 'Kernel panic'),"
        " status:N (rrvmm record ended with status N), regex:RE (the guest output matches"
        " RE); default panic",
    )
    p.add_argument("--runs", type=int, default=100, metavar="M", help="at most M runs (100)")
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="runs at once (default: local CPUs, or the cluster's worker threads)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="a run taking longer is killed and counted as passing (300)",
    )
    p.add_argument(
        "--keep", type=int, default=1, metavar="K", help="stop once the condition held K times (1)"
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        help="where the failing traces go (default: a new traces/hunt-* dir)",
    )
    p.add_argument("--no-chaos", action="store_true", help="plain recordings (no --chaos)")
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run on the Dask cluster whose scheduler is at ADDRESS"
        " (tcp://HOST:PORT); images are sent to the workers",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("record_args", nargs=argparse.REMAINDER, metavar="-- RECORD-OPTIONS")
    p.set_defaults(func=cmd_hunt)


def _record_options(args: list[str]) -> argparse.Namespace:
    """Check the record options up front (one line for a mistake, not M failed runs)."""
    from rrvmm.cli.options import add_machine_args

    p = argparse.ArgumentParser(prog="rrvmm record", add_help=False, exit_on_error=False)
    add_machine_args(p)
    try:
        ns, extra = p.parse_known_args(args)
    except argparse.ArgumentError as e:
        raise RrvmmError(f"record options: {e}", ExitStatus.USAGE) from None
    for a in extra:
        if a in ("-o", "--output", "--chaos") or a.startswith(("--output=", "--chaos=")):
            raise RrvmmError(
                f"record options: {a} is set by hunt (use hunt's -o DIR, --no-chaos)",
                ExitStatus.USAGE,
            )
    if extra:
        raise RrvmmError(f"record options: not understood: {' '.join(extra)}", ExitStatus.USAGE)
    return ns


def _positive(value: float | None, option: str) -> None:
    if value is not None and value <= 0:
        raise RrvmmError(f"{option} must be positive", ExitStatus.USAGE)


def _default_output() -> Path:
    base = Path("traces") / f"hunt-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = Path(f"{base}-{n}")
    return path


def _ship(ns: argparse.Namespace) -> dict[str, tuple[str, bytes]]:
    """The image files a cluster worker needs, read here ('--disk' must be a shared path)."""
    from rrvmm.machine.boot.kernel import read_image

    out = {}
    for option, path in (("--kernel", ns.kernel), ("--initrd", ns.initrd)):
        if path:
            out[option] = (Path(path).name, read_image(Path(path), option[2:]))
    return out


def _progress_line(stream: Any):  # noqa: ANN202
    if not stream.isatty():
        return None

    last = [""]

    def show(s: Any, running: int) -> None:
        rate = f" ({100 * s.rate:.0f}%)" if s.rate is not None else ""
        line = (
            f"hunt: {s.runs} runs, {s.failures} failing{rate}, {running} running,"
            f" {s.elapsed_s:.0f} s"
        )
        if line != last[0]:  # redrawn when something changed (at most once a second)
            last[0] = line
            stream.write(f"\r{line}\x1b[K")
            stream.flush()

    return show


def _print_summary(s: Any, out: Any) -> None:
    rate = "-" if s.rate is None else f"{100 * s.rate:.1f}%"
    first = "-" if s.first_failure_s is None else f"{s.first_failure_s:.1f} s"
    out.write(
        f"hunt ({s.engine}, until {s.until}): {s.runs} runs, {s.failures} failing"
        f" ({rate}), {s.timeouts} timed out, first failure after {first},"
        f" {s.elapsed_s:.1f} s in all{' (interrupted)' if s.interrupted else ''}\n"
    )
    for k in s.kept:
        seed = "plain" if k["seed"] is None else f"chaos seed {k['seed']}"
        out.write(f"  kept {k['path']} (run {k['run']}, {seed}, status {k['status']})\n")


def cmd_hunt(args: argparse.Namespace) -> int:
    from rrvmm.cli.options import demo_kernel_path, parse_memory
    from rrvmm.hunt.condition import Until
    from rrvmm.hunt.driver import HuntConfig, hunt
    from rrvmm.hunt.pools import DaskPool, LocalPool, Pool

    until = Until.parse(args.until)
    for value, option in ((args.runs, "--runs"), (args.jobs, "-j"), (args.keep, "--keep"),
                          (args.timeout, "--timeout")):  # fmt: skip
        _positive(value, option)
    record_args = list(args.record_args)
    if record_args[:1] == ["--"]:
        record_args = record_args[1:]
    ns = _record_options(record_args)
    parse_memory(ns.memory)
    kernel = Path(ns.kernel) if ns.kernel else demo_kernel_path()
    for what, path in (("kernel", kernel), ("initrd", ns.initrd), ("disk", ns.disk)):
        if path and not Path(path).is_file():
            raise RrvmmError(f"{what} not found: {path}", ExitStatus.NO_INPUT)
    keep_dir = Path(args.output) if args.output else _default_output()
    try:
        keep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RrvmmError(f"cannot create {keep_dir}: {e.strerror}", ExitStatus.NO_INPUT) from None
    cfg = HuntConfig(
        until,
        args.runs,
        args.keep,
        args.timeout,
        not args.no_chaos,
        record_args,
        keep_dir,
        kernel.name,
    )
    pool: Pool
    if args.cluster:
        pool = DaskPool(args.cluster, args.jobs, _ship(ns))
    else:
        pool = LocalPool(args.jobs or os.cpu_count() or 1, str(keep_dir))
    # Ctrl-C and SIGTERM end a hunt alike: runs stopped, failures kept (SIGINT too is set
    # here, as a shell starts background jobs with it ignored)
    previous = {
        sig: signal.signal(sig, signal.default_int_handler)
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    progress = _progress_line(sys.stderr)
    try:
        summary = hunt(cfg, pool, progress)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if progress is not None:
            sys.stderr.write("\r\x1b[K")
        pool.close()
    if not summary.kept and not args.output:
        keep_dir.rmdir()  # nothing kept: leave no empty directory behind
    if args.json:
        json.dump({**summary.as_dict(), "output": str(keep_dir)}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_summary(summary, sys.stdout)
    if summary.error:
        raise RrvmmError(summary.error.removeprefix("rrvmm: "), summary.error_status)
    if summary.interrupted:
        print("rrvmm: hunt interrupted; failing traces found so far are kept", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    return 0 if summary.failures else NOT_FOUND
