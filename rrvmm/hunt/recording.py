"""One hunt run: a real ``python -m rrvmm record`` in its own process group, judged.

The same function runs on a local pool thread and on a cluster worker. The recorder is a
child process, not a call in this one, so a run that hangs or a hunt that is stopped can
always be ended (its whole process group is killed), and a crash of the VMM is just a
run's outcome. A run whose output meets the hunt's condition is packed (it then carries
its images and replays anywhere); every other trace is deleted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import rrvmm
from rrvmm.hunt.condition import Until

__all__ = ["RunTask", "RunOutcome", "record_once", "ERROR_STATUSES"]

# rrvmm's own statuses that mean the recording could not be made at all (bad options,
# missing files, no KVM): a hunt stops on the first one instead of repeating it.
ERROR_STATUSES = frozenset({64, 65, 66, 67, 69, 75})
_POLL_S = 0.1
_KILL_GRACE_S = 2.0


@dataclass
class RunTask:
    """What one run needs: plain data, so it pickles to a cluster worker."""

    index: int
    seed: int | None  # chaos seed; None: a plain recording
    record_args: list[str]  # `rrvmm record` options (no -o, no --chaos)
    until: Until
    timeout_s: float
    kernel_name: str = "guest"
    # image option -> (file name, bytes): written on the worker and the option pointed
    # there, for workers that do not share the client's files
    ship: dict[str, tuple[str, bytes]] = field(default_factory=dict)


@dataclass
class RunOutcome:
    index: int
    seed: int | None
    status: int | None  # None: killed (timeout or stopped)
    matched: bool
    elapsed_s: float
    output_tail: str = ""  # the guest's last output lines
    error: str = ""  # rrvmm's own one-line error, for ERROR_STATUSES
    timed_out: bool = False
    stopped: bool = False
    kept: str | None = None  # where the packed trace went (local runs)
    trace: bytes | None = None  # the packed trace itself (cluster runs)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End the recorder and anything it started: TERM, then KILL after a grace period."""
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _pythonpath() -> str:
    """This rrvmm first on the child's path, so the child runs the same code."""
    here = str(Path(rrvmm.__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH")
    return here if not rest else f"{here}{os.pathsep}{rest}"


def _with_shipped_images(
    args: list[str], ship: dict[str, tuple[str, bytes]], where: Path
) -> list[str]:
    """``args`` with each shipped image written under ``where`` and its option pointed there."""
    args = list(args)
    for option, (name, data) in ship.items():
        path = where / "images" / option.lstrip("-") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        for i, a in enumerate(args):
            if a == option and i + 1 < len(args):
                args[i + 1] = str(path)
            elif a.startswith(option + "="):
                args[i] = f"{option}={path}"
    return args


def record_once(
    task: RunTask,
    keep_dir: str | None,
    should_stop: Callable[[], bool],
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> RunOutcome:
    """Record once, judge, keep (packed: into ``keep_dir``, or as bytes when it is None)
    or delete. ``should_stop`` is polled; when it says so the recorder is killed."""
    from rrvmm.replay.pack import pack_trace

    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix=f".run-{task.index}-", dir=keep_dir))
    try:
        args = _with_shipped_images(task.record_args, task.ship, work)
        trace = work / "run.rrt"
        cmd = [sys.executable, "-m", "rrvmm", "record", *args, "-o", str(trace)]
        if task.seed is not None:
            cmd += ["--chaos", str(task.seed)]
        env = {**os.environ, "PYTHONPATH": _pythonpath()}
        with open(work / "out", "wb") as out, open(work / "err", "wb") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                start_new_session=True,  # its own process group: killed as a whole
            )  # fmt: skip
            if on_start is not None:
                on_start(proc)
            timed_out = stopped = False
            while True:
                try:
                    proc.wait(_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if should_stop():
                    stopped = True
                elif time.monotonic() - start > task.timeout_s:
                    timed_out = True
                else:
                    continue
                _kill_group(proc)
                break
        output = (work / "out").read_bytes().decode(errors="replace")
        errors = (work / "err").read_bytes().decode(errors="replace").splitlines()
        status = None if (timed_out or stopped) else proc.returncode
        if status is not None and status < 0:
            status = 128 - status  # killed by a signal: as a shell reports it
        outcome = RunOutcome(
            task.index, task.seed, status, False, 0.0,
            output_tail="\n".join(output.splitlines()[-5:]),
            timed_out=timed_out, stopped=stopped,
        )  # fmt: skip
        if status in ERROR_STATUSES:
            outcome.error = next(
                (e for e in reversed(errors) if e.startswith("rrvmm: ")),
                f"rrvmm record ended with status {status}",
            )
        elif status is not None and task.until.holds(status, output):
            outcome.matched = True
            packed = work / "packed.rrt"
            pack_trace(trace, packed)
            if keep_dir is None:
                outcome.trace = packed.read_bytes()
            else:
                seed = "plain" if task.seed is None else f"seed{task.seed}"
                dest = Path(keep_dir) / f"{Path(task.kernel_name).stem}-{task.index}-{seed}.rrt"
                shutil.move(str(packed), dest)
                outcome.kept = str(dest)
        outcome.elapsed_s = time.monotonic() - start
        return outcome
    finally:
        shutil.rmtree(work, ignore_errors=True)
