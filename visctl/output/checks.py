"""The checks of a run's outputs before any work: folders, file names, formats."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from visctl.choices import ImageFormat
from visctl.errors import OutputError
from visctl.output.files import _kind, _lstat, _path_hint, remove_empty

#: the formats of --format (the figures of cam), fastest to encode last but one: png is lossless and the default
FORMATS = tuple(f.value for f in ImageFormat)


def check_format(image_format: Any) -> str:
    """``--format``'s value (an Enum member or its string) as the figures' suffix, or an error with a hint."""
    from visctl.errors import InputError

    value = str(getattr(image_format, "value", image_format))
    if value not in FORMATS:
        raise InputError(f"unknown image format {image_format!r}", hint="use " + ", ".join(FORMATS))
    return value


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
