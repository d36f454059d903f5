"""manifest.json: its names, which files and folders are visctl's, what a folder's runs wrote, its lock."""

from __future__ import annotations

import json
import os
import platform
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

from visctl.errors import OutputError
from visctl.output.files import _kind, _lstat, _real, read_regular

MANIFEST = "manifest.json"
INDEX = "index.html"
LOCK = ".manifest.lock"  # flock'ed while a run merges its record into the folder's manifest.json
#: the field that marks a manifest.json as visctl's (a folder's manifest of another tool is never replaced)
GENERATOR = "visctl"


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


def output_problem(folder: Path, out: Any, on_disk: bool = True) -> str | None:
    """Why an output record of a manifest in ``folder`` names no file of that folder on disk, or None when it
    does: a record that is not an object, a path that is not a string, leaves the folder (``..``, an absolute
    path, a folder that is a link elsewhere), or a file that is not there (gone, a link, a folder)."""
    if not isinstance(out, dict):
        return f"a record that is not an object ({to_json(out, None)[:60]})"
    rel = out.get("path")
    if not isinstance(rel, str) or not rel.strip():
        return f"a path that is not a file name ({to_json(rel, None)[:60]})"
    pure = Path(rel)
    if pure.is_absolute() or pure.drive or ".." in pure.parts or "\0" in rel:
        return f"{rel!r} (outside the folder)"
    base = Path(folder).resolve()
    target = base / rel
    try:
        Path(_real(target)).relative_to(base)
    except (ValueError, OSError):
        return f"{rel!r} (outside the folder, through a link)"
    if not on_disk:
        return None
    st = _lstat(target)
    if st is None or not stat.S_ISREG(st.st_mode):
        return f"{rel!r} (no such file here)" if st is None else f"{rel!r} ({_kind(st)})"
    return None


def checked_runs(doc: Any, folder: Path, on_disk: bool = True) -> tuple[list[dict], list[str]]:
    """The run records of a visctl manifest in ``folder``, each with only the output records that name a
    regular file inside ``folder`` on disk, and what was dropped (runs that are not objects, outputs that are
    not lists, records that leave the folder or name no file): a merged manifest lists the files that are here."""
    problems: list[str] = []
    if not is_visctl_manifest(doc):
        return [], problems
    raw = doc["runs"] if isinstance(doc.get("runs"), list) else [dict(doc, id=doc.get("id", "earlier"))]
    runs = []
    for run in raw:
        if not isinstance(run, dict):
            problems.append(f"a run that is not an object ({to_json(run, None)[:60]})")
            continue
        outs = run.get("outputs")
        if outs is None:
            outs = []
        elif not isinstance(outs, list):
            problems.append(f"outputs that are not a list ({to_json(outs, None)[:60]})")
            outs = []
        kept = []
        for out in outs:
            why = output_problem(folder, out, on_disk)
            if why is None:
                kept.append(out)
            else:
                problems.append(why)
        runs.append(dict(run, outputs=kept))
    return runs, problems


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
    for run in checked_runs(doc, folder)[0]:  # only files of this folder: a record never reaches outside it
        for out in run["outputs"]:
            found.add((folder / out["path"]).resolve())
    return found if doc is not None else set()


def known_outputs(folder: Path) -> set[str]:
    """The outputs that the runs recorded in ``folder``'s manifest.json wrote (:func:`_real` paths)."""
    known = set()
    resolved = Path(folder).resolve()
    for run in checked_runs(read_manifest(Path(folder) / MANIFEST), resolved, on_disk=False)[0]:
        for out in run["outputs"]:
            known.add(_real(resolved / out["path"]))
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


#: the output folders of this process's runs (before their first manifest.json is written)
_RUNNING: set[str] = set()


def running_in(folder: Path) -> None:
    """Mark ``folder`` as a run's output folder: :func:`is_visctl_folder` before its manifest is written."""
    _RUNNING.add(os.path.abspath(folder))


def is_visctl_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a visctl run (a manifest.json that visctl wrote), or is the output folder of a
    run of this process (``-o`` inside the data: not one of its class folders)."""
    return os.path.abspath(folder) in _RUNNING or read_manifest(Path(folder) / MANIFEST) is not None


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
