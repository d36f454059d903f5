"""The model commands' wiring from a command line to the library: ``IMG... CONFIG [CHECKPOINT]``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from visctl.context import RunContext
from visctl.library._common import ModelInputs, preview

if TYPE_CHECKING:
    from visctl.library._run import Run


def split_args(ctx: RunContext, args: list[str], *, default_scope: str | None = None,
               ) -> tuple[list[Path], str, str | None]:
    """``IMG... CONFIG [CHECKPOINT]`` -> (the gathered images, the config, the checkpoint).

    The seeds' ``--cfg-options`` after the positionals join the run's (after ``default_scope=``, mmrazor's
    ``--repo``).
    """
    from visctl import config
    from visctl import images as imgs

    args, extra_options = config.pop_cfg_options(args)
    if default_scope:
        ctx.session.cfg_options.append(f"default_scope={default_scope}")
    ctx.session.cfg_options.extend(extra_options)
    img_specs, cfg_spec, checkpoint = config.split_inputs(args)
    return imgs.gather_images(img_specs, note=ctx.session.note), cfg_spec, checkpoint


def preview_hook(ctx: RunContext, wanted: bool) -> Callable[[ModelInputs], None]:
    """The library's ``on_model`` callback of ``--preview-model``: print the layers and stop, once loaded."""

    def on_model(mi: ModelInputs) -> None:
        if wanted:
            preview(ctx.session, mi)
            raise typer.Exit(0)

    return on_model


def open_model(ctx: RunContext, args: list[str], *,
               check_paths: Callable[[list[Path]], object] | None = None) -> ModelInputs:
    """Split ``IMG... CONFIG [CHECKPOINT]``, load the config and the model, and prepare one example.

    ``check_paths`` sees the gathered images before anything is loaded (to refuse an option that does not
    fit their number).
    """
    from visctl.library import _common

    paths, cfg_spec, checkpoint = split_args(ctx, args)
    if check_paths is not None:
        check_paths(paths)
    return _common.open_model(ctx.session, cfg_spec, checkpoint, paths)


def finish(ctx: RunContext) -> None:
    """``ctx.finish()``, and under torchrun the end of every rank: rank 0 writes the run's one manifest and
    gallery (from the records that ``distributed.merge_records`` gathered) and prints the results while the
    other ranks wait (torchrun stops every rank as soon as one exits with a failure), then all leave the
    process group with the same status: 1 when an input failed on any rank."""
    if ctx.world <= 1:
        ctx.finish()
        return
    from visctl import distributed

    code = 0
    try:
        ctx.finish()
    except typer.Exit as done:
        code = done.exit_code
    finally:  # also when rank 0 cannot write the record: the other ranks wait for it in leave()'s barrier
        distributed.leave()
    if code:
        raise typer.Exit(code)


def execute(ctx: RunContext, run: Run) -> None:
    """Drive a library run (:class:`visctl.library._run.Run`) as every command does: open the output folder's
    record, write each item as it finishes (in the writer's threads where the run asks), merge torchrun's ranks,
    write the run-wide outputs, then the manifest and the exit status (1 when an input failed or a
    ``--fail-under`` check did)."""
    import sys

    from visctl.library._run import IO_THREADS
    from visctl.output.writer import io_threads

    writer = ctx.open_writer(run.params, out_dir=run.out_dir)
    for note in run.notes:
        writer.note(note)
    threads = io_threads(ctx.threads) if run.writer_threads == IO_THREADS else run.writer_threads
    if threads:
        writer.background(threads, queue=run.writer_queue)
    run.begin(writer)
    try:
        for item in run.items():
            run.record(writer, item)
        run.merge_ranks(writer)
    finally:
        if not ctx.rank:
            run.close(writer)
    for line in run.summary():
        ctx.log(line)
    failed = run.failed_checks()
    code = 0
    try:
        finish(ctx)
    except typer.Exit as done:
        code = done.exit_code
    if failed:  # every rank: torchrun's status is the ranks'
        if not ctx.rank:
            print("failed: " + ctx.reporter.cli("; ".join(failed)), file=sys.stderr)  # fail_under= as its flag
        code = code or 1
    if code:
        raise typer.Exit(code)
