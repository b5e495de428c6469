"""Guest symbols from an ELF file (pyelftools): name -> address and address -> name+offset.

Functions, data objects and plain labels (assembly symbols without a type) of the ELF's
``.symtab`` are kept; file, section and absolute symbols are not. Sizes come from the symbol
table, so ``watch table`` watches the whole object.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path

from rrvmm.inputfile import open_input

__all__ = ["Symbol", "SymbolTable", "SymbolError"]

FUNCTION = "function"
OBJECT = "object"
LABEL = "label"

_KINDS = {"STT_FUNC": FUNCTION, "STT_OBJECT": OBJECT, "STT_NOTYPE": LABEL}


class SymbolError(Exception):
    """The file cannot be read as an ELF symbol table."""


@dataclass(frozen=True)
class Symbol:
    name: str
    address: int
    size: int
    kind: str  # FUNCTION, OBJECT or LABEL
    section: int = 0  # section index (symbols only describe addresses of their own section)
    is_global: bool = True

    def contains(self, address: int) -> bool:
        return self.address <= address < self.address + self.size


@dataclass(frozen=True)
class _Section:
    start: int
    end: int
    index: int


class SymbolTable:
    """Symbols by name and by address."""

    def __init__(self, symbols: list[Symbol], sections: list[_Section] | None = None,
                 source: str = "") -> None:  # fmt: skip
        self.source = source
        self._sections = sorted(sections or [], key=lambda s: s.start)
        by_name: dict[str, Symbol] = {}
        for s in symbols:
            old = by_name.get(s.name)
            # a global wins over a local of the same name; otherwise the first one stays
            if old is None or (s.is_global and not old.is_global):
                by_name[s.name] = s
        self._by_name = by_name
        # several names can share an address; prefer functions/objects, globals, then the name
        rank = {FUNCTION: 0, OBJECT: 0, LABEL: 1}
        self._by_addr = sorted(
            symbols, key=lambda s: (s.address, rank[s.kind], not s.is_global, s.name)
        )
        self._addrs = [s.address for s in self._by_addr]

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_elf(cls, path: str | Path) -> SymbolTable:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
        from elftools.elf.sections import SymbolTableSection

        try:
            # a FIFO or /dev/zero as --symbols: refused, not waited on
            with os.fdopen(open_input(path), "rb") as f:
                elf = ELFFile(f)
                sections = [
                    _Section(sec["sh_addr"], sec["sh_addr"] + sec["sh_size"], i)
                    for i, sec in enumerate(elf.iter_sections())
                    if sec["sh_flags"] & 2 and sec["sh_size"]  # SHF_ALLOC
                ]
                symtab = elf.get_section_by_name(".symtab")
                if not isinstance(symtab, SymbolTableSection):
                    raise SymbolError(f"{path}: no symbol table (stripped?)")
                symbols = []
                for sym in symtab.iter_symbols():
                    kind = _KINDS.get(sym["st_info"]["type"])
                    shndx = sym["st_shndx"]
                    if kind is None or not sym.name or not isinstance(shndx, int):
                        continue  # files, sections, undefined and absolute symbols
                    symbols.append(
                        Symbol(sym.name, sym["st_value"], sym["st_size"], kind, shndx,
                               sym["st_info"]["bind"] != "STB_LOCAL")
                    )  # fmt: skip
        except FileNotFoundError:
            raise SymbolError(f"symbol file not found: {path}") from None
        except IsADirectoryError:
            raise SymbolError(f"symbol file is a directory: {path}") from None
        except OSError as e:
            raise SymbolError(f"cannot read symbol file {path}: {e.strerror}") from None
        except ELFError as e:
            raise SymbolError(f"{path} is not an ELF file: {e}") from None
        return cls(symbols, sections, str(path))

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self._by_name)

    def lookup(self, name: str) -> Symbol | None:
        return self._by_name.get(name)

    def names(self, prefix: str = "", kinds: tuple[str, ...] | None = None) -> list[str]:
        """Symbol names starting with ``prefix`` (of ``kinds`` if given), sorted."""
        return sorted(
            n
            for n, s in self._by_name.items()
            if n.startswith(prefix) and (kinds is None or s.kind in kinds)
        )

    def _section_of(self, address: int) -> _Section | None:
        for sec in self._sections:
            if sec.start <= address < sec.end:
                return sec
        return None

    def find(self, address: int) -> tuple[Symbol, int] | None:
        """The symbol ``address`` belongs to and the offset into it, or None.

        A function or object whose extent holds the address wins; otherwise the nearest
        symbol before it in the same section (assembly labels have no size).
        """
        i = bisect.bisect_right(self._addrs, address)
        best: Symbol | None = None
        for s in reversed(self._by_addr[max(0, i - 64) : i]):
            if s.size and s.contains(address) and (best is None or s.size < best.size):
                best = s
        if best is not None:
            return best, address - best.address
        if i == 0:
            return None
        sec = self._section_of(address)
        if sec is None:
            return None
        # the nearest symbol below it in the same section (by preference at one address)
        for j in range(i - 1, -1, -1):
            s = self._by_addr[j]
            if s.address < sec.start:
                break
            if s.section == sec.index:
                k = bisect.bisect_left(self._addrs, s.address)
                for t in self._by_addr[k : j + 1]:
                    if t.section == sec.index:
                        return t, address - t.address
        return None

    def describe(self, address: int) -> str:
        """'name' or 'name+off' for ``address``; '' if no symbol covers it."""
        found = self.find(address)
        if found is None:
            return ""
        sym, off = found
        return f"{sym.name}+{off}" if off else sym.name

    def function_at(self, address: int) -> Symbol | None:
        """The sized function whose extent holds ``address``."""
        found = self.find(address)
        if found is not None and found[0].kind == FUNCTION and found[0].contains(address):
            return found[0]
        return None
