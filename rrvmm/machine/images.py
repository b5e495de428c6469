"""The files a guest boots from: read once, hashed for the trace header.

Run and record load them from the command line's paths; replay checks the recorded
sha256 against whatever it loads (``rrvmm.replay.rig``), so a trace never replays on an
image it was not recorded with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrvmm.machine.boot.kernel import read_image

__all__ = ["GuestImages"]


@dataclass
class GuestImages:
    kernel_path: Path
    kernel: bytes
    initrd_path: Path | None = None
    initrd: bytes | None = None

    @classmethod
    def load(cls, kernel: str | Path, initrd: str | Path | None = None) -> GuestImages:
        kp = Path(kernel)
        ip = Path(initrd) if initrd else None
        return cls(kp, read_image(kp), ip, read_image(ip, "initrd") if ip else None)

    def describe(self) -> dict[str, Any]:
        out = {"kernel": _image_entry(self.kernel_path, self.kernel)}
        if self.initrd_path is not None and self.initrd is not None:
            out["initrd"] = _image_entry(self.initrd_path, self.initrd)
        return out


def _image_entry(path: Path, data: bytes) -> dict[str, Any]:
    return {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
