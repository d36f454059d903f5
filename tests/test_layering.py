"""Domain modules never import the CLI's toolkit (typer, rich, click): they take plain values and callbacks."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
from conftest import ROOT

PACKAGE = ROOT / "visctl"
# the CLI layer: the Typer app, its shared options and argv handling, the run context, the commands and the
# `python -m visctl` entry (which only calls the app)
CLI_LAYER = {"cli.py", "context.py", "_options.py", "_argv.py", "__main__.py"}
BANNED = ("typer", "rich", "click")


def domain_modules() -> list:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if p.relative_to(PACKAGE).parts[0] != "commands" and str(p.relative_to(PACKAGE)) not in CLI_LAYER)


def banned_imports(source: str) -> list[tuple[int, str]]:
    """(line, module) of every import of a banned package, at module level or inside a function or class."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in BANNED]
    return found


def test_the_scan_finds_imports_at_any_depth():
    src = ("import typer\nfrom rich.console import Console\nimport os, click.core\n"
           "def f():\n    import rich\n    class A:\n        def g(self):\n            from typer.testing import X\n"
           "import richer\nfrom visctl import rich_text\n")
    assert banned_imports(src) == [(1, "typer"), (2, "rich.console"), (3, "click.core"), (5, "rich"),
                                   (8, "typer.testing")]


def test_domain_modules_list_covers_the_library():
    names = {str(p.relative_to(PACKAGE)) for p in domain_modules()}
    assert {"cams.py", "output/writer.py", "output/manifest.py", "gallery.py", "show.py", "layers.py", "session.py", "results.py",
            "library/__init__.py"} <= names
    assert not names & CLI_LAYER and not any(n.startswith("commands/") for n in names)


@pytest.mark.parametrize("path", domain_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_domain_module_never_imports_typer_rich_or_click(path):
    assert banned_imports(path.read_text()) == []


def test_importing_every_domain_module_loads_no_cli_toolkit():
    modules = ["visctl." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
               for p in domain_modules() if p.name != "mim_models.py"]  # torch model definitions: slow, no CLI
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "mm = 'mmengine' in sys.modules\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(BANNED)!r} - ({{'rich'}} if mm else set())))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_real_library_call_loads_no_cli_toolkit_and_writes_no_environment():
    """After ``import visctl.cli`` nothing in os.environ changed, and a real call of the library (a CAM of the
    demo classifier on a generated image) leaves typer, click and visctl.context out of ``sys.modules`` (rich
    too, unless mmengine, which imports it for its own logging, is loaded)."""
    code = ("import os, sys\n"
            "import visctl.library, visctl\n"
            "from visctl.shapes import make_scene\n"
            "r = visctl.cam(make_scene(seed=1, size=64).image, 'examples/demo_classifier/config.py')\n"
            "assert len(r.items) == 1\n"
            "mm = 'mmengine' in sys.modules\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(BANNED)!r} - ({{'rich'}} if mm else set()))"
            " + sorted({'visctl.context'} & set(sys.modules)))\n"  # the CLI's run context stays out as well
            "before = dict(os.environ)\n"  # (a library may set its own variables during the call: cv2 does)
            "import visctl.cli\n"
            "print(sorted(k for k in set(os.environ) ^ set(before)))\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**env, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    toolkit, changed = out.stdout.strip().splitlines()[-2:]
    assert toolkit == "[]"
    assert changed == "[]"


def context_imports(source: str) -> list[tuple[int, str]]:
    """(line, what) of every import of the CLI's run context (``visctl.context``), at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name == "visctl.context"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "visctl.context":
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "visctl":
            found += [(node.lineno, f"visctl.{a.name}") for a in node.names if a.name == "context"]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:  # relative: `from ..context import X`
            found += [(node.lineno, f"{'.' * node.level}{node.module or ''}") for a in node.names
                      if node.module == "context" or (node.module is None and a.name == "context")]
    return found


def test_the_context_scan_finds_every_spelling():
    src = ("import visctl.context\nfrom visctl.context import RunContext\nfrom visctl import context, session\n"
           "def f():\n    from ..context import RunContext\n    from . import context\n"
           "from visctl.contexts import X\nimport visctl.session\n")
    assert [line for line, _ in context_imports(src)] == [1, 2, 3, 5, 6]


@pytest.mark.parametrize("path", domain_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_domain_module_never_imports_the_run_context(path):
    """The library takes a :class:`visctl.session.Session`; the CLI's RunContext is not one and never reaches it."""
    assert context_imports(path.read_text()) == []


def test_the_run_context_holds_a_session_and_is_not_one(tmp_path):
    from visctl.context import ConsoleReporter, RunContext
    from visctl.session import Reporter, Session

    assert not issubclass(RunContext, Session)
    ctx = RunContext("cam", out_dir=tmp_path / "o")
    assert not isinstance(ctx, Session) and type(ctx.session) is Session
    assert isinstance(ctx.session.reporter, ConsoleReporter) and isinstance(ctx.session.reporter, Reporter)
