"""The trace store: where `rrvmm record` puts traces when no ``-o`` is given, as rr does.

One directory (``$RRVMM_TRACE_DIR``, else ``$XDG_DATA_HOME/rrvmm/traces``, else
``~/.local/share/rrvmm/traces``) holds ``NAME.rrt`` files named after the kernel and a
counter (``hello-0``, ``hello-1``, ...) and a ``latest-trace`` symlink to the newest. A bare
name on the command line (``rrvmm replay hello-1``) means the trace of that name in the
store; no name at all means ``latest-trace``. Traces written elsewhere with ``-o`` are
ordinary files, used by their path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from rrvmm.errors import ExitStatus, RrvmmError

__all__ = [
    "LATEST",
    "SUFFIX",
    "store_dir",
    "new_trace_path",
    "set_latest",
    "latest",
    "resolve",
    "store_traces",
    "remove",
    "trace_name",
]

LATEST = "latest-trace"
SUFFIX = ".rrt"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]+")


def store_dir() -> Path:
    """The store directory (not created here)."""
    explicit = os.environ.get("RRVMM_TRACE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    data = os.environ.get("XDG_DATA_HOME")
    base = Path(data).expanduser() if data else Path.home() / ".local" / "share"
    return base / "rrvmm" / "traces"


def trace_name(path: Path) -> str:
    """``hello-0.rrt`` -> ``hello-0`` (what `rrvmm ls` shows and `rrvmm replay` takes)."""
    return path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name


def _ensure_store() -> Path:
    d = store_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RrvmmError(
            f"cannot create the trace store {d}: {e.strerror} (set RRVMM_TRACE_DIR or use -o)",
            ExitStatus.NO_INPUT,
        ) from None
    return d


def new_trace_path(kernel_name: str) -> Path:
    """A new, reserved (created empty) ``STEM-N.rrt`` in the store: N one more than the
    highest number of that stem in the store (so names sort in recording order)."""
    d = _ensure_store()
    stem = _UNSAFE.sub("_", Path(kernel_name).stem) or "trace"
    pattern = re.compile(re.escape(stem) + r"-(\d+)" + re.escape(SUFFIX) + "$")
    numbers = [int(m.group(1)) for p in d.iterdir() if (m := pattern.match(p.name))]
    n = max(numbers, default=-1) + 1
    while True:
        path = d / f"{stem}-{n}{SUFFIX}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:  # another recording took it meanwhile
            n += 1
            continue
        except OSError as e:
            raise RrvmmError(
                f"cannot write trace {path}: {e.strerror}", ExitStatus.NO_INPUT
            ) from None
        return path


def set_latest(path: Path) -> None:
    """Point ``latest-trace`` at ``path`` (a trace in the store), replacing it atomically."""
    d = path.parent
    link = d / LATEST
    tmp = d / f".{LATEST}.{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(path.name)
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)  # a store without symlinks still works by name


def latest() -> Path | None:
    link = store_dir() / LATEST
    if link.is_symlink() or link.exists():
        target = link.resolve()
        if target.is_file():
            return target
    traces = store_traces()
    return traces[-1] if traces else None


def store_traces() -> list[Path]:
    """The store's traces, oldest first."""
    d = store_dir()
    try:
        paths = [p for p in d.iterdir() if p.name.endswith(SUFFIX) and p.is_file()]
    except OSError:
        return []
    return sorted(paths, key=lambda p: (p.stat().st_mtime, p.name))


def resolve(spec: str | None) -> Path:
    """The trace ``spec`` names: an existing path, else a name in the store; no spec means
    the latest trace. RrvmmError (status 66) when there is none."""
    d = store_dir()
    if spec is None or spec == LATEST:
        found = latest()
        if found is None:
            raise RrvmmError(
                f"no traces in {d} yet (rrvmm record makes one; RRVMM_TRACE_DIR moves the store)",
                ExitStatus.NO_INPUT,
            )
        return found
    path = Path(spec)
    if path.exists() or os.sep in spec:
        return path
    for candidate in (d / spec, d / f"{spec}{SUFFIX}"):
        if candidate.is_file():
            return candidate
    return path  # opening it gives the usual "trace not found"


def remove(spec: str) -> Path:
    """Delete the store's trace ``spec`` (a name or a path inside the store); repoint
    ``latest-trace`` if it named it. Traces outside the store are not touched."""
    d = store_dir()
    path = resolve(spec)
    try:
        inside = path.resolve().parent == d.resolve()
    except OSError:
        inside = False
    if not inside or not path.name.endswith(SUFFIX) or not path.is_file():
        raise RrvmmError(
            f"{spec}: no such trace in the store {d} (rrvmm ls lists them)", ExitStatus.NO_INPUT
        )
    was_latest = latest() == path.resolve()
    try:
        path.unlink()
    except OSError as e:
        raise RrvmmError(f"cannot remove {path}: {e.strerror}", ExitStatus.NO_INPUT) from None
    if was_latest:
        rest = store_traces()
        if rest:
            set_latest(rest[-1])
        else:
            (d / LATEST).unlink(missing_ok=True)
    return path
