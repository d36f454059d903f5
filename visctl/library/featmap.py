"""``visctl.featmap``: feature maps of any layers, as float32 arrays at the original size, and their figures.

The one code path of ``visctl featmap``: :func:`plan` loads the model(s) and resolves the layers into a
:class:`FeatmapRun`, whose :meth:`FeatmapRun.items` yields one :class:`FeatmapImage` per image (after a first pass
that shares the colour scales), written by :class:`FeatmapWriter` as the CLI names them. :func:`featmap` collects
the images into a frozen :class:`FeatmapResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.choices import Normalize, Reduction
from visctl.library._run import IO_THREADS, Run, Since, mark
from visctl.options import FeatmapOptions
from visctl.results import Figure, Result
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    import numpy as np

    from visctl.library._common import ModelInputs
    from visctl.output.writer import OutputWriter


@dataclass(frozen=True)
class FeatMap:
    """One reduced map: ``kind`` A (the model), B (the compared model) or the difference; its channel name
    (``mean``, ``channel 12``, ...); the map at the original image size (NaN where the pipeline cropped);
    its colour scale; whether it is numerically flat; the ``--save-raw`` file name."""

    kind: str
    channel: str
    array: np.ndarray = field(repr=False)
    scale: str
    flat: bool
    raw_name: str


@dataclass(frozen=True)
class FeatmapLayer:
    """One layer (output) of one image: its maps and the figure the CLI writes for it."""

    layer: str
    maps: tuple[FeatMap, ...]
    figure: Figure = field(repr=False)
    side: int = field(default=0, repr=False)  # the panel size, for the manifest's panel_size

    def map(self, kind: str = "A") -> np.ndarray:
        """The first map of ``kind`` (``A``, ``B``, ``|A-B|`` or ``A-B``)."""
        return next(m.array for m in self.maps if m.kind == kind)


@dataclass(frozen=True)
class FeatmapImage:
    """The feature maps of one image, layer by layer."""

    input: str
    layers: tuple[FeatmapLayer, ...]
    source: Any = field(default=None, repr=False, compare=False)  # the input as read: a Path, or an ArrayImage

    @property
    def path(self) -> str:
        """The input it came from, as the manifest names it: a file's path, or the name given to pixels."""
        return self.input

    def __getitem__(self, layer: str) -> FeatmapLayer:
        return next(x for x in self.layers if x.layer == layer)


@dataclass(frozen=True)
class FeatmapResult(Result):
    """What :func:`visctl.featmap` returns: per image, per layer, the maps (float32, original size) and figures."""

    command: ClassVar[str] = "featmap"

    images: tuple[FeatmapImage, ...] = ()
    layers: tuple[str, ...] = ()
    save_raw: bool = field(default=False, repr=False)
    flat_maps: tuple[str, ...] = field(default=(), repr=False)

    @property
    def items(self) -> tuple[FeatmapImage, ...]:
        """The images (:attr:`images`), as the result's sequence."""
        return self.images

    def figures(self) -> list[Figure]:
        return [layer.figure for img in self.images for layer in img.layers]

    def write(self, writer: OutputWriter) -> None:
        out = FeatmapWriter(writer, save_raw=self.save_raw, add_inputs=False)  # save() lists self.inputs
        for img in self.images:
            out.add(img)
        out.close(self.flat_maps)


class FeatmapWriter:
    """Writes featmap images as ``visctl featmap`` does: the npy maps (``save_raw``), one figure per layer
    (or every layer stacked in ``out_file``), the input once its figures are written."""

    def __init__(self, writer: OutputWriter, *, save_raw: bool = False, out_file: Path | None = None,
                 add_inputs: bool = True) -> None:
        self.writer = writer
        self.add_inputs = add_inputs
        self.save_raw = save_raw
        self.out_file = out_file
        self.sides: set[int] = set()

    def add(self, item: FeatmapImage) -> None:
        from visctl import render

        w = self.writer
        stack = self.out_file is not None and len(item.layers) > 1
        for layer in item.layers:
            self.sides.add(layer.side)
            w.manifest["params"]["panel_size"] = render.sizes_param(self.sides)
            if self.save_raw:
                for m in layer.maps:
                    w.save_array(m.raw_name, m.array, caption=f"{layer.layer} {m.channel}", input=item.input)
            if stack:
                continue
            w.save_image(layer.figure.name, layer.figure.image, caption=layer.figure.caption, target=self.out_file,
                         **layer.figure.info)
        if stack:
            assert self.out_file is not None
            labels = [layer.layer for layer in item.layers]
            params = w.manifest["params"]
            w.save_image(self.out_file.name, render.grid([x.figure.image for x in item.layers], cols=1),
                         target=self.out_file, input=item.input, layer=labels,
                         caption=f"{Path(item.input).name}: {', '.join(labels)} "
                         f"({params['channel_reduction']}, {params['normalize']})")
        if self.add_inputs:
            w.add_input(item.source if item.source is not None else item.input)

    def close(self, flat_maps: Sequence[str]) -> None:
        if flat_maps:
            self.writer.manifest["flat_maps"] = list(flat_maps)


def flat_warning(flat_maps: Sequence[str]) -> str:
    """One line for every flat map: how many, and the first one with why it is flat and what to try
    (each entry of ``flat_maps`` is ``"<image>: <layer> <map>: <why>; <hint>"``, see :func:`visctl.featmaps.why_flat`)."""
    return f"{len(flat_maps)} map(s) are numerically constant and drawn without colour, e.g. {flat_maps[0]}"



def check_options(settings: FeatmapOptions) -> str:
    """Refuse options that do not fit together, before any work; returns the colormap to use."""
    from visctl import featmaps, render
    from visctl.errors import VisctlError

    o = settings
    colormap = render.check_colormap(o.colormap or ("coolwarm" if o.signed else "jet"))
    if o.signed and o.compare is None:
        raise VisctlError("signed=True needs compare=", hint="give the second model as compare=CONFIG2")
    if o.compare is not None and o.channel_reduction is Reduction.none:
        raise VisctlError("compare= needs a channel reduction, not channel_reduction=none",
                          hint="use channel_reduction=squeeze_mean, select_max or pixel_wise_max")
    if o.channel_reduction is Reduction.none:
        featmaps.arrangement(o.topk if o.topk > 0 else 1, *(o.arrangement or (None, None)))  # fail before the work
    return colormap


def _registry_model(mi: ModelInputs) -> bool:
    """Whether the model comes from a config whose ``model.type`` is a registry name (what ``repo``'s
    ``default_scope`` resolves); not an import path (``pkg.module:fn``), a class, a torchvision name or a module."""
    model_cfg = mi.cfg.get("model") if hasattr(mi.cfg, "get") else None
    mtype = model_cfg.get("type") if model_cfg is not None and hasattr(model_cfg, "get") else None
    return isinstance(mtype, str) and ":" not in mtype and "." not in mtype


def _channels_drawn(mi: ModelInputs, names: Sequence[str], topk: int) -> dict[str, int]:
    """``channel_reduction=none, topk=K``: how many channels each layer (with one (N, C, H, W) output) gives
    to draw, min(K, C)."""
    from visctl.layers import probe

    pr = probe(mi.model, mi.example, logits=False)
    drawn = {}
    for n in names:
        shape = pr.shape_of(n)
        if isinstance(shape, tuple) and len(shape) == 4 and all(isinstance(v, int) for v in shape):
            drawn[n] = min(topk, int(shape[1]))
    return drawn


def _topk_param(topk: int, drawn: dict[str, int]) -> Any:
    """The manifest's ``topk``: the channels drawn (one number, or one per layer where they differ)."""
    if not drawn:
        return topk
    values = set(drawn.values())
    return values.pop() if len(values) == 1 else dict(drawn)


def figure_options(settings: FeatmapOptions) -> str:
    """The options that size a featmap figure, as an error names them (``field=value``: the CLI says flags)."""
    o = settings
    said = []
    if o.resize_shape:
        said.append(f"resize_shape={o.resize_shape}")
    if o.panel_size:
        said.append(f"panel_size={o.panel_size}")
    if o.channel_reduction is Reduction.none:
        said.append(f"topk={o.topk} with channel_reduction=none")
        if o.arrangement:
            said.append(f"arrangement={o.arrangement}")
    if o.compare is not None:
        said.append("compare=")
    return ", ".join(said) or "the image's size"


def check_figure(h: int, w: int, panels: int, settings: FeatmapOptions, max_pixels: int | None, name: str,
                 area_only: bool = False) -> None:
    """Refuse a featmap figure of ``panels`` panels for an (h, w) image over the pixel budget, before any of
    its panels is drawn (captions left out: a lower bound); ``area_only``: the image's orientation is unknown
    (a header's size), so only the panels' area counts."""
    from visctl import featmaps, render

    resize_shape, panel_size = settings.resize_shape, settings.panel_size
    bh, bw = (int(resize_shape[0]), int(resize_shape[1])) if resize_shape else (int(h), int(w))
    side = render.panel_size(bh, bw, panel_size) if panel_size or not resize_shape else None
    ph, pw = render.fit_size(bh, bw, side) if side else (bh, bw)
    if settings.channel_reduction is Reduction.none and settings.compare is None:
        cols = featmaps.arrangement(panels, *(settings.arrangement or (None, None)))[1]
    else:
        cols = panels
    if area_only and not resize_shape:
        fh, fw = render.grid_size(panels, ph, pw, cols, gap=0)
    else:
        fh, fw = render.grid_size(panels, ph, pw, cols)
    render.check_figure(fw, fh, max_pixels, figure_options(settings), f"the figure of {name} ({panels} panels)",
                        hint="give a smaller resize_shape= or panel_size=, a smaller topk= or arrangement=")


def _warn_unused(session: Session, settings: FeatmapOptions) -> None:
    """Warn about options this run's other options make pointless."""
    o = settings
    if o.arrangement and o.channel_reduction is not Reduction.none:
        session.warn("arrangement= applies to channel_reduction='none' only")
    if o.topk != 4 and o.channel_reduction is not Reduction.none:
        session.warn(f"topk={o.topk} has no effect: it applies to channel_reduction='none' only "
                     f"(this run's is {o.channel_reduction.value})")
    if o.alpha != 0.5 and not o.overlaid:
        session.warn(f"alpha={o.alpha:g} has no effect: it blends the map over the image, and overlaid=False "
                     "draws the map alone")


def _layer_names(session: Session, mi: ModelInputs, settings: FeatmapOptions, recorded: Sequence[str] | None,
                 ) -> list[str]:
    """The layers to draw: ``target_layers``, else the recorded ones (mmrazor's visualisation config), else the
    config's ``featmap_layers`` / ``target_layers``, a detector's backbone, or the last spatial feature layer."""
    from visctl import config
    from visctl.layers import default_layers, find_layer, probe

    target = list(settings.target_layers or [])
    if recorded and not target:
        target = list(dict.fromkeys(label.split("[")[0] for label in recorded))
    if target:
        return [find_layer(mi.model, n)[0] for n in target]
    default = config.tool_option(mi.cfg, "featmap_layers") or config.tool_option(mi.cfg, "target_layers")
    if default:
        names = [find_layer(mi.model, n)[0] for n in default]
    elif getattr(mi.model, "is_openmmlab_detector", False) and hasattr(mi.model, "backbone"):
        names = ["backbone"]  # mmyolo featmap_vis_demo's default: every output of the backbone
    else:
        in_hw = (int(mi.example.shape[2]), int(mi.example.shape[3]))
        chosen = default_layers(mi.model, probe(mi.model, mi.example, logits=False), in_hw)
        names = [chosen.features]
        session.note(f"default layer {chosen.why}")
    session.log(f"default layers: {', '.join(names)} (set target_layers= to change them)")
    return names


def _second_model(session: Session, settings: FeatmapOptions, names: Sequence[str]) -> tuple[Any, list[str]]:
    """``compare``'s model (built, its checkpoint loaded, on the session's device) with the manifest's
    ``compare`` param."""
    from visctl import checkpoints, config
    from visctl.library import _common

    compare, ckpt = settings.compare, settings.compare_checkpoint
    with_ckpt = [str(ckpt)] if ckpt else []
    module = _common._as_module(compare)
    if module is not None:
        model_b = module.eval().to(session.device)
        if ckpt:
            summary = checkpoints.load_checkpoint(model_b, str(ckpt), unsafe=session.unsafe_load_checkpoint)
            _common.say_checkpoint(session, summary, "compare: ")
        return model_b, ["<nn.Module>", *with_ckpt]
    if isinstance(compare, (str, Path)):
        session.protect(compare)
        cfg_b = config.load_config(str(compare))  # the cfg_options are for model A's config
        param = [str(compare), *with_ckpt]
    else:
        cfg_b = config.as_config(compare)
        param = ["<config>", *with_ckpt]
    model_b, _ = _common.load_model(session, cfg_b, str(ckpt) if ckpt else None, label="compare: ")
    from visctl import mmdet_adapter

    if mmdet_adapter.is_mm_detector(model_b):  # the same preprocessing as model A's (its padding value)
        model_b = mmdet_adapter.adapt(model_b, cfg_b)
    return model_b, param


def plan(session: Session, images: Any, model: Any, checkpoint: str | None, settings: FeatmapOptions, *,
         recorded: Sequence[str] | None = None, out_file: Path | None = None,
         on_model: Callable[[ModelInputs], None] | None = None) -> FeatmapRun:
    """Check the options, load the model (and ``compare``), resolve the layers; nothing is computed yet.

    ``recorded``: the layer outputs a visualisation config records (mmrazor's), the only ones drawn;
    ``out_file``: the CLI's single output file (every layer of the one image stacked in it); ``on_model``: called
    with the loaded model before any work (the CLI's ``--preview-model``).
    """
    from visctl import render
    from visctl.images import as_images
    from visctl.layers import find_layer
    from visctl.library import _common

    o, since = settings, mark(session)
    if isinstance(o.compare, (tuple, list)):  # (config, checkpoint): as the CLI's --compare CONFIG2,CHECKPOINT2
        if o.compare_checkpoint is not None:
            raise arguments.ArgumentError("compare=(config, checkpoint) and compare_checkpoint= both give the "
                                          "second checkpoint", hint="give it once")
        o = o.replace(compare=o.compare[0], compare_checkpoint=o.compare[1])
    o = o.replace(colormap=check_options(o))
    _warn_unused(session, o)
    if o.repo and f"default_scope={o.repo}" not in session.cfg_options:  # the CLI's split_args set it already
        session.cfg_options.append(f"default_scope={o.repo}")
    paths = as_images(images, note=session.note)
    for h, w in _common.image_shapes(paths):  # before the model: one panel at least, in the grid's columns
        check_figure(h, w, 1, o, session.max_pixels, f"a {w} x {h} image", area_only=True)
    mi = _common.open_model(session, model, checkpoint, paths)
    if on_model is not None:
        on_model(mi)
    if o.score_thr is not None and not mi.detector:
        session.warn("score_thr= draws a detector's boxes; this model is not a detector")
        o = o.replace(score_thr=None)
    names = _layer_names(session, mi, o, recorded)
    layers = {n: find_layer(mi.model, n)[1] for n in names}
    if o.repo and not _registry_model(mi):
        session.warn(f"repo={o.repo!r} has no effect on the model: it sets the registry scope, and this model is "
                     "not built from a registry name")
    reduction, topk = o.channel_reduction, o.topk
    drawn = _channels_drawn(mi, names, topk) if reduction is Reduction.none and topk > 0 else {}
    short = {n: c for n, c in drawn.items() if c < topk}
    if short:
        session.warn(f"topk={topk} asks for more channels than " + ", ".join(f"{n} has ({c})" for n, c in
                                                                              short.items())
                     + ": all of them are drawn")
    other, compare_param = None, None
    if o.compare is not None:
        model_b, compare_param = _second_model(session, o, names)
        other = (model_b, {n: find_layer(model_b, n)[1] for n in names})
    params = dict(
        inputs=[str(p) for p in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint, target_layers=names,
        channel_reduction=reduction.value, topk=_topk_param(topk, drawn) if reduction is Reduction.none else None,
        normalize=o.normalize.value, use_norm=o.use_norm, compare=compare_param, signed=o.signed,
        device=session.device, threads=session.threads, batch_size=o.batch_size, format=o.image_format.value,
        panel_size=o.panel_size or ("--resize-shape" if o.resize_shape else
                                    f"the original's long side, {render.PANEL_FLOOR}..{render.PANEL_CAP}"))
    if session.max_pixels is not None:
        params["max_pixels"] = session.max_pixels
    return FeatmapRun(session, o, mi, names, layers, other, list(recorded) if recorded else None, params, out_file,
                      since=since)


def second_model(args: list[str], compare: list[str] | None, settings: FeatmapOptions,
                 ) -> tuple[list[str], list[str] | None, FeatmapOptions]:
    """The command line's second model, from ``--compare CONFIG2[,CHECKPOINT2]`` (``compare``: its values) or
    mmrazor's positional layout with a visualisation config (:func:`visctl.config.split_recorder_args`).

    Returns (``IMG... CONFIG [CHECKPOINT]``, the recorded layers or None, ``settings`` with ``compare`` and
    ``compare_checkpoint`` set), the options checked (:func:`check_options`); two second models, or more than two
    values in ``compare``, are refused.
    """
    from visctl import config
    from visctl.errors import VisctlError

    if compare and len(compare) > 2:
        raise VisctlError("compare= takes CONFIG2[,CHECKPOINT2]", hint=f"got {compare}")
    if compare:
        settings = _with_second(settings, compare)
    check_options(settings)
    args, recorded, layout = config.split_recorder_args(args)
    if layout:
        if compare:
            raise VisctlError("two second models: CONFIG2 in the positional arguments and compare=",
                              hint="give one of them")
        settings = _with_second(settings, layout)
        check_options(settings)
    return args, recorded, settings


def _with_second(settings: FeatmapOptions, values: Sequence[str]) -> FeatmapOptions:
    """``settings`` with the second model ``[CONFIG2]`` or ``[CONFIG2, CHECKPOINT2]``."""
    return settings.replace(compare=values[0], compare_checkpoint=values[1] if len(values) > 1 else None)


def compare_kinds(fa: Any, fb: Any | None, signed: bool) -> list[tuple[str, Any, bool]]:
    """(kind, feature, signed) of one image's layer: A alone, or A, B and |A-B| (A-B with ``signed``)."""
    if fb is None:
        return [("A", fa, False)]
    return [("A", fa, False), ("B", fb, False),
            ("A-B" if signed else "|A-B|", fa - fb if signed else (fa - fb).abs(), signed)]




@dataclass(eq=False)
class FeatmapRun(Run):
    """A planned featmap run (:func:`plan`): the model(s), the layers, the options as used, the manifest's params.

    :meth:`items` computes every image's reduced maps (pass 1, so that scales can be shared), then draws and
    yields the images one by one (pass 2); :meth:`record` writes one as the CLI does (:class:`FeatmapWriter`).
    """

    command: ClassVar[str] = "featmap"

    session: Session
    settings: FeatmapOptions
    mi: ModelInputs
    names: list[str]
    layers: dict[str, Any]
    other: tuple[Any, dict[str, Any]] | None  # model B and its layers
    recorded: list[str] | None
    params: dict[str, Any]
    out_file: Path | None = None
    #: each flat map, ``"<image>: <layer> <map>: <why>; <hint>"``, and its input (merging torchrun's ranks)
    flat_maps: list[str] = field(default_factory=list)
    flat_at: list[str] = field(default_factory=list)
    since: Since = (0, 0, 0.0)  # where the call began (:func:`mark`)

    def __post_init__(self) -> None:
        self.out_dir = self.out_file.parent if self.out_file is not None else None
        self.writer_threads = IO_THREADS  # the figures encoded and written beside the model
        self.writer_queue = self.settings.batch_size
        self._out: FeatmapWriter | None = None
        self._started = time.time()
        self._merged = False

    def items(self) -> Iterator[FeatmapImage]:
        """Every image's maps and figures, in input order; numerically flat maps are warned about once, at the end."""
        import cv2
        import numpy as np

        from visctl import detection, featmaps, images, mmdet_adapter, render, transforms
        from visctl.errors import VisctlError
        from visctl.library import _common
        from visctl.output.writer import input_stems

        self._started = time.time()
        ctx, mi, o = self.session, self.mi, self.settings
        reduction, normalize, resize_shape = o.channel_reduction, o.normalize, o.resize_shape
        compared = o.compare is not None
        recorded = self.recorded
        in_hw = (int(mi.example.shape[2]), int(mi.example.shape[3]))
        records: list[dict] = []
        boxes_of: dict[Any, Any] = {}
        for batch in _common.batches(ctx, mi, o.batch_size, "features"):
            group = batch.items
            feats_a = featmaps.capture(mi.model, self.layers, batch.tensor)
            feats_b = None
            if self.other:
                with mmdet_adapter.bound(self.other[0], [state for _, _, state in group]):
                    feats_b = featmaps.capture(self.other[0], self.other[1], batch.tensor)
            if o.score_thr is not None:
                for (p, _img, state), found in zip(group, detection.detect(mi.model, batch.tensor)):
                    dets = detection.to_original(found, state)
                    boxes_of[p] = dets.keep(dets.scores >= o.score_thr)
            for label, ta in feats_a.items():
                if recorded and label not in recorded and label.split("[")[0] not in recorded:
                    continue
                fa = featmaps.to_nchw(ta, in_hw, label)
                fb = None
                if feats_b is not None:
                    fb = featmaps.to_nchw(feats_b[label], in_hw, label) if label in feats_b else None
                    if fb is None or fb.shape != fa.shape:
                        raise VisctlError(f"{label}: model A gives {tuple(fa.shape[1:])}, model B gives "
                                          f"{'nothing' if fb is None else tuple(fb.shape[1:])}",
                                          hint="compare layers whose outputs have the same shape")
                for i, (p, _img, state) in enumerate(group):
                    for kind, f, is_signed in compare_kinds(fa[i], None if fb is None else fb[i], o.signed):
                        raw = f  # what the layer gave (before use_norm): what a flat map's reason is about
                        if o.use_norm:
                            f = featmaps.channel_norm(f)
                        maps = featmaps.reduce(f, reduction, o.topk)
                        ref = float(f.abs().max())
                        flats = [featmaps.flat(m, ref) for _, m in maps]
                        module = (self.layers if kind == "A" else self.other[1] if self.other and kind == "B"
                                  else {}).get(label.split("[")[0])
                        why = [featmaps.why_flat(raw, reduction, module, difference=kind not in ("A", "B")) if fl
                               else None for fl in flats]
                        records.append(dict(path=p, state=state, label=label, kind=kind, signed=is_signed,
                                            maps=maps, flat=flats, why=why))
            batch.advance(len(group))
        flat = [(f"{r['label']}|{r['kind']}", m, r["signed"]) for r in records for _, m in r["maps"]]
        if ctx.world > 1 and normalize is not Normalize.per_map:  # under torchrun: scales shared with every rank's
            from visctl import distributed

            spans = [(str(r["path"]), (f"{r['label']}|{r['kind']}", float(m.min()), float(m.max()), r["signed"]))
                     for r in records for _, m in r["maps"]]
            merged, mine = distributed.with_positions(spans, mi.paths, o.batch_size)
            # a map's scale needs only its min and max: [min, max] gives the same span, NaN included
            whole = featmaps.scales([(k, np.array([mn, mx]), s) for k, mn, mx, s in merged], normalize)
            scale_list = iter([whole[pos] for pos in mine])
        else:
            scale_list = iter(featmaps.scales(flat, normalize))
        for r in records:
            r["scales"] = [next(scale_list) for _ in r["maps"]]

        # pass 2: draw one figure per (image, layer), image by image
        stems = input_stems(mi.paths)
        box_classes = _common.class_names(ctx, mi) if boxes_of else None
        by_key: dict[tuple, list[dict]] = {}
        for r in records:
            by_key.setdefault((r["path"], r["label"]), []).append(r)
        position = {p: i for i, p in enumerate(mi.paths)}
        keys = sorted(by_key, key=lambda k: position[k[0]])
        flat_maps: list[str] = []
        flat_at: list[str] = []  # the input of each (merging torchrun's ranks)
        current: Any = None
        layers_done: list[FeatmapLayer] = []
        img: Any = None
        for p, label in keys:
            if p != current:
                if current is not None:
                    yield FeatmapImage(str(current), tuple(layers_done), current)
                current, layers_done = p, []
                img = images.read_image(p, ctx.max_pixels)
            recs = by_key[(p, label)]
            check_figure(img.shape[0], img.shape[1], sum(len(r["maps"]) for r in recs), o, ctx.max_pixels, p.name)
            shown_img = img
            if p in boxes_of:
                dets = boxes_of[p]
                shown_img = render.draw_boxes(img, dets.boxes, dets.labels, dets.scores, box_classes)
            base = shown_img if not resize_shape else cv2.resize(shown_img, (resize_shape[1], resize_shape[0]),
                                                                 interpolation=cv2.INTER_AREA)
            panels = []
            found_maps: list[FeatMap] = []
            # resize_shape sets every panel's H W; else panels are the original's size, at most 384 (panel_size)
            side = (render.panel_size(base.shape[0], base.shape[1], o.panel_size) if o.panel_size or not resize_shape
                    else None)
            for r in recs:
                for (chan, m), sc, is_flat, why in zip(r["maps"], r["scales"], r["flat"], r["why"]):
                    unseen = False
                    if m.ndim == 3:  # a 3-channel feature drawn as an image (topk -1)
                        full = transforms.to_original(m.astype("float32"), r["state"], img.shape[:2])
                        u8 = (np.nan_to_num(sc.apply(full), nan=0.5) * 255).astype("uint8")
                        shown = u8 if not resize_shape else cv2.resize(u8, base.shape[1::-1])
                    else:
                        full = transforms.to_original(m, r["state"], img.shape[:2])
                        norm = sc.apply(full)
                        if resize_shape:
                            norm = cv2.resize(norm, base.shape[1::-1])
                        unseen = bool(np.isnan(full).any())
                        if is_flat:  # no heat: a constant map drawn full-range would look like a confident answer
                            shown = render.no_data(base)
                        elif not o.overlaid:
                            shown = render.colorize(np.nan_to_num(norm, nan=0.5), o.colormap)
                        elif (normalize is Normalize.per_map and o.colormap == "jet" and not r["signed"]
                              and not unseen):
                            shown = render.mmengine_overlay(base, norm, o.alpha)  # exactly mmengine's rendering
                        else:
                            shown = render.overlay(base, norm, o.alpha, o.colormap)
                    if side:
                        shown = render.fit(shown, side)
                    head = f"{r['kind']}: " if compared else ""
                    text = f"{head}{chan} | {sc.describe()}"
                    if is_flat:
                        text += f" | FLAT: numerically constant, nothing to show ({why[1]})"
                        flat_maps.append(f"{p.name}: {label} {head}{chan}: {why[0]}; {why[1]}")
                        flat_at.append(str(p))
                    elif m.ndim != 3 and unseen:
                        text += f" | {render.NO_DATA}"
                    panels.append(render.caption(shown, text))
                    tag = f"{r['kind']}_{chan}".replace(" ", "").replace("|", "abs").replace("-", "minus")
                    arr = full.astype("float32")
                    arr.setflags(write=False)
                    found_maps.append(FeatMap(r["kind"], chan, arr, sc.describe(), bool(is_flat),
                                              f"{stems[p]}_featmap_{_tag(label)}_{tag}.npy"))
            rows_cols = None
            if reduction is Reduction.none and not compared:
                rows_cols = featmaps.arrangement(len(panels), *(o.arrangement or (None, None)))
            figure = render.grid(panels, cols=rows_cols[1] if rows_cols else len(panels))
            figure = render.caption(figure, f"{p.name} | {label} | {reduction.value}"
                                    + (" after channel z-score" if o.use_norm else "") + f" | {normalize.value} scale")
            info = dict(input=str(p), layer=label, panel_size=side or max(base.shape[:2]),
                        scales=[sc.describe() for r in recs for sc in r["scales"]])
            fig = Figure(f"{stems[p]}_featmap_{_tag(label)}_{reduction.value}.{o.image_format.value}", figure,
                         f"{p.name}: {label} ({reduction.value}, {normalize.value})",
                         info)
            layers_done.append(FeatmapLayer(label, tuple(found_maps), fig, side or max(resize_shape or (0,))))
        if current is not None:
            yield FeatmapImage(str(current), tuple(layers_done), current)
        if flat_maps and ctx.world <= 1:  # under torchrun: said once, from every rank's (merge_ranks)
            ctx.warn(flat_warning(flat_maps))
        self.flat_maps, self.flat_at = flat_maps, flat_at

    def _writer(self, writer: OutputWriter) -> FeatmapWriter:
        if self._out is None or self._out.writer is not writer:
            self._out = FeatmapWriter(writer, save_raw=self.settings.save_raw, out_file=self.out_file)
        return self._out

    def record(self, writer: OutputWriter, item: FeatmapImage) -> None:
        """Write one image as ``visctl featmap`` does (see :class:`FeatmapWriter`)."""
        self._writer(writer).add(item)

    def merge_ranks(self, writer: OutputWriter) -> None:
        """Under torchrun, after the last image: every rank's records, panel sizes and flat maps merged as a
        one-process run has them (on every rank); rank 0 warns about the flat maps once."""
        from visctl import distributed, render

        ctx = self.session
        if ctx.world > 1:
            out = self._writer(writer)
            mine = dict(sides=sorted(out.sides), flat=list(zip(self.flat_at, self.flat_maps)))
            parts = distributed.merge_records(writer, self.mi.paths, self.settings.batch_size, mine)
            out.sides = {int(s) for part in parts for s in part["sides"]}
            if out.sides:
                writer.manifest["params"]["panel_size"] = render.sizes_param(out.sides)
            self.flat_maps = distributed.in_run_order([part["flat"] for part in parts], self.mi.paths,
                                                      self.settings.batch_size)
            if self.flat_maps and not ctx.rank:
                ctx.warn(flat_warning(self.flat_maps))
        self._merged = True

    def close(self, writer: OutputWriter) -> None:
        """After the whole run (not after an error or an interrupt): the flat maps and the run's timing."""
        if self._merged:
            self._writer(writer).close(self.flat_maps)
            writer.manifest["timings"]["featmap_s"] = round(time.time() - self._started, 3)

    def collect(self) -> FeatmapResult:
        """Every image, as a frozen :class:`FeatmapResult`."""
        items = tuple(self.items())
        return FeatmapResult(**self.gathered(), inputs=tuple({"path": i.input} for i in items), images=items,
                             layers=tuple(self.names), save_raw=self.settings.save_raw, flat_maps=tuple(self.flat_maps))


@arguments.typed("featmap")
def featmap(images: Any, model: Any, checkpoint: str | None = None, settings: FeatmapOptions | None = None, *,
            options: RunOptions | None = None, session: Session | None = None, **fields: Any) -> FeatmapResult:
    """Feature maps of ``target_layers`` (default: the config's, else the last spatial feature layer) of a
    model on ``images``, reduced over channels and brought back to each image's original size.

    Args:
        images: a path, folder or glob, a numpy RGB image, a PIL image, or a list of them.
        model: a config path, a model name, a config dict or an ``nn.Module``.
        checkpoint: its weights [default: the config's ``load_from``].
        settings: the options, a :class:`visctl.FeatmapOptions` (``visctl featmap``'s, ``--help``): ``compare``
            is a second model (same forms, or a ``(config, checkpoint)`` pair) whose same layers are shown as B,
            and the difference |A-B| (``signed``: A-B); ``save_raw``: ``result.save(dir)`` writes the maps as
            ``.npy`` too; ``image_format`` png, jpg or webp names the figures.
        options: the shared run options (device, threads, seed, ...).
        session: the run's session (where its notes and warnings go) [default: a new one of ``options``].
        **fields: fields of :class:`visctl.FeatmapOptions`, replacing those of ``settings``
            (``topk=8, channel_reduction="none"``).

    Returns:
        A :class:`FeatmapResult`: ``result.images[i].layers[j].maps[k].array`` is a float32 map.
    """
    o = FeatmapOptions.build(settings, **fields)
    return plan(session or Session(options), images, model, checkpoint, o).collect()


def _tag(label: str) -> str:
    return label.replace(".", "_").replace("[", "-").replace("]", "")
