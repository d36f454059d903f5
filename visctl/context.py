"""RunContext: what every command shares — config, device, threads, output writer, progress, errors."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from visctl.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_PARTIAL,
    EXIT_TERMINATED,
    EXIT_USAGE,
    InputWarning,
    OutputError,
    Terminated,
    VisctlError,
    missing_optional,
    out_of_memory,
    report,
    report_bug,
)
from visctl.output.checks import check_file_target, prepare_dir
from visctl.output.files import DISK_ERRNOS, _path_hint, file_id, remove_empty
from visctl.output.manifest import check_record_files, running_in
from visctl.output.writer import OutputWriter, clear_interrupt, interrupt
from visctl.session import Reporter, RunOptions, Session, default_threads

#: the commands that split their inputs between the ranks of a torchrun (see visctl/distributed.py)
SHARDED = frozenset({"cam", "featmap", "boxam", "recon", "slice", "tsne", "audit"})


class ConsoleReporter(Reporter):
    """How a command's :class:`Session` speaks: lines on stderr (rich, silent with --quiet / --json), results
    on the real stdout, progress, and the run's record: notes and skipped inputs in the manifest, and a file
    the command was told to write that is one of the run's inputs refused. The library's messages name its
    fields (``topk=0``); they are said with the command's flags (``--topk 0``: :func:`visctl._options.cli_text`)."""

    def __init__(self, quiet: bool, out_files: list[tuple[str, Path]], command: str = "") -> None:
        from rich.console import Console

        self.console = Console(stderr=True, quiet=quiet, highlight=False)
        self.out_files = out_files  # (option name, path) of the files the command was told to write
        self.writer: OutputWriter | None = None  # the run's, once opened
        self.stdout: Any = None  # the real stdout while the run sends print() to stderr
        self.said: set[str] = set()  # the inputs a skip warning named already
        self.command = command

    def cli(self, message: str) -> str:
        """``message`` with the command's flags for the library's field names."""
        from visctl._options import cli_text

        return cli_text(self.command, message)

    @property  # type: ignore[override]
    def quiet(self) -> bool:
        return self.console.quiet

    @quiet.setter
    def quiet(self, value: bool) -> None:
        self.console.quiet = value

    def protect(self, protected: Any) -> None:
        """A file the command was told to write (``--save-path``, ``--csv``) that is one of the run's inputs is
        refused here, before the work; an output that would land on one later is refused by the writer."""
        if self.writer is not None:
            self.writer.protected.update(protected)
        for what, f in self.out_files:
            fid = file_id(f)
            if fid is not None and fid in protected:
                raise OutputError(f"{what} {f} is an input of this run ({protected[fid]}); visctl never "
                                  "writes over its inputs", hint=f"give {what} another file name")

    def skip(self, path: Any, message: str) -> None:
        """A bad input in a batch run: warn, list it in the manifest, carry on (the run exits 1)."""
        self.warn(f"skipping {path}: {self.cli(message)}", as_is=True)  # the path as it is, whatever its name
        self.said.add(str(path))  # a one-process run does not say it again at the end
        assert self.writer is not None
        self.writer.fail(path, message)

    def result(self, line: str) -> None:
        """One line of results on stdout (everything else printed during the run goes to stderr)."""
        print(line, file=self.stdout or sys.stdout, flush=True)

    def log(self, message: str, *, as_is: bool = False) -> None:
        """A progress or info line on stderr (silent with --quiet / --json); ``as_is``: said by the CLI itself
        (no field names to say as flags)."""
        text = message if as_is else self.cli(message)
        self.console.print(printable(text), markup=False, soft_wrap=True)  # one line, whatever the width

    def note(self, message: str) -> None:
        """A remark about the run (said on stderr already): in the manifest's notes too."""
        if self.writer is not None:
            self.writer.note(message)

    def warn(self, message: str, *, as_is: bool = False) -> None:
        """A warning on stderr (shown even with --quiet); ``as_is`` as for :meth:`log`."""
        print(f"warning: {printable(message if as_is else self.cli(message))}", file=sys.stderr)

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


class RunContext:
    """Built once per invocation; commands open it with ``with RunContext(...) as ctx:`` and hand
    :attr:`session` (a :class:`Session` that speaks through a :class:`ConsoleReporter`) to the library.

    On entering, the output folder (and ``out_files``, files the command was told to write) is checked
    before any work: a folder that is a file, read-only or cannot be made is one clear error. SIGTERM is
    handled like Ctrl-C while the context is open. On leaving, a :class:`VisctlError` (a full disk included)
    is reported once (exit 2) with the manifest saying what was finished; Ctrl-C writes a true manifest
    (exit 130), SIGTERM too (exit 143). Any other exception is a bug: its traceback and an
    ``internal error`` line, exit 3 (the manifest keeps what was finished, status ``crashed``).
    """

    def __init__(self, command: str, options: RunOptions | None = None, *, out_dir: Path | None = None,
                 out_files: list[tuple[str, Path | None]] | None = None) -> None:
        options = options or RunOptions()
        if options.threads is None:  # the CLI pins torch's threads (a library call leaves them alone)
            options = options.replace(threads=default_threads())
        self.command = command
        # (option name, path) of the files the command was told to write, e.g. ("--save-path", lr.png)
        self.out_files = [(what, Path(f)) for what, f in out_files or [] if f is not None]
        self.reporter = ConsoleReporter(options.quiet or options.json_out, self.out_files, command)
        self.session = Session(options, self.reporter)
        self._created: list[Path] = []  # folders this run made, removed again if it writes nothing
        self._finished = False
        self._handlers: dict[int, Any] = {}
        self.default_out = out_dir is None  # runs under visctl-out/ share a root gallery
        given = getattr(options, "out_dir", None)  # -o as the command line gave it; a file option's folder wins
        self._unused_out = given if given is not None and out_dir is not None and \
            os.path.abspath(given) != os.path.abspath(out_dir) else None
        self.out_dir = Path(out_dir) if out_dir else Path("visctl-out") / command
        self.json_out = options.json_out
        self.backend = options.backend
        self.show = options.show
        self.show_interval: float | None = getattr(options, "show_interval", None)  # seconds per output, or keys only
        self.writer: OutputWriter | None = None
        self.started = time.time()

    # what the command's own wiring reads of its session (the library takes the session itself)
    @property
    def device(self) -> str:
        return self.session.device

    @property
    def threads(self) -> int | None:
        return self.session.threads

    @property
    def max_pixels(self) -> int | None:
        return self.session.max_pixels

    @property
    def debug(self) -> bool:
        return self.session.debug

    @property
    def rank(self) -> int:
        return self.session.rank

    @property
    def world(self) -> int:
        return self.session.world

    @property
    def console(self) -> Any:
        return self.reporter.console

    @property
    def quiet(self) -> bool:
        return self.reporter.quiet

    @quiet.setter
    def quiet(self, value: bool) -> None:
        self.reporter.quiet = value

    def log(self, message: str) -> None:
        self.session.log(message)

    def warn(self, message: str) -> None:
        self.session.warn(message)

    def result(self, line: str) -> None:
        self.session.result(line)

    # -- lifecycle --
    def __enter__(self) -> RunContext:
        # only results reach stdout: what libraries print (grad-cam's warnings, mmengine's INFO lines) goes to
        # stderr, so --json and the list of outputs stay parseable
        self._stdout = self.reporter.stdout = sys.stdout
        sys.stdout = sys.stderr
        try:
            if self.backend:  # first: mmengine and the backend's package, before any wait, config or model
                from visctl.output.backends import check_backend

                check_backend(self.backend)
            # under torchrun: one rank of several, for the commands that shard their inputs (the others run
            # whole on every rank, as before: they have no inputs to split)
            if self.command in SHARDED and os.environ.get("WORLD_SIZE", "").strip():
                from visctl import distributed

                distributed.join(self.session)  # checks the torchrun variables first: one error line for a bad one
                if self.rank:  # rank 0 speaks for the run
                    self.quiet = True
            if self._unused_out is not None and not self.rank:  # rank 0 speaks for the run
                self.reporter.warn(f"-o/--out-dir {self._unused_out} has no effect: this run writes to "
                                   f"{self.out_dir}, the folder its file option (--save-path, --out-file) names",
                                   as_is=True)
            # before any config, model or data: a bad folder must cost nothing
            self._created += prepare_dir(self.out_dir, "--out-dir")
            running_in(self.out_dir)
            # a manifest.json or index.html that visctl did not write (or a damaged one, a FIFO, a link) is
            # refused now, not replaced at the end; demo writes only the page over its runs' folders
            check_record_files(self.out_dir, manifest=self.command != "demo")
            if self.default_out:  # visctl-out/index.html, the page over every command's latest run
                check_record_files(self.out_dir.parent, manifest=False)
            seen: dict[str, str] = {}
            for what, f in self.out_files:
                same = seen.setdefault(os.path.abspath(f), what)
                if same != what:  # two outputs in one file: the second would be renamed, or overwrite the first
                    raise OutputError(f"{same} and {what} name the same file, {f}",
                                      hint=f"give {what} another name")
                self._created += check_file_target(f, what)
        except VisctlError as err:
            sys.stdout = self._stdout
            remove_empty(self._created)
            raise typer.Exit(self._report(err)) from None
        self._install_signals()
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

    def _install_signals(self) -> None:
        """SIGTERM (and SIGINT) raise in the main thread, held back while a file and its record are written."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            old = signal.getsignal(signum)
            if old is signal.SIG_IGN:  # nohup, background jobs: the user asked not to be stopped by it
                continue
            self._handlers[signum] = old
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        interrupt(Terminated() if signum == signal.SIGTERM else KeyboardInterrupt())

    def _restore_signals(self) -> None:
        for signum, old in self._handlers.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        self._handlers = {}

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        sys.stdout = self._stdout
        try:
            self._leave(exc)
        finally:
            if self.writer is not None:
                try:
                    self.writer.close()  # stops the write threads; the manifest has already waited for them
                except Exception:  # noqa: BLE001 - a failed write was reported by the manifest's own flush
                    pass
                self.writer.release_reserve()  # the space held for the last manifest (finish released it)
            self._warnings.__exit__(None, None, None)
            self._restore_signals()
            clear_interrupt()
            remove_empty(self._created)  # --preview-model, an error before any output: no empty folder

    def _leave(self, exc: BaseException | None) -> None:
        if isinstance(exc, BrokenPipeError):  # stdout's reader left (`| head`): what was written stays, silently
            raise typer.Exit(stdout_closed())
        if isinstance(exc, KeyboardInterrupt):
            for signum in self._handlers:  # a second Ctrl-C must not cut the manifest in half
                signal.signal(signum, signal.SIG_IGN)
            terminated = isinstance(exc, Terminated)
            what = "terminated (SIGTERM)" if terminated else "interrupted"
            if self.writer is None:
                print(f"{what}: before any output was written", file=sys.stderr)
            elif self.rank:  # under torchrun rank 0 writes the run's record (of its own outputs, when stopped)
                pass
            elif self._finished:
                print(f"{what}: every output was written; {self.writer.path('manifest.json')} lists them",
                      file=sys.stderr)
            else:
                try:
                    manifest = self.writer.finish("terminated" if terminated else "interrupted")
                    m = self.writer.manifest
                    print(f"{what}: {len(m['outputs'])} finished output(s) of {len(m['inputs'])} input(s) are "
                          f"kept; {manifest} lists them", file=sys.stderr)
                except VisctlError as err:
                    print(f"{what}; and the manifest could not be written: {err.message}", file=sys.stderr)
            raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:  # a full disk outside the writer
            where = f" {exc.filename}" if exc.filename else ""
            exc = OutputError(f"cannot write{where}: {exc.strerror or exc}", hint=_path_hint(exc))
        if exc is not None and out_of_memory(exc) is not None:  # a failed allocation: too large an input
            exc = out_of_memory(exc)
        if exc is not None and (missing := missing_optional(exc, f"this visctl {self.command} run")) is not None:
            exc = missing  # a plain install (no mmengine, no OpenCV): the one line that says what to install
        if isinstance(exc, VisctlError):
            from visctl._options import cli_error

            exc = cli_error(self.command, exc)  # the manifest says the error as stderr does: with the flags
            if self.writer is not None and not self._finished and not self.rank:
                try:
                    self.writer.finish("error", error=exc.message)
                except VisctlError as err:
                    print(f"warning: the manifest could not be updated: {err.message}", file=sys.stderr)
            raise typer.Exit(self._report(exc))
        if isinstance(exc, Exception) and not isinstance(exc, (typer.Exit, typer.Abort, typer.TyperException)):
            # a bug: exit 3 with its traceback (never 1, which means "some inputs failed"); the manifest keeps
            # what was finished, with status "crashed"
            if self.writer is not None and not self._finished and not self.rank:
                try:
                    self.writer.finish("crashed", error=f"{type(exc).__name__}: {exc}")
                except Exception:  # noqa: BLE001 - the original exception matters more
                    pass
            raise typer.Exit(report_bug(exc))

    def _report(self, err: VisctlError) -> int:
        """Print a user error once: under torchrun, where every rank met it (the same options, the same
        inputs), rank 0 alone says it; a rank whose error the others did not share says its own. The library's
        ``field=`` names are said as the command's flags (:func:`visctl._options.cli_error`)."""
        from visctl._options import cli_error

        err = cli_error(self.command, err)
        if self.world <= 1:
            return report(err, self.debug)
        from visctl import distributed

        if self.rank == 0:
            code = report(err, self.debug)
            distributed.error_handshake()  # the message is out before any rank exits (torchrun stops the rest)
            return code
        if distributed.error_handshake():
            return EXIT_USAGE
        print(f"rank {self.rank}:", end=" ", file=sys.stderr)
        return report(err, self.debug)

    # -- shared resources --
    def open_writer(self, params: dict[str, Any], out_dir: Path | None = None) -> OutputWriter:
        """Start the run's output directory and its record in the folder's manifest (status ``running``)."""
        folder = Path(out_dir or self.out_dir)
        if os.path.abspath(folder) != os.path.abspath(self.out_dir):
            self._created += prepare_dir(folder, "--out-dir")
            running_in(folder)
            check_record_files(folder)
        if self.max_pixels is not None:
            params = dict(params, max_pixels=self.max_pixels)
        # the manifest says the library's notes as stderr does: with the flags
        writer = OutputWriter(folder, self.command, params, started=self.started, protected=self.session.protected,
                              said=self.reporter.cli)
        for note in self.session.notes:
            writer.note(note)
        if not self.rank:  # under torchrun rank 0 writes the run's record, from every rank's (distributed.merge_records)
            writer.start()
        self.writer = self.reporter.writer = writer
        return writer

    def finish(self) -> None:
        """Write the manifest and gallery, print results, and exit 1 if any input failed."""
        assert self.writer is not None
        self.writer.flush()  # every image on disk before a backend reads them and the manifest lists them
        failures = self.writer.manifest["failures"]
        if self.rank:  # another rank under torchrun: rank 0 writes and prints the merged record
            self._finished = True
            if failures:
                raise typer.Exit(EXIT_PARTIAL)
            return
        status = "partial" if failures else "ok"
        if self.backend:
            from visctl.output.backends import push_to_backend

            images = [(Path(o["path"]).stem, self.writer.out_dir / o["path"]) for o in self.writer.manifest["outputs"]
                      if o["kind"] == "image"]
            where = push_to_backend(self.backend, self.writer.out_dir, images, self.command)
            self.writer.manifest["backend"] = dict(name=self.backend, save_dir=str(where))
        manifest_path = self.writer.finish(status)
        self._finished = True
        if self.default_out and self.writer.out_dir == self.out_dir:
            from visctl.gallery import write_root_index

            write_root_index(self.out_dir.parent)  # visctl-out/index.html links every command's latest run
        if self.json_out:
            from visctl.output.manifest import to_json

            self.result(to_json(self.writer.manifest))
        else:
            for out in self.writer.manifest["outputs"]:
                self.result(str(self.writer.out_dir / out["path"]) if not Path(out["path"]).is_absolute()
                            else out["path"])
            self.reporter.log(f"manifest: {manifest_path}", as_is=True)
            self.reporter.log(f"gallery:  {self.writer.path('index.html')}", as_is=True)
        if self.show:
            from visctl.show import show_images

            show_images([self.writer.out_dir / o["path"] for o in self.writer.manifest["outputs"]
                         if o["kind"] == "image"], self.warn, self.show_interval)
        said = self.reporter.said if self.world <= 1 else set()  # torchrun: rank 0 says every rank's
        for f in failures:
            if str(f["path"]) not in said:
                self.reporter.warn(f"failed: {f['path']}: {f['error']}", as_is=True)  # said with the flags already
        if failures:
            raise typer.Exit(EXIT_PARTIAL)


def stdout_closed() -> int:
    """After a write to a closed pipe (``visctl ... --json | head``): no traceback, and nothing more is written
    to the pipe (stdout points at /dev/null, so the interpreter's last flush cannot fail again). The exit status
    is a shell's for a writer stopped by SIGPIPE (128 + 13), as other Unix tools end there."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: control characters (ESC of a file name's escape sequences, CR, LF,
    ...) written as Python escapes (``\\x1b``), so a name cannot clear the terminal or split a line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)
