"""``visctl.boxam``: box-level activation maps of a detector -- its boxes, scores and labels in original
pixels, and float32 maps at the original size (one for all boxes, or one per box).

The one code path of ``visctl boxam``: :func:`plan` loads the detector and its CAM engine into a
:class:`BoxamRun` (:class:`visctl.library._run.Run`), whose :meth:`~BoxamRun.items` yields one
:class:`BoxamImage` per image; the CLI writes each as it comes (:meth:`BoxamImage.write`), :func:`boxam`
collects them into a frozen :class:`BoxamResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.choices import BoxMethod, Method
from visctl.library._run import IO_THREADS, Run, Since, mark
from visctl.options import BoxamOptions
from visctl.results import Drawing, Figure, Result, frozen_array, save_picture
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    import numpy as np

    from visctl.library._common import ModelInputs
    from visctl.output.writer import OutputWriter


@dataclass(frozen=True)
class BoxamImage:
    """One image: the kept boxes (x0 y0 x1 y1 in original pixels, best first), their scores and labels, the
    maps (float32, the image's size: one per box with ``per_box``, else one for all boxes) and the figure."""

    input: str
    boxes: np.ndarray = field(repr=False)
    scores: np.ndarray
    labels: np.ndarray
    maps: tuple[np.ndarray, ...] = field(repr=False)
    figure: Figure | None = field(repr=False)  # drawn (the library's); None in the CLI's runs, see drawing
    raw_names: tuple[str, ...] = field(default=(), repr=False)
    per_box: bool = field(default=False, repr=False)
    side: int = field(default=0, repr=False)
    source: Any = field(default=None, repr=False, compare=False)  # the input as read: a Path, or an ArrayImage
    drawing: Drawing | None = field(default=None, repr=False)  # the CLI's figure, drawn when written

    @property
    def path(self) -> str:
        """The input it came from, as the manifest names it: a file's path, or the name given to pixels."""
        return self.input

    @property
    def picture(self) -> Figure | Drawing:
        """The figure, drawn (the library's) or to draw (the CLI's)."""
        picture = self.figure if self.figure is not None else self.drawing
        assert picture is not None  # BoxamRun gives one or the other
        return picture

    def drawn(self) -> BoxamImage:
        """This image with its figure drawn (the library's)."""
        import dataclasses

        return self if self.drawing is None else dataclasses.replace(self, figure=self.drawing.figure(), drawing=None)

    def write(self, writer: OutputWriter, save_raw: bool = False, add_input: bool = True) -> None:
        """The figure, the maps as ``.npy`` (``save_raw``), the input with its boxes, as ``visctl boxam``."""
        import numpy as np

        save_picture(writer, self.picture)
        if save_raw:
            for slot, (name, full) in enumerate(zip(self.raw_names, self.maps)):
                writer.save_array(name, full.astype(np.float32), caption=f"box{slot}" if self.per_box else "all",
                                  input=self.input, box=self.boxes[slot].tolist() if self.per_box else None)
        if add_input:
            writer.add_input(self.source if self.source is not None else self.input, boxes=self.box_list())

    def box_list(self) -> list[dict[str, Any]]:
        """The boxes as the manifest lists them."""
        return [dict(box=[round(float(v), 1) for v in b], label=int(lab), score=round(float(s), 4))
                for b, lab, s in zip(self.boxes, self.labels, self.scores)]


@dataclass(frozen=True)
class BoxamResult(Result):
    """What :func:`visctl.boxam` returns: one :class:`BoxamImage` per image."""

    command: ClassVar[str] = "boxam"

    images: tuple[BoxamImage, ...] = ()
    save_raw: bool = field(default=False, repr=False)

    @property
    def items(self) -> tuple[BoxamImage, ...]:
        """The images (:attr:`images`), as the result's sequence."""
        return self.images

    def figures(self) -> list[Figure]:
        return [p if isinstance(p, Figure) else p.figure() for p in (img.picture for img in self.images)]

    def write(self, writer: OutputWriter) -> None:
        from visctl import render

        sides: set[int] = set()
        for img in self.images:
            sides.add(img.side)
            writer.manifest["params"]["panel_size"] = render.sizes_param(sides)
            img.write(writer, self.save_raw, add_input=False)  # save() lists self.inputs


def check_options(settings: BoxamOptions) -> tuple[str, tuple[int, int] | None]:
    """Refuse an unknown colormap; returns the colormap (None: jet, the default, as featmap's) and the cap on
    the map's size (mmyolo's ``max_shape``: one value for both sides; -1 anywhere: no cap)."""
    from visctl import render

    shape = settings.max_shape
    cap = None if not shape or -1 in shape else (shape[0], shape[-1])
    return render.check_colormap("jet" if settings.colormap is None else settings.colormap), cap


def keep_boxes(found: list[dict[str, Any]], score_thr: float, topk: int) -> list[dict[str, Any]]:
    """Each image's detections scoring at least ``score_thr``, best first, at most ``topk`` (-1: all)."""
    kept = []
    for out in found:
        order = out["scores"].argsort(descending=True)
        order = order[out["scores"][order] >= score_thr][:topk if topk > 0 else None]
        kept.append({k: v[order] for k, v in out.items()})
    return kept


def plan(session: Session, images: list[Any], model: Any, checkpoint: str | None, settings: BoxamOptions, *,
         on_model: Callable[[ModelInputs], None] | None = None) -> BoxamRun:
    """Load the detector, resolve the method, the target layers and ``topk``, and build the CAM engine: the
    run over ``images`` (paths, as :func:`visctl.images.as_images` gives them). ``on_model`` sees the model
    once it is loaded (the CLI's ``--preview-model``)."""
    import functools

    from visctl import cams, config, detection, render
    from visctl.errors import LayerError
    from visctl.layers import detect_layout, find_layer, probe, validate_layer_output
    from visctl.library import _common

    o, since = settings, mark(session)
    colormap, cap = check_options(o)
    for h, w in _common.image_shapes(images) if o.panel_size else []:  # one panel at least, before the model
        check_figure(h, w, 1, render.panel_size(h, w, o.panel_size, cap=512), o.panel_size, session.max_pixels,
                     f"a {w} x {h} image")
    mi = _common.open_model(session, model, checkpoint, images)
    if on_model is not None:
        on_model(mi)
    in_hw = (int(mi.example.shape[2]), int(mi.example.shape[3]))
    pr = probe(mi.model, mi.example, logits=False)
    openmmlab = bool(getattr(mi.model, "is_openmmlab_detector", False))
    # the default: mmyolo boxam_vis_demo's gradcam on the detectors it covers (YOLOv5/v6/X, RTMDet), else layercam
    method = o.method or (BoxMethod.gradcam if openmmlab and mi.model.family is not None else BoxMethod.layercam)
    topk = o.topk
    if topk is None:  # boxam_vis_demo's --topk -1 (every box over the threshold) on OpenMMLab detectors
        topk = -1 if openmmlab else 10
    target_layers = list(o.target_layers or ())
    if not target_layers and openmmlab and not config.tool_option(mi.cfg, "target_layers"):
        try:  # mmyolo's boxam_vis_demo default, where the neck has it (mmyolo's PAFPN necks)
            target_layers = [find_layer(mi.model, "neck.out_layers[2]")[0]]
            session.log("default target layer: neck.out_layers.2 (mmyolo boxam_vis_demo's; set target_layers= "
                        "to change it)")
        except LayerError:
            finest = detection.finest_neck_layer(pr)
            if finest:  # an FPN's last level (P7) sees only the largest boxes: its finest output sees most
                target_layers = [finest]
                session.log(f"default target layer: {finest} (the neck's last output at its finest resolution; "
                            "set target_layers= to change it)")
    if target_layers:
        names = [find_layer(mi.model, n)[0] for n in target_layers]
    elif config.tool_option(mi.cfg, "target_layers"):
        names = [find_layer(mi.model, n)[0] for n in config.tool_option(mi.cfg, "target_layers")]
    else:
        name, where = detection.default_layer(pr)
        names = [name]
        session.log(f"default target layer: {name} (the last tensor-valued layer of the {where}; "
                    "set target_layers= to change it)")
    layouts = []
    for n in names:
        shape = pr.shape_of(n)
        if isinstance(shape, str):
            raise LayerError(f"layer {n!r} returns a {shape}, and grad-cam's methods need one tensor",
                             hint="pick a tensor-valued layer inside it, e.g. an FPN level such as "
                             "backbone.fpn.layer_blocks.0 or the backbone stage backbone.body.layer4")
        validate_layer_output(n, shape)
        layouts.append(detect_layout(shape, in_hw, False, None, n))
    cam_method = cams.parse_method(method.value)[0]
    if o.ratio_channels_to_ablate != 1.0 and method is not BoxMethod.ablationcam:
        session.warn(f"ratio_channels_to_ablate={o.ratio_channels_to_ablate:g} has no effect: it is AblationCAM's, "
                     f"and the method is {method.value}")
    target = None
    gradient = method not in (BoxMethod.eigencam, BoxMethod.ablationcam)
    # mmyolo's boxam_vis_demo: on the detectors it covers, the gradient methods differentiate the loss
    loss_route = openmmlab and mi.model.family is not None and gradient
    spatial = loss_route and method in (BoxMethod.gradcam, BoxMethod.gradcamplusplus)
    # mmyolo's reshape_transform (|x|) on the methods of its demo, on the detectors it covers
    absolute = spatial or (openmmlab and mi.model.family is not None
                           and method in (BoxMethod.ablationcam, BoxMethod.eigencam))
    head = type(getattr(mi.model, "bbox_head", None)).__name__
    if openmmlab:
        mi.model.loss_mode = loss_route
        # the box scores' graph, through the package's predict (EigenCAM: to orient its component by their gradient)
        mi.model.keep_graph = (gradient or (method is BoxMethod.eigencam and not absolute)) and not loss_route
    if loss_route:
        from visctl import mmdet_adapter

        ignore = mmdet_adapter.IGNORE_LOSS[mi.model.family]
        target = functools.partial(mmdet_adapter.LossTarget, mi.model, ignore)
        session.note(f"{method.value} as mmyolo's boxam_vis_demo on a {head} ({mi.model.family} family): the loss with the "
                     f"kept boxes as ground truth (all but {', '.join(ignore)})"
                     + (", gradients and activations as |x|, weights per position" if spatial else ""))
    elif absolute:
        session.note(f"{method.value} as mmyolo's boxam_vis_demo on a {head} ({mi.model.family} family): activations as |x| "
                     "(its reshape_transform)")
    batch_size = o.batch_size
    if openmmlab and method is BoxMethod.ablationcam:
        batch_size = 1  # AblationCAM's copies of one image: the detector reads that image's pipeline meta
    engine = cams.CamEngine(mi.model, cam_method, names, layouts, batch_size=16,
                            ratio_channels_to_ablate=o.ratio_channels_to_ablate, detection=True, max_shape=cap,
                            spatial=spatial, absolute=absolute)
    classes = _common.class_names(session, mi)
    params = dict(inputs=[str(p) for p in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint,
                  method=method.value, target_layers=names, topk=topk, score_thr=o.score_thr,
                  norm_in_bbox=o.norm_in_bbox, per_box=o.per_box, device=session.device,
                  max_shape=list(cap) if cap else None, format=o.image_format.value,
                  panel_size=o.panel_size or f"the original's long side, {render.PANEL_FLOOR}..512")
    if session.max_pixels is not None:
        params["max_pixels"] = session.max_pixels
    # the options as this run uses them: the method, topk and colormap resolved, AblationCAM's batches
    used = o.replace(method=method, topk=topk, colormap=colormap, batch_size=batch_size)
    return BoxamRun(session, mi, names, engine, used, cam_method, classes, params, target, writer_queue=o.batch_size,
                    since=since)


@dataclass(eq=False)
class BoxamRun(Run):
    """A planned boxam run (:func:`plan`): the detector, its CAM engine and the options as the run uses them;
    its items are the images, one :class:`BoxamImage` each."""

    command: ClassVar[str] = "boxam"
    writer_threads = IO_THREADS  # (no field) the figures are drawn, encoded and written beside the model

    session: Session
    mi: ModelInputs
    names: list[str]  # the target layers
    engine: Any
    settings: BoxamOptions  # method and topk resolved, the batch size AblationCAM's on OpenMMLab
    cam_method: Method
    classes: list[str] | None
    params: dict[str, Any]
    target: Callable[[], Any] | None = None  # a new box target (default: detection.BoxScoreTarget)
    writer_queue: int = 0  # a batch's figures (the batch size asked for)
    sides: set[int] = field(default_factory=set)  # the panel sizes written so far
    said_unoriented: bool = False
    since: Since = (0, 0, 0.0)  # where the call began (:func:`mark`)

    @property
    def method(self) -> BoxMethod:
        """The method the run uses."""
        assert self.settings.method is not None  # resolved by plan()
        return self.settings.method

    @property
    def topk(self) -> int:
        """At most this many boxes per image (-1: all)."""
        assert self.settings.topk is not None  # resolved by plan()
        return self.settings.topk

    def items(self) -> Iterator[BoxamImage]:
        """Detect, keep the best boxes and compute their maps, image by image; each image's figure is a
        :class:`~visctl.results.Drawing`, drawn by the writer's threads (the CLI's) or by :meth:`collect`."""
        import functools

        import numpy as np

        from visctl import detection, render, transforms
        from visctl.library import _common
        from visctl.output.writer import input_stems

        ctx, mi, o = self.session, self.mi, self.settings
        per_box = o.per_box
        stems = input_stems(mi.paths)
        layer_tag = "+".join(self.names).replace(".", "_")
        gradient = self.method not in (BoxMethod.eigencam, BoxMethod.ablationcam)
        for batch in _common.batches(ctx, mi, o.batch_size, "boxam", grad=gradient):
            group, tensor = batch.items, batch.tensor
            # one CAM call per box slot with --per-box (the k-th box of every image), else one for all boxes; each
            # call's forward is also the detection: its boxes become the targets of its own backward
            kept: list[dict[str, Any]] = []
            maps_per_image: list[list] = [[] for _ in group]
            slot_targets: list[list] = []  # each CAM call's targets (filled by its forward): to recompute uncapped
            slot = 0
            while slot == 0 or (per_box and slot < max((len(k["scores"]) for k in kept), default=0)):
                sel = slice(slot, slot + 1) if per_box else slice(None)
                targets = [(self.target or detection.BoxScoreTarget)() for _ in group]
                found = functools.partial(self._take_boxes, kept=kept, targets=targets, sel=sel)
                maps, _ = self.engine(tensor, targets, on_output=found)
                slot_targets.append(targets)
                for i in range(len(group)):
                    if not per_box or slot < len(kept[i]["scores"]):
                        maps_per_image[i].append(maps[i])
                        if i in self.engine.unoriented and not self.said_unoriented:
                            self.said_unoriented = True
                            ctx.note(f"{group[i][0].name}: the {self.method.value} map is oriented by the channel "
                                     "mean of the activations (no kept box, or the boxes' gradient-weighted map of "
                                     "the layer is flat or uncorrelated with the principal component)")
                slot += 1
            for i, (p, img, state) in enumerate(group):
                dets = detection.to_original(kept[i], state)
                side = render.panel_size(img.shape[0], img.shape[1], o.panel_size, cap=512)
                model_maps = maps_per_image[i]
                if any(not np.isfinite(m).all() for m in model_maps):
                    # a NaN map drawn is a grey picture that says nothing: the input fails, listed with the others
                    ctx.skip(p, f"the {self.method.value} map is not finite (NaN or inf) for its {len(dets)} "
                             "box(es): the detector's outputs or gradients are not finite there")
                    batch.advance()
                    continue
                if not len(dets) and self.cam_method is not Method.eigencam:
                    model_maps = []  # nothing to explain: the picture says so, and no all-zero map is written
                    ctx.warn(f"{p.name}: no box scores >= {o.score_thr}: no map (lower score_thr= to explain "
                             "weaker boxes)")
                elif any(float(np.max(m)) == float(np.min(m)) for m in model_maps):
                    ctx.warn(self._flat_warning(p.name, tensor, i, slot_targets, model_maps))
                raw_maps = []
                for slot, m in enumerate(model_maps):
                    full = transforms.to_original(m, state, img.shape[:2])
                    if o.norm_in_bbox:
                        full = render.normalize_in_boxes(full, dets.boxes[slot:slot + 1] if per_box else dets.boxes)
                    raw = np.array(full, np.float32)
                    raw.setflags(write=False)
                    raw_maps.append(raw)
                check_figure(img.shape[0], img.shape[1], max(1, len(raw_maps)), side, o.panel_size, ctx.max_pixels,
                             p.name)
                picture = Drawing(f"{stems[p]}_boxam_{self.method.value.replace('++', 'pp')}_{layer_tag}."
                                  f"{o.image_format.value}", functools.partial(_draw, img, raw_maps, dets, self, side),
                                  f"{p.name}: {len(dets)} boxes", dict(input=str(p), panel_size=side))
                raw_names = tuple(f"{stems[p]}_boxam_{f'box{slot}' if per_box else 'all'}.npy"
                                  for slot in range(len(raw_maps)))
                yield BoxamImage(str(p), frozen_array(dets.boxes, np.float32), frozen_array(dets.scores, np.float32),
                                 frozen_array(dets.labels, np.int64), tuple(raw_maps), None, raw_names, per_box, side, p,
                                 picture)
                batch.advance()

    def record(self, writer: OutputWriter, item: BoxamImage) -> None:
        from visctl import render

        self.sides.add(item.side)
        writer.manifest["params"]["panel_size"] = render.sizes_param(self.sides)
        item.write(writer, self.settings.save_raw)

    def merge_ranks(self, writer: OutputWriter) -> None:
        """Every rank's records (and panel sizes) merged, on every rank."""
        if self.session.world <= 1:
            return
        from visctl import distributed, render

        parts = distributed.merge_records(writer, self.mi.paths, self.settings.batch_size, sorted(self.sides))
        if any(parts):
            writer.manifest["params"]["panel_size"] = render.sizes_param({s for part in parts for s in part})

    def collect(self) -> BoxamResult:
        from visctl import render

        items = tuple(item.drawn() for item in self.items())
        params = dict(self.params)
        if items:
            params["panel_size"] = render.sizes_param({i.side for i in items})
        inputs = tuple({"path": i.input, "boxes": i.box_list()} for i in items)
        return BoxamResult(**self.gathered(params), inputs=inputs, images=items, save_raw=self.settings.save_raw)

    def _take_boxes(self, outputs: Any, *, kept: list[dict[str, Any]], targets: list[Any], sel: slice) -> None:
        """The CAM forward's detections: keep the best (into ``kept``), aim each image's target at its kept boxes
        (``sel``: all, or one slot with --per-box); with no box in the batch, stop before the backward."""
        from visctl import cams, detection

        kept[:] = keep_boxes(detection.detached(outputs), self.settings.score_thr, self.topk)
        device = self.session.device
        for t, k in zip(targets, kept):
            t.labels, t.bounding_boxes = k["labels"][sel].to(device), k["boxes"][sel].to(device)
        if self.cam_method is not Method.eigencam and not any(len(t.labels) for t in targets):
            raise cams.NoTargets  # nothing to explain: all-zero maps (as before: no CAM call without a box)

    def _flat_warning(self, name: str, tensor: Any, i: int, slot_targets: list[list], maps: list[np.ndarray]) -> str:
        """The warning for an image whose map (one of its maps with --per-box) is flat, with its true reason:
        with ``--max-shape``, the map is computed once more at the layer's own size; when that one is not flat,
        the cap's bilinear downsampling (which misses sparse activations and gradients) made it flat."""
        flat_slots = [s for s, m in enumerate(maps) if float(m.max()) == float(m.min())]
        what = f"the {self.method.value} map" + (f" of box {flat_slots[0]}" if self.settings.per_box else "")
        cap = self.engine.max_shape
        if cap is not None:
            self.engine.max_shape = None
            try:
                full = [self.engine(tensor, slot_targets[s])[0][i] for s in flat_slots[:1]]
            finally:
                self.engine.max_shape = cap
            if float(full[0].max()) != float(full[0].min()):
                return (f"{name}: {what} is flat (one value everywhere) because of max_shape=({cap[0]}, {cap[1]}): "
                        "at the layer's own size it is not flat; downsampling the layer's activations and gradients "
                        "to that size lost them; use a larger max_shape=, or none")
        return (f"{name}: {what} is flat (one value everywhere): nothing in this layer's activations raises these "
                "boxes' scores (zero gradients there, or a weighted map that is nowhere positive); try another "
                "target_layers= or method")


def check_figure(h: int, w: int, panels: int, side: int, panel_size: int | None, max_pixels: int | None,
                 name: str) -> None:
    """Refuse a boxam figure (``panels`` panels of an (h, w) image fitted to ``side``) over the pixel budget."""
    from visctl import render

    ph, pw = render.fit_size(h, w, side)
    fh, fw = render.grid_size(panels, ph, pw, min(panels, 4))
    said = (f"panel_size={panel_size}" if panel_size else "the image's size") + (
        f" with {panels} panels (per_box=True, topk=)" if panels > 1 else "")
    render.check_figure(fw, fh, max_pixels, said, f"the figure of {name}",
                        hint="give a smaller panel_size= (or fewer boxes with per_box=True: topk=, score_thr=)")


def _draw(img: np.ndarray, maps: list[np.ndarray], dets: Any, run: BoxamRun, side: int) -> np.ndarray:
    """One image's figure: a panel per map (its overlay, boxes and caption), or the image when no box
    scored; in the writer's threads for the CLI."""
    from visctl import render
    from visctl.classes import label

    o, per_box, classes = run.settings, run.settings.per_box, run.classes
    panels = []
    for slot, full in enumerate(maps):
        shown = render.overlay(img, full, o.alpha, o.colormap)
        if not o.no_boxes:
            sel = slice(slot, slot + 1) if per_box else slice(None)
            shown = render.draw_boxes(shown, dets.boxes[sel], dets.labels[sel], dets.scores[sel], classes)
        text = (f"box {slot}: {label(classes, dets.labels[slot])} {dets.scores[slot]:.2f}" if per_box
                else f"{len(dets)} box(es) | {run.method.value} | {', '.join(run.names)}")
        panels.append(render.caption(render.fit(shown, side), text))
    if not panels:
        panels = [render.caption(render.fit(img, side), f"no box scores >= {o.score_thr}")]
    return render.grid(panels, cols=min(len(panels), 4))


@arguments.typed("boxam")
def boxam(images: Any, model: Any, checkpoint: str | None = None, settings: BoxamOptions | None = None, *,
          options: RunOptions | None = None, session: Session | None = None, **fields: Any) -> BoxamResult:
    """Box-level activation maps of a detector on ``images``: which pixels made each kept detection.

    Args:
        images: A path, folder or glob, a numpy RGB image, a PIL image, or a list of them.
        model: A detector config path, a torchvision detector name (``fasterrcnn_resnet50_fpn``), a config dict
            or an ``nn.Module`` detector (mmdet/mmyolo configs: see :mod:`visctl.mmdet_adapter`).
        checkpoint: The weights to load, if any.
        settings: ``visctl boxam``'s options, a :class:`visctl.BoxamOptions` (its defaults when None).
            ``method`` defaults to layercam, or gradcam as mmyolo's boxam_vis_demo on its detectors; ``topk``
            to 10, or -1 (every box over ``score_thr``) on an OpenMMLab detector, as that demo; ``save_raw``:
            ``result.save(dir)`` writes the maps as ``.npy`` too; ``image_format`` png, jpg or webp names the
            figures.
        options: The run's shared options (device, threads, ...), a :class:`visctl.RunOptions`.
        session: A :class:`visctl.Session` to run in (its notes and failures), instead of one made of
            ``options``.
        **fields: Fields of :class:`visctl.BoxamOptions` replacing those of ``settings`` (``per_box=True``).

    Returns:
        A :class:`BoxamResult`: one :class:`BoxamImage` per image.
    """
    from visctl.images import as_images

    arguments.model_spec(model)
    o = BoxamOptions.build(settings, **fields)
    check_options(o)  # before the images are read
    session = session or Session(options)
    since = mark(session)
    run = plan(session, as_images(images, note=session.note), model, checkpoint, o)
    run.since = since  # the images found are this call's too
    return run.collect()
