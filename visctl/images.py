"""Image inputs: finding them (files, directories, globs) and reading them as RGB uint8."""

from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from visctl.errors import InputError

if TYPE_CHECKING:
    import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def is_image_path(path: Path) -> bool:
    """Whether the path has an image suffix (case-insensitive)."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def gather_images(specs: list[str], note: Callable[[str], None] | None = None) -> list[Path]:
    """Expand image arguments into a sorted, de-duplicated list of files.

    Each spec may be a file, a directory (searched recursively for image suffixes) or a glob pattern.
    A spec that matches nothing raises :class:`InputError`; a named file is kept even if it later fails
    to decode, so the batch can report it. In a directory, the files a visctl run wrote there (listed in a
    manifest.json under it: an ``-o`` inside the input folder) are not inputs; ``note`` hears how many.
    """
    from visctl.output import drop_visctl_outputs

    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            hits = [p for p in drop_visctl_outputs(files)[0] if is_image_path(p)]
            dropped = sum(1 for p in files if is_image_path(p)) - len(hits)
            if dropped and note is not None:
                note(f"{spec}: {dropped} file(s) written by visctl (listed in a manifest.json there) are not inputs")
            if not hits:
                raise InputError(f"no images under directory {spec}" +
                                 (f" ({dropped} file(s) there are visctl outputs)" if dropped else ""),
                                 hint=f"visctl reads {' '.join(IMAGE_SUFFIXES)} files")
            found.extend(hits)
        elif path.is_file():
            found.append(path)
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
        lo, hi = float(img.min()), float(img.max())  # float images: stretch to 0-255
        img = ((img - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: a huge image is not held twice
