"""The writer of a run's files: stable names, background encoding, and a manifest true at every save."""

from __future__ import annotations

import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from visctl.errors import OutputError
from visctl.gallery import render_index
from visctl.output import files
from visctl.output.files import DISK_ERRNOS, _kind, _lstat, _path_hint, _real, atomic_write, file_id
from visctl.output.manifest import (
    GENERATOR,
    INDEX,
    MANIFEST,
    _locked,
    _refuse,
    check_record_files,
    checked_runs,
    known_outputs,
    read_manifest,
    replaceable,
    to_json,
    versions,
)

#: a run holds this much disk (plus its manifest's growth) in a hidden file, released to write a true manifest
#: and gallery when the disk fills up (see OutputWriter._grow_reserve)
RESERVE_BASE = 64 * 1024


class _Deferral:
    """SIGINT/SIGTERM held back while a file and its manifest entry are written (see :func:`uninterrupted`)."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: BaseException | None = None


_DEFER = _Deferral()


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Write a file and record it as one step: an interrupt that arrives meanwhile (delivered through
    :func:`interrupt` by RunContext's signal handlers) is raised when the step is done, so a file on disk is
    always in the manifest and a manifest entry always has its file."""
    _DEFER.depth += 1
    try:
        yield
    finally:
        _DEFER.depth -= 1
    if _DEFER.depth == 0 and _DEFER.pending is not None:
        exc, _DEFER.pending = _DEFER.pending, None
        raise exc


def interrupt(exc: BaseException) -> None:
    """Raise ``exc`` (a KeyboardInterrupt) now, or at the end of the current :func:`uninterrupted` step."""
    if _DEFER.depth:
        _DEFER.pending = _DEFER.pending or exc
        return
    raise exc


def clear_interrupt() -> None:
    """Forget an interrupt held back by a step that ended in another exception."""
    _DEFER.pending = None
    _DEFER.depth = 0


#: OpenCV encoder settings per suffix (cv2.IMWRITE_JPEG_QUALITY = 1, cv2.IMWRITE_WEBP_QUALITY = 64): JPEG at
#: quality 95, WebP at quality 90 (both lossy); PNG with OpenCV's defaults (lossless, compression level 1)
ENCODE_PARAMS: dict[str, list[int]] = {".jpg": [1, 95], ".jpeg": [1, 95], ".webp": [64, 90]}


def encode_image(rgb: Any, suffix: str = ".png") -> bytes:
    """An RGB uint8 image encoded as ``suffix`` says (:data:`ENCODE_PARAMS`); OpenCV releases the GIL meanwhile."""
    import cv2

    suffix = (suffix or ".png").lower()
    ok, buf = cv2.imencode(suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), ENCODE_PARAMS.get(suffix, []))
    if not ok:
        raise ValueError(f"cannot encode {suffix}")
    return buf.tobytes()


def io_threads(threads: int | None, cores: int | None = None) -> int:
    """Threads of each pool beside the model (the read-ahead, and the draw-encode-write pool): the cores
    torch's ``threads`` leave free, at least 1, at most 8 (PNG encoding of a 300 px figure is ~10 ms; more
    threads only queue). More would preempt torch's OpenMP threads, and a parallel region waits for its
    slowest thread: on 2 cores, 2 torch threads beside 2 writers made featmap 0.6x of a bare forward loop."""
    if cores is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS, Windows
            cores = os.cpu_count() or 1
    return max(1, min(cores - (threads or 1), 8))


def _slug(text: str) -> str:
    # no leading dot: an output of `.hidden.png` must not be a hidden file
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-").lstrip(".") or "x"


def input_stems(paths: Iterable[Path]) -> dict[Path, str]:
    """A stable, collision-free stem per input: its path relative to the inputs' common folder.

    ``a/cat.jpg`` and ``b/cat.jpg`` become ``a__cat`` and ``b__cat``; a single input keeps its stem. Names
    that slug alike (``p q.png``, ``p-q.png``) get ``_1``, ``_2``, ... until the stem is unused, compared
    without case (a case-insensitive disk would merge ``A`` and ``a``), so no two inputs share a stem.
    """
    from visctl.images import ArrayImage

    given_paths = list(paths)
    arrays: list[ArrayImage] = [p for p in given_paths if isinstance(p, ArrayImage)]
    if arrays:  # an in-memory image keeps its own name (image0), made unique against the files' stems
        mixed: dict[Path, str] = input_stems([p for p in given_paths if not isinstance(p, ArrayImage)])
        used = {s.casefold() for s in mixed.values()}
        for arr in arrays:
            own, k = arr.stem, 0
            while own.casefold() in used:
                k += 1
                own = f"{arr.stem}_{k}"
            used.add(own.casefold())
            mixed[arr] = own  # type: ignore[index]  # an ArrayImage is a PurePosixPath standing for a Path
        return mixed
    paths = [Path(p) for p in given_paths]
    if not paths:
        return {}
    absolute = [Path(os.path.abspath(p)) for p in paths]
    common = Path(os.path.commonpath([str(a.parent) for a in absolute]))
    wanted: dict[Path, str] = {}
    for p, a in zip(paths, absolute):
        rel = a.relative_to(common).with_suffix("")
        stem = "__".join(_slug(part) for part in rel.parts)
        if a.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            stem += f"_{_slug(a.suffix.lower().lstrip('.'))}"
        wanted[p] = stem
    # a name an input has by itself wins over one made up for another (p-q_1.png keeps p-q_1)
    taken = {s.casefold() for s in wanted.values()}
    stems: dict[Path, str] = {}
    given: set[str] = set()
    for p, stem in wanted.items():
        name, n = stem, 0
        while name.casefold() in given or (n and name.casefold() in taken):
            n += 1
            name = f"{stem}_{n}"
        given.add(name.casefold())
        stems[p] = name
    return stems


def _drop_stale_reserves(folder: Path) -> None:
    """Remove the held space of runs that died without giving it back (SIGKILL): their process is gone."""
    if os.name != "posix":  # os.kill(pid, 0) only asks on POSIX
        return
    for held in Path(folder).glob(".visctl-reserve.*"):
        try:
            pid = int(held.name.rsplit("-", 2)[-2])
        except (ValueError, IndexError):
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            st = _lstat(held)
            if st is not None and stat.S_ISREG(st.st_mode):
                held.unlink(missing_ok=True)
        except OSError:  # alive (another user's), or unknown: left alone
            pass


class OutputWriter:
    """Writes a run's files under one directory and keeps the manifest true at every moment it is saved.

    The folder's manifest.json is shared: every run that writes into the folder merges its own record into
    ``runs`` under a file lock (concurrent runs and re-runs keep each other's records), and the top-level keys
    describe the run that saved it last. A file a later run writes again under the same name moves to that
    run's record (the earlier one lists it under ``replaced``). The writer refuses to write over an input of
    the run (:meth:`protect`) and never gives two outputs of one run the same name.
    """

    def __init__(self, out_dir: Path, command: str, params: dict[str, Any], started: float | None = None,
                 protected: dict[tuple[int, int], str] | None = None, said: Callable[[str], str] = str) -> None:
        self.out_dir = Path(out_dir)
        self.command = command
        self.started = started or time.time()
        self.id = time.strftime("%Y%m%dT%H%M%S", time.localtime(self.started)) + f"-{os.getpid()}-{secrets.token_hex(3)}"
        self.protected: dict[tuple[int, int], str] = dict(protected or {})
        #: how a note or a skipped input's error is said in the manifest: as the library says it (fields), or as
        #: the CLI does (its RunContext sets its flags' wording: ``topk=0`` -> ``--topk 0``)
        self.said = said
        self._claimed: set[str] = set()
        self._pool: Any = None  # a ThreadPoolExecutor once background() is called
        self._pending: list[tuple[Any, dict]] = []  # (future, manifest record) of background writes, in call order
        self._slots: Any = None  # a BoundedSemaphore: the images queued or in flight (background())
        self._known: set[str] | None = None  # the outputs the folder's manifest lists: visctl's to replace
        self._beside = 0  # outputs written beside a file visctl did not write
        self._dropped: list[str] = []  # records of earlier runs left out of the merged manifest (said once)
        self._reserve: Path | None = None  # the hidden file that holds disk space for the last manifest
        self._reserve_held = 0
        self._reserve_want = 0
        self.manifest: dict[str, Any] = {
            "generator": GENERATOR,  # the mark of visctl's own manifest (check_record_files)
            "id": self.id,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "pid": os.getpid(),
            "command": command,
            "params": params,
            "inputs": [],
            "outputs": [],
            "failures": [],
            "notes": [],
            "status": "running",
            "versions": versions(),
            "timings": {},
        }

    def path(self, name: str) -> Path:
        """The absolute path of a run file."""
        return self.out_dir / name

    # -- names and inputs --
    def protect(self, paths: Iterable[Path | str | None]) -> None:
        """Inputs of the run (images, config, checkpoint, ...): the writer refuses to write over them."""
        for p in paths:
            if p is None:
                continue
            fid = file_id(p)
            if fid is not None:
                self.protected.setdefault(fid, str(p))

    def _claim(self, target: Path, named: bool = False) -> Path:
        """``target``, or ``<stem>_2<suffix>``, ... if an earlier output of this run has that name (compared
        without case), or if a file visctl did not write is there (a file the folder's manifest does not list,
        a link, a FIFO, a folder: never replaced, never followed); refuses an input of the run.

        ``named``: the user named the file (``--save-path x.png``): a file there is replaced as asked (a link
        itself, not what it points to), and a folder, FIFO or device there is refused.
        """
        target = Path(target)
        base, n = target, 1

        def taken(t: Path) -> bool:
            return os.path.normcase(os.path.abspath(t)).casefold() in self._claimed

        while taken(target):
            n += 1
            target = base.with_name(f"{base.stem}_{n}{base.suffix}")
        self._refuse_input(target)
        first = target
        while not named and not self._replaceable(target) or taken(target):
            n += 1
            target = base.with_name(f"{base.stem}_{n}{base.suffix}")
            self._refuse_input(target)
        if target != first:
            self._beside += 1
            if self._beside == 1:
                import warnings

                from visctl.errors import InputWarning

                warnings.warn(InputWarning(f"{first} exists and visctl did not write it: it is kept, and the output "
                                           f"is {target.name} (so for any later one)"), stacklevel=2)
        st = _lstat(target)
        if named and st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise _refuse(target, f"is {_kind(st)}", "give another file name")
        self._claimed.add(os.path.normcase(os.path.abspath(target)).casefold())
        return target

    def _refuse_input(self, target: Path) -> None:
        st = _lstat(target)
        fid = (st.st_dev, st.st_ino) if st is not None and not stat.S_ISLNK(st.st_mode) else None
        if fid is not None and fid in self.protected:
            raise OutputError(f"{target} is an input of this run ({self.protected[fid]}); visctl never writes over "
                              "its inputs", hint="choose another output file or folder (-o/--out-dir)")

    def _replaceable(self, target: Path) -> bool:
        """Whether ``target`` is free, or a regular file that the folder's manifest lists as an output."""
        if self._known is None and _lstat(target) is not None:
            self._known = known_outputs(self.out_dir)
        return replaceable(target, self._known or set())

    # -- the disk space of the last manifest --
    def _grow_reserve(self, extra: int) -> None:
        """Hold ``extra`` more bytes for the manifest and gallery the run will write last: a disk that fills up
        fails here, before the output, and the space held is released to write a true record (:meth:`save`)."""
        if self._reserve is None:
            return
        self._reserve_want += extra
        if self._reserve_want <= self._reserve_held:
            return
        step = max(self._reserve_want - self._reserve_held, self._reserve_held // 4, 16 * 1024)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            with os.fdopen(os.open(self._reserve, flags, 0o600), "ab") as fh:
                files._write_file(fh, os.urandom(step), self._reserve)  # random: a compressing file system keeps it
            self._reserve_held += step
        except OSError as exc:
            raise OutputError(f"cannot write in {self.out_dir}: {exc.strerror or exc}", hint=_path_hint(exc)) from exc

    def release_reserve(self) -> bool:
        """Free the space held for the last manifest; whether any was held."""
        held, self._reserve, self._reserve_held = self._reserve, None, 0
        if held is None:
            return False
        try:
            held.unlink()
        except OSError:
            pass
        return True

    def _cost(self, entry: dict) -> int:
        """What one more entry may add to the manifest (twice: top level and ``runs``) and to the gallery."""
        return 3 * len(to_json(entry)) + 3 * len(str(entry.get("caption", ""))) + 512

    def _write(self, target: Path, data: bytes, spare: bool = False) -> None:
        """``spare``: on a full disk, release the space held for the record and try once more."""
        try:
            try:
                atomic_write(target, data)
            except OSError as exc:
                if not (spare and exc.errno in DISK_ERRNOS and self.release_reserve()):
                    raise
                atomic_write(target, data)
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {exc.strerror or exc}", hint=_path_hint(exc)) from exc

    # -- files --
    def write_bytes(self, name: str, data: bytes) -> Path:
        """Atomically write a file of the run (not recorded as an output: :meth:`add_output` does that)."""
        target = self._claim(self.path(name))
        self._write(target, data)
        return target

    def write_output(self, name: str, data: bytes, kind: str, caption: str = "", target: Path | None = None,
                     **info: Any) -> Path:
        """Atomically write a file and record it, as one step that an interrupt does not split."""
        with uninterrupted():
            target = self._claim(Path(target) if target is not None else self.path(name), named=target is not None)
            entry = self._entry(target, kind, caption, **info)
            self._grow_reserve(self._cost(entry))
            self._write(target, data)
            self.manifest["outputs"].append(entry)
        return target

    def _entry(self, path: Path, kind: str, caption: str = "", **info: Any) -> dict[str, Any]:
        """A manifest entry: the path written, relative to the run directory when inside it. Only the folders
        are resolved: a name that was a link names the file written there, never the link's old target."""
        real = Path(_real(path))
        try:
            rel = str(real.relative_to(self.out_dir.resolve()))
        except ValueError:
            rel = str(real)
        return dict(path=rel, kind=kind, caption=caption, **info)

    def add_output(self, path: Path, kind: str, caption: str = "", **info: Any) -> None:
        """Record a written file in the manifest (paths relative to the run directory when inside it)."""
        entry = self._entry(path, kind, caption, **info)
        self.manifest["outputs"].append(entry)
        self._grow_reserve(self._cost(entry))

    def save_image(self, name: str, rgb: Any, caption: str = "", target: Path | None = None, **info: Any) -> Path:
        """Encode and atomically write an RGB image; record it.

        ``rgb``: an (H, W, 3) uint8 array, or a function that draws one (then the drawing, too, happens off the
        calling thread). The suffix of the name (or ``target``) is the format (:data:`ENCODE_PARAMS`). With
        :meth:`background` on, drawing, encoding and writing run in the writer's threads; the name is claimed
        and the manifest entry placed now, in call order, so the manifest is a one-thread run's, and every
        save of the manifest first waits for the writes (:meth:`flush`): it never lists an unfinished file.
        """
        suffix = Path(target).suffix if target is not None else Path(name).suffix

        def encode() -> bytes:
            return encode_image(rgb() if callable(rgb) else rgb, suffix)

        if self._pool is None:
            return self.write_output(name, encode(), "image", caption, target=target, **info)
        self._raise_failed()
        self._slots.acquire()  # bounded: the caller waits while the queue is full
        submitted = False
        try:
            with uninterrupted():
                path = self._claim(Path(target) if target is not None else self.path(name), named=target is not None)
                record = self._entry(path, "image", caption, **info)
                self._grow_reserve(self._cost(record))
                self.manifest["outputs"].append(record)

                def job() -> None:
                    try:
                        self._write(path, encode())
                    finally:
                        self._slots.release()
                try:
                    future = self._pool.submit(job)
                except BaseException:
                    self.manifest["outputs"].remove(record)
                    raise
                submitted = True
                self._pending.append((future, record))
        finally:
            if not submitted:
                self._slots.release()
        return path

    # -- the background pool --
    def background(self, workers: int, queue: int = 0) -> None:
        """Draw, encode and write images in ``workers`` threads from now on (0: in the calling thread).

        At most ``max(2 * workers, queue)`` images wait in memory (:meth:`save_image` blocks for a free slot):
        a run that makes its figures a batch at a time passes its batch size as ``queue``, so that a batch's
        figures are written while the model works on the next one, and memory stays that of one batch
        whatever the number of images. The writes are waited for by :meth:`flush`, which every save of the
        manifest calls first.
        """
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.close()
        if workers > 0:
            self._pool = ThreadPoolExecutor(workers, thread_name_prefix="visctl-write")
            self._slots = threading.BoundedSemaphore(max(2 * workers, queue))

    def _raise_failed(self) -> None:
        """A background write that failed (a full disk) stops the run at the next image, not at the end."""
        # one snapshot: a job that fails after it was looked at stays pending, for the next check or flush
        done = [(f, r) for f, r in self._pending if f.done()]
        if any(f.exception() is not None for f, _ in done):
            self.flush()  # raises the failure
            return
        finished = {id(f) for f, _ in done}
        self._pending = [(f, r) for f, r in self._pending if id(f) not in finished]

    def flush(self) -> None:
        """Wait for every background write; drop the records of the failed ones, then raise the first failure.

        An input whose image failed is no longer listed as finished (:meth:`reconcile` lists it again as
        ``partial`` when it kept other outputs). Ctrl-C waits for the writes in flight (each a few ms).
        """
        first: BaseException | None = None
        with uninterrupted():
            pending, self._pending = self._pending, []
            for future, record in pending:
                try:
                    future.result()
                except BaseException as exc:  # noqa: BLE001 - raised below, once every write has ended
                    first = first or exc
                    m = self.manifest
                    m["outputs"] = [o for o in m["outputs"] if o is not record]
                    m["inputs"] = [i for i in m["inputs"] if i.get("path") != record.get("input", object())]
        if first is not None:
            raise first

    def close(self) -> None:
        """Flush and stop the pool (the writer goes on writing, in the calling thread)."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def save_array(self, name: str, array: Any, caption: str = "", **info: Any) -> Path:
        """Atomically write a .npy array; record it."""
        import io

        import numpy as np

        buf = io.BytesIO()
        np.save(buf, array)
        return self.write_output(name, buf.getvalue(), "array", caption, **info)

    def add_input(self, path: Path | str, **info: Any) -> None:
        """Record an input that was processed."""
        self.manifest["inputs"].append(dict(path=str(path), **info))
        self._grow_reserve(2 * len(to_json(self.manifest["inputs"][-1])) + 128)

    def fail(self, path: Path | str, message: str) -> None:
        """Record an input that was skipped, and why."""
        self.manifest["failures"].append(dict(path=str(path), error=self.said(message)))
        self._grow_reserve(3 * len(to_json(self.manifest["failures"][-1])) + 256)

    def note(self, message: str) -> None:
        """Record a remark about the run (the chosen default layer, a checkpoint summary, ...)."""
        self.manifest["notes"].append(self.said(message))

    # -- the manifest --
    def reconcile(self) -> None:
        """After an interrupt or an error: drop outputs whose file is gone, and list as ``partial`` an input
        that has outputs but was not finished (inputs listed = inputs drawn)."""
        m = self.manifest
        m["outputs"] = [o for o in m["outputs"] if (self.out_dir / o["path"]).exists()]
        listed = {i["path"] for i in m["inputs"]} | {f["path"] for f in m["failures"]}
        for o in m["outputs"]:
            src = o.get("input")
            if isinstance(src, str) and src not in listed:
                m["inputs"].append(dict(path=src, partial=True))
                listed.add(src)

    def start(self) -> Path:
        """Record the run as ``running`` in the folder's manifest before any output is written, and hold the
        disk space its last manifest and gallery need (refuses a folder whose record visctl did not write)."""
        saved = self.save(with_index=False)
        _drop_stale_reserves(self.out_dir)
        sizes = sum(st.st_size for st in (_lstat(self.path(MANIFEST)), _lstat(self.path(INDEX))) if st is not None)
        self._reserve = self.path(f".visctl-reserve.{self.id}")
        try:
            self._grow_reserve(RESERVE_BASE + 2 * sizes)
        except BaseException:
            self.release_reserve()
            raise
        return saved

    def finish(self, status: str, error: str | None = None) -> Path:
        """Write manifest.json and index.html with the final status (after every background write)."""
        try:
            self.flush()
        except BaseException:
            if status in ("ok", "partial"):
                raise
            # an interrupt or an error is being recorded: the failed write was dropped from the record
        self.manifest["status"] = status
        if error:
            self.manifest["error"] = error
        if status != "ok" and status != "partial":
            self.reconcile()
        self.manifest["timings"].setdefault("total_s", round(time.time() - self.started, 3))  # a saved result's
        try:
            return self.save()
        finally:
            self.release_reserve()

    def _dropped_records(self, dropped: list[str]) -> None:
        """One warning (and a note) for the records of earlier runs that the merged manifest no longer lists."""
        fresh = [d for d in dropped if d not in self._dropped]
        if not fresh:
            return
        self._dropped += fresh
        shown = "; ".join(fresh[:3]) + (f"; and {len(fresh) - 3} more" if len(fresh) > 3 else "")
        message = (f"{self.path(MANIFEST)}: dropped {len(fresh)} record{'s' if len(fresh) != 1 else ''} of earlier "
                   f"runs that name no file of this folder: {shown}; the manifest lists only the files here")
        import warnings

        from visctl.errors import InputWarning

        warnings.warn(InputWarning(message), stacklevel=3)
        self.manifest["notes"].append(message)

    def save(self, with_index: bool = True) -> Path:
        """Merge this run's record into the folder's manifest.json under the folder's lock (after every
        background write has ended: a failed one is dropped from the record, then raised)."""
        self.flush()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = self.manifest
        mine = {o["path"] for o in record["outputs"]}
        with uninterrupted(), _locked(self.out_dir):
            check_record_files(self.out_dir)  # another tool's manifest or page, a damaged one: never replaced
            runs = []
            earlier, dropped = checked_runs(read_manifest(self.path(MANIFEST)), self.out_dir)
            self._dropped_records(dropped)
            for run in earlier:
                if run.get("id") == self.id:
                    continue
                run = {k: v for k, v in run.items() if k != "runs"}
                outs = [o for o in run.get("outputs") or [] if isinstance(o, dict)]
                gone = [o["path"] for o in outs if o.get("path") in mine]
                if gone:
                    run["outputs"] = [o for o in outs if o.get("path") not in mine]
                    run["replaced"] = [*(run.get("replaced") or []), *(dict(path=g, by=self.id) for g in gone)]
                runs.append(run)
            runs.append(record)
            runs.sort(key=lambda r: str(r.get("started", "")))
            self._write(self.path(MANIFEST), to_json(dict(record, runs=runs)).encode(), spare=True)
            if with_index:
                # the folder's gallery: this run's page, with the outputs earlier runs left here after its own
                earlier = [o for r in runs if r is not record for o in r.get("outputs") or []
                           if isinstance(o, dict) and isinstance(o.get("path"), str) and isinstance(o.get("kind"), str)]
                shown = dict(record, outputs=[*record["outputs"], *earlier])
                self._write(self.path(INDEX), render_index(shown).encode(), spare=True)
        return self.path(MANIFEST)
