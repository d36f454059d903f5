"""The error family every command raises, and the one place they are printed (stdlib only)."""

from __future__ import annotations

import difflib
import os
import re
import sys
import traceback
from collections.abc import Iterable

#: exit status for a user mistake (bad path, layer, method, checkpoint, ...)
EXIT_USAGE = 2
#: exit status for a batch run where some inputs failed and the rest finished
EXIT_PARTIAL = 1
#: exit status of a crash: an exception that is not a VisctlError, i.e. a bug in visctl (or a library)
EXIT_INTERNAL = 3
#: exit status after Ctrl-C (128 + SIGINT)
EXIT_INTERRUPTED = 130
#: exit status after SIGTERM, what CI runners and job schedulers send (128 + SIGTERM)
EXIT_TERMINATED = 143
#: exit status when stdout's reader has gone (``visctl ... --json | head``): a shell's for SIGPIPE (128 + 13)
EXIT_BROKEN_PIPE = 141


class VisctlError(Exception):
    """A user-facing problem: one clear message and a hint on how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InputWarning(UserWarning):
    """An input was read, with a caveat (NaN pixels left out, ...): printed as ``warning: ...`` during a run."""


class ArgumentError(VisctlError, ValueError):
    """An argument (an option's value) of the wrong type, out of its range, or naming nothing; also a
    ValueError, which is what a Python caller of the library expects from a bad argument."""


class InputError(VisctlError):
    """An input file is missing, unreadable or of an unknown kind."""


class ConfigError(VisctlError):
    """A config file cannot be read or lacks what the command needs."""


class ModelError(VisctlError):
    """A model cannot be built, or a checkpoint does not fit it."""


class LayerError(VisctlError):
    """A layer path does not name a module of the model."""


class DeviceError(VisctlError):
    """The requested device does not exist on this machine."""


class DependencyError(VisctlError):
    """A dependency is missing or has a version visctl does not support (the message names both)."""


class OutputError(VisctlError):
    """The output folder or file cannot be written: not a folder, read-only, full, or an input of the run."""


#: the one fix for an install without mmengine or OpenCV (a plain ``pip install visctl``); doctor says the same
LITE_FIX = 'pip install "visctl[lite]" or install into your OpenMMLab environment'
#: what such an install still runs
LITE_HINT = ("without it visctl runs models named by torchvision/timm name or import path (pkg.module:attr) and "
             "configs of plain values (.py, .json, .yaml); `visctl doctor` checks the environment")
#: the modules a plain install may lack, and the name a user knows them by
OPTIONAL_MODULES = {"mmengine": "mmengine", "cv2": "OpenCV"}


def needs(what: str, module: str = "mmengine", why: str = "") -> DependencyError:
    """The one error for a module a plain install lacks: ``<what> needs mmengine (pip install ...)``.

    Args:
        what: what needs it (``visctl lr``, ``config x.py: line 3 (an import)``).
        module: ``mmengine`` or ``cv2``.
        why: said first, e.g. ``mmengine is not installed``.
    """
    label = OPTIONAL_MODULES.get(module, module)
    err = DependencyError(f"{why + '; ' if why else ''}{what} needs {label} ({LITE_FIX})", hint=LITE_HINT)
    err.missing = module  # type: ignore[attr-defined]
    return err


def missing_optional(exc: BaseException, what: str) -> DependencyError | None:
    """The :func:`needs` error for an import of mmengine or cv2 that failed because it is not installed
    (a ``ModuleNotFoundError`` naming it), else None: a safety net for every command and library call."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    root = exc.name.split(".")[0]
    if root not in OPTIONAL_MODULES:
        return None
    if exc.name != root:  # a submodule: only when the package itself is missing (not a broken or partial one)
        import importlib.util

        try:
            if importlib.util.find_spec(root) is not None:
                return None
        except (ImportError, ValueError):
            pass
    err = needs(what, root, f"{OPTIONAL_MODULES[root]} is not installed")
    err.__cause__ = exc  # --debug shows where the import was
    return err


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a run ends as after Ctrl-C (a true manifest), exit 143."""


def closest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Return the choices most similar to ``name``, best first."""
    choices = list(choices)
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if len(found) < n:
        # substring matches catch 'layer4' -> 'backbone.layer4' which difflib rates low
        tail = name.split(".")[-1]
        for c in choices:
            if c not in found and tail and tail in c:
                found.append(c)
            if len(found) >= n:
                break
    return found


def debug_enabled() -> bool:
    """Whether tracebacks are wanted by the environment (``VISCTL_DEBUG=1``); ``--debug`` is passed to report."""
    return os.environ.get("VISCTL_DEBUG", "") not in ("", "0")


def report(err: VisctlError, debug: bool = False) -> int:
    """Print ``err`` once to stderr as ``error: ...`` / ``hint: ...`` and return the exit status."""
    if debug or debug_enabled():
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    print(f"error: {plain(err.message)}", file=sys.stderr)
    if err.hint:
        print(f"hint: {plain(err.hint)}", file=sys.stderr)
    return EXIT_USAGE


#: what an out-of-memory error's hint says, by what was being allocated (:func:`out_of_memory`'s ``what``)
MEMORY_HINTS = {
    "input": "the input, or what the config's pipeline makes of it (the model's input), is too large for this "
             "machine: resize in the config's test pipeline (e.g. --cfg-options), lower --max-pixels or "
             "--batch-size, or use `visctl slice` on huge images",
    "figure": "the figure is too large for this machine: make the options that size it smaller (--panel-size, "
              "featmap's --resize-shape, --topk and --arrangement, browse's --rows/--cols, pipeline's "
              "-r/--rescale-factor and --max-edge-length), or lower --max-pixels, which bounds figures too",
}


def out_of_memory(exc: BaseException, what: str | None = None) -> VisctlError | None:
    """A failed allocation (``MemoryError``, torch's "DefaultCPUAllocator: can't allocate memory", CUDA out of
    memory, OpenCV's "Insufficient memory") as the user error it is: too large an input or figure for this
    machine. None for any other exception.

    ``what``: what was being allocated, ``input`` or ``figure`` (the hint names its options); None: unknown,
    the hint names both (an allocation in a figure drawn off the caller's thread is marked where it failed)."""
    text = " ".join(str(exc).split())
    if not (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or any(s in text for s in ("can't allocate memory", "CUDA out of memory", "Insufficient memory",
                                       "Failed to allocate"))):
        return None
    what = what or getattr(exc, "visctl_allocating", None)
    amount = re.search(r"allocate (\d+) bytes", text)
    size = f" ({int(amount.group(1)) / 2**30:,.1f} GiB at once)" if amount else ""
    if what in MEMORY_HINTS:
        hint = MEMORY_HINTS[what]
    else:
        hint = ("either the input (or what the config's pipeline makes of it) or the figure is too large for this "
                "machine: resize in the config's test pipeline (e.g. --cfg-options), lower --max-pixels or "
                "--batch-size, use `visctl slice` on huge images; or make the options that size the figure smaller "
                "(--panel-size, --resize-shape, --topk, --arrangement, --rows/--cols, -r/--rescale-factor)")
    return VisctlError(f"out of memory: an allocation failed{size}{' drawing the figure' if what == 'figure' else ''}"
                       f" ({type(exc).__name__})", hint=hint)


def report_bug(exc: BaseException) -> int:
    """Print a crash (any exception that is not a :class:`VisctlError`) to stderr: its traceback, then one
    ``internal error`` line asking for a report; returns :data:`EXIT_INTERNAL`, so a bug never reads as a
    partial success (1) or a usage error (2)."""
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    first = (str(exc).splitlines() or [""])[0]
    print(f"internal error: {type(exc).__name__}: {first} -- this is a bug in visctl (or a library it calls); "
          "please report it with the traceback above and the command line", file=sys.stderr)
    return EXIT_INTERNAL


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")


def plain(text: str) -> str:
    """``text`` without terminal escape sequences (colours from a library's message) or other control
    characters but newlines and tabs: a message prints the same on a terminal, in a log and in CI."""
    text = _ANSI.sub("", str(text))
    return "".join(ch for ch in text if ch in "\n\t" or ch.isprintable())


def pixels(count: float, digits: int = 0) -> str:
    """A pixel count as a message says it: ``12 MP`` (``digits`` after the point), or ``6,400 pixels`` under
    0.1 MP, where megapixels would round to nothing (a small ``max_pixels`` budget)."""
    return f"{count / 1e6:,.{digits}f} MP" if count >= 100_000 else f"{int(count):,} pixels"
