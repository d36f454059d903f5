"""The shape of visctl's modules: no import cycles, no re-exports, enums in one stdlib-only module, commands
that do not import each other, and no environment written on import."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "visctl"

#: cycles through imports inside functions (each closes only when a function runs): none remains, and none may
#: appear. (config <-> plain_config is gone: both read YAML through visctl.yamldata; config -> environment ->
#: building -> config: the model builder reads module names through visctl.pymodules; transforms <->
#: package_transforms: what both use is in visctl.generators, and visctl passes its own names to qualify.)
KNOWN_DEFERRED_CYCLES: list[set[str]] = []


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _top_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """The imports that run when the module is imported: at module level, in if/try blocks (TYPE_CHECKING aside)."""
    found: list[ast.stmt] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                found += _top_level(node.body) + _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            found += _top_level(node.body) + _top_level(node.orelse) + _top_level(node.finalbody)
            for handler in node.handlers:
                found += _top_level(handler.body)
    return found


def imported(name: str, path: Path, deferred: bool) -> set[str]:
    """The visctl modules that ``name`` imports (at import time, or also inside functions with ``deferred``)."""
    tree = ast.parse(path.read_text())
    if deferred:
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    else:
        nodes = _top_level(tree.body)
    out = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            candidates = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            candidates = [a.name for a in node.names]
        out |= {c for c in candidates if c in MODULES and c != name and c != "visctl"}
    return out


def cycles(deferred: bool) -> list[set[str]]:
    """The strongly connected components (of more than one module) of visctl's import graph (Tarjan)."""
    graph = {m: imported(m, p, deferred) for m, p in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle(monkeypatch, tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    from visctl import b\n")
    b.write_text("from visctl.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {"visctl.a": a, "visctl.b": b})
    assert cycles(deferred=True) == [{"visctl.a", "visctl.b"}]
    assert cycles(deferred=False) == []


def test_no_import_cycle_at_import_time():
    assert cycles(deferred=False) == []


def test_no_new_import_cycle_through_deferred_imports():
    assert all(c in KNOWN_DEFERRED_CYCLES for c in cycles(deferred=True)), cycles(deferred=True)
    assert not any({"visctl.output.writer", "visctl.gallery", "visctl.images"} & c for c in cycles(deferred=True))


def test_no_re_export_lines():
    """A name lives in one module, and its users import it from there: no ``# noqa: F401`` import of a visctl
    name, no ``__all__`` (the public API, visctl/__init__.py and visctl/library/, is the one place that lists
    names from elsewhere)."""
    found = []
    for name, path in MODULES.items():
        if name == "visctl" or name.startswith("visctl.library"):
            continue
        text = path.read_text()
        for i, line in enumerate(text.splitlines(), 1):
            if "noqa: F401" in line and line.lstrip().startswith("from visctl"):
                found.append(f"{name}:{i}")
        if "__all__" in {t.id for n in ast.parse(text).body if isinstance(n, ast.Assign)
                         for t in n.targets if isinstance(t, ast.Name)}:
            found.append(f"{name}: __all__")
    assert found == []


def test_choices_imports_only_the_standard_library():
    tree = ast.parse((PACKAGE / "choices.py").read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert modules and modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


def test_every_choice_enum_lives_in_choices():
    """Every Enum of visctl is defined in visctl/choices.py, once."""
    elsewhere = []
    for name, path in MODULES.items():
        if name == "visctl.choices":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any("Enum" in ast.unparse(b) for b in node.bases):
                elsewhere.append(f"{name}.{node.name}")
    assert elsewhere == []


def test_no_command_module_imports_another():
    """A command module imports the shared wiring (commands/_shared.py), never another command."""
    commands = {m for m in MODULES if m.startswith("visctl.commands.") and not m.split(".")[-1].startswith("_")}
    found = {m: imported(m, MODULES[m], deferred=True) & commands for m in sorted(commands)}
    assert {m: sorted(v) for m, v in found.items() if v} == {}


def test_importing_every_module_writes_no_environment():
    # (not the torch model definitions, slow to import, nor `python -m visctl`, which runs the app)
    modules = sorted(m for m in MODULES if m not in ("visctl.mim_models", "visctl.__main__"))
    code = ("import importlib, os\nbefore = dict(os.environ)\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(sorted(k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k)))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**env, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
