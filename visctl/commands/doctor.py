"""`visctl doctor`: the environment a visctl run depends on, and a one-line fix for every problem."""

from __future__ import annotations

import json
from typing import Annotated

import typer

EPILOG = """Examples:

  visctl doctor

  visctl doctor --json      # for CI: exit 1 when a problem is found
"""


def doctor(
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Check torch, mmengine, grad-cam, OpenCV, the optional extras and OpenMMLab packages.

    Exit 0 when everything a run needs is fine, 1 when a problem is found (each with its fix).
    """
    from visctl import environment

    checks = environment.diagnose()
    report = environment.as_dict(checks)
    if json_out:
        typer.echo(json.dumps(report, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            mark = {"ok": "ok     ", "info": "-      ", "problem": "PROBLEM"}[c.status]
            typer.echo(f"{mark} {c.name:<{width}}  {c.detail}")
            if c.fix:
                typer.echo(f"        {'':<{width}}  fix: {c.fix}")
        problems = sum(c.status == "problem" for c in checks)
        typer.echo(f"{problems} problem(s)" if problems else "no problems found", err=True)
    if not report["ok"]:
        raise typer.Exit(1)
