"""The rooms keep to their layers: which package may import which (read from the source,
lazy imports inside functions included).

The debugger faces (gdbstub, console) drive the replay only through ``rrvmm.target``; the
replay never reaches up into the faces or the composition root (``rrvmm.launch``,
``rrvmm.cli``), which put everything together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rrvmm"

# (the modules under this path, the modules they must not import, why)
RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("replay", ("rrvmm.launch", "rrvmm.cli", "rrvmm.gdbstub", "rrvmm.console"),
     "the replay knows neither face nor the composition root"),
    ("console", ("rrvmm.gdbstub", "rrvmm.replay", "rrvmm.launch", "rrvmm.cli"),
     "the console drives a ReplayTarget, nothing behind it"),
    ("gdbstub", ("rrvmm.console", "rrvmm.replay", "rrvmm.launch", "rrvmm.cli"),
     "the gdb stub drives a Target, nothing behind it"),
    ("target.py", ("rrvmm",), "the protocol both faces import depends on nothing of rrvmm"),
]  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, at any depth of its code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _forbidden(name: str, banned: tuple[str, ...]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in banned)


@pytest.mark.parametrize(("room", "banned", "why"), RULES, ids=[r[0] for r in RULES])
def test_layer(room: str, banned: tuple[str, ...], why: str) -> None:
    root = PACKAGE / room
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    assert files, f"no modules under {root}"
    bad = [
        f"{f.relative_to(PACKAGE.parent)} imports {name}"
        for f in files
        for name in sorted(imported_modules(f))
        if _forbidden(name, banned)
    ]
    assert not bad, f"{why}:\n" + "\n".join(bad)


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from rrvmm.launch import replay_trace\n")
    assert "rrvmm.launch" in imported_modules(module)
