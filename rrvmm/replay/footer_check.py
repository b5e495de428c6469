"""Does the end replay reached agree with the end the recording's footer describes?

Replay checks every event it finds, but events that are *missing* leave nothing to check:
a trace whose tail was cut off and whose footer (exit count, end reason, serial hash) was
kept, then resealed (xxh3 is no secret), would replay "matched". The footer is written
only by a recorder that finished, so a finished trace must replay to exactly that end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from rrvmm.machine.pc import RunResult
from rrvmm.replay.replayer import RECORDING_END

__all__ = ["EndDisagreement", "end_disagreement"]


@dataclass(frozen=True)
class EndDisagreement:
    """What differs. ``missing_events``: the trace stops before its own footer's end, so
    the file is at fault (corrupt), not the replay (diverged)."""

    what: str
    expected: str
    actual: str
    missing_events: bool

    def one_line(self, trace: str) -> str:
        if self.missing_events:
            return (
                f"{trace}: corrupt: events end at exit {self.actual} but the footer records"
                f" {self.expected} exits"
            )
        return f"{self.what}: expected {self.expected}, got {self.actual}"


def end_disagreement(
    footer: dict[str, Any] | None, exits: int, result: RunResult | None, serial: bytes
) -> EndDisagreement | None:
    """None if replay's end (``exits`` replayed, the guest's ``result`` if it ended by
    itself, the ``serial`` output) is the footer's; a trace without footer has no claims."""
    if not footer:
        return None
    # a replay that ran out of events (where a stopped recording ended, or where a cut or
    # shortened trace does) has no end of its own to compare
    ran_out = result is None or (result.status, result.reason) == (
        RECORDING_END.status,
        RECORDING_END.reason,
    )
    recorded = footer.get("exits")
    if isinstance(recorded, int) and recorded != exits:
        if ran_out and exits < recorded:
            return EndDisagreement("end of the trace", str(recorded), str(exits), True)
        return EndDisagreement("exit count at the end", str(recorded), str(exits), False)
    if result is not None and not ran_out:
        for key, actual in (("status", result.status), ("reason", result.reason)):
            if key in footer and footer[key] != actual:
                return EndDisagreement(f"end {key}", repr(footer[key]), repr(actual), False)
    digest = footer.get("serial_sha256")
    if isinstance(digest, str):
        actual_digest = hashlib.sha256(serial).hexdigest()
        if actual_digest != digest:
            return EndDisagreement(
                "serial output sha256", digest[:16] + "…", actual_digest[:16] + "…", False
            )
    return None
