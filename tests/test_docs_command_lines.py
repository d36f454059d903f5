"""Every ``visctl`` command line in README.md and the documentation site (docs/) parses as the CLI parses it.

Each line goes through ``visctl.cli.seed_argv`` (the seeds' ``--opt a b`` lists) and click's full parse of the
command (option names, arity, choices, numeric ranges), as ``visctl`` would run it, without running the command:
the files the lines name (checkpoints, photos) are the reader's. A renamed or removed flag, a choice that no longer
exists or a wrong number of values fails here, on the page where it is written.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT

FENCE = re.compile(r"^```")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _command_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, command) of each ``visctl`` line in the page's code blocks, continuations joined."""
    out: list[tuple[int, str]] = []
    inside, python, pending, start = False, False, "", 0
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if FENCE.match(line.strip()):
            inside, pending = not inside, ""
            python = inside and line.strip().removeprefix("```").startswith("python")
            continue
        if not inside or python:  # a Python block's `visctl.cam(...)` is run by test_api_docs
            continue
        text = line.strip()
        if pending:
            text = pending + " " + text
        elif not re.match(r"^(\$ )?(\S+=\S+ )*(torchrun .*?)?visctl\b", text):
            continue
        else:
            start = number
        if text.endswith("\\"):
            pending = text[:-1].rstrip()
            continue
        pending = ""
        out.append((start, text))
    return out


def _argv(text: str) -> list[str]:
    """The words after ``visctl``: prompt, environment assignments, torchrun and comments dropped."""
    words = shlex.split(re.sub(r"\$\{?(\w+)\}?", r"\1", text.removeprefix("$ ")), comments=True)
    return words[words.index("visctl") + 1:]


LINES = [(page, number, text) for page in PAGES for number, text in _command_lines(page)]


def test_the_pages_have_command_lines():
    """The extraction finds the examples (an empty parametrization would prove nothing)."""
    assert sum(page.name == "README.md" for page, _, _ in LINES) >= 12 and len(LINES) >= 60


@pytest.mark.parametrize(("page", "number", "text"), LINES,
                         ids=[f"{p.relative_to(ROOT)}:{n}" for p, n, _ in LINES])
def test_command_line_parses(page, number, text):
    from visctl.cli import command, seed_argv

    argv = seed_argv(_argv(text))
    group = command()
    if not argv or argv[0] in ("--help", "--version", "--install-completion", "--show-completion"):
        return
    sub = group.commands.get(argv[0])  # type: ignore[attr-defined]
    assert sub is not None, f"{page.name}:{number}: no command {argv[0]!r}: {text}"
    try:
        sub.make_context(argv[0], argv[1:])
    except Exception as err:  # Typer's click raises its own ClickException family (typer._click)
        if type(err).__name__ == "Exit":  # --help
            return
        if not hasattr(err, "format_message"):
            raise
        pytest.fail(f"{page.relative_to(ROOT)}:{number}: {err.format_message()}\n  {text}")
