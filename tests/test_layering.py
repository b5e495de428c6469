"""The rooms keep to their layers: who may import whom, read from the source with ``ast``.

Devices are plain models (no CPU backend, no replay); backends run a vCPU and know no
device model and no replay; the debugger faces (gdbstub, console) drive the replay only
through ``rrvmm.target`` and know nothing of each other; the replay knows neither face and
never reaches back up into the composition root (``rrvmm.launch``, ``rrvmm.cli``).

Imports are followed transitively (including imports inside functions and under
TYPE_CHECKING, and the packages a module's import runs), so a rule cannot be dodged
through a module in between.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "rrvmm"


@cache
def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _with_parents(name: str) -> set[str]:
    """``name`` and the packages importing it runs (their ``__init__``), all in rrvmm."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & _modules().keys()


@cache
def direct_imports(module: str) -> frozenset[str]:
    """The rrvmm modules ``module`` imports anywhere in its source."""
    tree = ast.parse(_modules()[module].read_text(), str(_modules()[module]))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from a.b import c``: c may be a module of its own
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "rrvmm":
                found |= _with_parents(name)
    found.discard(module)
    return frozenset(found)


@cache
def reachable(module: str) -> frozenset[str]:
    """Every rrvmm module importing ``module`` can end up importing."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        for dep in direct_imports(todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    seen.discard(module)
    return frozenset(seen)


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(sources: list[str], forbidden: list[str]) -> list[str]:
    """'a -> b' for every module a in ``sources`` (packages or modules) that reaches a
    module b in ``forbidden``."""
    out = []
    for module in sorted(_modules()):
        if not any(_in(module, s) for s in sources):
            continue
        for dep in sorted(reachable(module)):
            if any(_in(dep, f) for f in forbidden):
                out.append(f"{module} -> {dep}")
    return out


def test_the_import_graph_is_read_from_real_imports() -> None:
    """The checker itself: it sees direct, package-from and lazy imports."""
    assert "rrvmm.devices.pic" in direct_imports("rrvmm.machine.pc")
    assert "rrvmm.machine.interrupts" in direct_imports("rrvmm.machine.pc")
    assert "rrvmm.devices" in reachable("rrvmm.machine.pc")
    # make_backend imports the backends inside the function: still an import
    assert any(_in(m, "rrvmm.kvm") for m in reachable("rrvmm.launch"))
    assert violations(["rrvmm.machine.pc"], ["rrvmm.devices"])


# (modules: packages or single modules, what they must not reach, why)
RULES: list[tuple[list[str], list[str], str]] = [
    (["rrvmm.devices"],
     ["rrvmm.kvm", "rrvmm.soft", "rrvmm.cpu", "rrvmm.replay", "rrvmm.machine"],
     "devices are plain models: no CPU backend, no replay"),
    (["rrvmm.kvm", "rrvmm.soft"], ["rrvmm.devices", "rrvmm.replay", "rrvmm.machine"],
     "backends run a vCPU: no device model, no replay"),
    (["rrvmm.soft"], ["rrvmm.kvm"], "the software CPU does not need KVM"),
    (["rrvmm.replay"], ["rrvmm.launch", "rrvmm.cli", "rrvmm.gdbstub", "rrvmm.console"],
     "the replay knows neither face nor the composition root"),
    (["rrvmm.console"], ["rrvmm.gdbstub", "rrvmm.replay", "rrvmm.launch", "rrvmm.cli"],
     "the console drives a ReplayTarget, nothing behind it"),
    (["rrvmm.gdbstub"], ["rrvmm.console", "rrvmm.replay", "rrvmm.launch", "rrvmm.cli"],
     "the gdb stub drives a Target, nothing behind it"),
    (["rrvmm.target"], ["rrvmm"], "the protocol both faces import depends on nothing of rrvmm"),
]  # fmt: skip


@pytest.mark.parametrize(("sources", "forbidden", "why"), RULES, ids=[r[0][-1] for r in RULES])
def test_layer(sources: list[str], forbidden: list[str], why: str) -> None:
    assert any(_in(m, s) for m in _modules() for s in sources), f"no modules in {sources}"
    bad = violations(sources, forbidden)
    assert not bad, f"{why}:\n" + "\n".join(bad)
