"""The interactive replay console: a prompt_toolkit session over a ``ReplayTarget``.

History, Tab completion of commands and symbols, and a bottom toolbar with the position
(exit k of N, instructions since it, RIP and symbol), the current exit and the last line of
serial output. Commands that run the guest run in a worker thread so Ctrl-C can interrupt
them (``target.interrupt()``); at the prompt Ctrl-C clears the line and Ctrl-D quits.

When standard input is not a terminal (and no ``input`` is given) the console reads
commands line by line without prompt_toolkit, echoing each after the prompt: scripts and
transcripts work (``rrvmm replay T --console < commands.txt``).
"""

from __future__ import annotations

import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import DummyOutput, Output, create_output
from prompt_toolkit.output.plain_text import PlainTextOutput

from rrvmm.console.commands import COMMANDS, PROMPT, Console, ConsoleQuit
from rrvmm.console.symbols import SymbolError, SymbolTable
from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.target import ReplayTarget

__all__ = ["run_console", "load_symbols", "ConsoleCompleter", "interruptible_runner"]


def load_symbols(path: str | None, target: ReplayTarget | None = None) -> SymbolTable | None:
    """Symbols from ``path``; without one, those a packed trace carries, else the recorded
    kernel image's if it is an ELF with a symbol table and still the recorded file (same
    sha256), or its copy in a packed trace (``ReplayTarget.symbol_file``). RrvmmError if
    ``path`` cannot be read as an ELF symbol table."""
    if path:
        try:
            return SymbolTable.from_elf(path)
        except SymbolError as e:
            raise RrvmmError(f"--symbols: {e}", ExitStatus.NO_INPUT) from None
    if target is None:
        return None
    with tempfile.TemporaryDirectory(prefix="rrvmm-symbols-") as scratch:
        try:
            found = target.symbol_file(Path(scratch))
            if found is None:
                return None
            table = SymbolTable.from_elf(found)
            if found.parent == Path(scratch):
                table.source = f"{found.name} (carried by the trace)"
            return table
        except Exception:  # noqa: BLE001 - no symbols is fine: the console works without
            return None


class ConsoleCompleter(Completer):
    """Tab completion: command names, then symbols (or info topics, register names...)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._summaries = {c.name: c.summary for c in COMMANDS}

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        symbols = self.console.symbols
        for word, start in self.console.complete(document.text_before_cursor):
            meta = self._summaries.get(word, "")
            if symbols is not None and (sym := symbols.lookup(word)) is not None:
                meta = f"{sym.kind} {sym.address:#x}"
            yield Completion(word, start_position=start, display_meta=meta)


def interruptible_runner() -> Callable[[Callable[[], Any], Callable[[], None]], Any]:
    """Run target motions in a worker thread; Ctrl-C (KeyboardInterrupt here) calls the
    motion's ``stop`` (``target.interrupt()`` for a run), so it ends cleanly and the
    console reports where."""

    def run(fn: Callable[[], Any], stop: Callable[[], None]) -> Any:
        result: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                result["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                result["error"] = e
            finally:
                done.set()

        worker = threading.Thread(target=work, name="rrvmm-console-run", daemon=True)
        worker.start()
        # (not Thread.join: a KeyboardInterrupt inside it can leave the thread marked as
        # stopped while it still runs)
        while not done.is_set():
            try:
                done.wait(0.05)
            except KeyboardInterrupt:
                if not done.is_set():
                    stop()
        worker.join()
        if "error" in result:
            raise result["error"]
        return result.get("value")

    return run


def _as_output(output: Any) -> Output:
    if output is None:
        return create_output()
    if isinstance(output, Output):
        return output
    if hasattr(output, "write"):
        return create_output(stdout=output)  # plain text unless it is a terminal
    raise TypeError(f"output must be a prompt_toolkit Output or a text stream, not {output!r}")


def run_console(
    target: ReplayTarget,
    symbols_path: str | None,
    input: Input | None = None,
    output: Output | TextIO | None = None,
) -> int:
    """The replay console over ``target`` until quit or end of input; returns 0.

    ``input``: a prompt_toolkit Input (tests: ``create_pipe_input()``); default the
    terminal, or line-by-line reading if standard input is not one. ``output``: a
    prompt_toolkit Output or a text stream (written as plain text); default stdout.
    RrvmmError if ``symbols_path`` is not a readable ELF with symbols.
    """
    symbols = load_symbols(symbols_path, target)
    console = Console(target, symbols, runner=interruptible_runner())
    out = _as_output(output)

    def show(text: str) -> None:
        if text:
            print_formatted_text(text, output=out)

    show(console.banner(Path(target.trace_path).name))
    if input is None and not sys.stdin.isatty():
        return _run_lines(console, sys.stdin, show)

    plain = isinstance(out, PlainTextOutput | DummyOutput)
    toolbar = [console.status() if not plain else ""]
    session: PromptSession[str] = PromptSession(
        PROMPT,
        input=input,
        output=out,
        history=InMemoryHistory(),
        completer=ConsoleCompleter(console),
        complete_while_typing=False,
        bottom_toolbar=None if plain else (lambda: " " + toolbar[0]),
    )
    while True:
        try:
            line = session.prompt()
        except KeyboardInterrupt:
            continue
        except EOFError:
            show("quit")
            break
        try:
            show(console.execute(line))
        except ConsoleQuit:
            break
        if not plain:
            toolbar[0] = console.status()
    return 0


def _run_lines(console: Console, lines: Iterable[str], show: Callable[[str], None]) -> int:
    for line in lines:
        line = line.rstrip("\n")
        show(f"{PROMPT}{line}")
        try:
            show(console.execute(line))
        except ConsoleQuit:
            break
    return 0
