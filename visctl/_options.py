"""Options every model command shares, declared once as Annotated aliases."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl.images import DEFAULT_MAX_PIXELS, SLICE_MAX_PIXELS

__all__ = ["DEFAULT_MAX_PIXELS", "SLICE_MAX_PIXELS"]


def split_list(values: list[str] | None) -> list[str] | None:
    """Values of a repeatable option, each of which may also be comma-separated (``-t a,b -t c``)."""
    if not values:
        return None
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


#: numpy's legacy seeding takes 0 .. 2**32 - 1, and every generator is seeded from one --seed
SEED_MAX = 2**32 - 1
#: far more threads than any machine has cores; torch crashes (SIGSEGV) when asked for ~100000
THREADS_MAX = 1024
#: DataLoader worker processes: each is a process; more than this would only exhaust the machine
WORKERS_MAX = 64

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


class ImageFormat(str, Enum):
    """What the output figures are encoded as."""

    png = "png"
    jpg = "jpg"
    webp = "webp"


Format = Annotated[ImageFormat, typer.Option(
    "--format", help="Figures as png (lossless, the slowest to encode and the largest), jpg (quality 95, several "
    "times faster to encode: for large runs) or webp (quality 90, the smallest).", case_sensitive=False,
    rich_help_panel="Output")]


class Amp(str, Enum):
    """The autocast dtype of the forward."""

    off = "off"
    bf16 = "bf16"
    fp16 = "fp16"


AmpOption = Annotated[Amp, typer.Option(
    "--amp", help="CUDA only: autocast the forward to bf16 or fp16 (gradient methods whose graph starts at the "
    "target layer); refused on a CPU.", case_sensitive=False, rich_help_panel="Run")]
