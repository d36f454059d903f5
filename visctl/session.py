"""What a library call needs from its surroundings, without a terminal: options, device, config, messages.

:class:`RunOptions` holds the options every command shares (``--device``, ``--threads``, ``--seed``,
``--cfg-options``, ...) as one frozen object; :class:`Session` gives a library call the device, the config
loader, the seeded torch and a place for remarks and skipped inputs. What a Session says goes through its
:class:`Reporter`: a notebook call gets the default one, which prints nothing and writes nothing; the CLI's
run builds its Session with a reporter that prints, shows progress and records in the run's manifest.

Nothing here changes the process beyond what the caller asked for: torch's thread count and seeds are set only
when the options name them (a library call leaves the caller's torch settings alone unless told).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visctl.errors import DeviceError, InputWarning

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
        raise DeviceError(f"device={spec!r}: not a device name", hint="use auto, cpu, cuda, cuda:N (N a number) or mps")
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
            raise DeviceError(f"device={spec!r}: CUDA is not available on this machine",
                              hint="use device='cpu' (or device='auto'), or install a CUDA build of torch")
        if ":" in spec:
            idx = int(spec.split(":", 1)[1])
            if idx >= torch.cuda.device_count():
                raise DeviceError(f"device={spec!r}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                                  hint=f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        return spec
    if spec == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise DeviceError("device='mps': Apple MPS is not available here", hint="use device='cpu' or device='auto'")
        return spec
    raise DeviceError(f"unknown device {spec!r}", hint="use auto, cpu, cuda, cuda:N or mps")


@dataclass(frozen=True)
class RunOptions:
    """The options every command shares, declared once (the CLI's ``--device``, ``--threads``, ...).

    ``threads=None``: the CLI pins :func:`default_threads`; a library call leaves torch's setting alone.
    ``max_pixels=None``: no pixel budget (the CLI's ``--max-pixels`` default is a budget).
    """

    device: str = "auto"
    threads: int | None = None
    seed: int | None = None
    cfg_options: tuple[str, ...] = ()
    unsafe_load_checkpoint: bool = False
    max_pixels: int | None = None
    quiet: bool = False
    json_out: bool = False
    debug: bool = False
    backend: str | None = None
    show: bool = False

    def __post_init__(self) -> None:
        """Each value checked as the CLI checks its option (``threads=0``, ``seed=-1`` or ``max_pixels=0`` would
        fail deep in torch or numpy, or skip every image), before any run."""
        from visctl import arguments
        from visctl.errors import ArgumentError

        if not isinstance(self.device, str) or not self.device.strip():
            raise ArgumentError(f"device={self.device!r} is not a device",
                                hint="pass 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        arguments.within("threads", self.threads, arguments.Limit(1, arguments.THREADS_MAX, integer=True))
        arguments.within("seed", self.seed, arguments.Limit(0, arguments.SEED_MAX, integer=True))
        arguments.within("max_pixels", self.max_pixels, arguments.Limit(1, integer=True))
        if isinstance(self.cfg_options, str) or not all(isinstance(o, str) for o in self.cfg_options):
            raise ArgumentError(f"cfg_options={self.cfg_options!r} is not a list of 'key=value' strings",
                                hint="pass e.g. cfg_options=['model.backbone.depth=18']")
        object.__setattr__(self, "cfg_options", tuple(self.cfg_options))  # frozen: a list given becomes a tuple
        for name in ("unsafe_load_checkpoint", "quiet", "json_out", "debug", "show"):
            arguments.flag(name, getattr(self, name))
        if self.backend is not None and not isinstance(self.backend, str):
            raise ArgumentError(f"backend={self.backend!r} is not a backend name", hint="pass 'local', 'tensorboard' "
                                "or 'wandb', or leave it out")

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> RunOptions:
        """The options among ``values`` (a command line's parsed values, by name); the others keep their defaults."""
        found = {k: values[k] for k in cls.__dataclass_fields__ if k in values}
        found["cfg_options"] = tuple(found.get("cfg_options") or ())
        return cls(**found)

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with ``changes`` (``cfg_options`` given as any sequence)."""
        if "cfg_options" in changes:
            changes["cfg_options"] = tuple(changes["cfg_options"] or ())
        return dataclasses.replace(self, **changes)


@dataclass
class Failure:
    """An input a run skipped, and why."""

    path: str
    error: str


class Reporter:
    """Where a :class:`Session`'s messages go; this one, a library call's, keeps quiet.

    The Session keeps its remarks and skipped inputs itself (:attr:`Session.notes`, :attr:`Session.failures`);
    a reporter only says them: the CLI's prints on stderr, shows progress and records in the run's manifest.
    """

    quiet = False  # nothing to say but warnings (the CLI's --quiet / --json)

    def log(self, message: str) -> None:
        """A progress or info line: not shown."""

    def note(self, message: str) -> None:
        """A remark the Session has just kept in its notes (the CLI adds it to the manifest)."""

    def warn(self, message: str) -> None:
        """A warning: an :class:`InputWarning` at the Session's caller (the CLI prints a ``warning:`` line)."""
        warnings.warn(message, InputWarning, stacklevel=3)  # Reporter.warn <- Session.warn <- its caller

    def skip(self, path: Any, message: str) -> None:
        """A bad input the Session has just kept in its failures: a warning (a notebook shows it; the result's
        ``failures`` keep it)."""
        warnings.warn(f"skipping {path}: {message}", InputWarning, stacklevel=3)

    def protect(self, protected: Mapping[tuple[int, int], str]) -> None:
        """The run's inputs so far ((device, inode) -> path), after :meth:`Session.protect` added some."""

    def result(self, line: str) -> None:
        """One line of results (the module tree of ``--preview-model``) on stdout."""
        print(line, flush=True)

    @contextmanager
    def progress(self, total: int, label: str) -> Iterator[Any]:
        """Yields ``advance(n=1)``: shows nothing."""
        yield lambda n=1: None


class Session:
    """The surroundings of one library call: options, the resolved device, config loading, remarks.

    A remark (:meth:`note`) is kept in :attr:`notes`, a skipped input (:meth:`skip`) in :attr:`failures`; what
    is said goes through :attr:`reporter`. The default :class:`Reporter` prints nothing, and a warning is a
    Python warning of category :class:`visctl.errors.InputWarning` (so a notebook shows it once, and
    ``warnings`` filters it).
    """

    command = "library"
    rank = 0  # under torchrun, this process's rank and the number of ranks (visctl.distributed.join)
    world = 1

    def __init__(self, options: RunOptions | None = None, reporter: Reporter | None = None) -> None:
        self.options = options or RunOptions()
        self.reporter = reporter or Reporter()
        self.cfg_options: list[str] = list(self.options.cfg_options)
        self.notes: list[str] = []
        self.failures: list[Failure] = []
        self.protected: dict[tuple[int, int], str] = {}  # the run's inputs (device, inode) -> path
        self._device: str | None = None

    # the options as attributes, as the commands read them
    @property
    def device_spec(self) -> str:
        return self.options.device

    @property
    def threads(self) -> int | None:
        return self.options.threads

    @property
    def seed(self) -> int | None:
        return self.options.seed

    @property
    def unsafe_load_checkpoint(self) -> bool:
        return self.options.unsafe_load_checkpoint

    @property
    def max_pixels(self) -> int | None:
        return self.options.max_pixels

    @property
    def debug(self) -> bool:
        return self.options.debug

    @property
    def quiet(self) -> bool:
        """Nothing to say but warnings (its reporter's, e.g. the CLI's ``--quiet``)."""
        return self.reporter.quiet

    @property
    def device(self) -> str:
        """The resolved torch device string."""
        if self._device is None:
            self._device = resolve_device(self.device_spec)
        return self._device

    def use_device(self, spec: str) -> None:
        """Run on ``spec`` from now on (a torchrun rank takes its own GPU)."""
        self.options = self.options.replace(device=spec)
        self._device = None

    def load_config(self, spec: Any, *, models: bool = True) -> Any:
        """The mmengine Config of ``spec`` (a path, a model name, a dict or a Config) with the cfg options
        (``models``: whether the caller takes a model name, :func:`visctl.config.load_config`)."""
        from visctl.config import as_config, load_config, mmengine_present

        if isinstance(spec, (str, Path)):
            self.protect(spec)
        if mmengine_present():
            from mmengine.logging import MMLogger

            # mmengine logs through the newest MMLogger: one of ours, on stderr, quiet unless debug
            MMLogger.get_instance(f"visctl-{next(_LOGGER_IDS)}", log_level="INFO" if self.debug else "WARNING")
        if isinstance(spec, (str, Path)):
            return load_config(str(spec), self.cfg_options, models=models)
        from visctl import config

        cfg = as_config(spec)
        if self.cfg_options:
            config.merge_options(cfg, self.cfg_options)
        config.import_custom_modules(cfg, "the config")
        config.check_config(cfg)
        return cfg

    def protect(self, *paths: Any) -> None:
        """Inputs of the run: nothing the run writes may replace them."""
        from visctl.output.files import file_id

        for p in paths:
            if isinstance(p, (str, Path)):
                fid = file_id(p)
                if fid is not None:
                    self.protected.setdefault(fid, str(p))
        self.reporter.protect(self.protected)

    def setup_torch(self) -> None:
        """Pin torch's CPU threads and seed every generator, where the options say so."""
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        if self.seed is not None:
            import random

            import numpy as np

            random.seed(self.seed)
            np.random.seed(self.seed)
            torch.manual_seed(self.seed)

    # -- messages --
    def log(self, message: str) -> None:
        """A progress or info line (the default reporter keeps quiet)."""
        self.reporter.log(message)

    def note(self, message: str, *, log: bool = True) -> None:
        """A remark about the run (a checkpoint summary, a chosen default), kept for the manifest; ``log=False``:
        kept only (it was said another way, as a warning)."""
        if log:
            self.log(message)
        self.notes.append(message)
        self.reporter.note(message)

    def warn(self, message: str) -> None:
        """A warning: an :class:`InputWarning` by default (the CLI prints it as a ``warning:`` line)."""
        self.reporter.warn(message)

    def skip(self, path: Any, message: str) -> None:
        """A bad input in a batch: kept in :attr:`failures`, the rest carries on."""
        self.failures.append(Failure(str(path), message))
        self.reporter.skip(path, message)

    def result(self, line: str) -> None:
        """One line of results on stdout (everything else a run prints goes to stderr)."""
        self.reporter.result(line)

    def progress(self, total: int, label: str) -> AbstractContextManager[Any]:
        """A progress display, yielding ``advance(n=1)`` (the default reporter shows nothing)."""
        return self.reporter.progress(total, label)
