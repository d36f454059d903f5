"""RunContext: what every command shares — config, device, threads, output writer, progress, errors."""

from __future__ import annotations

import itertools
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from visctl.errors import EXIT_INTERRUPTED, EXIT_PARTIAL, DeviceError, InputWarning, VisctlError, report
from visctl.output import OutputWriter

_LOGGER_IDS = itertools.count()  # one fresh MMLogger per run (mmengine keeps every instance by name)


def default_threads() -> int:
    """CPU threads for torch: the cores this process may use, at most 16 (more rarely helps inference)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, 16))


def resolve_device(spec: str) -> str:
    """``auto`` -> cuda, then mps, then cpu; an explicit device must exist."""
    import torch

    spec = spec.strip().lower()
    if spec.startswith("cuda") and not re.fullmatch(r"cuda(:\d+)?", spec):  # before asking torch anything
        raise DeviceError(f"--device {spec!r}: not a device name", hint="use auto, cpu, cuda, cuda:N (N a number) or mps")
    if spec == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if spec == "cpu":
        return "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {spec}: CUDA is not available on this machine",
                              hint="use --device cpu (or auto), or install a CUDA build of torch")
        if ":" in spec:
            idx = int(spec.split(":", 1)[1])
            if idx >= torch.cuda.device_count():
                raise DeviceError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                                  hint=f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        return spec
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise DeviceError("--device mps: Apple MPS is not available here", hint="use --device cpu or auto")
        return spec
    raise DeviceError(f"unknown device {spec!r}", hint="use auto, cpu, cuda, cuda:N or mps")


class RunContext:
    """Built once per invocation; commands open it with ``with RunContext(...) as ctx:``.

    On leaving, a :class:`VisctlError` is reported once (exit 2), Ctrl-C writes a true manifest (exit 130).
    """

    def __init__(self, command: str, *, out_dir: Path | None = None, device: str = "auto",
                 threads: int | None = None, quiet: bool = False, json_out: bool = False, debug: bool = False,
                 seed: int | None = None, cfg_options: list[str] | None = None, backend: str | None = None,
                 show: bool = False, unsafe_load_checkpoint: bool = False) -> None:
        self.command = command
        self.default_out = out_dir is None  # runs under visctl-out/ share a root gallery
        self.out_dir = Path(out_dir) if out_dir else Path("visctl-out") / command
        self.device_spec = device
        self.threads = threads or default_threads()
        self.quiet = quiet or json_out
        self.json_out = json_out
        self.debug = debug
        self.seed = seed
        self.cfg_options = cfg_options or []
        self.backend = backend
        self.show = show
        self.unsafe_load_checkpoint = unsafe_load_checkpoint
        self.notes: list[str] = []  # remarks for the manifest, also those made before the writer opens
        self.show_interval: float | None = None  # seconds per output, or keys only
        self.writer: OutputWriter | None = None
        self.started = time.time()
        self._device: str | None = None
        from rich.console import Console

        self.console = Console(stderr=True, quiet=self.quiet, highlight=False)

    # -- lifecycle --
    def __enter__(self) -> RunContext:
        # only results reach stdout: what libraries print (grad-cam's warnings, mmengine's INFO lines) goes to
        # stderr, so --json and the list of outputs stay parseable
        if self.backend:
            from visctl.output import check_backend

            try:
                check_backend(self.backend)
            except VisctlError as err:
                raise typer.Exit(report(err, self.debug)) from None
        self._stdout = sys.stdout  # swapped only once nothing in __enter__ can fail (__exit__ puts it back)
        sys.stdout = sys.stderr
        # what the library warns about an input (InputWarning) is a `warning:` line of the run, every time
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.simplefilter("always", InputWarning)
        shown = warnings.showwarning

        def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
            if issubclass(category, InputWarning):
                self.warn(str(message))
            else:
                shown(message, category, *args, **kwargs)
        warnings.showwarning = show
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        sys.stdout = self._stdout
        self._warnings.__exit__(None, None, None)
        if isinstance(exc, VisctlError):
            raise typer.Exit(report(exc, self.debug))
        if isinstance(exc, KeyboardInterrupt):
            if self.writer is not None:
                self.writer.finish("interrupted")
            print("interrupted: finished outputs are kept, manifest.json lists them", file=sys.stderr)
            raise typer.Exit(EXIT_INTERRUPTED)

    # -- shared resources --
    def load_config(self, spec: str) -> Any:
        """The mmengine Config of ``spec`` with ``--cfg-options`` merged."""
        from mmengine.logging import MMLogger

        from visctl.config import load_config

        # mmengine logs through the newest MMLogger: one of ours, on stderr, quiet unless --debug
        MMLogger.get_instance(f"visctl-{next(_LOGGER_IDS)}", log_level="INFO" if self.debug else "WARNING")
        return load_config(spec, self.cfg_options)

    @property
    def device(self) -> str:
        """The resolved torch device string."""
        if self._device is None:
            self._device = resolve_device(self.device_spec)
        return self._device

    def setup_torch(self) -> None:
        """Pin torch's CPU threads and seed every generator."""
        import torch

        torch.set_num_threads(self.threads)
        if self.seed is not None:
            import random

            import numpy as np

            random.seed(self.seed)
            np.random.seed(self.seed)
            torch.manual_seed(self.seed)

    def open_writer(self, params: dict[str, Any], out_dir: Path | None = None) -> OutputWriter:
        """Start the run's output directory and manifest."""
        self.writer = OutputWriter(out_dir or self.out_dir, self.command, params, started=self.started)
        for note in self.notes:
            self.writer.note(note)
        return self.writer

    def skip(self, path: Any, message: str) -> None:
        """A bad input in a batch run: warn, list it in the manifest, carry on (the run exits 1)."""
        self.warn(f"skipping {path}: {message}")
        assert self.writer is not None
        self.writer.fail(path, message)

    # -- messages --
    def result(self, line: str) -> None:
        """One line of results on stdout (everything else printed during the run goes to stderr)."""
        print(line, file=getattr(self, "_stdout", sys.stdout), flush=True)

    def log(self, message: str) -> None:
        """A progress or info line on stderr (silent with --quiet / --json)."""
        self.console.print(message, markup=False, soft_wrap=True)  # one line, whatever the width

    def note(self, message: str) -> None:
        """A remark about the run (a checkpoint summary, a chosen default): on stderr and in the manifest's notes."""
        self.log(message)
        self.notes.append(message)
        if self.writer is not None:
            self.writer.note(message)

    def warn(self, message: str) -> None:
        """A warning on stderr (shown even with --quiet)."""
        print(f"warning: {message}", file=sys.stderr)

    @contextmanager
    def progress(self, total: int, label: str) -> Iterator[Any]:
        """A progress display; yields ``advance(n=1)``. A live bar on a terminal, a few lines otherwise."""
        if self.quiet:
            yield lambda n=1: None
            return
        if self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), console=self.console, transient=True) as bar:
                task = bar.add_task(label, total=total)
                yield lambda n=1: bar.advance(task, n)
            return
        state = {"done": 0, "shown": -1}
        step = max(1, total // 10)

        def advance(n: int = 1) -> None:
            state["done"] += n
            if state["done"] // step != state["shown"] or state["done"] == total:
                state["shown"] = state["done"] // step
                self.log(f"{label}: {state['done']}/{total}")
        yield advance

    def finish(self) -> None:
        """Write the manifest and gallery, print results, and exit 1 if any input failed."""
        assert self.writer is not None
        failures = self.writer.manifest["failures"]
        status = "partial" if failures else "ok"
        if self.backend:
            from visctl.output import push_to_backend

            images = [(Path(o["path"]).stem, self.writer.out_dir / o["path"]) for o in self.writer.manifest["outputs"]
                      if o["kind"] == "image"]
            where = push_to_backend(self.backend, self.writer.out_dir, images, self.command)
            self.writer.manifest["backend"] = dict(name=self.backend, save_dir=str(where))
        manifest_path = self.writer.finish(status)
        if self.default_out and self.writer.out_dir == self.out_dir:
            from visctl.output import write_root_index

            write_root_index(self.out_dir.parent)  # visctl-out/index.html links every command's latest run
        if self.json_out:
            from visctl.output import to_json

            self.result(to_json(self.writer.manifest))
        else:
            for out in self.writer.manifest["outputs"]:
                self.result(str(self.writer.out_dir / out["path"]) if not Path(out["path"]).is_absolute()
                            else out["path"])
            self.log(f"manifest: {manifest_path}")
            self.log(f"gallery:  {self.writer.path('index.html')}")
        if self.show:
            from visctl.output import show_images

            show_images([self.writer.out_dir / o["path"] for o in self.writer.manifest["outputs"]
                         if o["kind"] == "image"], self.warn, self.show_interval)
        for f in failures:
            self.warn(f"failed: {f['path']}: {f['error']}")
        if failures:
            raise typer.Exit(EXIT_PARTIAL)
