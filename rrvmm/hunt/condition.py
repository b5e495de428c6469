"""What a hunt looks for: ``panic``, ``status:N`` or ``regex:RE`` over one recording."""

from __future__ import annotations

import re
from dataclasses import dataclass

from rrvmm.errors import ExitStatus, RrvmmError

__all__ = ["Until", "PANIC_RE"]

# Our test guests print "PANIC: ..."; Linux prints "Kernel panic - not syncing: ...".
PANIC_RE = r"\bPANIC\b|Kernel panic - not syncing"


@dataclass(frozen=True)
class Until:
    """A condition on how a recording ended: its guest output and exit status."""

    spec: str  # as the user wrote it, for the summary
    status: int | None = None
    pattern: str | None = None

    @classmethod
    def parse(cls, text: str) -> Until:
        """``panic``, ``status:N`` or ``regex:RE``; a bad one is a USAGE error."""
        if text == "panic":
            return cls(text, pattern=PANIC_RE)
        kind, sep, arg = text.partition(":")
        if sep and kind == "status":
            try:
                value = int(arg, 0)
            except ValueError:
                value = -1
            if not 0 <= value <= 255:
                raise RrvmmError(f"--until {text!r}: status must be 0-255", ExitStatus.USAGE)
            return cls(text, status=value)
        if sep and kind == "regex":
            try:
                re.compile(arg, re.MULTILINE)
            except re.error as e:
                raise RrvmmError(f"--until {text!r}: bad regex: {e}", ExitStatus.USAGE) from None
            return cls(text, pattern=arg)
        raise RrvmmError(
            f"--until {text!r}: expected panic, status:N or regex:RE", ExitStatus.USAGE
        )

    def holds(self, status: int, output: str) -> bool:
        if self.status is not None:
            return status == self.status
        assert self.pattern is not None
        return re.search(self.pattern, output, re.MULTILINE) is not None
