"""Errors raised while reading or writing a trace file.

They live apart from the container so the event layer and the CLI can catch them without
importing the file format code. Every message is one human-readable line that starts with
the file name, so the CLI can print ``str(err)`` as-is.
"""

from __future__ import annotations

import os

__all__ = ["TraceError", "TraceCorrupt", "TraceVersionError", "TraceTruncated", "NotATrace"]


def _one_line(text: str) -> str:
    """Collapse whitespace so a message never spans lines, whatever it embeds."""
    return " ".join(text.split())


class TraceError(Exception):
    """Base class: ``path`` cannot be used as a trace, and ``problem`` says why."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(_one_line(f"{self.path}: {problem}"))


class NotATrace(TraceError):
    """The file does not start with the trace magic (or is empty)."""


class TraceVersionError(TraceError):
    """The trace was written in a format version this reader does not understand."""

    def __init__(self, path: str | os.PathLike[str], version: int, supported: int) -> None:
        self.version = version
        self.supported = supported
        super().__init__(
            path,
            f"trace format version {version} is newer than this rrvmm supports "
            f"(up to {supported}); upgrade rrvmm to read it",
        )


class TraceTruncated(TraceError):
    """The trace is incomplete (writer killed, disk full) and the caller needs all of it."""


class TraceCorrupt(TraceError):
    """Bytes that were completely written do not match their checksum or structure.

    ``chunk`` (0-based) and ``offset`` (byte offset in the file) locate the damage when known.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        problem: str,
        *,
        chunk: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.chunk = chunk
        self.offset = offset
        where = "corrupt"
        if chunk is not None:
            where += f" chunk {chunk}"
        if offset is not None:
            where += f" at offset {offset}"
        super().__init__(path, f"{where}: {problem}")
