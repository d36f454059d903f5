"""``visctl.slice``: sliced inference over huge images -- tiles in batches, merged boxes in original
pixels, COCO-style results, and the pictures ``visctl slice`` draws (boxes; with ``debug``, the tile grid).

The one code path of ``visctl slice``: :func:`prepare` loads the detector, :func:`iter_slice` yields one
:class:`SliceImage` per image, :meth:`SliceImage.write` writes it as the CLI does; :func:`slice_detect`
collects them into a frozen :class:`SliceResult`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.choices import Merge
from visctl.results import Figure, Result
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    import numpy as np

    from visctl.library._common import ModelInputs
    from visctl.output.writer import OutputWriter


@dataclass(frozen=True)
class SliceImage:
    """One image: its merged boxes (x0 y0 x1 y1, original pixels), scores and labels; the tile grid; how many
    boxes there were before the merge; its COCO-style records; its figures (boxes; debug: grid, tiles)."""

    input: str
    boxes: np.ndarray = field(repr=False)
    scores: np.ndarray
    labels: np.ndarray
    tiles: tuple[tuple[int, int, int, int], ...] = field(repr=False)
    boxes_before_merge: int
    size: tuple[int, int]  # (h, w)
    records: tuple[dict[str, Any], ...] = field(repr=False)
    images: tuple[Figure, ...] = field(repr=False)
    path: Any = field(default=None, repr=False, compare=False)

    def write(self, writer: OutputWriter, add_input: bool = True) -> None:
        """The figures and the input's entry, as ``visctl slice`` writes them."""
        for fig in self.images:
            writer.save_image(fig.name, fig.image, caption=fig.caption, **fig.info)
        if add_input:
            writer.add_input(self.path if self.path is not None else self.input, **self.input_info())

    def input_info(self) -> dict[str, Any]:
        return dict(size=list(self.size), tiles=len(self.tiles), boxes_before_merge=self.boxes_before_merge,
                    boxes=len(self.boxes))


@dataclass(frozen=True)
class SliceResult(Result):
    """What :func:`visctl.slice` returns: one :class:`SliceImage` per image, and every box as a
    COCO-style record (``results``: what ``results.json`` holds)."""

    command: ClassVar[str] = "slice"

    images: tuple[SliceImage, ...] = ()
    results: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    @property
    def items(self) -> tuple[SliceImage, ...]:
        """The images (:attr:`images`), as the result's sequence."""
        return self.images

    def figures(self) -> list[Figure]:
        return [fig for img in self.images for fig in img.images]

    def write(self, writer: OutputWriter) -> None:
        for img in self.images:
            img.write(writer, add_input=False)  # save() lists self.inputs
        write_results(writer, list(self.results))


def write_results(writer: OutputWriter, results: list[dict[str, Any]]) -> None:
    """``results.json``: the COCO-style records of every image."""
    from visctl.output.manifest import to_json

    target = writer.write_bytes("results.json", to_json(results, indent=1).encode())
    writer.add_output(target, "table", caption=f"COCO-style results, {len(results)} boxes")


@dataclass
class Plan:
    """A prepared slice run: the detector, the classes, the options, the manifest's params and notes."""

    session: Session
    mi: ModelInputs
    classes: list[str] | None
    params: dict[str, Any]
    notes: list[str]
    opts: dict[str, Any]
    tiles: int = 0  # tiles run so far


def check_options(*, merge: Merge, merge_metric: str | None, merge_nms_type: str | None = None, tta: bool = False
                  ) -> None:
    """Refuse the options visctl slice does not support, before any work."""
    from visctl.errors import VisctlError

    if merge_metric is not None and merge_metric not in ("iou", "ios"):
        raise VisctlError(f"--merge-metric {merge_metric!r}", hint="use iou or ios")
    if tta:
        raise VisctlError("--tta (test-time augmentation) is not supported by visctl slice",
                          hint="leave it out; --full-image adds a whole-image pass, and --merge wbf fuses "
                          "overlapping boxes instead of dropping them")
    if merge_nms_type is not None:
        if merge_nms_type.lower() != "nms":
            raise VisctlError(f"--merge-nms-type {merge_nms_type}: only nms is supported",
                              hint="use --merge-nms-type nms, or --merge nms|nmm|wbf (soft_nms and the "
                              "rotated-box types of mmcv are not)")
        if merge is not Merge.nms:
            raise VisctlError(f"--merge-nms-type nms and --merge {merge.value} disagree", hint="give one of them")


def prepare(images: Any, model: Any, checkpoint: str | None = None, *, patch_size: int | None = None,
            patch_overlap_ratio: float = 0.25, merge: Merge | str = Merge.nms, merge_iou_thr: float | None = None,
            merge_metric: str | None = None, score_thr: float = 0.3, full_image: bool = False, max_side: int = 4096,
            batch_size: int = 8, debug: bool = False, deploy: bool = False, save_patch: bool = False,
            options: RunOptions | None = None, session: Session | None = None) -> Plan:
    """Check the options and load the detector (``deploy``: switch re-parameterisable blocks).

    ``merge_iou_thr`` / ``merge_metric`` default to mmyolo's ``large_image_demo.py`` (0.25, plain IoU: its class-aware
    ``batched_nms``) on an OpenMMLab detector, whose users run that demo's lines, and to 0.5 over the smaller box
    (``ios``: a box cut by a tile border merges with the whole one) elsewhere.
    """
    from visctl import arguments, building, config
    from visctl.images import as_images
    from visctl.library import _common

    arguments.model_spec(model)
    arguments.check("slice", patch_size=patch_size, patch_overlap_ratio=patch_overlap_ratio,
                    merge_iou_thr=merge_iou_thr, score_thr=score_thr, max_side=max_side, batch_size=batch_size)
    session = session or Session(options)
    merge = arguments.choice(Merge, merge, "merge")
    check_options(merge=merge, merge_metric=merge_metric)
    mi = _common.open_model(session, model, checkpoint, as_images(images, note=session.note))
    seed_defaults = bool(getattr(mi.model, "is_openmmlab_detector", False))  # large_image_demo.py's users
    if merge_iou_thr is None:
        merge_iou_thr = 0.25 if seed_defaults else 0.5
    if merge_metric is None:
        merge_metric = "iou" if seed_defaults else "ios"
    notes = []
    if deploy:
        switched = building.switch_to_deploy(mi.model)
        if switched:
            notes.append(f"--deploy: switch_to_deploy() on {len(switched)} module(s): {', '.join(switched[:5])}"
                         + (" ..." if len(switched) > 5 else ""))
            session.log(notes[-1])
        else:
            notes.append("--deploy does not apply: no module of this model has switch_to_deploy() (only "
                         "re-parameterisable blocks such as RepVGG's do)")
            session.warn(notes[-1])
    if save_patch and not debug:
        notes.append("--save-patch does not apply without --debug (as mmyolo's large_image_demo): add --debug")
        session.warn(notes[-1])
    patch = patch_size or int(config.tool_option(mi.cfg, "patch_size", 640))
    classes = _common.class_names(session, mi)
    params = dict(inputs=[str(p) for p in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint,
                  patch_size=patch, patch_overlap_ratio=patch_overlap_ratio, merge=merge.value,
                  merge_iou_thr=merge_iou_thr, merge_metric=merge_metric, score_thr=score_thr, full_image=full_image,
                  batch_size=batch_size, device=session.device, deploy=deploy, save_patch=save_patch and debug)
    if session.max_pixels is not None:
        params["max_pixels"] = session.max_pixels
    opts = dict(patch=patch, overlap=patch_overlap_ratio, merge=merge, iou=merge_iou_thr, metric=merge_metric,
                score_thr=score_thr, full_image=full_image, max_side=max_side, batch_size=batch_size, debug=debug,
                save_patch=save_patch)
    return Plan(session, mi, classes, params, notes, opts)


def detect_tiles(plan: Plan, img: np.ndarray, grid: list[tuple[int, int, int, int]], label: str,
                 ) -> tuple[list[Any], dict[tuple, Any]]:
    """Every tile's detections in the original image's pixels (and by tile), a batch of tiles at a time."""
    from visctl import detection, mmdet_adapter, transforms

    ctx, mi = plan.session, plan.mi
    parts = []
    per_tile: dict[tuple, Any] = {}
    with ctx.progress(len(grid), label) as advance:
        for chunk in detection.tile_batches(img, grid, plan.opts["batch_size"]):
            states = [(box, transforms.run_pipeline(tile, mi.steps, max_pixels=ctx.max_pixels))
                      for box, tile in chunk]
            by_shape: dict[tuple, list] = {}
            for box, st in states:
                by_shape.setdefault(st.img.shape, []).append((box, st))
            for members in by_shape.values():
                batch = transforms.to_tensor([st for _, st in members], mi.mean, mi.std, mi.rgb).to(ctx.device)
                with mmdet_adapter.bound(mi.model, [st for _, st in members]):
                    found = detection.detect(mi.model, batch)
                for (box, st), out in zip(members, found):
                    parts.append(detection.to_original(out, st, offset=(box[0], box[1])))
                    per_tile[box] = parts[-1]
            advance(len(chunk))
    return parts, per_tile


def detect_whole(plan: Plan, img: np.ndarray) -> Any:
    """``--full-image``: the image shrunk to one tile's size, its boxes back in the original's pixels."""
    import cv2

    from visctl import detection, mmdet_adapter, transforms

    mi = plan.mi
    h, w = img.shape[:2]
    f = plan.opts["patch"] / max(h, w)
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    st = transforms.run_pipeline(small, mi.steps, max_pixels=plan.session.max_pixels)
    with mmdet_adapter.bound(mi.model, [st]):
        out = detection.detect(mi.model, transforms.to_tensor([st], mi.mean, mi.std, mi.rgb).to(
            plan.session.device))[0]
    whole = detection.to_original(out, st)
    whole.boxes = whole.boxes / f  # the small image's pixels -> the original's
    return whole


def draw(plan: Plan, p: Any, stem: str, img: np.ndarray, grid: list[tuple[int, int, int, int]], raw: Any,
         merged: Any, per_tile: dict[tuple, Any]) -> list[Figure]:
    """The figures of one image: the merged boxes on the image shrunk to ``max_side``; with ``debug`` the tile
    grid and the unmerged boxes, and with ``save_patch`` each tile with its own boxes."""
    import cv2

    from visctl import render

    o, classes = plan.opts, plan.classes
    h, w = img.shape[:2]
    scale = min(1.0, o["max_side"] / max(h, w))
    view = img if scale == 1.0 else cv2.resize(img, (round(w * scale), round(h * scale)),
                                               interpolation=cv2.INTER_AREA)
    annotated = render.draw_boxes(view, merged.boxes * scale, merged.labels, merged.scores, classes)
    figs = [Figure(f"{stem}_slice.png", annotated, f"{p.name}: {len(merged)} boxes ({len(raw)} before "
                   f"{o['merge'].value}, {len(grid)} tiles)", dict(input=str(p)))]
    if o["debug"]:
        dbg = render.draw_boxes(view, raw.boxes * scale, raw.labels, None, classes, thickness=1)
        for x0, y0, x1, y1 in grid:
            cv2.rectangle(dbg, (round(x0 * scale), round(y0 * scale)), (round(x1 * scale) - 1,
                          round(y1 * scale) - 1), (255, 255, 255), 1)
        figs.append(Figure(f"{stem}_slice_debug.png", dbg, f"{p.name}: tile grid and {len(raw)} unmerged boxes",
                           dict(input=str(p))))
        if o["save_patch"]:  # mmyolo: <out>/<stem>_patch/<name>_slice_<i>_result.jpg, each tile with its boxes
            for i, (x0, y0, x1, y1) in enumerate(grid):
                dets = per_tile[(x0, y0, x1, y1)]
                dets = dets.keep(dets.scores >= o["score_thr"])
                shown = render.draw_boxes(img[y0:y1, x0:x1], dets.boxes - [x0, y0, x0, y0], dets.labels,
                                          dets.scores, classes)
                figs.append(Figure(f"{stem}_patch/{stem}_slice_{i}_result.png", shown,
                                   f"{p.name}: tile {i} ({x0}, {y0})-({x1}, {y1}), {len(dets)} boxes",
                                   dict(input=str(p), tile=[x0, y0, x1, y1])))
    return figs


def iter_slice(plan: Plan) -> Iterator[SliceImage]:
    """Read, tile, detect, merge and draw each image in turn; an unreadable image is skipped."""
    import numpy as np

    from visctl import detection, images
    from visctl.errors import VisctlError
    from visctl.output.writer import input_stems

    ctx, mi, o = plan.session, plan.mi, plan.opts
    stems = input_stems(mi.paths)
    for image_id, p in enumerate(mi.paths):
        if ctx.world > 1 and image_id % ctx.world != ctx.rank:  # under torchrun: one image per turn per rank
            continue
        try:
            img = images.read_image(p, ctx.max_pixels)
        except VisctlError as err:
            ctx.skip(p, err.message)
            continue
        h, w = img.shape[:2]
        grid = detection.tiles(h, w, o["patch"], o["overlap"])
        plan.tiles += len(grid)
        parts, per_tile = detect_tiles(plan, img, grid, f"{p.name}: {len(grid)} tiles")
        if o["full_image"]:
            parts.append(detect_whole(plan, img))
        raw = detection.Detections.concat(parts)
        raw = raw.keep(raw.scores >= o["score_thr"])
        merged = detection.merge(raw, o["merge"], o["iou"], o["metric"])
        records = detection.coco_results(merged, image_id, str(p), plan.classes)
        figs = draw(plan, p, stems[p], img, grid, raw, merged, per_tile)
        cells = tuple((int(x0), int(y0), int(x1), int(y1)) for x0, y0, x1, y1 in grid)
        yield SliceImage(str(p), _frozen(merged.boxes, np.float32), _frozen(merged.scores, np.float32),
                         _frozen(merged.labels, np.int64), cells, len(raw), (h, w), tuple(records), tuple(figs), p)


def _frozen(values: Any, dtype: Any) -> np.ndarray:
    import numpy as np

    arr = np.array(values, dtype=dtype)
    arr.setflags(write=False)
    return arr


@arguments.typed("slice")
def slice_detect(images: Any, model: Any, checkpoint: str | None = None, *, patch_size: int | None = None,
                 patch_overlap_ratio: float = 0.25, merge: Merge | str = Merge.nms, merge_iou_thr: float | None = None,
                 merge_metric: str | None = None, score_thr: float = 0.3, full_image: bool = False, max_side: int = 4096,
                 batch_size: int = 8, debug: bool = False, deploy: bool = False, save_patch: bool = False,
                 options: RunOptions | None = None, session: Session | None = None) -> SliceResult:
    """Detect objects in huge images tile by tile and merge the boxes (``visctl slice``).

    ``images``: a path, folder or glob, a numpy RGB image, a PIL image, or a list of them. ``model``: a
    detector config path, a torchvision detector name, a config dict or an ``nn.Module`` detector.
    ``patch_size`` (default: the config's ``visctl.patch_size``, else 640) and ``patch_overlap_ratio`` make the
    tile grid; ``merge`` (nms, nmm, wbf) with ``merge_iou_thr`` / ``merge_metric`` joins the tiles' boxes;
    ``debug`` adds the tile-grid figure (and ``save_patch`` each tile's). Returns a :class:`SliceResult`:
    boxes, scores and labels in the original image's pixels.
    """
    plan = prepare(images, model, checkpoint, patch_size=patch_size, patch_overlap_ratio=patch_overlap_ratio,
                   merge=merge, merge_iou_thr=merge_iou_thr, merge_metric=merge_metric, score_thr=score_thr,
                   full_image=full_image, max_side=max_side, batch_size=batch_size, debug=debug, deploy=deploy,
                   save_patch=save_patch, options=options, session=session)
    items = tuple(iter_slice(plan))
    ctx = plan.session
    return SliceResult(params=plan.params, inputs=tuple(dict(path=i.input, **i.input_info()) for i in items),
                       failures=tuple((f.path, f.error) for f in getattr(ctx, "failures", [])),
                       notes=tuple(ctx.notes) + tuple(plan.notes), images=items,
                       results=tuple(r for i in items for r in i.records))


def write_run(plan: Plan, writer: OutputWriter) -> None:
    """Detect and write every image as ``visctl slice`` does, then ``results.json`` and the timings; under
    torchrun every rank's records, results and tile counts are merged first (one image per turn)."""
    import time

    for note in plan.notes:
        writer.note(note)
    results: list[dict] = []
    started = time.time()
    for item in iter_slice(plan):
        item.write(writer)
        results.extend(item.records)
    if plan.session.world > 1:  # under torchrun: every rank's records, results and tiles, one image per turn
        from visctl import distributed

        parts = distributed.merge_records(writer, plan.mi.paths, 1,
                                          dict(results=[(r["file_name"], r) for r in results], tiles=plan.tiles))
        results = distributed.in_run_order([part["results"] for part in parts], plan.mi.paths, 1)
        plan.tiles = sum(part["tiles"] for part in parts)
    elapsed = time.time() - started
    if not plan.session.rank:  # the whole run's results, once: a rank's own copy would be a file no manifest lists
        write_results(writer, results)
    writer.manifest["timings"]["slice_s"] = round(elapsed, 3)
    writer.manifest["timings"]["tiles_per_s"] = round(plan.tiles / elapsed, 2) if elapsed else None
