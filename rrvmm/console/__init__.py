"""The interactive replay console (``rrvmm replay TRACE --console``)."""

from __future__ import annotations

from .app import run_console
from .commands import Console
from .symbols import SymbolTable

__all__ = ["run_console", "Console", "SymbolTable"]
