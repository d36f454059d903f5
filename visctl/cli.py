"""The root `visctl` app: one command per module under visctl/commands, registered in help order."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from visctl import __version__, _argv
from visctl.commands import boxam, browse, cam, demo, doctor, featmap, lr, pipeline, recon, slice, tsne

# Before torch is ever imported: OpenMP threads that busy-wait make CPU timings swing 10x on small machines.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(
    name="visctl",
    help="Look inside PyTorch vision models and their data: CAMs, feature maps, detector maps, t-SNE, ...",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)

MODELS = "Models"

app.command("cam", rich_help_panel=MODELS, epilog=cam.EPILOG)(cam.cam)
app.command("featmap", rich_help_panel=MODELS, epilog=featmap.EPILOG)(featmap.featmap)
app.command("pipeline", rich_help_panel="Data", epilog=pipeline.EPILOG)(pipeline.pipeline)
app.command("recon", rich_help_panel=MODELS, epilog=recon.EPILOG)(recon.recon)
app.command("boxam", rich_help_panel="Detection", epilog=boxam.EPILOG)(boxam.boxam)
app.command("slice", rich_help_panel="Detection", epilog=slice.EPILOG)(slice.slice_)
app.command("tsne", rich_help_panel=MODELS, epilog=tsne.EPILOG)(tsne.tsne)
app.command("browse", rich_help_panel="Data", epilog=browse.EPILOG)(browse.browse)
app.command("lr", rich_help_panel="Training", epilog=lr.EPILOG)(lr.lr)
app.command("demo", rich_help_panel="Tour", epilog=demo.EPILOG)(demo.demo)
app.command("doctor", rich_help_panel="Tour", epilog=doctor.EPILOG)(doctor.doctor)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"visctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[Optional[bool], typer.Option("--version", "-V", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
) -> None:
    """Look inside PyTorch vision models and their data."""


def multi_value_options() -> dict[str, list[str]]:
    """Every repeatable option of every command, by command: the ones the seeds give several values."""
    group = typer.main.get_command(app)
    return {name: [o for p in cmd.params if getattr(p, "multiple", False) for o in p.opts]
            for name, cmd in group.commands.items()}  # type: ignore[attr-defined]


def seed_argv(argv: list[str]) -> list[str]:
    """The command line with the seeds' ``--opt a b`` lists written as ``--opt a --opt b``."""
    return _argv.normalize(argv, multi_value_options())


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point."""
    try:
        app(args=seed_argv(sys.argv[1:] if argv is None else argv), prog_name="visctl")
    except Exception as exc:  # a crash outside a RunContext (which reports its own): a bug, exit 3
        from visctl.errors import report_bug

        sys.exit(report_bug(exc))
