"""Driving ``run_console`` through prompt_toolkit's pipe input, for tests.

``run_script`` types every line up front and reads the whole transcript once the input
ends; ``LiveConsole`` runs the console in a thread and types as a person would, waiting for
output in between (Tab completion needs that: it completes asynchronously).
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from prompt_toolkit.input import create_pipe_input

from rrvmm.console import run_console
from rrvmm.console.commands import PROMPT

MARK = PROMPT.strip()  # "(rrvmm)"


@dataclass
class Block:
    """One command as typed and the lines printed for it."""

    command: str
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def parse_transcript(text: str) -> list[Block]:
    """Commands and their output from a plain-text transcript (prompt redraws dropped)."""
    blocks: list[Block] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if MARK in line:
            command = line.rsplit(MARK, 1)[1].strip()
            if blocks and blocks[-1].command == command and not any(blocks[-1].lines):
                continue  # the same prompt drawn again (a redraw), not a new command
            blocks.append(Block(command))
        elif blocks:
            blocks[-1].lines.append(line.rstrip())
    for b in blocks:  # the renderer's blank lines (room for the completion menu)
        while b.lines and not b.lines[-1]:
            b.lines.pop()
        while b.lines and not b.lines[0]:
            b.lines.pop(0)
    return [b for b in blocks if b.command or b.lines and b.lines != ["quit"]]


def run_script(engine: Any, symbols: str | None, lines: list[str]) -> tuple[int, list[Block], str]:
    """Type ``lines`` into a console over ``engine``; (status, blocks, raw transcript)."""
    out = io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text("".join(line + "\r" for line in lines))
        inp.close()
        status = run_console(engine, symbols, input=inp, output=out)
    raw = out.getvalue()
    return status, parse_transcript(raw), raw


class _Sink(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, s: str) -> int:
        with self.lock:
            return super().write(s)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


class LiveConsole:
    """``run_console`` in a thread over a pipe; ``type`` keys, ``wait_for`` output."""

    def __init__(self, engine: Any, symbols: str | None) -> None:
        self.out = _Sink()
        self._cm = create_pipe_input()
        self.inp = self._cm.__enter__()
        self.status: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, args=(engine, symbols), daemon=True)
        self.thread.start()

    def _main(self, engine: Any, symbols: str | None) -> None:
        try:
            self.status = run_console(engine, symbols, input=self.inp, output=self.out)
        except BaseException as e:  # noqa: BLE001 - reported by close()
            self.error = e

    def type(self, keys: str) -> None:
        self.inp.send_text(keys)

    def wait_for(self, text: str, count: int = 1, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while self.out.text().count(text) < count:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError(f"no {text!r} (x{count}) in:\n{self.out.text()}")
            time.sleep(0.02)
        return self.out.text()

    def close(self) -> int | None:
        self.inp.close()
        self.thread.join(60)
        self._cm.__exit__(None, None, None)
        if self.error is not None:
            raise self.error
        return self.status
