"""The interactive replay console (``rrvmm replay TRACE --console``)."""

from __future__ import annotations

from rrvmm.console.app import run_console
from rrvmm.console.commands import Console
from rrvmm.console.symbols import SymbolTable

__all__ = ["run_console", "Console", "SymbolTable"]
