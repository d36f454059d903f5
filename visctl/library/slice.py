"""``visctl.slice``: sliced inference over huge images -- tiles in batches, merged boxes in original
pixels, COCO-style results, and the pictures ``visctl slice`` draws (boxes; with ``debug``, the tile grid).

The one code path of ``visctl slice``: :func:`plan` settles the run on a loaded detector, its
:class:`SliceRun` yields one :class:`SliceImage` per image (which writes itself as the CLI does) and writes
``results.json`` at the end; :func:`slice` collects them into a frozen :class:`SliceResult`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.library._run import Run, Since, mark
from visctl.options import SliceOptions
from visctl.results import Figure, Result, frozen_array
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
    source: Any = field(default=None, repr=False, compare=False)  # the input as read: a Path, or an ArrayImage

    @property
    def path(self) -> str:
        """The input it came from, as the manifest names it: a file's path, or the name given to pixels."""
        return self.input

    def write(self, writer: OutputWriter, add_input: bool = True) -> None:
        """The figures and the input's entry, as ``visctl slice`` writes them."""
        for fig in self.images:
            writer.save_image(fig.name, fig.image, caption=fig.caption, **fig.info)
        if add_input:
            writer.add_input(self.source if self.source is not None else self.input, **self.input_info())

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


def plan(session: Session, mi: ModelInputs, settings: SliceOptions) -> SliceRun:
    """Settle the run's defaults on the loaded detector (``deploy``: switch re-parameterisable blocks).

    ``merge_iou_thr`` / ``merge_metric`` default to mmyolo's ``large_image_demo.py`` (0.25, plain IoU: its class-aware
    ``batched_nms``) on an OpenMMLab detector, whose users run that demo's lines, and to 0.5 over the smaller box
    (``ios``: a box cut by a tile border merges with the whole one) elsewhere.
    """
    from visctl import building, config
    from visctl.library import _common

    o, since = settings, mark(session)
    seed_defaults = bool(getattr(mi.model, "is_openmmlab_detector", False))  # large_image_demo.py's users
    iou = o.merge_iou_thr if o.merge_iou_thr is not None else 0.25 if seed_defaults else 0.5
    metric = o.merge_metric.value if o.merge_metric is not None else "iou" if seed_defaults else "ios"
    notes = []
    if o.deploy:
        switched = building.switch_to_deploy(mi.model)
        if switched:
            notes.append(f"deploy=True: switch_to_deploy() on {len(switched)} module(s): {', '.join(switched[:5])}"
                         + (" ..." if len(switched) > 5 else ""))
            session.log(notes[-1])
        else:
            notes.append("deploy=True does not apply: no module of this model has switch_to_deploy() (only "
                         "re-parameterisable blocks such as RepVGG's do)")
            session.warn(notes[-1])
    if o.save_patch and not o.debug:
        notes.append("save_patch=True does not apply without debug=True (as mmyolo's large_image_demo): add debug=True")
        session.warn(notes[-1])
    patch = o.patch_size or int(config.tool_option(mi.cfg, "patch_size", 640))
    classes = _common.class_names(session, mi)
    params = dict(inputs=[str(p) for p in mi.paths], config=mi.cfg_spec, checkpoint=mi.checkpoint,
                  patch_size=patch, patch_overlap_ratio=o.patch_overlap_ratio, merge=o.merge.value,
                  merge_iou_thr=iou, merge_metric=metric, score_thr=o.score_thr, full_image=o.full_image,
                  batch_size=o.batch_size, device=session.device, deploy=o.deploy, save_patch=o.save_patch and o.debug)
    if session.max_pixels is not None:
        params["max_pixels"] = session.max_pixels
    return SliceRun(session, mi, o, classes, params, notes, patch, iou, metric, since)


class SliceRun(Run):
    """A slice run on a loaded detector: each image read, tiled, detected, merged and drawn in turn
    (:meth:`items`); ``results.json`` and the timings once every image is done (:meth:`close`)."""

    command: ClassVar[str] = "slice"

    def __init__(self, session: Session, mi: ModelInputs, settings: SliceOptions, classes: list[str] | None,
                 params: dict[str, Any], notes: list[str], patch: int, merge_iou_thr: float, merge_metric: str,
                 since: Since = (0, 0, 0.0)) -> None:
        self.session, self.mi, self.settings, self.classes, self.params = session, mi, settings, classes, params
        self.notes, self.since = tuple(notes), since
        self.patch, self.merge_iou_thr, self.merge_metric = patch, merge_iou_thr, merge_metric
        self.tiles = 0  # tiles run so far
        self.results: list[dict[str, Any]] = []  # the COCO-style records of the images run so far
        self._started: float | None = None
        self._done = False  # every image run (and every rank's merged): results.json is the whole run's

    def items(self) -> Iterator[SliceImage]:
        """Read, tile, detect, merge and draw each image in turn; an unreadable image is skipped."""
        import time

        self._started = time.time()
        for item in _iter_images(self):
            self.results.extend(item.records)
            yield item

    def merge_ranks(self, writer: OutputWriter) -> None:
        """Under torchrun: every rank's records, results and tile counts, one image per turn."""
        if self.session.world > 1:
            from visctl import distributed

            paths = self.mi.paths
            parts = distributed.merge_records(writer, paths, 1, dict(
                results=[(r["file_name"], r) for r in self.results], tiles=self.tiles))
            self.results = distributed.in_run_order([part["results"] for part in parts], paths, 1)
            self.tiles = sum(part["tiles"] for part in parts)
        self._done = True

    def close(self, writer: OutputWriter) -> None:
        """``results.json`` and the timings, once the run is whole (an interrupted run writes neither)."""
        import time

        if not self._done or self._started is None:
            return
        elapsed = time.time() - self._started
        write_results(writer, self.results)
        writer.manifest["timings"]["slice_s"] = round(elapsed, 3)
        writer.manifest["timings"]["tiles_per_s"] = round(self.tiles / elapsed, 2) if elapsed else None

    def collect(self) -> SliceResult:
        items = tuple(self.items())
        return SliceResult(**self.gathered(), inputs=tuple(dict(path=i.input, **i.input_info()) for i in items),
                           images=items, results=tuple(r for i in items for r in i.records))


def detect_tiles(run: SliceRun, img: np.ndarray, grid: list[tuple[int, int, int, int]], label: str,
                 ) -> tuple[list[Any], dict[tuple, Any]]:
    """Every tile's detections in the original image's pixels (and by tile), a batch of tiles at a time."""
    from visctl import detection, mmdet_adapter, transforms

    ctx, mi = run.session, run.mi
    parts = []
    per_tile: dict[tuple, Any] = {}
    with ctx.progress(len(grid), label) as advance:
        for chunk in detection.tile_batches(img, grid, run.settings.batch_size):
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


def detect_whole(run: SliceRun, img: np.ndarray) -> Any:
    """``--full-image``: the image shrunk to one tile's size, its boxes back in the original's pixels."""
    import cv2

    from visctl import detection, mmdet_adapter, transforms

    mi = run.mi
    h, w = img.shape[:2]
    f = run.patch / max(h, w)
    small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    st = transforms.run_pipeline(small, mi.steps, max_pixels=run.session.max_pixels)
    with mmdet_adapter.bound(mi.model, [st]):
        out = detection.detect(mi.model, transforms.to_tensor([st], mi.mean, mi.std, mi.rgb).to(
            run.session.device))[0]
    whole = detection.to_original(out, st)
    whole.boxes = whole.boxes / f  # the small image's pixels -> the original's
    return whole


def draw(run: SliceRun, p: Any, stem: str, img: np.ndarray, grid: list[tuple[int, int, int, int]], raw: Any,
         merged: Any, per_tile: dict[tuple, Any]) -> list[Figure]:
    """The figures of one image: the merged boxes on the image shrunk to ``max_side``; with ``debug`` the tile
    grid and the unmerged boxes, and with ``save_patch`` each tile with its own boxes."""
    import cv2

    from visctl import render

    o, classes = run.settings, run.classes
    h, w = img.shape[:2]
    scale = min(1.0, o.max_side / max(h, w))
    view = img if scale == 1.0 else cv2.resize(img, (round(w * scale), round(h * scale)),
                                               interpolation=cv2.INTER_AREA)
    annotated = render.draw_boxes(view, merged.boxes * scale, merged.labels, merged.scores, classes)
    figs = [Figure(f"{stem}_slice.png", annotated, f"{p.name}: {len(merged)} boxes ({len(raw)} before "
                   f"{o.merge.value}, {len(grid)} tiles)", dict(input=str(p)))]
    if o.debug:
        dbg = render.draw_boxes(view, raw.boxes * scale, raw.labels, None, classes, thickness=1)
        for x0, y0, x1, y1 in grid:
            cv2.rectangle(dbg, (round(x0 * scale), round(y0 * scale)), (round(x1 * scale) - 1,
                          round(y1 * scale) - 1), (255, 255, 255), 1)
        figs.append(Figure(f"{stem}_slice_debug.png", dbg, f"{p.name}: tile grid and {len(raw)} unmerged boxes",
                           dict(input=str(p))))
        if o.save_patch:  # mmyolo: <out>/<stem>_patch/<name>_slice_<i>_result.jpg, each tile with its boxes
            for i, (x0, y0, x1, y1) in enumerate(grid):
                dets = per_tile[(x0, y0, x1, y1)]
                dets = dets.keep(dets.scores >= o.score_thr)
                shown = render.draw_boxes(img[y0:y1, x0:x1], dets.boxes - [x0, y0, x0, y0], dets.labels,
                                          dets.scores, classes)
                figs.append(Figure(f"{stem}_patch/{stem}_slice_{i}_result.png", shown,
                                   f"{p.name}: tile {i} ({x0}, {y0})-({x1}, {y1}), {len(dets)} boxes",
                                   dict(input=str(p), tile=[x0, y0, x1, y1])))
    return figs


def _iter_images(run: SliceRun) -> Iterator[SliceImage]:
    """:meth:`SliceRun.items`: each image read, tiled, detected, merged and drawn; an unreadable one skipped."""
    import numpy as np

    from visctl import detection, images
    from visctl.errors import VisctlError
    from visctl.output.writer import input_stems

    ctx, mi, o = run.session, run.mi, run.settings
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
        grid = detection.tiles(h, w, run.patch, o.patch_overlap_ratio)
        run.tiles += len(grid)
        parts, per_tile = detect_tiles(run, img, grid, f"{p.name}: {len(grid)} tiles")
        if o.full_image:
            parts.append(detect_whole(run, img))
        raw = detection.Detections.concat(parts)
        raw = raw.keep(raw.scores >= o.score_thr)
        merged = detection.merge(raw, o.merge, run.merge_iou_thr, run.merge_metric)
        records = detection.coco_results(merged, image_id, str(p), run.classes)
        figs = draw(run, p, stems[p], img, grid, raw, merged, per_tile)
        cells = tuple((int(x0), int(y0), int(x1), int(y1)) for x0, y0, x1, y1 in grid)
        yield SliceImage(str(p), frozen_array(merged.boxes, np.float32), frozen_array(merged.scores, np.float32),
                         frozen_array(merged.labels, np.int64), cells, len(raw), (h, w), tuple(records), tuple(figs), p)


@arguments.typed("slice")
def slice(images: Any, model: Any, checkpoint: str | None = None, settings: SliceOptions | None = None, *,
          options: RunOptions | None = None, session: Session | None = None, **fields: Any) -> SliceResult:
    """Detect objects in huge images tile by tile and merge the boxes (``visctl slice``).

    Args:
        images: a path (file, folder, glob), a numpy RGB image, a PIL image, or a list of them.
        model: a detector config path, a torchvision detector name, a config dict or an ``nn.Module`` detector.
        checkpoint: weights [default: the config's ``load_from``].
        settings: a :class:`visctl.SliceOptions`; ``fields``, its fields as keywords, replace its values
            (``patch_size`` [default: the config's ``visctl.patch_size``, else 640] and ``patch_overlap_ratio``
            make the tile grid; ``merge`` (nms, nmm, wbf) with ``merge_iou_thr`` / ``merge_metric`` joins the
            tiles' boxes; ``debug`` adds the tile-grid figure, and ``save_patch`` each tile's).
        options: the shared options (device, threads, ...).
        session: a :class:`visctl.Session` to run in (its notes and failures gather the run's).

    Returns:
        :class:`SliceResult`: boxes, scores and labels in the original image's pixels, and the COCO-style records.
    """
    from visctl.images import as_images
    from visctl.library import _common

    o = SliceOptions.build(settings, **fields)
    arguments.model_spec(model)
    session = session or Session(options)
    since = mark(session)
    mi = _common.open_model(session, model, checkpoint, as_images(images, note=session.note))
    run = plan(session, mi, o)
    run.since = since  # the images found and the model's loading are this call's too
    return run.collect()
