"""``visctl.featmap``: feature maps of any layers, as float32 arrays at the original size, and their figures.

The one code path of ``visctl featmap``: :func:`prepare` loads the model(s) and resolves the layers,
:func:`iter_featmap` yields one :class:`FeatmapImage` per image (after a first pass that shares the colour
scales), and :class:`FeatmapWriter` writes them as the CLI names them. :func:`featmap` collects the images
into a frozen :class:`FeatmapResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.choices import Normalize, Reduction
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
    path: Any = field(default=None, repr=False, compare=False)

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
            w.add_input(item.path if item.path is not None else item.input)

    def close(self, flat_maps: Sequence[str]) -> None:
        if flat_maps:
            self.writer.manifest["flat_maps"] = list(flat_maps)


def flat_warning(flat_maps: Sequence[str]) -> str:
    """One line for every flat map: how many, and the first one with why it is flat and what to try
    (each entry of ``flat_maps`` is ``"<image>: <layer> <map>: <why>; <hint>"``, see :func:`visctl.featmaps.why_flat`)."""
    return f"{len(flat_maps)} map(s) are numerically constant and drawn without colour, e.g. {flat_maps[0]}"


@dataclass
class Plan:
    """A prepared featmap run: the model(s), the layers, the options, the manifest's params."""

    session: Session
    mi: ModelInputs
    names: list[str]
    layers: dict[str, Any]
    other: tuple[Any, dict[str, Any]] | None
    recorded: list[str] | None
    params: dict[str, Any]
    opts: dict[str, Any]


def check_options(*, channel_reduction: Reduction, topk: int, arrangement: tuple[int, int] | None,
                  colormap: str | None, compare: Any, signed: bool) -> str:
    """Refuse options that do not fit together, before any work; returns the colormap to use."""
    from visctl import arguments, featmaps, render
    from visctl.errors import VisctlError

    arguments.check("featmap", topk=topk, arrangement=arrangement)  # --arrangement 0 0 is no grid
    colormap = render.check_colormap(colormap or ("coolwarm" if signed else "jet"))
    if signed and not compare:
        raise VisctlError("--signed needs --compare", hint="--compare CONFIG2[,CHECKPOINT2] --signed")
    if compare and channel_reduction is Reduction.none:
        raise VisctlError("--compare needs a channel reduction", hint="use squeeze_mean, select_max or pixel_wise_max")
    if channel_reduction is Reduction.none:
        featmaps.arrangement(topk if topk > 0 else 1, *(arrangement or (None, None)))  # fail before the work
    return colormap


def _registry_model(mi: ModelInputs) -> bool:
    """Whether the model comes from a config whose ``model.type`` is a registry name (what ``--repo``'s
    ``default_scope`` resolves); not an import path (``pkg.module:fn``), a class, a torchvision name or a module."""
    model_cfg = mi.cfg.get("model") if hasattr(mi.cfg, "get") else None
    mtype = model_cfg.get("type") if model_cfg is not None and hasattr(model_cfg, "get") else None
    return isinstance(mtype, str) and ":" not in mtype and "." not in mtype


def _channels_drawn(mi: ModelInputs, names: Sequence[str], topk: int) -> dict[str, int]:
    """``--channel-reduction none --topk K``: how many channels each layer (with one (N, C, H, W) output) gives
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


def figure_options(o: dict[str, Any]) -> str:
    """The options that size a featmap figure, as an error names them (the CLI's and the API's names)."""
    said = []
    if o.get("resize_shape"):
        said.append(f"--resize-shape {o['resize_shape'][0]} {o['resize_shape'][1]} (resize_shape=)")
    if o.get("panel_size"):
        said.append(f"--panel-size {o['panel_size']} (panel_size=)")
    if o["reduction"] is Reduction.none:
        said.append(f"--topk {o['topk']} (topk=) with --channel-reduction none")
        if o.get("arrangement"):
            said.append(f"--arrangement {o['arrangement'][0]} {o['arrangement'][1]} (arrangement=)")
    if o.get("compare"):
        said.append("--compare")
    return ", ".join(said) or "the image's size"


def check_figure(h: int, w: int, panels: int, o: dict[str, Any], max_pixels: int | None, name: str,
                 area_only: bool = False) -> None:
    """Refuse a featmap figure of ``panels`` panels for an (h, w) image over the pixel budget, before any of
    its panels is drawn (captions left out: a lower bound); ``area_only``: the image's orientation is unknown
    (a header's size), so only the panels' area counts."""
    from visctl import featmaps, render

    resize_shape, panel_size = o.get("resize_shape"), o.get("panel_size")
    bh, bw = (int(resize_shape[0]), int(resize_shape[1])) if resize_shape else (int(h), int(w))
    side = render.panel_size(bh, bw, panel_size) if panel_size or not resize_shape else None
    ph, pw = render.fit_size(bh, bw, side) if side else (bh, bw)
    arrangement = o.get("arrangement")
    if o["reduction"] is Reduction.none and not o.get("compare"):
        cols = featmaps.arrangement(panels, *(arrangement or (None, None)))[1]
    else:
        cols = panels
    if area_only and not resize_shape:
        fh, fw = render.grid_size(panels, ph, pw, cols, gap=0)
    else:
        fh, fw = render.grid_size(panels, ph, pw, cols)
    render.check_figure(fw, fh, max_pixels, figure_options(o), f"the figure of {name} ({panels} panels)",
                        hint="give a smaller --resize-shape or --panel-size, a smaller --topk or --arrangement")


def prepare(images: Any, model: Any, checkpoint: str | None = None, *, target_layers: Sequence[str] | None = None,
            channel_reduction: Reduction | str = Reduction.squeeze_mean, topk: int = 4,
            arrangement: tuple[int, int] | None = None, overlaid: bool = True, alpha: float = 0.5,
            use_norm: bool = False, normalize: Normalize | str = Normalize.per_map,
            resize_shape: tuple[int, int] | None = None, colormap: str | None = None, compare: Any = None,
            compare_checkpoint: str | None = None, signed: bool = False, score_thr: float | None = None,
            repo: str | None = None, panel_size: int | None = None, batch_size: int = 16,
            recorded: Sequence[str] | None = None, image_format: str = "png", options: RunOptions | None = None,
            session: Session | None = None, on_model: Callable[[ModelInputs], None] | None = None) -> Plan:
    """Check the options, load the model (and ``compare``), resolve the layers; nothing is computed yet."""
    from visctl import arguments, checkpoints, config
    from visctl.layers import default_layers, find_layer, probe
    from visctl.library import _common
    from visctl.output.checks import check_format

    arguments.model_spec(model)
    if isinstance(compare, (tuple, list)):  # (config, checkpoint), the CLI's --compare CONFIG2,CHECKPOINT2
        if compare_checkpoint is not None:
            raise arguments.ArgumentError("compare=(config, checkpoint) and compare_checkpoint both give the "
                                          "second checkpoint", hint="give it once")
        compare, compare_checkpoint = compare
    arguments.check("featmap", alpha=alpha, score_thr=score_thr, panel_size=panel_size, batch_size=batch_size,
                    resize_shape=resize_shape)
    target_layers = arguments.names(target_layers, "target_layers", "a layer name")
    image_format = check_format(image_format)
    session = session or Session(options)
    reduction = arguments.choice(Reduction, channel_reduction, "channel_reduction")
    normalize = arguments.choice(Normalize, normalize, "normalize")
    cmap = check_options(channel_reduction=reduction, topk=topk, arrangement=arrangement, colormap=colormap,
                         compare=compare, signed=signed)
    if arrangement and reduction is not Reduction.none:
        session.warn("--arrangement applies to --channel-reduction none only")
    if topk != 4 and reduction is not Reduction.none:
        session.warn(f"--topk {topk} has no effect: it applies to --channel-reduction none only "
                     f"(this run's is {reduction.value})")
    if alpha != 0.5 and not overlaid:
        session.warn(f"--alpha {alpha:g} has no effect: it blends the map over the image, and --no-overlaid "
                     "draws the map alone")
    if repo and f"default_scope={repo}" not in session.cfg_options:  # the CLI's split_args set it already
        session.cfg_options.append(f"default_scope={repo}")
    from visctl.images import as_images

    paths = as_images(images, note=session.note)
    sized = dict(reduction=reduction, topk=topk, arrangement=arrangement, resize_shape=resize_shape,
                 panel_size=panel_size, compare=compare is not None)
    for h, w in _common.image_shapes(paths):  # before the model: one panel at least, in the grid's columns
        check_figure(h, w, 1, sized, session.max_pixels, f"a {w} x {h} image", area_only=True)
    mi = _common.open_model(session, model, checkpoint, paths)
    if on_model is not None:
        on_model(mi)
    in_hw = (int(mi.example.shape[2]), int(mi.example.shape[3]))
    target = list(target_layers or [])
    if recorded and not target:
        target = list(dict.fromkeys(label.split("[")[0] for label in recorded))
    if score_thr is not None and not mi.detector:
        session.warn("--score-thr draws a detector's boxes; this model is not a detector")
        score_thr = None
    if target:
        names = [find_layer(mi.model, n)[0] for n in target]
    else:
        default = config.tool_option(mi.cfg, "featmap_layers") or config.tool_option(mi.cfg, "target_layers")
        if default:
            names = [find_layer(mi.model, n)[0] for n in default]
        elif getattr(mi.model, "is_openmmlab_detector", False) and hasattr(mi.model, "backbone"):
            names = ["backbone"]  # mmyolo featmap_vis_demo's default: every output of the backbone
        else:
            chosen = default_layers(mi.model, probe(mi.model, mi.example, logits=False), in_hw)
            names = [chosen.features]
            session.note(f"default layer {chosen.why}")
        session.log(f"default layers: {', '.join(names)} (set --target-layers to change them)")
    layers = {n: find_layer(mi.model, n)[1] for n in names}
    if repo and not _registry_model(mi):
        session.warn(f"--repo {repo} has no effect on the model: it sets the registry scope, and this model is "
                     "not built from a registry name")
    drawn = _channels_drawn(mi, names, topk) if reduction is Reduction.none and topk > 0 else {}
    short = {n: c for n, c in drawn.items() if c < topk}
    if short:
        session.warn(f"--topk {topk} asks for more channels than " + ", ".join(f"{n} has ({c})" for n, c in
                                                                              short.items())
                     + ": all of them are drawn")
    other = None
    compare_param = None
    if compare is not None:
        module = _common._as_module(compare)
        if module is not None:
            model_b = module.eval().to(session.device)
            compare_param = ["<nn.Module>"] + ([str(compare_checkpoint)] if compare_checkpoint else [])
            if compare_checkpoint:
                summary = checkpoints.load_checkpoint(model_b, str(compare_checkpoint),
                                                      unsafe=session.unsafe_load_checkpoint)
                _common.say_checkpoint(session, summary, "compare: ")
        else:
            if isinstance(compare, (str, Path)):
                session.protect(compare)
                cfg_b = config.load_config(str(compare))  # --cfg-options are for model A's config
                compare_param = [str(compare)] + ([str(compare_checkpoint)] if compare_checkpoint else [])
            else:
                cfg_b = config.as_config(compare)
                compare_param = ["<config>"] + ([str(compare_checkpoint)] if compare_checkpoint else [])
            model_b, _ = _common.load_model(session, cfg_b, compare_checkpoint, label="compare: ")
            from visctl import mmdet_adapter

            if mmdet_adapter.is_mm_detector(model_b):  # the same preprocessing as model A's (its padding value)
                model_b = mmdet_adapter.adapt(model_b, cfg_b)
        other = (model_b, {n: find_layer(model_b, n)[1] for n in names})
    from visctl import render

    params = dict(
        inputs=[str(p) for p in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint, target_layers=names,
        channel_reduction=reduction.value, topk=_topk_param(topk, drawn) if reduction is Reduction.none else None,
        normalize=normalize.value, use_norm=use_norm, compare=compare_param, signed=signed, device=session.device,
        threads=session.threads, batch_size=batch_size, format=image_format,
        panel_size=panel_size or ("--resize-shape" if resize_shape else
                                  f"the original's long side, {render.PANEL_FLOOR}..{render.PANEL_CAP}"))
    if session.max_pixels is not None:
        params["max_pixels"] = session.max_pixels
    opts = dict(reduction=reduction, topk=topk, arrangement=arrangement, overlaid=overlaid, alpha=alpha,
                use_norm=use_norm, normalize=normalize, resize_shape=resize_shape, colormap=cmap,
                compare=compare is not None, signed=signed, score_thr=score_thr, panel_size=panel_size,
                batch_size=batch_size, image_format=image_format)
    return Plan(session, mi, names, layers, other, list(recorded) if recorded else None, params, opts)


def second_model(args: list[str], compare: list[str] | None, *, channel_reduction: Reduction, topk: int,
                 colormap: str | None, signed: bool) -> tuple[list[str], list[str] | None, list[str] | None]:
    """The command line's second model, from ``--compare CONFIG2[,CHECKPOINT2]`` or mmrazor's positional layout
    with a visualisation config (:func:`visctl.config.split_recorder_args`).

    Returns (``IMG... CONFIG [CHECKPOINT]``, the recorded layers or None, ``[CONFIG2]`` / ``[CONFIG2,
    CHECKPOINT2]`` or None); two second models, or more than two values in ``compare``, are refused.
    """
    from visctl import config
    from visctl.errors import VisctlError

    args, recorded, compare_layout = config.split_recorder_args(args)
    if compare_layout:
        if compare:
            raise VisctlError("two second models: CONFIG2 in the positional arguments and --compare",
                              hint="give one of them")
        compare = compare_layout
        check_options(channel_reduction=channel_reduction, topk=topk, arrangement=None, colormap=colormap,
                      compare=compare, signed=signed)
    if compare and len(compare) > 2:
        raise VisctlError("--compare takes CONFIG2[,CHECKPOINT2]", hint=f"got {compare}")
    return args, recorded, compare


def write_run(plan: Plan, writer: OutputWriter, *, save_raw: bool = False, out_file: Path | None = None) -> None:
    """Compute and write every image as ``visctl featmap`` does (see :class:`FeatmapWriter`), with its timing."""
    import time

    started = time.time()
    out = FeatmapWriter(writer, save_raw=save_raw, out_file=out_file)
    for item in iter_featmap(plan):
        out.add(item)
    merge_ranks(plan, out)  # under torchrun: every rank's records, on every rank
    out.close(plan.opts["flat_maps"])
    writer.manifest["timings"]["featmap_s"] = round(time.time() - started, 3)


def compare_kinds(fa: Any, fb: Any | None, signed: bool) -> list[tuple[str, Any, bool]]:
    """(kind, feature, signed) of one image's layer: A alone, or A, B and |A-B| (A-B with ``signed``)."""
    if fb is None:
        return [("A", fa, False)]
    return [("A", fa, False), ("B", fb, False),
            ("A-B" if signed else "|A-B|", fa - fb if signed else (fa - fb).abs(), signed)]


def iter_featmap(plan: Plan) -> Iterator[FeatmapImage]:
    """Compute every image's reduced maps (pass 1, so that scales can be shared), then draw and yield the
    images one by one (pass 2). Numerically flat maps are warned about once, at the end."""
    import cv2
    import numpy as np

    from visctl import detection, featmaps, images, mmdet_adapter, render, transforms
    from visctl.errors import VisctlError
    from visctl.library import _common
    from visctl.output.writer import input_stems

    ctx, mi, o = plan.session, plan.mi, plan.opts
    reduction: Reduction = o["reduction"]
    normalize: Normalize = o["normalize"]
    resize_shape = o["resize_shape"]
    recorded = plan.recorded
    in_hw = (int(mi.example.shape[2]), int(mi.example.shape[3]))
    records: list[dict] = []
    boxes_of: dict[Any, Any] = {}
    for batch in _common.batches(ctx, mi, o["batch_size"], "features"):
        group = batch.items
        feats_a = featmaps.capture(mi.model, plan.layers, batch.tensor)
        feats_b = None
        if plan.other:
            with mmdet_adapter.bound(plan.other[0], [state for _, _, state in group]):
                feats_b = featmaps.capture(plan.other[0], plan.other[1], batch.tensor)
        if o["score_thr"] is not None:
            for (p, _img, state), found in zip(group, detection.detect(mi.model, batch.tensor)):
                dets = detection.to_original(found, state)
                boxes_of[p] = dets.keep(dets.scores >= o["score_thr"])
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
                for kind, f, is_signed in compare_kinds(fa[i], None if fb is None else fb[i], o["signed"]):
                    raw = f  # what the layer gave (before --use-norm): what a flat map's reason is about
                    if o["use_norm"]:
                        f = featmaps.channel_norm(f)
                    maps = featmaps.reduce(f, reduction, o["topk"])
                    ref = float(f.abs().max())
                    flats = [featmaps.flat(m, ref) for _, m in maps]
                    module = (plan.layers if kind == "A" else plan.other[1] if plan.other and kind == "B"
                              else {}).get(label.split("[")[0])
                    why = [featmaps.why_flat(raw, reduction, module, difference=kind not in ("A", "B")) if fl
                           else None for fl in flats]
                    records.append(dict(path=p, state=state, label=label, kind=kind, signed=is_signed,
                                        maps=maps, flat=flats, why=why))
        batch.advance(len(group))
    flat = [(f"{r['label']}|{r['kind']}", m, r["signed"]) for r in records for _, m in r["maps"]]
    if ctx.world > 1 and normalize is not Normalize.per_map:  # under torchrun: scales shared with every rank's maps
        from visctl import distributed

        spans = [(str(r["path"]), (f"{r['label']}|{r['kind']}", float(m.min()), float(m.max()), r["signed"]))
                 for r in records for _, m in r["maps"]]
        merged, mine = distributed.with_positions(spans, mi.paths, o["batch_size"])
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
        # --resize-shape sets every panel's H W; else panels are the original's size, at most 384 (--panel-size)
        side = render.panel_size(base.shape[0], base.shape[1], o["panel_size"]) if o["panel_size"] or not resize_shape else None
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
                    elif not o["overlaid"]:
                        shown = render.colorize(np.nan_to_num(norm, nan=0.5), o["colormap"])
                    elif (normalize is Normalize.per_map and o["colormap"] == "jet" and not r["signed"]
                          and not unseen):
                        shown = render.mmengine_overlay(base, norm, o["alpha"])  # exactly mmengine's rendering
                    else:
                        shown = render.overlay(base, norm, o["alpha"], o["colormap"])
                if side:
                    shown = render.fit(shown, side)
                head = f"{r['kind']}: " if o["compare"] else ""
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
        if reduction is Reduction.none and not o["compare"]:
            rows_cols = featmaps.arrangement(len(panels), *(o["arrangement"] or (None, None)))
        figure = render.grid(panels, cols=rows_cols[1] if rows_cols else len(panels))
        figure = render.caption(figure, f"{p.name} | {label} | {reduction.value}"
                                + (" after channel z-score" if o["use_norm"] else "") + f" | {normalize.value} scale")
        info = dict(input=str(p), layer=label, panel_size=side or max(base.shape[:2]),
                    scales=[sc.describe() for r in recs for sc in r["scales"]])
        fig = Figure(f"{stems[p]}_featmap_{_tag(label)}_{reduction.value}.{o['image_format']}", figure,
                     f"{p.name}: {label} ({reduction.value}, {normalize.value})",
                     info)
        layers_done.append(FeatmapLayer(label, tuple(found_maps), fig, side or max(resize_shape or (0,))))
    if current is not None:
        yield FeatmapImage(str(current), tuple(layers_done), current)
    if flat_maps and ctx.world <= 1:  # under torchrun: said once, from every rank's (merge_ranks)
        ctx.warn(flat_warning(flat_maps))
    plan.opts["flat_maps"] = flat_maps
    plan.opts["flat_at"] = flat_at


def merge_ranks(plan: Plan, out: FeatmapWriter) -> None:
    """Under torchrun, after the last image: every rank's records, panel sizes and flat maps merged as a
    one-process run has them (on every rank); rank 0 warns about the flat maps once."""
    from visctl import distributed, render

    ctx = plan.session
    if ctx.world <= 1:
        return
    mine = dict(sides=sorted(out.sides), flat=list(zip(plan.opts["flat_at"], plan.opts["flat_maps"])))
    parts = distributed.merge_records(out.writer, plan.mi.paths, plan.opts["batch_size"], mine)
    out.sides = {int(s) for part in parts for s in part["sides"]}
    if out.sides:
        out.writer.manifest["params"]["panel_size"] = render.sizes_param(out.sides)
    plan.opts["flat_maps"] = distributed.in_run_order([part["flat"] for part in parts], plan.mi.paths,
                                                      plan.opts["batch_size"])
    if plan.opts["flat_maps"] and not ctx.rank:
        ctx.warn(flat_warning(plan.opts["flat_maps"]))


@arguments.typed("featmap")
def featmap(images: Any, model: Any, checkpoint: str | None = None, *, target_layers: Sequence[str] | None = None,
            channel_reduction: Reduction | str = Reduction.squeeze_mean, topk: int = 4,
            arrangement: tuple[int, int] | None = None, overlaid: bool = True, alpha: float = 0.5,
            use_norm: bool = False, normalize: Normalize | str = Normalize.per_map,
            resize_shape: tuple[int, int] | None = None, colormap: str | None = None, compare: Any = None,
            compare_checkpoint: str | None = None, signed: bool = False, score_thr: float | None = None,
            repo: str | None = None, panel_size: int | None = None, batch_size: int = 16, save_raw: bool = False,
            image_format: str = "png", options: RunOptions | None = None,
            session: Session | None = None) -> FeatmapResult:
    """Feature maps of ``target_layers`` (default: the config's, else the last spatial feature layer) of a
    model on ``images``, reduced over channels and brought back to each image's original size.

    ``images``: a path, folder or glob, a numpy RGB image, a PIL image, or a list of them. ``model``: a config
    path, a model name, a config dict or an ``nn.Module``. ``compare``: a second model (same forms, or a
    ``(config, checkpoint)`` pair) whose same
    layers are shown as B, and the difference |A-B| (``signed``: A-B). The options are the CLI's
    (``visctl featmap --help``); ``save_raw``: ``result.save(dir)`` writes the maps as ``.npy`` too;
    ``image_format`` png, jpg or webp names the figures.
    Returns a :class:`FeatmapResult`: ``result.images[i].layers[j].maps[k].array`` is a float32 map.
    """
    plan = prepare(images, model, checkpoint, target_layers=target_layers, channel_reduction=channel_reduction,
                   topk=topk, arrangement=arrangement, overlaid=overlaid, alpha=alpha, use_norm=use_norm,
                   normalize=normalize, resize_shape=resize_shape, colormap=colormap, compare=compare,
                   compare_checkpoint=compare_checkpoint, signed=signed, score_thr=score_thr, repo=repo,
                   panel_size=panel_size, batch_size=batch_size, image_format=image_format, options=options,
                   session=session)
    items = tuple(iter_featmap(plan))
    ctx = plan.session
    return FeatmapResult(params=plan.params, inputs=tuple({"path": i.input} for i in items),
                         failures=tuple((f.path, f.error) for f in getattr(ctx, "failures", [])),
                         notes=tuple(ctx.notes), images=items, layers=tuple(plan.names), save_raw=save_raw,
                         flat_maps=tuple(plan.opts.get("flat_maps", ())))


def _tag(label: str) -> str:
    return label.replace(".", "_").replace("[", "-").replace("]", "")
