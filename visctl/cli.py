"""The root `visctl` app: one command per module under visctl/commands, registered in help order."""

from __future__ import annotations

import functools
import os
import sys
from typing import Annotated, Any, Optional

import typer

from visctl import __version__, _argv
from visctl.commands import audit, boxam, browse, cam, demo, doctor, featmap, lr, pipeline, recon, slice, tsne
from visctl.errors import EXIT_USAGE, VisctlError, report

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
app.command("audit", rich_help_panel=MODELS, epilog=audit.EPILOG)(audit.audit)
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


@functools.lru_cache(maxsize=1)
def command() -> Any:
    """The click command behind ``app``, built once per process (building it costs ~0.15 s)."""
    return typer.main.get_command(app)


def multi_value_options() -> dict[str, list[str]]:
    """Every repeatable option of every command, by command: the ones the seeds give several values."""
    group = command()
    return {name: [o for p in cmd.params if getattr(p, "multiple", False) for o in p.opts]
            for name, cmd in group.commands.items()}  # type: ignore[attr-defined]


def seed_argv(argv: list[str]) -> list[str]:
    """The command line with the seeds' ``--opt a b`` lists written as ``--opt a --opt b``."""
    return _argv.normalize(argv, multi_value_options())


def _click_error(err: Exception) -> int:
    """Print one of click's errors (bad value, missing argument, no such option) as visctl prints its own."""
    ctx = getattr(err, "ctx", None)
    message = err.format_message()  # type: ignore[attr-defined]
    if ctx is not None and message == ctx.get_help():  # `visctl` alone: the help, as click shows it
        err.show()  # type: ignore[attr-defined]
        return EXIT_USAGE
    message = " ".join(message.split()).replace(": Value error, ", ": ")  # one line, whatever click wrapped
    if ctx is None or ctx.parent is None:
        hint = "run 'visctl --help' for the commands"
    else:
        hint = f"run '{ctx.command_path} --help' for the arguments, the options and their allowed values"
    report(VisctlError(message[:1].lower() + message[1:], hint=hint))
    return int(getattr(err, "exit_code", EXIT_USAGE)) or EXIT_USAGE


def run(argv: list[str], prog_name: str = "visctl") -> int:
    """Run the CLI on ``argv`` and return the exit status; every error is printed as ``error:`` / ``hint:``.

    The one path from a command line to an exit status: the console script and the tests' ``invoke`` fixture
    both come through here, so click's own errors (a value out of range, a missing argument, an unknown option)
    read like visctl's. Exit status: 0 done, 1 some inputs failed, 2 a user mistake, 3 a bug, 130 interrupted.
    """
    # before torch is imported (a command imports it): OpenMP threads that busy-wait make CPU timings swing 10x on
    # small machines. Set here, when the CLI runs, never on import: a notebook's environment stays its own
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from visctl import _options

    _options.GIVEN[:] = _options.given_words(argv)  # a file or folder named like an option is said as given
    try:
        status = command().main(args=seed_argv(argv), prog_name=prog_name, standalone_mode=False)
    except VisctlError as err:  # raised outside a RunContext: said with the command's flags, as a run says it
        name = next((a for a in argv if not a.startswith("-")), "")
        return report(_options.cli_error(name, err), debug="--debug" in argv)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 1
    except BrokenPipeError:  # stdout's reader left outside a run (`visctl cam --help | head -1`)
        from visctl.context import stdout_closed

        return stdout_closed()
    except Exception as err:
        if hasattr(err, "format_message") and hasattr(err, "exit_code"):  # click's ClickException family
            return _click_error(err)
        from visctl.errors import missing_optional, out_of_memory, report_bug

        memory = out_of_memory(err)
        if memory is not None:
            return report(memory, debug="--debug" in argv)
        missing = missing_optional(err, " ".join(["visctl"] + [a for a in argv if not a.startswith("-")][:1]))
        if missing is not None:  # a plain install: one line saying what to install, not a traceback
            return report(missing, debug="--debug" in argv)
        return report_bug(err)  # a crash outside a RunContext (which reports its own): a bug, exit 3
    return status if isinstance(status, int) else 0


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point."""
    sys.exit(run(sys.argv[1:] if argv is None else argv))
