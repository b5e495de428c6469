"""`monitor` commands of a replay (gdb's `monitor ...`, the console's `info`/`exits`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rrvmm.target import RecordedExit, TargetError

if TYPE_CHECKING:
    from rrvmm.replay.engine import ReplayEngine

__all__ = ["run_monitor", "HELP"]

_MAX_EXITS_LISTED = 10_000  # one reply's worth: gdb prints it all at once

HELP = """monitor commands:
  info              where the replay stands, checkpoints and their memory
  exits [FROM [N]]  list N (default 20) recorded exits from exit FROM (default: here)
  goto EXIT         go to just after exit EXIT
  checkpoint        take a checkpoint here (at an exit)
  help              this text"""


# gdb inserts breakpoints (Z packets) when it resumes and removes them when it stops,
# unless told to keep them in; the stub only knows what is inserted.
_NONE = (
    "none inserted (gdb inserts breakpoints only while the guest runs; with `set breakpoint"
    " always-inserted on`, as `rrvmm replay --gdb` sets, they are listed here)"
)
# gdb caches registers between stops and cannot be told from here that they changed.
_GOTO_NOTE = (
    "(gdb: `maintenance flush register-cache` shows the new registers; `rrvmm replay --gdb`"
    " defines `goto N`, which does both)"
)


def _fmt_exit(e: RecordedExit) -> str:
    v = f"{e.value:#x}" if isinstance(e.value, int) else e.value.hex()
    return f"{e.index:>8}  {e.kind:<10} addr={e.addr:#x} size={e.size} value={v} rip={e.rip:#x}"


def _exits_text(order: list[int], near: list[int]) -> str:
    """The checkpoints' exits, the last few before the position marked; long lists are
    cut in the middle (they can hold thousands)."""
    shown = [f"{k}*" if k in near else str(k) for k in order]
    if len(shown) > 24:
        shown = shown[:8] + [f"... ({len(shown) - 16} more)"] + shown[-8:]
    return " ".join(shown)


def run_monitor(engine: ReplayEngine, command: str) -> str:
    """The text a monitor command prints (ends with a newline, as gdb expects)."""
    text = _run(engine, command)
    return text if text.endswith("\n") else text + "\n"


def _run(engine: ReplayEngine, command: str) -> str:
    words = command.split()  # numbers and names only: no quoting (shlex is quadratic)
    if not words or words[0] == "help":
        return HELP
    cmd, args = words[0], words[1:]
    try:
        if cmd == "info":
            pos = engine.position()
            store = engine.checkpoints
            mem = sum(c.memory_bytes for c in store.values())
            near = [k for k in store.order if k <= pos.exit_index][-4:]
            lines = [
                f"position: exit {pos.exit_index} of {engine.total_exits},"
                f" {pos.instructions} instructions since it",
                f"checkpoints: {len(store)} ({store.policy.describe()}),"
                f" {mem / 1024:.0f} KiB of pages beyond the base image"
                f" ({len(store.base) * 4} KiB)"
                + (f", {store.dropped} thinned out" if store.dropped else ""),
                "checkpoints at exits: " + _exits_text(store.order, near),
                f"breakpoints: {', '.join(hex(b) for b in sorted(engine.breakpoints)) or _NONE}",
                "watchpoints: "
                + (", ".join(f"{w.kind.value} {w.address:#x}+{w.length}" for w in engine.watches)
                   or "none"),
            ]  # fmt: skip
            if engine.end_reason is not None:
                lines.append(f"the guest ended here: {engine.end_reason}")
            return "\n".join(lines)
        if cmd == "exits":
            start = int(args[0], 0) if args else engine.position().exit_index
            count = int(args[1], 0) if len(args) > 1 else 20
            if not 0 <= count <= _MAX_EXITS_LISTED:
                raise TargetError(f"monitor exits: COUNT must be in 0..{_MAX_EXITS_LISTED}")
            rows = engine.recorded_exits(start, count)
            return "\n".join(_fmt_exit(e) for e in rows) or "no exits there"
        if cmd == "goto":
            if len(args) != 1:
                raise TargetError("usage: monitor goto EXIT")
            engine.goto_exit(int(args[0], 0))
            return f"at exit {engine.position().exit_index}\n{_GOTO_NOTE}"
        if cmd == "checkpoint":
            cp = engine.take_checkpoint()
            return f"checkpoint at exit {cp.exit_index} ({cp.memory_bytes // 1024} KiB)"
    except ValueError:
        raise TargetError(f"bad number in: {command}") from None
    raise TargetError(f"unknown monitor command {cmd!r} (try: monitor help)")
