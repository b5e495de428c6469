"""User-facing failures: one line of text and a distinct exit status each.

The CLI prints ``rrvmm: <message>`` and exits with ``status``; nothing below the CLI prints
tracebacks for these.
"""

from __future__ import annotations

__all__ = ["RrvmmError", "ExitStatus"]


class ExitStatus:
    """Process exit statuses besides the guest's own isa-debug-exit value."""

    USAGE = 64  # a bad option value
    NOT_A_KERNEL = 65  # the file is not a bootable kernel
    NO_INPUT = 66  # a file is missing or unreadable
    MEMORY_TOO_SMALL = 67  # the guest RAM cannot hold the kernel
    NO_KVM = 69  # /dev/kvm absent or unusable
    GUEST_CRASH = 70  # triple fault, KVM internal error, entry failure
    GUEST_STUCK = 71  # halted with no interrupt that could ever wake it
    DIVERGED = 72  # replay did not match the recording
    BAD_TRACE = 73  # a trace that is corrupt, truncated, too new or not a trace
    IMAGE_MISMATCH = 75  # replay given a kernel/initrd other than the recorded one
    INTERRUPTED = 130  # the user quit (escape key, SIGINT)
    TERMINATED = 143  # stopped by SIGTERM (128 + 15, as a shell reports a process it killed)


class RrvmmError(Exception):
    """An error with a one-line message for the user and the status to exit with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
