"""What the library returns: frozen results that show themselves in Jupyter and save what the CLI writes.

Every public function (``visctl.cam``, ``visctl.featmap``, ...) returns a :class:`Result`: a frozen
dataclass of arrays and numbers, whose :meth:`Result.figures` are the pictures the CLI draws for it (RGB
``uint8`` arrays with the file name and caption the CLI gives them). ``result.save(folder)`` writes exactly
what the command writes -- the images, the extra files, ``manifest.json`` and the ``index.html`` gallery --
through the same :class:`visctl.output.OutputWriter`, so a notebook and a terminal give the same folder.
In a notebook, the result displays as its figures (``_repr_png_`` / ``_repr_html_``).

Every result is a sequence of its items (``len(result)``, ``result[i]``, ``for item in result``, ``result.items``):
one per input image for the image commands, each with ``item.path`` the input it came from (a file's path, or the
name given to pixels passed in). ``visctl.tsne``'s items are its layers (``item.path``: the layer's path in the
model, ``backbone.layer4``), ``visctl.lr``'s its parameter groups (``item.path``: the group's name, the parameter
path its members share), ``visctl.pipeline``'s and ``visctl.browse``'s the dataset samples (``item.path``: the
sample's file). A result is true even when it has no items. Results are deep-frozen: their arrays are read-only,
their dicts mapping proxies and their lists tuples, so nothing changes a result after it is made.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import numpy as np

    from visctl.output.writer import OutputWriter


def freeze(value: Any) -> Any:
    """``value`` made read-only all the way down: a numpy array as a read-only view (its owner's array stays
    writeable), a dict as a :class:`types.MappingProxyType` of frozen values, a list or tuple as a tuple of frozen
    values, a set as a frozenset; a frozen dataclass has its fields frozen in place. Anything else is returned as
    it is."""
    np = sys.modules.get("numpy")  # an array in a result means numpy is loaded already
    if np is not None and isinstance(value, np.ndarray):
        if not value.flags.writeable:
            return value
        view = value.view()
        view.setflags(write=False)
        return view
    if isinstance(value, types.MappingProxyType):
        return value
    if isinstance(value, dict):
        return types.MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list) or type(value) is tuple:
        return tuple(freeze(v) for v in value)
    if isinstance(value, set):
        return frozenset(value)
    params = getattr(type(value), "__dataclass_params__", None)
    if params is not None and params.frozen and not isinstance(value, type):
        freeze_fields(value)
    return value


def thawed(value: Any) -> Any:
    """A frozen record (:func:`freeze`) as the plain dicts and lists the CLI's manifest is made of (arrays are
    left as they are)."""
    if isinstance(value, (dict, types.MappingProxyType)):
        return {k: thawed(v) for k, v in value.items()}
    if type(value) is tuple or isinstance(value, list):
        return [thawed(v) for v in value]
    return value


def frozen_array(values: Any, dtype: Any) -> Any:
    """``values`` as a new read-only numpy array of ``dtype`` (a result's boxes, scores, labels)."""
    import numpy as np

    return freeze(np.array(values, dtype=dtype))


def freeze_fields(obj: Any) -> None:
    """Freeze every field of a frozen dataclass instance (:func:`freeze`), in place."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        frozen = freeze(value)
        if frozen is not value:
            object.__setattr__(obj, f.name, frozen)


@dataclass(frozen=True)
class Figure:
    """One picture of a result: an RGB ``uint8`` array, the file name the CLI writes it under, its caption."""

    name: str
    image: np.ndarray
    caption: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # extra fields of its manifest entry

    def png(self) -> bytes:
        """The picture encoded as PNG."""
        import cv2

        ok, buf = cv2.imencode(".png", self.image[..., ::-1] if self.image.ndim == 3 else self.image)
        if not ok:  # pragma: no cover - OpenCV encodes any uint8 array
            raise ValueError(f"cannot encode {self.name} as PNG")
        return buf.tobytes()

    def _repr_png_(self) -> bytes:
        return self.png()


@dataclass(frozen=True)
class Drawing:
    """A figure not drawn yet (the CLI's): its name, caption and manifest fields now, its pixels from
    ``draw()`` in the writer's threads, so the model's thread never composes or encodes a figure."""

    name: str
    draw: Callable[[], np.ndarray] = field(repr=False)
    caption: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def figure(self) -> Figure:
        """Drawn now (the library's)."""
        return Figure(self.name, self.draw(), self.caption, self.info)


def save_picture(writer: OutputWriter, picture: Figure | Drawing, target: Path | None = None) -> None:
    """Write a figure, or a drawing drawn in the writer's threads (with its background pool on)."""
    image = picture.image if isinstance(picture, Figure) else picture.draw
    writer.save_image(picture.name, image, caption=picture.caption, target=target, **picture.info)


@dataclass(frozen=True)
class Result:
    """The base of every library result: its run's parameters, inputs, skipped inputs and remarks.

    Subclasses add their data (maps, boxes, coordinates, ...) and say how they are drawn (:meth:`figures`)
    and written (:meth:`write`).
    """

    command: ClassVar[str] = "library"

    params: dict[str, Any] = field(default_factory=dict, repr=False)
    inputs: tuple[dict[str, Any], ...] = field(default=(), repr=False)  # the manifest's ``inputs`` entries
    failures: tuple[tuple[str, str], ...] = ()  # (input, why) of every skipped input
    notes: tuple[str, ...] = field(default=(), repr=False)
    timings: dict[str, float] = field(default_factory=dict, repr=False)  # total_s: the call's, as the manifest's

    def __post_init__(self) -> None:
        freeze_fields(self)  # deep: arrays read-only, dicts mapping proxies, lists tuples, items frozen

    # -- a sequence of its items --
    @property
    def items(self) -> tuple[Any, ...]:
        """This result's items, in order (each with ``.path``, the input it came from)."""
        return ()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: Any) -> Any:
        return self.items[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __bool__(self) -> bool:  # a result with no items (every input skipped) is still a result
        return True

    def figures(self) -> list[Figure]:
        """The pictures of this result, in the order the CLI writes them."""
        return []

    def write(self, writer: OutputWriter) -> None:
        """Write this result's outputs into ``writer`` (the figures; subclasses add their other files)."""
        for fig in self.figures():
            writer.save_image(fig.name, fig.image, caption=fig.caption, **fig.info)

    @property
    def ok(self) -> bool:
        """Whether every input gave a result."""
        return not self.failures

    def save(self, out_dir: str | Path) -> Path:
        """Write what the CLI writes for this result into ``out_dir``; returns the manifest's path.

        The folder gets the figures and files, ``manifest.json`` (status ``partial`` when inputs were
        skipped, listed under ``failures``) and the ``index.html`` gallery; earlier runs' outputs in a shared
        folder stay listed, as with the CLI.
        """
        from visctl.errors import ArgumentError
        from visctl.output.checks import prepare_dir
        from visctl.output.writer import OutputWriter

        if not isinstance(out_dir, (str, Path)) or not str(out_dir).strip():
            raise ArgumentError(f"out_dir={out_dir!r} is not a folder name", hint="result.save('visctl-out/run1')")
        folder = Path(out_dir)
        prepare_dir(folder, "out_dir")
        writer = OutputWriter(folder, self.command, thawed(self.params))
        writer.manifest["timings"].update(self.timings)  # the call's time, not the save's
        writer.start()
        for entry in self.inputs:
            entry = thawed(entry)
            writer.add_input(entry.pop("path"), **entry)
        for note in self.notes:
            writer.note(note)
        try:
            self.write(writer)
        except BaseException:
            writer.finish("error")
            raise
        for path, error in self.failures:
            writer.fail(path, error)
        return writer.finish("partial" if self.failures else "ok")

    # -- Jupyter --
    def _repr_png_(self) -> bytes | None:
        figs = self.figures()
        return figs[0].png() if figs else None

    def _repr_html_(self) -> str:
        figs = self.figures()
        parts = [f"<div><b>visctl {html.escape(self.command)}</b>: {len(figs)} figure(s)"
                 + (f", {len(self.failures)} input(s) skipped" if self.failures else "") + "</div>"]
        for fig in figs[:24]:
            data = base64.b64encode(fig.png()).decode("ascii")
            parts.append(f'<figure style="display:inline-block;margin:4px"><img src="data:image/png;base64,{data}"'
                         f' alt="{html.escape(fig.caption, quote=True)}" style="max-width:520px">'
                         f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
        if len(figs) > 24:
            parts.append(f"<div>... and {len(figs) - 24} more: result.save(folder) writes them all</div>")
        for path, error in self.failures:
            parts.append(f"<div style='color:#a00'>skipped {html.escape(path)}: {html.escape(error)}</div>")
        return "\n".join(parts)
