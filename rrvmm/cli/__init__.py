"""`rrvmm` command line: one module per verb group (run/record, replay, trace, pack).

Errors the user can fix are one line on stderr and a distinct exit status (see
``errors.ExitStatus``); the guest's serial output alone goes to stdout.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from rrvmm import __version__
from rrvmm.cli import hunt, pack, replay, run, store, trace
from rrvmm.cli.options import parse_memory
from rrvmm.cpu.backend import BackendError
from rrvmm.errors import ExitStatus, RrvmmError

__all__ = ["main", "parse_memory"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rrvmm", description="Record/replay debugging hypervisor for guest kernels."
    )
    parser.add_argument("--version", action="version", version=f"rrvmm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log device details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run.add_parsers(sub)
    replay.add_parser(sub)
    trace.add_parser(sub)
    pack.add_parser(sub)
    store.add_parsers(sub)
    hunt.add_parser(sub)
    _verbose_after_verbs(parser)
    return parser


def _verbose_after_verbs(parser: argparse.ArgumentParser) -> None:
    """``-v`` after the verb too (``rrvmm run -v``), not only before it; a verb's own
    default must not undo ``rrvmm -v run``, hence SUPPRESS."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for verb in set(action.choices.values()):
            if not any("--verbose" in a.option_strings for a in verb._actions):
                verb.add_argument(
                    "-v",
                    "--verbose",
                    action="store_true",
                    default=argparse.SUPPRESS,
                    help="log device details (as rrvmm -v)",
                )
            _verbose_after_verbs(verb)


def _not_utf8(argv: Sequence[str]) -> str | None:
    """The first argument that is not UTF-8 (Python holds such bytes as surrogates), as
    its bytes: kernel command lines, paths in trace headers and names are UTF-8 text."""
    for arg in argv:
        try:
            arg.encode()
        except UnicodeEncodeError:
            return repr(os.fsencode(arg))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    bad = _not_utf8(argv)
    if bad is not None:
        print(f"rrvmm: a command-line argument is not valid UTF-8: {bad}", file=sys.stderr)
        return ExitStatus.USAGE
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="rrvmm: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except RrvmmError as e:
        print(f"rrvmm: {e}", file=sys.stderr)
        return e.status
    except BackendError as e:
        print(f"rrvmm: CPU backend error: {e}", file=sys.stderr)
        return ExitStatus.GUEST_CRASH
    except BrokenPipeError:
        # the reader of our output went away (e.g. `| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("rrvmm: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
