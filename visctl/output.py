"""Outputs: stable file names, atomic writes and manifest.json (the pages are in visctl.gallery)."""

from __future__ import annotations

import errno
import json
import os
import platform
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

from visctl.errors import OutputError

# the pages moved to visctl.gallery and --show to visctl.show; their names stay importable from here
from visctl.gallery import (  # noqa: F401
    _href,
    _script_json,
    _text,
    index_manifest,
    render_index,
    render_root_index,
    scatter_html,
    write_root_index,
)
from visctl.show import Navigator, has_display, show_images  # noqa: F401

MANIFEST = "manifest.json"
INDEX = "index.html"
LOCK = ".manifest.lock"  # flock'ed while a run merges its record into the folder's manifest.json
#: the field that marks a manifest.json as visctl's (a folder's manifest of another tool is never replaced)
GENERATOR = "visctl"
#: a run holds this much disk (plus its manifest's growth) in a hidden file, released to write a true manifest
#: and gallery when the disk fills up (see OutputWriter._grow_reserve)
RESERVE_BASE = 64 * 1024
#: errors of the disk rather than of the path: reported as one clear error, never a traceback
DISK_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EROFS, errno.EIO,
                                    errno.EFBIG) if e is not None)


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


def _write_file(fh: Any, data: bytes, target: Path) -> None:
    """The one low-level write of every file visctl makes, to ``target`` through ``fh`` (tests replace it to
    simulate a full disk)."""
    fh.write(data)


def _umask() -> int:
    """The process umask, read without changing it where /proc tells it (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: OpenCV encoder settings per suffix (cv2.IMWRITE_JPEG_QUALITY = 1, cv2.IMWRITE_WEBP_QUALITY = 64): JPEG at
#: quality 95, WebP at quality 90 (both lossy); PNG with OpenCV's defaults (lossless, compression level 1)
ENCODE_PARAMS: dict[str, list[int]] = {".jpg": [1, 95], ".jpeg": [1, 95], ".webp": [64, 90]}
#: the formats of --format (the figures of cam), fastest to encode last but one: png is lossless and the default
FORMATS = ("png", "jpg", "webp")


def check_format(image_format: Any) -> str:
    """``--format``'s value (an Enum member or its string) as the figures' suffix, or an error with a hint."""
    from visctl.errors import InputError

    value = str(getattr(image_format, "value", image_format))
    if value not in FORMATS:
        raise InputError(f"unknown image format {image_format!r}", hint="use " + ", ".join(FORMATS))
    return value


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


#: what visctl writes images as (OpenCV's encoders for these are always built)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def check_output_file(path: Path | None, option: str, suffixes: Iterable[str] | None = IMAGE_SUFFIXES) -> None:
    """Refuse an output file option that cannot be written, before any work: a directory, a name whose suffix
    names no format visctl writes there (``suffixes``; None: any), a parent that is a file.
    """
    from visctl.errors import InputError

    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{option} {path} is a directory, not a file name",
                         hint=f"give a file name, e.g. {path / ('NAME' + next(iter(suffixes or ()), ''))}; "
                         "-o/--out-dir names the folder of a run")
    suffixes = tuple(suffixes) if suffixes is not None else None
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise InputError(f"{option} {path}: visctl cannot write "
                         f"{'a ' + path.suffix + ' file' if path.suffix else 'a file without a suffix'} here",
                         hint=f"end the name in one of {', '.join(suffixes)}")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{option} {path}: {parent} is a file, not a folder",
                                 hint="choose a path under an existing folder, or one that can be created")
            break


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON (RFC 8259): NaN and infinities, which ``json.dumps`` writes as bare ``NaN``/``Infinity``
    that other parsers refuse, become null; anything else unknown is written as its ``str``."""
    return json.dumps(_finite(obj), indent=indent, default=str, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, (dict, MappingProxyType)):  # a frozen result's dicts are mapping proxies
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy scalars and arrays
        return _finite(obj.tolist())
    return obj


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and a rename.

    On any failure (a full disk included) the temp file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; a written file gets the mode open() would give it
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            _write_file(fh, data, path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _path_hint(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return "the disk (or your quota) is full: free some space, or choose another folder with -o/--out-dir"
    if exc.errno == errno.EROFS:
        return "that file system is read-only: choose a folder you can write in with -o/--out-dir"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "you may not write there: choose a folder you own with -o/--out-dir, e.g. -o ./visctl-out"
    return "choose a folder you can write in with -o/--out-dir"


def prepare_dir(path: Path, what: str = "--out-dir") -> list[Path]:
    """Make sure ``path`` is a folder visctl can write in, creating it and its missing parents.

    Checked before any model or data is loaded, so a bad folder costs nothing. Returns the folders it
    created, deepest last, so that a run which writes nothing can remove them again.

    Raises:
        OutputError: ``path`` or one of its parents is a file, or it cannot be created or written in.
    """
    path = Path(path)
    absolute = Path(os.path.abspath(path))
    missing: list[Path] = []
    cur = absolute
    while not cur.exists():
        if cur.is_symlink():
            raise OutputError(f"{what} {path}: {cur} is a link to a place that does not exist",
                              hint="fix or remove the link, or choose another folder")
        missing.append(cur)
        cur = cur.parent
    if not cur.is_dir():
        if cur == absolute:
            raise OutputError(f"{what} {path} is a file, not a folder",
                              hint="give a folder (new or existing), e.g. -o visctl-out/run1")
        raise OutputError(f"{what} {path}: {cur} is a file, so no folder can be made under it",
                          hint="choose a path whose parents are folders")
    created: list[Path] = []
    try:
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                if not d.is_dir():
                    raise OutputError(f"{what} {path}: {d} is a file", hint="choose another folder") from None
                continue
            created.append(d)
        fd, probe = tempfile.mkstemp(prefix=".visctl-probe.", dir=absolute)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        remove_empty(created)
        raise OutputError(f"cannot write in {what} {path}: {exc.strerror or exc}", hint=_path_hint(exc)) from exc
    except BaseException:
        remove_empty(created)
        raise
    return created


def check_file_target(path: Path, what: str) -> list[Path]:
    """A file the run will write (``--save-path x.png``): not a folder, in a folder visctl can write in."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory, not a file name",
                          hint=f"give a file name, e.g. {what} {path / 'out.png'}; -o/--out-dir names the folder of a run")
    st = _lstat(path)
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise OutputError(f"{what} {path} is {_kind(st)}, not a file visctl can replace", hint="give another file name")
    return prepare_dir(path.parent, what)


def remove_empty(folders: Iterable[Path]) -> None:
    """Remove the folders a run created and left empty, deepest first."""
    for d in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"),
          (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link"))


def _kind(st: os.stat_result) -> str:
    """What a non-regular file is, in words."""
    return next((what for test, what in _KINDS if test(st.st_mode)), "not a regular file")


def _lstat(path: Path | str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (OSError, ValueError):
        return None


def _real(path: Path | str) -> str:
    """``path`` absolute with its folders resolved and its own name kept: a link there is named, not followed."""
    p = Path(os.path.abspath(path))
    return str(p.parent.resolve() / p.name)


def read_regular(path: Path | str, limit: int | None = None) -> bytes | None:
    """The bytes of ``path`` when it is a regular file (at most ``limit``), else None: a link is never
    followed, a FIFO or device never opened for long (O_NONBLOCK: a FIFO with no writer cannot hang the run)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    st = _lstat(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else since the lstat
            return None
        chunks, left = [], limit if limit is not None else -1
        while left:
            chunk = os.read(fd, 1 << 20 if left < 0 else min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left = left - len(chunk) if left > 0 else left
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


#: how visctl's pages begin: the marker of gallery.page(), or the shell's first line before the marker existed
_PAGE_MARKER = b'<meta name="generator" content="visctl">'
_PAGE_LEGACY = b'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>visctl'


def is_visctl_page(head: bytes) -> bool:
    """Whether the first bytes of an HTML file are those of a page visctl wrote."""
    return _PAGE_MARKER in head[:4096] or head.startswith(_PAGE_LEGACY)


def _refuse(path: Path, problem: str, hint: str) -> OutputError:
    return OutputError(f"{path} {problem}; visctl never replaces a file it did not write", hint=hint)


def check_record_files(folder: Path, manifest: bool = True, index: bool = True) -> None:
    """Refuse, before any work, a folder whose ``manifest.json``, ``index.html`` or lock visctl would replace
    but did not write: another tool's file, a damaged manifest, a link, a folder, a FIFO or a device there.

    Raises:
        OutputError: one message naming the file and what it is, with a hint (move it or choose another folder).
    """
    folder = Path(folder)
    elsewhere = "write into another folder (-o/--out-dir; the folder of --save-path/--out-file)"
    names = ([MANIFEST, LOCK] if manifest else []) + ([INDEX] if index else [])
    for name in names:
        path = folder / name
        st = _lstat(path)
        if st is None:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, f"is {_kind(st)}, not a file visctl wrote",
                          f"remove or rename it, or {elsewhere}")
        if name == LOCK:
            continue  # flock'ed, never written: any regular file does
        data = read_regular(path, None if name == MANIFEST else 4096)
        if data is None:
            raise _refuse(path, "cannot be read", f"make it readable, move it away, or {elsewhere}")
        if name == INDEX:
            if not is_visctl_page(data):
                raise _refuse(path, "is a page visctl did not write",
                              f"move it away (e.g. mv {path} {path}.orig), or {elsewhere}")
            continue
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise _refuse(path, f"is damaged (not valid JSON: {exc})",
                          f"repair it, or move it away (mv {path} {path}.bad) to start a new record there, "
                          f"or {elsewhere}") from None
        if not is_visctl_manifest(doc):
            raise _refuse(path, "is not a manifest visctl wrote",
                          f"move it away (e.g. mv {path} {path}.orig), or {elsewhere}")


def file_id(path: Path | str) -> tuple[int, int] | None:
    """The (device, inode) of an existing file, following links; None when there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def is_visctl_manifest(doc: Any) -> bool:
    """Whether a parsed manifest.json is one visctl wrote: marked ``"generator": "visctl"``, or (before the
    mark) a run record's shape: a string ``id`` and ``command``, ``outputs`` a list, ``versions`` an object."""
    if not isinstance(doc, dict):
        return False
    if doc.get("generator") == GENERATOR:
        return isinstance(doc.get("runs"), list) or isinstance(doc.get("outputs"), list)
    return (isinstance(doc.get("id"), str) and isinstance(doc.get("command"), str)
            and isinstance(doc.get("outputs"), list) and isinstance(doc.get("versions"), dict))


def _runs_of(doc: Any) -> list[dict]:
    """The run records of a manifest: its ``runs``, or the whole document for a one-run (older) manifest."""
    if not is_visctl_manifest(doc):
        return []
    runs = doc["runs"] if isinstance(doc.get("runs"), list) else [dict(doc, id=doc.get("id", "earlier"))]
    return [r for r in runs if isinstance(r, dict)]


def read_manifest(path: Path) -> dict | None:
    """A visctl manifest.json, or None when it is missing, unreadable or someone else's."""
    data = read_regular(path)  # never a FIFO (it would hang the run) nor a link's target
    if data is None:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if is_visctl_manifest(doc) else None


def listed_outputs(manifest_path: Path) -> set[Path]:
    """The files that every run recorded in ``manifest_path`` wrote, as absolute resolved paths."""
    doc = read_manifest(manifest_path)
    folder = Path(manifest_path).parent.resolve()
    found = {folder / MANIFEST, folder / INDEX}
    for run in _runs_of(doc):
        for out in run.get("outputs") or []:
            rel = out.get("path") if isinstance(out, dict) else None
            if isinstance(rel, str):
                found.add((folder / rel).resolve())
    return found if doc is not None else set()


def known_outputs(folder: Path) -> set[str]:
    """The outputs that the runs recorded in ``folder``'s manifest.json wrote (:func:`_real` paths)."""
    known = set()
    resolved = Path(folder).resolve()
    for run in _runs_of(read_manifest(Path(folder) / MANIFEST)):
        for out in run.get("outputs") or []:
            rel = out.get("path") if isinstance(out, dict) else None
            if isinstance(rel, str):
                known.add(_real(resolved / rel))
    return known


def replaceable(target: Path, known: set[str]) -> bool:
    """Whether visctl may write ``target``: nothing is there, or a regular file it wrote (listed in ``known``).
    A link (dangling or not), a FIFO, a device, a folder or another file is never replaced nor followed."""
    st = _lstat(target)
    if st is None:
        return True
    return stat.S_ISREG(st.st_mode) and _real(target) in known


def free_name(target: Path) -> Path:
    """``target``, or ``<stem>_2<suffix>``, ... when a file visctl did not write is there (see
    :func:`replaceable`), for a file written outside the writer (t-SNE's memory-mapped features)."""
    target = Path(target)
    known = known_outputs(target.parent) if _lstat(target) is not None else set()
    base, n = target, 1
    while not replaceable(target, known):
        n += 1
        target = base.with_name(f"{base.stem}_{n}{base.suffix}")
    return target


def drop_visctl_outputs(files: list[Path]) -> tuple[list[Path], int]:
    """``files`` (found by walking a folder) less those a visctl manifest.json among them lists as outputs.

    A run whose ``-o`` lies inside its input folder must not read its own results as inputs next time.
    Returns the kept files, in order, and how many were dropped.
    """
    manifests = [p for p in files if p.name == MANIFEST]
    if not manifests:
        return files, 0
    written: set[Path] = set()
    for m in manifests:
        written |= listed_outputs(m)
    if not written:
        return files, 0
    kept = [p for p in files if p.resolve() not in written]
    return kept, len(files) - len(kept)


def is_visctl_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a visctl run (a manifest.json that visctl wrote)."""
    return read_manifest(Path(folder) / MANIFEST) is not None


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder``'s manifest, held across processes (flock; none where fcntl is absent)."""
    try:
        import fcntl
    except ImportError:  # Windows: concurrent runs into one folder are not serialised there
        yield
        return
    # never through a link, never a FIFO's open that waits (check_record_files refused both before the run)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(Path(folder) / LOCK, flags, 0o666)  # the umask decides, as for outputs
    except OSError as exc:
        raise OutputError(f"cannot open {Path(folder) / LOCK}: {exc.strerror or exc}",
                          hint="remove it (visctl makes it again), or choose another folder with -o/--out-dir") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refuse(Path(folder) / LOCK, "is not a regular file", "remove it, or choose another folder with -o/--out-dir")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


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


def single_output(path: Path | None, count: int, option: str = "--save-path") -> bool:
    """Whether ``path`` names one output image rather than a directory; refuses a file name for several images.

    A path with an image suffix (``out/x.png``) that is not an existing directory names a file; anything else
    is a directory. Called before any work, so ``--save-path out/x.png`` with a folder of images never
    becomes a directory named ``x.png``.
    """
    from visctl.errors import InputError
    from visctl.images import IMAGE_SUFFIXES

    if path is None or Path(path).is_dir() or Path(path).suffix.lower() not in IMAGE_SUFFIXES:
        return False
    if count > 1:
        raise InputError(f"{option} {path} names one image file, and there are {count} input images",
                         hint=f"give a directory ({option} {Path(path).parent / Path(path).stem}/ or --out-dir), "
                         "or one input image")
    return True


def versions() -> dict[str, str]:
    """Versions of the packages that shape the results, for the manifest."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("visctl", "torch", "torchvision", "grad-cam", "mmengine-lite", "mmengine", "timm",
                "opencv-python-headless", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


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
                 protected: dict[tuple[int, int], str] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.command = command
        self.started = started or time.time()
        self.id = time.strftime("%Y%m%dT%H%M%S", time.localtime(self.started)) + f"-{os.getpid()}-{secrets.token_hex(3)}"
        self.protected: dict[tuple[int, int], str] = dict(protected or {})
        self._claimed: set[str] = set()
        self._pool: Any = None  # a ThreadPoolExecutor once background() is called
        self._pending: list[tuple[Any, dict]] = []  # (future, manifest record) of background writes, in call order
        self._slots: Any = None  # a BoundedSemaphore: the images queued or in flight (background())
        self._known: set[str] | None = None  # the outputs the folder's manifest lists: visctl's to replace
        self._beside = 0  # outputs written beside a file visctl did not write
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
                _write_file(fh, os.urandom(step), self._reserve)  # random: a compressing file system keeps it
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
        self.manifest["failures"].append(dict(path=str(path), error=message))
        self._grow_reserve(3 * len(to_json(self.manifest["failures"][-1])) + 256)

    def note(self, message: str) -> None:
        """Record a remark about the run (the chosen default layer, a checkpoint summary, ...)."""
        self.manifest["notes"].append(message)

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
        self.manifest["timings"]["total_s"] = round(time.time() - self.started, 3)
        try:
            return self.save()
        finally:
            self.release_reserve()

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
            for run in _runs_of(read_manifest(self.path(MANIFEST))):
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


BACKENDS = ("local", "tensorboard", "wandb")


def check_backend(name: str) -> None:
    """Fail before any work when a vis backend's package is missing."""
    from visctl.errors import VisctlError

    if name not in BACKENDS:
        raise VisctlError(f"unknown --backend {name!r}", hint=f"use one of {', '.join(BACKENDS)}")
    needs = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(name)
    if needs:
        import importlib.util

        if importlib.util.find_spec(needs) is None:
            raise VisctlError(f"--backend {name} needs the {needs} package",
                              hint=f'pip install "visctl[{name}]" (or pip install {needs})')


def push_to_backend(name: str, out_dir: Path, images: list[tuple[str, Path]], command: str) -> Path:
    """Log the run's images through an mmengine vis backend (LocalVisBackend, TensorboardVisBackend or
    WandbVisBackend, offline unless wandb is configured); returns the backend's save directory."""
    import uuid

    import cv2
    from mmengine.visualization import Visualizer

    kind = {"local": "LocalVisBackend", "tensorboard": "TensorboardVisBackend", "wandb": "WandbVisBackend"}[name]
    backend: dict[str, Any] = dict(type=kind)
    if name == "wandb":
        backend["init_kwargs"] = dict(project="visctl", name=command, dir=str(out_dir))
        if not (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")):
            # never upload unless the user set wandb up; passed to wandb.init, not set in os.environ, so the
            # caller's process (a notebook's later wandb runs) is left as it was
            backend["init_kwargs"]["mode"] = "offline"
    # mmengine's Visualizer writes to <save_dir>/vis_data itself (peers doc §10): give it the run directory
    instance = f"visctl-{uuid.uuid4().hex}"
    vis = Visualizer.get_instance(instance, vis_backends=[backend], save_dir=str(out_dir))
    try:
        for step, (tag, path) in enumerate(images):
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is not None:
                vis.add_image(tag, cv2.cvtColor(img, cv2.COLOR_BGR2RGB), step=step)
    finally:
        vis.close()
        # mmengine keeps every named instance in a class-level registry: drop ours, the run is over
        getattr(Visualizer, "_instance_dict", {}).pop(instance, None)
    return Path(out_dir) / "vis_data"
