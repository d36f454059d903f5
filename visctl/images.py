"""Image inputs: finding them (files, directories, globs) and reading them as RGB uint8."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import TYPE_CHECKING

from visctl.errors import InputError

if TYPE_CHECKING:
    import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def is_image_path(path: Path) -> bool:
    """Whether the path has an image suffix (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def gather_images(specs: list[str]) -> list[Path]:
    """Expand image arguments into a sorted, de-duplicated list of files.

    Each spec may be a file, a directory (searched recursively for image suffixes) or a glob pattern.
    A spec that matches nothing raises :class:`InputError`; a named file is kept even if it later fails
    to decode, so the batch can report it.
    """
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            hits = sorted(p for p in path.rglob("*") if p.is_file() and is_image_path(p))
            if not hits:
                raise InputError(f"no images under directory {spec}",
                                 hint=f"visctl reads {' '.join(IMAGE_SUFFIXES)} files")
            found.extend(hits)
        elif path.is_file():
            found.append(path)
        elif path.exists():  # a FIFO, socket or device: reading it could block or never end
            raise InputError(f"{spec} is not a regular file (it is a {_kind(path)})",
                             hint="give image files, directories of them, or globs")
        elif any(ch in spec for ch in "*?["):
            hits = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not hits:
                raise InputError(f"the pattern {spec!r} matches no file",
                                 hint="quote the pattern so the shell does not expand it, and check the path")
            found.extend(hits)
        else:
            raise InputError(f"image not found: {spec}", hint="check the path; directories and globs work too")
    unique: dict[Path, None] = {}
    for p in found:
        unique.setdefault(p, None)
    return list(unique)


def read_image(path: Path | str) -> np.ndarray:
    """Read an image as RGB uint8 (H, W, 3).

    EXIF orientation is applied; grayscale is expanded to three channels; an alpha channel is dropped;
    16-bit images are scaled to 8 bits over their full range.

    Raises:
        InputError: the file is missing or cannot be decoded.
    """
    import cv2
    import numpy as np

    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", hint="check the path and its permissions") from exc
    # IMREAD_COLOR applies the EXIF orientation; ANYDEPTH keeps 16-bit samples for an exact rescale
    img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if data.size else None
    if img is None:
        raise InputError(f"cannot decode {path} as an image", hint="is the file complete and an image format?")
    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = _float_to_u8(img, path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: a huge image is not held twice


def _kind(path: Path) -> str:
    import stat

    mode = path.stat().st_mode
    return ("FIFO (named pipe)" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
            else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file")


def _float_to_u8(img: np.ndarray, path: Path) -> np.ndarray:
    """A float (or 32-bit) image stretched to 0-255 over its finite values.

    NaN and infinite pixels take no part in the range and become 0, with an :class:`InputWarning`; a constant
    image keeps its value (0-1 images times 255, 0-255 ones as they are) instead of turning black.
    """
    import warnings

    import numpy as np

    from visctl.errors import InputWarning

    img = img.astype(np.float32, copy=False)
    finite = np.isfinite(img)
    if not finite.any():
        raise InputError(f"{path} has no finite pixel (every value is NaN or infinite)",
                         hint="check how the image was written")
    bad = int(img.size - np.count_nonzero(finite))
    if bad:
        warnings.warn(f"{path}: {bad} NaN or infinite value(s) left out of the intensity range and drawn as 0",
                      InputWarning, stacklevel=3)
    lo, hi = float(img[finite].min()), float(img[finite].max())
    if hi > lo:
        out = (img - lo) / (hi - lo) * 255.0
    else:  # constant: keep the value where it reads as an intensity
        level = lo * 255.0 if 0.0 <= lo <= 1.0 else lo if 0.0 <= lo <= 255.0 else 128.0
        out = np.full(img.shape, level, np.float32)
    out[~finite] = 0.0
    return np.clip(out, 0, 255).round().astype(np.uint8)
