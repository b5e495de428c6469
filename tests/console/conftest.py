"""Fixtures for the replay console tests: the `corrupt` guest, its symbols and a trace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rrvmm.console.symbols import SymbolTable
from rrvmm_cli import rrvmm


@pytest.fixture(scope="session")
def corrupt_elf(guest_dir: Path) -> Path:
    return guest_dir / "corrupt.elf"


@pytest.fixture(scope="session")
def corrupt_symbols(corrupt_elf: Path) -> SymbolTable:
    return SymbolTable.from_elf(corrupt_elf)


@pytest.fixture(scope="session")
def corrupt_trace(tmp_path_factory: pytest.TempPathFactory, guest_dir: Path) -> Path:
    """A recording of the corrupt guest, made with the real CLI (KVM tests only)."""
    trace = tmp_path_factory.mktemp("console") / "corrupt.rrt"
    r = rrvmm("record", "--kernel", str(guest_dir / "corrupt.mb"), "-o", str(trace), stdin=None)
    assert r.status == 3, r.err  # the guest panics: status 3 through isa-debug-exit
    return trace


@pytest.fixture
def engine(corrupt_trace: Path) -> Iterator[object]:
    """A fresh ReplayEngine over the corrupt trace, at the start of the recording."""
    from rrvmm.replay.container import open_trace
    from rrvmm.replay.engine import ReplayEngine

    with open_trace(corrupt_trace) as reader:
        eng = ReplayEngine(reader)
        try:
            yield eng
        finally:
            eng.close()
