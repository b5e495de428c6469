"""A replay's terminal: the answers a guest's terminal queries get are not left at the prompt.

A Linux guest asks the terminal where the cursor is (``ESC [ 6 n``, e.g. to learn the
screen size); the terminal answers on *input* (``ESC [ 5 ; 5 R``). While recording, that
answer is serial input to the guest (and recorded). A replay prints the same query again,
but never reads input, so the answers stayed in the terminal's input queue: echoed while
the replay ran and then read by the shell, which showed ``;5R;5R`` at the prompt. During a
replay the terminal therefore does not echo, and whatever input is pending when it ends
(the answers, and keys typed meanwhile, which the replay could not use) is discarded.
"""

from __future__ import annotations

import contextlib
import os
import termios
import time
from collections.abc import Iterator

__all__ = ["replay_terminal"]

_SETTLE_S = 0.05  # for answers to the last queries still on their way from the terminal


@contextlib.contextmanager
def replay_terminal(input_fd: int | None, output_fd: int | None) -> Iterator[None]:
    """No echo on ``input_fd`` while the body runs, pending input dropped after it; does
    nothing unless both are the terminal."""
    if input_fd is None or output_fd is None:
        yield
        return
    try:
        if not (os.isatty(input_fd) and os.isatty(output_fd)):
            yield
            return
        saved = termios.tcgetattr(input_fd)
    except (OSError, termios.error):
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)
    try:
        termios.tcsetattr(input_fd, termios.TCSANOW, quiet)
        yield
    finally:
        with contextlib.suppress(OSError, termios.error):
            time.sleep(_SETTLE_S)
            termios.tcflush(input_fd, termios.TCIFLUSH)
            termios.tcsetattr(input_fd, termios.TCSANOW, saved)
