"""`record --chaos [SEED]`: the option, and the settings it stands for."""

from __future__ import annotations

import argparse
import sys

from rrvmm.errors import ExitStatus, RrvmmError
from rrvmm.host.chaos import ChaosSettings, new_seed, parse_seed

__all__ = ["add_chaos_arg", "chaos_settings"]

_FRESH = "fresh"


def add_chaos_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chaos",
        nargs="?",
        const=_FRESH,
        metavar="SEED",
        help="perturb timer latency, kick placement, clock jitter and input timing within"
        " what real hardware does, to make rare races show; SEED (default: a new one,"
        " printed) goes into the trace header. Replay is exact either way",
    )


def chaos_settings(args: argparse.Namespace) -> ChaosSettings | None:
    """The settings ``--chaos`` asked for (None without it); a new seed is announced on
    stderr so the user can run the same dice again."""
    text = getattr(args, "chaos", None)
    if text is None:
        return None
    if text == _FRESH:
        seed = new_seed()
        print(f"rrvmm: chaos seed {seed}", file=sys.stderr)
    else:
        try:
            seed = parse_seed(text)
        except ValueError:
            raise RrvmmError(
                f"--chaos {text!r}: expected a seed (a number, 0x hex allowed)", ExitStatus.USAGE
            ) from None
    return ChaosSettings(seed)
