"""Image inputs: finding them (files, directories, globs) and reading them as RGB uint8."""

from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from visctl.errors import InputError, pixels

if TYPE_CHECKING:
    import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

#: the most pixels (width x height) an input image may have: PIL's own limit (``Image.MAX_IMAGE_PIXELS``),
#: 89.5 MP, 256 MiB as 8-bit RGB. A 74-byte PNG can claim 100000 x 100000: its header is read first.
DEFAULT_MAX_PIXELS = 89_478_485
#: ``slice``'s default, made for huge images: OpenCV's decoding limit (``CV_IO_MAX_IMAGE_PIXELS``), 2**30
#: (a 32768 x 32768 image, 3 GiB as RGB); larger budgets decode through PIL
SLICE_MAX_PIXELS = 1 << 30


class ImageTooLarge(InputError):
    """An image whose header claims more pixels than the budget (``--max-pixels``)."""


def image_size(path: Path | str) -> tuple[int, int] | None:
    """An image's (width, height) from its header, without decoding it; None when PIL cannot read the header.

    PIL reads PNG, JPEG, BMP, TIFF, WebP, PNM, GIF, ... headers lazily; its own bomb check is off here
    because the budget is visctl's (:func:`check_pixels`).
    """
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except Exception:  # not an image PIL knows, or a broken header: the decoder will say so
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def check_pixels(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int] | None:
    """Refuse an image whose header claims more than ``max_pixels`` pixels; returns its (width, height).

    Raises:
        ImageTooLarge: over the budget (a decompression bomb, or a genuinely huge image).
    """
    size = image_size(path)
    if size is not None and max_pixels is not None and size[0] * size[1] > max_pixels:
        w, h = size
        raise ImageTooLarge(f"{path} is {w} x {h} pixels ({pixels(w * h)}), over the budget of "
                            f"{pixels(max_pixels, 1)} (max_pixels=)",
                            hint=f"raise max_pixels= if the image is genuine (decoding takes {3 * w * h / 2**30:,.1f} "
                            "GiB), or downscale it first")
    return size


def _opencv_pixel_limit() -> int:
    """The most pixels OpenCV decodes (``CV_IO_MAX_IMAGE_PIXELS``, default 2**30)."""
    import os

    try:
        return int(os.environ.get("CV_IO_MAX_IMAGE_PIXELS", 1 << 30))
    except ValueError:
        return 1 << 30


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
    from visctl.output.manifest import drop_visctl_outputs

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


class ArrayImage(PurePosixPath):
    """An image a library caller holds in memory (a numpy array or a PIL image), standing where a path stands.

    It is a path (``image0.png``: its name, stem and suffix name its outputs as a file's would) that carries
    its RGB ``uint8`` pixels in :attr:`array`; :func:`read_image` returns them instead of reading a file.
    """

    array: np.ndarray

    @classmethod
    def of(cls, pixels: Any, name: str) -> ArrayImage:
        """``pixels`` (H x W gray, H x W x 3 RGB, H x W x 4 RGBA; uint8, uint16 or float; or a PIL image)."""
        import numpy as np

        if hasattr(pixels, "convert") and hasattr(pixels, "mode"):  # a PIL image
            pixels = np.asarray(pixels.convert("RGB"))
        arr = np.asarray(pixels)
        if arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[..., :3]
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or min(arr.shape[:2]) < 1:
            raise InputError(f"{name}: an image array must be H x W, H x W x 3 (RGB) or H x W x 4, got shape "
                             f"{arr.shape}", hint="pass an RGB image (numpy arrays from cv2 are BGR: arr[..., ::-1])")
        img = cls(name)
        img.array = np.ascontiguousarray(_to_rgb8(arr, bgr=False, path=Path(name)))
        img.array.setflags(write=False)
        return img


def as_images(images: Any, note: Callable[[str], None] | None = None) -> list[Any]:
    """What a library caller passes as images -- a path (file, folder or glob), a numpy image, a PIL image,
    or a list of them -- as the list of paths (:class:`ArrayImage` for pixels) the batch loops read."""
    import numpy as np

    items = list(images) if isinstance(images, (list, tuple)) else [images]
    found: list[Any] = []  # Path and ArrayImage
    arrays = 0
    for item in items:
        if isinstance(item, (str, Path)) and not isinstance(item, ArrayImage):
            found += gather_images([str(item)], note=note)
        elif isinstance(item, ArrayImage):
            found.append(item)
        elif isinstance(item, np.ndarray) or (hasattr(item, "convert") and hasattr(item, "mode")):
            found.append(ArrayImage.of(item, f"image{arrays}.png"))
            arrays += 1
        else:
            raise InputError(f"cannot use a {type(item).__name__} as an image",
                             hint="pass a path, a folder, a numpy array (H x W x 3 RGB), a PIL image or a list")
    if not found:
        raise InputError("no images given", hint="pass a path, a folder, a numpy array or a PIL image")
    seen: set[Path] = set()  # a file named twice (a folder and a file in it) is one input, as gather_images does
    unique = []
    for p in found:
        if not isinstance(p, ArrayImage):
            if p in seen:
                continue
            seen.add(p)
        unique.append(p)
    return unique


def read_image(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as RGB uint8 (H, W, 3).

    EXIF orientation is applied; grayscale is expanded to three channels; an alpha channel is dropped;
    16-bit images are scaled to 8 bits over their full range. The header's size is checked against
    ``max_pixels`` before anything is decoded (None: no budget).

    Raises:
        ImageTooLarge: the image has more than ``max_pixels`` pixels.
        InputError: the file is missing or cannot be decoded.
    """
    import cv2
    import numpy as np

    if isinstance(path, ArrayImage):
        h, w = path.array.shape[:2]
        if max_pixels is not None and h * w > max_pixels:
            raise ImageTooLarge(f"{path} is {w} x {h} pixels ({pixels(w * h)}), over the budget of "
                                f"{pixels(max_pixels, 1)} (max_pixels=)", hint="raise max_pixels=")
        return path.array.copy()
    path = Path(path)
    size = check_pixels(path, max_pixels)
    if size is not None and size[0] * size[1] > _opencv_pixel_limit():
        return _read_with_pil(path)  # within the budget, beyond what OpenCV decodes
    if size is not None and path.suffix.lower() in (".tif", ".tiff") and _pil_mode(path) in ("F", "I"):
        return _read_with_pil(path)  # one-channel 32-bit TIFFs: OpenCV's colour decoding refuses them
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", hint="check the path and its permissions") from exc
    # IMREAD_COLOR applies the EXIF orientation; ANYDEPTH keeps 16-bit samples for an exact rescale
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH) if data.size else None
    except cv2.error as exc:  # a header PIL could not read, beyond OpenCV's limits
        raise InputError(f"cannot decode {path}: OpenCV refuses it ({' '.join(str(exc).split())[-120:]})",
                         hint="is the file complete, and an image of a sane size?") from None
    if img is None:  # a file OpenCV refuses and PIL may read (its header was read)
        if size is not None:
            return _read_with_pil(path)
        raise InputError(f"cannot decode {path} as an image", hint="is the file complete and an image format?")
    return _to_rgb8(img, bgr=True, path=path)


def read_mask(path: Path | str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A mask file as a 2-D array: a ``.npy`` (no pickles) or an image, read as one channel: an image with an
    alpha channel is its alpha (inside where alpha is nonzero), a colour image the largest of its colour
    samples. An image's EXIF orientation is applied as :func:`read_image` applies it. The pixel budget
    ``max_pixels`` applies as to :func:`read_image`: an image's header, a ``.npy``'s shape, are checked before
    anything is decoded or loaded.

    Raises:
        ImageTooLarge: over the budget.
        InputError: missing, unreadable, or not a 2-D array.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise InputError(f"mask file not found: {path}", hint="give a .npy or an image file")
    if path.suffix.lower() == ".npy":
        shape = _npy_shape(path)
        if shape is not None and len(shape) >= 2 and max_pixels is not None and shape[0] * shape[1] > max_pixels:
            h, w = shape[0], shape[1]
            raise ImageTooLarge(f"{path} is {w} x {h} pixels ({pixels(w * h)}), over the budget of "
                                f"{pixels(max_pixels, 1)} (max_pixels=)",
                                hint="raise max_pixels= if the mask is genuine, or give a smaller one")
        arr = read_mask_array(path, "mask", max_pixels)  # no pickles; numbers only, 2-D, finite
    else:
        arr = _decode_unchanged(path, max_pixels)
        if arr.ndim == 3:  # nonzero = inside: with an alpha channel (gray + alpha, RGBA), where alpha is nonzero;
            # else where any colour channel is nonzero
            arr = arr[..., -1] if arr.shape[2] in (2, 4) else arr[..., :3].max(axis=2) if arr.shape[2] >= 3 \
                else arr[..., 0]
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise InputError(f"the mask {path} has shape {arr.shape}, not a 2-D (H x W) array",
                         hint="give one channel: a 2-D .npy or a grayscale image")
    return arr


def _decode_unchanged(path: Path, max_pixels: int | None) -> np.ndarray:
    """An image file's samples as stored (any depth, any channels: a mask's values are not rescaled), after
    the budget check on its header; OpenCV first, then PIL for what OpenCV refuses.

    The EXIF orientation is applied as :func:`read_image` applies it (OpenCV's decoding applies it unless asked
    for the samples unchanged; PIL's path: ``ImageOps.exif_transpose``), so a mask lies on its image as both
    are displayed.
    """
    import cv2
    import numpy as np

    size = check_pixels(path, max_pixels)
    img = None
    if size is None or size[0] * size[1] <= _opencv_pixel_limit():
        try:
            data = np.fromfile(str(path), dtype=np.uint8)
            img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
            if img is not None and img.ndim == 2 and _pil_mode(path) in ("LA", "La", "PA"):
                img = None  # OpenCV drops a gray image's alpha (TIFF): PIL keeps it
            elif img is not None:
                img = _oriented(path, data, np.asarray(img))
        except (OSError, cv2.error):
            img = None
    if img is not None:
        return np.asarray(img)
    if size is not None:
        from PIL import Image, ImageOps

        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # the budget was checked above
        try:
            with Image.open(path) as im:
                return np.asarray(ImageOps.exif_transpose(im))  # as _read_with_pil reads an image
        except (OSError, ValueError, SyntaxError):
            pass
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    raise InputError(f"cannot read the mask {path} as an image", hint="give a .npy or an image file")


def _oriented(path: Path, data: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """``raw`` (OpenCV's ``IMREAD_UNCHANGED`` decode, which skips the EXIF orientation for most formats) oriented
    as :func:`read_image`'s ``IMREAD_COLOR`` orients the image: without an alpha channel, OpenCV's own oriented
    decode of the same samples (``IMREAD_ANYDEPTH | IMREAD_ANYCOLOR``, no rescaling); with one, the EXIF tag
    applied to ``raw`` unless OpenCV's decoder already applied it (its TIFF reader does)."""
    import cv2
    import numpy as np

    oriented = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if oriented is None:
        return raw
    if raw.ndim == 2 or raw.shape[2] in (1, 3):  # no alpha: OpenCV's orientation, exactly as for images
        return np.asarray(oriented)
    colour = raw[..., :3] if raw.shape[2] >= 3 else raw[..., 0]
    turned = _exif_transpose(raw, _exif_orientation(path))
    if turned is raw:
        return raw
    turned_colour = turned[..., :3] if raw.shape[2] >= 3 else turned[..., 0]
    if oriented.shape[:2] != raw.shape[:2]:
        return turned
    if oriented.shape == colour.shape and np.array_equal(colour, oriented) and (
            not np.array_equal(turned_colour, oriented) or path.suffix.lower() in (".tif", ".tiff")):
        return raw  # OpenCV's decoder oriented it already (its TIFF reader does: a colour-less mask cannot tell)
    return turned


def _exif_orientation(path: Path) -> int:
    """The EXIF orientation tag (1-8) of an image file, 1 when it has none or it cannot be read."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the header only
    try:
        with Image.open(path) as im:
            value = int(im.getexif().get(0x0112, 1))
            return value if 1 <= value <= 8 else 1
    except Exception:  # noqa: BLE001 - no readable EXIF: no orientation
        return 1
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _exif_transpose(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``arr`` (H, W[, C]) displayed as the EXIF orientation says (PIL's ``ImageOps.exif_transpose``)."""
    import numpy as np

    if orientation == 2:
        return np.ascontiguousarray(arr[:, ::-1])
    if orientation == 3:
        return np.ascontiguousarray(arr[::-1, ::-1])
    if orientation == 4:
        return np.ascontiguousarray(arr[::-1])
    if orientation == 5:
        return np.ascontiguousarray(arr.swapaxes(0, 1))
    if orientation == 6:
        return np.ascontiguousarray(np.rot90(arr, -1))
    if orientation == 7:
        return np.ascontiguousarray(arr[::-1, ::-1].swapaxes(0, 1))
    if orientation == 8:
        return np.ascontiguousarray(np.rot90(arr, 1))
    return arr


def _npy_shape(path: Path) -> tuple[int, ...] | None:
    """A ``.npy`` file's shape from its header, without loading it; None when the header cannot be read."""
    import numpy as np

    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)(f)
        return tuple(int(v) for v in header[0])
    except (OSError, ValueError):
        return None


def _to_rgb8(img: np.ndarray, bgr: bool, path: Path) -> np.ndarray:
    import cv2
    import numpy as np

    if img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = _float_to_u8(img, path)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if bgr:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # in place: a huge image is not held twice
    return img


def _pil_mode(path: Path) -> str | None:
    """The PIL mode an image's header gives (``F``: 32-bit float, ``I``: 32-bit integer), None if unreadable."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the header only; the budget is visctl's
    try:
        with Image.open(path) as im:
            return str(im.mode)
    except Exception:  # noqa: BLE001 - OpenCV will say what is wrong with the file
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _read_with_pil(path: Path) -> np.ndarray:
    """Decode through PIL an image larger than OpenCV's limit (the budget was raised for it), or one that
    OpenCV's colour decoding refuses (one-channel float or 32-bit integer TIFFs)."""
    import numpy as np
    from PIL import Image, ImageOps

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the budget was checked by the caller
    try:
        with Image.open(path) as opened:
            im = ImageOps.exif_transpose(opened)
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                arr = np.asarray(im)
                return _to_rgb8(arr.astype(np.uint16) if im.mode.startswith("I;16") else arr, bgr=False, path=path)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot decode {path} as an image ({exc})",
                         hint="is the file complete and an image format?") from None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _kind(path: Path) -> str:
    import stat

    mode = path.stat().st_mode
    return ("FIFO (named pipe)" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode)
            else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file")


def _float_to_u8(img: np.ndarray, path: Path) -> np.ndarray:
    """A float (or 32-bit integer) image as 8 bits, by the range of its finite values: within 0-1, times 255
    (a 0-1 image); else within 0-255, as it is (a 0-255 image); else stretched from its minimum to its maximum.

    So a 0-1 and a 0-255 float image of the same picture give that picture's uint8 pixels (rounded). NaN and
    infinite pixels take no part in the range and become 0, with an :class:`InputWarning`; a constant image
    outside 0-255 is mid-grey.
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
    values = img[finite] if bad else img
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= 1.0:  # a 0-1 image
        out = img * np.float32(255.0)
    elif lo >= 0.0 and hi <= 255.0:  # a 0-255 image
        out = img.copy()
    elif hi > lo:  # any other range: stretched over its finite values
        out = ((img - lo) / (hi - lo) * 255.0).astype(np.float32, copy=False)
    else:  # constant, outside 0-255: no intensity to keep
        out = np.full(img.shape, 128.0, np.float32)
    out[~finite] = 0.0
    return np.clip(out, 0, 255).round().astype(np.uint8)


def read_mask_array(path: Path | str, what: str = "mask", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A 2-D array of numbers or booleans from a ``.npy`` file, read without unpickling (data never runs code).

    Raises:
        InputError: the file holds Python objects, strings or records, is damaged, is not 2-D, holds NaN or
            infinity, or has more than ``max_pixels`` values (its header is read before the data).
    """
    import numpy as np

    hint = f"save the {what} as a 2-D array of numbers or booleans: np.save(path, mask.astype(np.uint8))"
    try:  # memory-mapped: the header's shape and dtype are checked before the data is read
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        if "object" in str(exc).lower() or "pickle" in str(exc).lower():
            raise InputError(f"{what} {path} holds Python objects (an object-dtype array), which visctl does not "
                             "unpickle", hint=hint) from None
        raise InputError(f"cannot read {what} {path}: not a valid .npy file ({exc})", hint=hint) from None
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc or 'it ends early'}", hint=hint) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive under a .npy name
        raise InputError(f"{what} {path} is an .npz archive, not one array", hint=hint)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{what} {path} holds {arr.dtype} values, not numbers", hint=hint)
    if arr.ndim != 2:
        raise InputError(f"{what} {path} is {arr.ndim}-D {tuple(arr.shape)}, not a 2-D mask", hint=hint)
    if max_pixels is not None and arr.size > max_pixels:
        raise InputError(f"{what} {path} has {arr.size} values, over the pixel budget of {max_pixels}",
                         hint="use a mask of the image's size (or raise max_pixels=)")
    arr = np.array(arr)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError(f"{what} {path} holds NaN or infinite values", hint=hint)
    return arr
