"""Options every model command shares, declared once as Annotated aliases, and the decorator that adds them.

A command lists the shared options it takes with :func:`shared`; they are added to its signature (which Typer
reads) and reach it as one frozen :class:`CommandOptions` in its ``opts`` parameter::

    @opt.shared(*opt.MODEL, batch_size=4)
    def boxam(args: ..., topk: ... = 10, *, opts: opt.CommandOptions) -> None:
        with RunContext("boxam", opts, out_dir=opts.out_dir) as ctx: ...
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Optional, TypeVar

import typer

from visctl.arguments import SEED_MAX, THREADS_MAX  # the library checks the same bounds
from visctl.choices import Amp, ChannelOrder, ImageFormat, Phase
from visctl.errors import VisctlError
from visctl.images import DEFAULT_MAX_PIXELS
from visctl.options import Options
from visctl.session import RunOptions


def split_list(values: list[str] | None, option: str = "--target-layers", what: str = "layer name",
               ) -> list[str] | None:
    """Values of a repeatable option, each of which may also be comma-separated (``-t a,b -t c``); an empty
    value (``-t ''``, ``-t a,,b``) is refused, not read as the default."""
    from visctl.arguments import split_option

    return split_option(values, option, what)



_INPUTS_HELP = "Images (files, directories, globs), then a {} or model name, then a checkpoint."
ImagesConfigCheckpoint = Annotated[list[str], typer.Argument(
    metavar="IMG... CONFIG [CHECKPOINT]", help=_INPUTS_HELP.format("config file"), show_default=False)]
DetectorInputs = Annotated[list[str], typer.Argument(
    metavar="IMG... CONFIG [CHECKPOINT]", help=_INPUTS_HELP.format("detector config"), show_default=False)]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", rich_help_panel="Run")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1, max=THREADS_MAX,
    help="CPU threads for torch [default: usable cores, at most 16; OpenMP waits passively].", rich_help_panel="Run")]
BatchSize = Annotated[int, typer.Option("--batch-size", "--batch_size", min=1, help="Images per forward.",
                                        rich_help_panel="Run")]
CfgOptions = Annotated[Optional[list[str]], typer.Option(
    "--cfg-options", "--cfg_options", help="Override config keys: key=value (repeatable), mmengine syntax.",
    rich_help_panel="Run")]
OutDir = Annotated[Optional[Path], typer.Option(
    "--out-dir", "-o", "--output-dir", help="Output directory [default: visctl-out/<command>].",
    rich_help_panel="Output")]
Show = Annotated[bool, typer.Option("--show", help="Open a window per output (saves instead when headless).",
                                    rich_help_panel="Output")]
Json = Annotated[bool, typer.Option("--json", help="Print the manifest as JSON on stdout.",
                                    rich_help_panel="Output")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or info on stderr.",
                                     rich_help_panel="Output")]
Seed = Annotated[Optional[int], typer.Option("--seed", min=0, max=SEED_MAX,
                                             help="Seed for every random generator.", rich_help_panel="Run")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks and every checkpoint key.",
                                     rich_help_panel="Run")]
SaveRaw = Annotated[bool, typer.Option("--save-raw", "--save_raw", help="Also save the maps as float32 .npy.",
                                       rich_help_panel="Output")]
PreviewModel = Annotated[bool, typer.Option(
    "--preview-model", "--preview_model", help="Print every layer with its output shape, then exit.",
    rich_help_panel="Model")]
TargetLayers = Annotated[Optional[list[str]], typer.Option(
    "--target-layers", "--target_layers",
    help="Layer path(s): backbone.layer4, layer4[-1], blocks.-1.norm1 (repeatable or comma-separated).",
    rich_help_panel="Model")]
Backend = Annotated[Optional[str], typer.Option(
    "--backend", help="Also log the images to an mmengine vis backend: local, tensorboard or wandb (offline "
    "unless wandb is configured).", rich_help_panel="Output",
    autocompletion=lambda incomplete: [b for b in ("local", "tensorboard", "wandb") if b.startswith(incomplete)])]
MaxPixels = Annotated[int, typer.Option(
    "--max-pixels", "--max_pixels", min=1,
    help="Pixel budget (width x height) of one input image, read from its header before decoding: a larger "
    "image (a decompression bomb) is skipped and listed as failed.", rich_help_panel="Run")]
UnsafeLoadCheckpoint = Annotated[bool, typer.Option(
    "--unsafe-load-checkpoint",
    help="Load a checkpoint that safe (weights-only) loading refuses with a full pickle load, which runs any "
    "code the file contains: only for files you trust.", rich_help_panel="Model")]

_PANEL_HELP = ("Long side of each panel in pixels [default: the original image's, at most {cap}, at least 160]; "
               "the size used is in the manifest's params.")
PanelSize = Annotated[Optional[int], typer.Option(
    "--panel-size", min=32, max=8192, show_default=False, rich_help_panel="Output", help=_PANEL_HELP.format(cap=384))]
BoxamPanelSize = Annotated[Optional[int], typer.Option(
    "--panel-size", min=32, max=8192, show_default=False, rich_help_panel="Output", help=_PANEL_HELP.format(cap=512))]


@dataclass(frozen=True)
class CommandOptions(RunOptions):
    """The shared options of one command line: :class:`RunOptions` plus those only a command has (the library
    takes ``out_dir``'s folder and ``batch_size`` as arguments of each call; the others are the CLI's own)."""

    out_dir: Path | None = None
    batch_size: int | None = None
    preview_model: bool = False  # print the layers, then exit
    show_interval: float | None = None  # seconds per output with --show


class Param(NamedTuple):
    """A shared option that one command declares its own way (another help or type): alias and default."""

    annotation: Any
    default: Any


def seed(help: str, *, optional: bool = False) -> Param:
    """``--seed`` with a command's own help, and 0 by default: the same random draws every run."""
    kind: Any = Optional[int] if optional else int
    return Param(Annotated[kind, typer.Option("--seed", min=0, max=SEED_MAX, help=help)], 0)


def after(name: str, *own: str, names: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``names`` with some of the command's own parameters placed after the shared option ``name``."""
    names = MODEL if names is None else names
    at = names.index(name) + 1
    return (*names[:at], *own, *names[at:])


F = TypeVar("F", bound=Callable[..., Any])


def shared(*names: str, settings: type[Options] | None = None, cli_only: tuple[str, ...] = (),
           **overrides: Any) -> Callable[[F], F]:
    """Add the shared options ``names`` to a command's signature; the command gets them as ``opts``.

    ``names`` are the last options of the command, in --help order. A name that is not a shared option is one
    of the command's own parameters, moved to that place (e.g. tsne's ``--work-dir`` beside ``--out-dir``).
    ``overrides`` give a shared option another default (``batch_size=4``) or, as a :class:`Param`, another
    declaration (its own help text). The command declares ``opts`` (keyword-only) and receives one frozen
    :class:`CommandOptions`; the options it did not take keep :class:`RunOptions`' defaults.

    ``settings``: the command's :class:`visctl.options.Options` class. Its fields are taken from the command
    line (its own options and the shared ones of the same name, as ``batch_size``) and reach the command as one
    object in its ``settings`` parameter, built in one call; the parameters named in ``cli_only`` stay the
    command's own (a field the CLI spells its own way). The command's flags are recorded for
    :func:`cli_error`, which names them in the library's errors instead of the fields.
    """
    unknown = set(overrides) - set(names)
    if unknown:
        raise TypeError(f"overrides of options not taken: {sorted(unknown)}")
    taken = [n for n in names if n in SHARED]

    def add(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = {n: p for n, p in signature.parameters.items() if n != "opts"}
        own.pop("settings", None)
        if "opts" not in signature.parameters or set(taken) & set(own):
            raise TypeError(f"{command.__name__}: declare `*, opts` and none of the shared options {taken}")
        tail = []
        for name in names:
            if name not in SHARED:
                tail.append(own.pop(name))
                continue
            declared = overrides.get(name, SHARED[name])
            if not isinstance(declared, Param):
                declared = SHARED[name]._replace(default=declared)
            tail.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                          annotation=declared.annotation, default=declared.default))

        name = command.__name__.rstrip("_")
        fields = [f for f in settings.__dataclass_fields__ if f not in cli_only] if settings else []

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            given = {n: values[n] for n in fields if n in values}
            opts = CommandOptions.of({n: values.pop(n) for n in taken})
            if settings is None:
                return command(**values, opts=opts)
            for n in fields:
                if n not in taken:
                    values.pop(n, None)
            try:
                made = settings.of(given)
            except VisctlError as err:
                raise cli_error(name, err) from None
            return command(**values, opts=opts, settings=made)

        params = [*own.values(), *tail]
        FLAGS[name] = {p.name: flag for p in params if (flag := _flag_of(p.annotation))}
        OFF[name] = {p.name: flag for p in params if (flag := _flag_of(p.annotation, off=True))}
        run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}  # what typing.get_type_hints reads
        return run  # type: ignore[return-value]

    return add


Format = Annotated[ImageFormat, typer.Option(
    "--format", help="Figures as png (lossless, the slowest to encode and the largest), jpg (quality 95, several "
    "times faster to encode: for large runs) or webp (quality 90, the smallest).", case_sensitive=False,
    rich_help_panel="Output")]


AmpOption = Annotated[Amp, typer.Option(
    "--amp", help="CUDA only: autocast the forward to bf16 or fp16 (gradient methods whose graph starts at the "
    "target layer); refused on a CPU.", case_sensitive=False, rich_help_panel="Run")]


# the data commands' (pipeline and browse) arguments
#: mmpretrain's -r/--rescale-factor (pipeline and browse)
RescaleFactor = Annotated[Optional[float], typer.Option(
    "--rescale-factor", "--rescale_factor", "-r", show_default=False,
    help="With --mode original: scale the original image by this factor (mmpretrain's browse_dataset.py; "
    "-r 10 for CIFAR's 32 px images).")]
#: mmpretrain's -c/--channel-order (pipeline and browse)
ChannelOrderOption = Annotated[Optional[ChannelOrder], typer.Option(
    "--channel-order", "--channel_order", "-c", case_sensitive=False, show_default=False,
    help="The channel order of the pipeline's images, shown as that (mmpretrain's flag: a wrong one swaps the "
    "colours as mmpretrain shows them) [default: their own: BGR from LoadImageFromFile, RGB for CIFAR].")]
ShowInterval = Annotated[float, typer.Option("--show-interval", "--show_interval", "-i", min=0.0,
                                             help="Seconds per output with --show.")]
NotShow = Annotated[bool, typer.Option("--not-show", "--not_show", help="Accepted for the peers' habit; visctl "
                                       "shows only with --show.", hidden=True)]


#: the dataset commands' (pipeline, browse) positional CONFIG and --phase
DataConfig = Annotated[str, typer.Argument(metavar="CONFIG", help="A config with <phase>_dataloader.dataset.",
                                           show_default=False)]
PhaseOption = Annotated[Phase, typer.Option("--phase", "-p", help="Which dataloader's dataset and pipeline.")]


#: command -> its parameters' flags by name (``image_format`` -> ``--format``): what :func:`cli_error` names
FLAGS: dict[str, dict[str, str]] = {}
#: command -> the negative flags of its on/off options (``overlaid`` -> ``--no-overlaid``): ``overlaid=False``
OFF: dict[str, dict[str, str]] = {}


def _flag_of(annotation: Any, off: bool = False) -> str | None:
    """The first long flag an ``Annotated[..., typer.Option(...)]`` declares (``--vit-like`` of
    ``--vit-like/--no-vit-like``; ``off``: ``--no-vit-like``); None for an argument (or, ``off``, a flag without
    its negative)."""
    for meta in getattr(annotation, "__metadata__", ()):
        if not isinstance(meta, typer.models.OptionInfo):
            continue
        first = [meta.default] if isinstance(meta.default, str) else []  # Annotated: the first flag is `default`
        for decl in [*first, *(meta.param_decls or ())]:
            if decl.startswith("--"):
                on, _, negative = decl.partition("/")
                return (negative or None) if off else on
    return None


#: a field's value as the library's messages write it after ``name=``: a quoted string, a tuple or list, or a word
_VALUE = r"""('[^']*'|"[^"]*"|\((?:[^()'"]|'[^']*'|"[^"]*")*\)|\[(?:[^\[\]'"]|'[^']*'|"[^"]*")*\]|[^\s,;:)\]]+)?"""


#: after ``name=``, not an unquoted word with a path separator in it (a file ``out/alpha=0.3/x.png`` is no field;
#: a name after a separator is excluded before the ``=``)
_NOT_A_PATH = r"""(?!(?!['"(\[])[^\s,;:)\]]*[/\\])"""


#: what a message quotes as written, never a field: config code (``visctl = dict(target_layers=[...])``, one level
#: of nested brackets), a class's repr (``Resize(scale=(0, 0), backend='pillow')``: a pipeline step's arguments)
#: and text in backquotes
_QUOTED = r"""(`[^`]*`|\b(?:dict|[A-Z]\w*)\((?:[^()]|\([^()]*\))*\))"""

#: the command line's own words that hold ``=`` (a file ``topk=3.png``, a folder ``-o alpha=0.3``, a config value):
#: said as given wherever a message quotes them, never read as a field (:func:`cli.run` sets them)
GIVEN: list[str] = []


def given_words(argv: list[str]) -> list[str]:
    """The words of ``argv`` that :data:`GIVEN` protects: each argument, or option value, holding ``=``, as given
    and as a path normalises it (``./a=1.png`` is said ``a=1.png``)."""
    import os

    words = []
    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg
        if "=" in value and not value.startswith("-"):
            words += [value, os.path.normpath(value)]
    return sorted(set(words), key=len, reverse=True)


def _words(value: str) -> str:
    """A list or tuple as the words a shell takes (``['a=1', 'b=(1,2)']`` -> ``a=1 'b=(1,2)'``)."""
    import ast
    import shlex

    try:
        items = ast.literal_eval(value)
    except (ValueError, SyntaxError):  # not a literal (``(1, ...)``): its parts as written
        return " ".join(v.strip().strip("'\"") for v in value[1:-1].split(",") if v.strip())
    if not isinstance(items, (list, tuple)):
        items = (items,)
    return " ".join(shlex.quote(v) if isinstance(v, str) else "..." if v is Ellipsis else str(v) for v in items)


def cli_text(command: str, text: str) -> str:
    """A library message as the CLI says it: each ``field=value`` of the command's options as ``--flag value``
    (``topk=0`` -> ``--topk 0``, ``arrangement=(1, 0)`` -> ``--arrangement 1 0``, ``fail_under='a=1'`` ->
    ``--fail-under a=1``, ``save_raw=True`` -> ``--save-raw``), a bare ``field=`` as ``--flag``. Config code
    the message quotes (``dict(...)``, a class's repr, backquotes, a quoted ``'a=1'``) and the command line's own
    words (:data:`GIVEN`: a file ``seed=1.png``) are left as they are."""
    import re

    flags = FLAGS.get(command, {})
    if not flags or "=" not in text:
        return text
    names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if not value or value == "True":
            return flags[name]
        if value == "False":  # its negative flag; a flag without one: as written
            return OFF[command][name] if name in OFF.get(command, {}) else match.group(0)
        if value[0] in "([" and value[-1] in ")]":
            value = _words(value)
        elif len(value) > 2 and value[0] in "'\"" and value[-1] == value[0] and not any(c.isspace() for c in value):
            value = value[1:-1]  # one word: as a shell takes it ('' stays: it says the value is empty)
        return f"{flags[name]} {value}" if value else flags[name]

    given = "".join(f"|{re.escape(w)}" for w in GIVEN)  # the user's own words, as typed
    parts = re.split(rf"({_QUOTED[1:-1]}{given})", text)  # the quoted spans at the odd places
    # a name not after a quote (``'x': 'alpha=0.3'``, the user's text) nor inside a path
    pattern = rf"""(?<![\w.\-/\\'"])({names})={_NOT_A_PATH}{_VALUE}"""
    return "".join(part if i % 2 else re.sub(pattern, flag, part) for i, part in enumerate(parts))


def cli_error(command: str, err: VisctlError) -> VisctlError:
    """``err`` with its message and hint as the CLI says them (:func:`cli_text`): the same class."""
    if getattr(err, "said_with_flags", False):  # said once already: a flag's value may look like a field
        return err
    message, hint = cli_text(command, err.message), cli_text(command, err.hint) if err.hint else err.hint
    if message == err.message and hint == err.hint:
        return err
    import copy

    said = copy.copy(err)
    said.args, said.message, said.hint = (message,), message, hint
    said.said_with_flags = True  # type: ignore[attr-defined]
    return said

#: the seeds' --checkpoint beside the positional CHECKPOINT (recon, tsne)
CheckpointOption = Annotated[Optional[str], typer.Option(
    "--checkpoint", help="Weights, as the seeds write them (instead of the positional CHECKPOINT).", show_default=False)]


#: every shared option: its Annotated alias and its usual default (a command may give another)
SHARED: dict[str, Param] = {
    "unsafe_load_checkpoint": Param(UnsafeLoadCheckpoint, False),
    "device": Param(Device, "auto"),
    "threads": Param(Threads, None),
    "batch_size": Param(BatchSize, 16),
    "cfg_options": Param(CfgOptions, None),
    "out_dir": Param(OutDir, None),
    "backend": Param(Backend, None),
    "show": Param(Show, False),
    "json_out": Param(Json, False),
    "quiet": Param(Quiet, False),
    "seed": Param(Seed, None),
    "debug": Param(Debug, False),
    "max_pixels": Param(MaxPixels, DEFAULT_MAX_PIXELS),
    # the options of several commands that the run does not share: declared once here, taken by name
    "panel_size": Param(PanelSize, None),
    "save_raw": Param(SaveRaw, False),
    "preview_model": Param(PreviewModel, False),
    "image_format": Param(Format, ImageFormat.png),
    "amp": Param(AmpOption, Amp.off),
    "show_interval": Param(ShowInterval, 2.0),
    "not_show": Param(NotShow, False),
}
#: the options of the commands that run a model over images, in their --help order
MODEL = ("unsafe_load_checkpoint", "device", "threads", "batch_size", "cfg_options", "out_dir", "backend", "show",
         "json_out", "quiet", "seed", "debug", "max_pixels")
#: the options of the commands that draw a model's maps on images (beside their own), in their --help order
FIGURES = ("panel_size", "save_raw", "preview_model")
#: the options of the commands that read a dataset through its pipeline (no model)
DATA = ("cfg_options", "out_dir", "backend", "show", "json_out", "quiet", "seed", "debug", "max_pixels")
#: what --show takes beside it in the dataset commands (and the peers' --not-show, accepted)
SHOWING = ("show_interval", "not_show")
