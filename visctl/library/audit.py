"""``visctl.audit``: where a classifier looks over a whole labelled dataset, per class and per image.

For every image of the config's test (else val) dataset, or of a folder of class folders (``data``), the CAM of
its true class and, when the prediction is wrong, of the predicted class, through cam's batch loop
(:func:`visctl.library._common.batches`: read-ahead threads, whole batches, torchrun shards) and cam's engine
(:class:`visctl.cams.CamEngine`); each map is carried back to the original pixels and measured
(:mod:`visctl.audits`): against the object's boxes or mask where annotations exist (pointing game, energy,
top-region IoU), and always by the share of its energy in the border and its entropy (and, with
``agree_with``, by its agreement with a second method). :class:`AuditResult` holds one row per image, the
per-class summary and the worst images' thumbnails; ``result.save(folder)`` writes what ``visctl audit``
writes: ``audit.csv``, ``report.html``, the worst images' thumbnails and the summary in ``manifest.json``.

:func:`plan` opens a run (:class:`AuditRun`, the steps of :class:`visctl.library._run.Run`). The command streams:
each row goes to the CSV as it is made, the summary is running sums, and only the thumbnails of the worst
``worst`` images are kept, so memory does not grow with the number of images.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.library._common import ModelInputs, batches, open_model
from visctl.library._run import Run, Since, mark
from visctl.options import AuditOptions
from visctl.results import Figure, Result
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    from visctl.audits import Annotations, Kept
    from visctl.output.writer import OutputWriter

CSV_NAME = "audit.csv"
COMPARE_CSV = "audit_compare.csv"
REPORT = "report.html"
#: the measures a compare row carries for both checkpoints
COMPARED = ("correct", "pointing", "energy", "iou", "border", "entropy")


@dataclass(frozen=True)
class AuditItem:
    """One audited image: ``path`` and its row of the CSV (``item["pointing"]``, ``item.row``)."""

    path: str
    row: dict[str, Any] = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.row[key]


@dataclass(frozen=True)
class AuditResult(Result):
    """What :func:`audit` found: ``rows`` (one dict per image, the CSV's columns), ``summary`` (the manifest's
    ``audit``: overall and per-class means, counts, thresholds), the worst images and, with ``compare``, one
    row per image for both checkpoints and the images that moved the most."""

    command: ClassVar[str] = "audit"

    rows: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    summary: dict[str, Any] = field(default_factory=dict, repr=False)
    worst: tuple[Kept, ...] = field(default=(), repr=False)
    compare_rows: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    moved: tuple[Kept, ...] = field(default=(), repr=False)

    @functools.cached_property
    def items(self) -> tuple[AuditItem, ...]:  # type: ignore[override]
        """One :class:`AuditItem` per audited image, in the run's order."""
        return tuple(AuditItem(str(r["path"]), r) for r in self.rows)

    def figures(self) -> list[Figure]:
        """The worst images' thumbnails (and the ones that moved most), as the CLI writes them."""
        return thumbnails(self.worst, self.moved)

    @property
    def overall(self) -> Mapping[str, Any]:
        """The run's means and counts (accuracy, pointing, energy, ...), read-only."""
        from types import MappingProxyType

        overall = self.summary.get("overall", {})
        return overall if isinstance(overall, MappingProxyType) else MappingProxyType(dict(overall))

    @property
    def failed(self) -> tuple[str, ...]:
        """The ``fail_under`` thresholds the run fell under (empty: it passed)."""
        return tuple(self.summary.get("failed", ()))

    def write(self, writer: OutputWriter) -> None:
        from visctl import audits as A

        writer.write_output(CSV_NAME, (A.csv_header() + "".join(A.csv_line(r) for r in self.rows)).encode(),
                            "table", caption="one row per image: every measure")
        if self.compare_rows:
            writer.write_output(COMPARE_CSV, (compare_header() + "".join(compare_line(r) for r in self.compare_rows))
                                .encode(), "table", caption="both checkpoints per image, and what moved")
        write_report(writer, self.summary, list(self.worst), list(self.moved))


@arguments.typed("audit")
def audit(model: Any, checkpoint: str | Path | None = None, settings: AuditOptions | None = None, *,
          options: RunOptions | None = None, session: Session | None = None, **fields: Any) -> AuditResult:
    """Audit where ``model`` looks over a labelled dataset: per image, class and run.

    ``model``: a config (file, dict) or a model name; its ``test_dataloader`` (else ``val_dataloader``)
    dataset gives the labelled images, or ``data``, a folder of class folders named by the config's classes.
    ``settings``: the options (:class:`visctl.options.AuditOptions`, ``visctl audit``'s), or the same fields as
    keywords: ``annotations`` (a COCO instances .json or VOC .xml file(s) with the objects' boxes) or ``region``
    (a folder of masks named like the images); ``method`` (default gradcam, the gradient method ranked first by
    ``visctl cam --score`` on the demo classifier) makes the maps, ``agree_with`` a second method to compare them
    with; ``compare``: a second checkpoint of the same config, audited on the same batches; ``fail_under``:
    ``{"pointing": 0.8}`` (or ``"pointing=0.8"``): ``result.failed`` lists what fell under.
    Nothing is written: ``result.save(folder)`` writes what the CLI writes.
    """
    o = AuditOptions.build(settings, **fields)
    return plan(session or Session(options), model, checkpoint, o).collect()


def check(settings: AuditOptions) -> tuple[Any, Any]:
    """The methods of ``settings``, refused before anything is loaded: the method's (and the agreement method's)."""
    from visctl import cams
    from visctl.errors import ArgumentError

    chosen: list[Any] = []
    for option, name in (("method", settings.method), ("agree_with", settings.agree_with)):
        if name is None:
            chosen.append(None)
            continue
        found = cams.parse_method(str(name))
        if len(found) != 1:
            raise ArgumentError(f"{option}={name!r}: the audit makes one map per class with one method",
                                hint="give one method name, e.g. gradcam")
        chosen.append(found[0])
    if chosen[1] is not None and chosen[1] == chosen[0]:
        raise ArgumentError(f"agree_with={settings.agree_with} is the method= itself",
                            hint="name another method, e.g. layercam")
    return chosen[0], chosen[1]


def labelled_images(session: Session, cfg: Any, settings: AuditOptions, left_out: list[tuple[Path, str]] | None = None,
                    ) -> tuple[list[Path], dict[str, int], list[str] | None, Path | None, str]:
    """The images to audit with their labels: ``settings.data`` (class folders) or the config's test/val dataset (or
    ``settings.phase``'s).

    Returns the paths, path -> label (an index into the dataset's classes), those classes, the data's root
    folder (where ``region`` masks mirror it) and where they came from; ``left_out`` gets the images of
    ``data``'s folders that are none of the classes, with why."""
    from visctl import config, datasets
    from visctl.errors import ConfigError, InputError

    data, phase = settings.data, settings.phase.value if settings.phase is not None else None
    if data is not None:
        root = Path(data)
        if not root.is_dir():
            raise InputError(f"data={data} is not a folder", hint="a folder of class folders (ROOT/cat/1.jpg, ...)")
        top = config.cfg_get(cfg, "classes") or config.cfg_get(cfg, "dataset_meta.classes")
        ds_cfg: dict[str, Any] = dict(type="ImageFolder", data_root=str(root))
        if top:
            ds_cfg["classes"] = top if isinstance(top, str) else list(top)
        where = str(root)
        used = "data"
    else:
        phases = [phase] if phase else ["test", "val"]
        used = next((ph for ph in phases if config.cfg_get(cfg, f"{ph}_dataloader.dataset")), "")
        if not used:
            raise ConfigError(f"the config has no {' or '.join(f'{p}_dataloader' for p in phases)}.dataset",
                              hint="give data=FOLDER (one folder per class), or add a test_dataloader")
        ds_cfg, _ = datasets.dataset_config(cfg, used)
        where = f"the config's {used}_dataloader"
    dataset: Any = None
    if data is None:  # a type of the config's package: built as its Runner builds it
        raw = datasets._unwrap(dict(config.cfg_get(cfg, f"{used}_dataloader.dataset")))
        dataset = datasets.package_dataset(raw, config.cfg_get(cfg, "default_scope"), where, session.max_pixels)
    if dataset is None:
        dataset = datasets.build_dataset(ds_cfg, used if used != "data" else "test", warn=session.warn,
                                         max_pixels=session.max_pixels)
    files = getattr(dataset, "files", None)
    if files is None:
        raise ConfigError(f"{where}'s dataset ({type(dataset).__name__}) holds no image files",
                          hint="audit reads image files with labels: give data=FOLDER of class folders")
    if data is not None and dataset.classes and left_out is not None:
        left_out.extend(_other_folders(Path(data), list(dataset.classes)))
    labelled = [(Path(p), lab) for p, lab in files if lab is not None and lab >= 0]
    if not labelled:
        raise InputError(f"{where} has no labelled images", hint="put the images in one folder per class "
                         "(ROOT/cat/1.jpg), or give the dataset an ann_file with labels")
    if len(labelled) < len(files):
        session.note(f"{len(files) - len(labelled)} image(s) of {where} have no label and are left out")
    root = Path(str(ds_cfg.get("data_root") or ds_cfg.get("root") or ".")) if data is None else Path(data)
    return ([p for p, _ in labelled], {str(p): int(lab) for p, lab in labelled},  # type: ignore[misc]
            list(dataset.classes) if dataset.classes else None, root, where)


def _other_folders(root: Path, classes: list[str]) -> list[tuple[Path, str]]:
    """The images of ``data``'s folders that are none of the classes (the dataset left them out, with a
    warning) and why: the run skips each one, so the manifest lists them and the run exits 1."""
    from visctl.images import is_image_path
    from visctl.output.manifest import is_visctl_folder

    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and not is_visctl_folder(d)]
    if not any(d.name in classes for d in folders):  # numbered by position (wnid folders): none left out
        return []
    return [(p, f"its folder {d.name!r} is none of the config's {len(classes)} classes")
            for d in folders if d.name not in classes
            for p in sorted(q for q in d.rglob("*") if q.is_file() and is_image_path(q))]


def plan(session: Session, model: Any, checkpoint: str | Path | None, settings: AuditOptions) -> AuditRun:
    """Check the options, read the annotations, load the model(s) and the dataset; nothing is computed yet."""
    from visctl import audits as A

    o, since = settings, mark(session)
    arguments.model_spec(model, modules=False)
    if o.data is not None and o.phase is not None:
        from visctl.errors import ArgumentError

        raise ArgumentError(f"phase={o.phase.value} and data= both say which images to audit",
                            hint="give data=FOLDER (class folders) or phase= (the config's dataloader), not both")
    methods = check(o)
    ann = A.read_annotations(*(Path(p) if p is not None else None for p in (o.annotations, o.region)))
    mi = open_model(session, model, str(checkpoint) if checkpoint else None)
    _whole_model(mi.summary, "CHECKPOINT ")
    left_out: list[tuple[Path, str]] = []
    paths, labels, ds_classes, root, where = labelled_images(session, mi.cfg, o, left_out)
    mi.paths = paths
    session.protect(*paths)
    if ann is not None:
        _check_annotations(session, ann, paths, root, where)
    other = None
    if o.compare is not None:
        from visctl.library._common import load_model

        session.protect(o.compare)
        other, summary = load_model(session, mi.cfg, o.compare, label="compare: ")
        _whole_model(summary, "compare=", strict=True)
    return AuditRun(session, mi, o, methods, labels=labels, ds_classes=ds_classes, root=root, where=where,
                    annotations=ann, compare=other, left_out=left_out, since=since)


def _whole_model(summary: dict | None, what: str, strict: bool = False) -> None:
    """Refuse a checkpoint whose tensors are of other shapes than the model's (another architecture or number
    of classes: those stay random, and every number of the audit would be of a random model); with ``strict``
    (the compared checkpoint, which must be the same model) also one that leaves a meaningful share random.
    ``what`` is said before its path (``compare=``)."""
    from visctl import checkpoints
    from visctl.errors import InputError

    if not summary:
        return
    bad = list(summary.get("mismatched") or [])
    if bad or (strict and checkpoints.checkpoint_warns(summary)):
        what_left = (f"{len(bad)} of its tensors have other shapes than the model's ({', '.join(bad[:3])}"
                     f"{', ...' if len(bad) > 3 else ''})" if bad else
                     f"it leaves {checkpoints.checkpoint_unloaded(summary):.0%} of the model's parameters random "
                     f"({len(summary.get('missing') or [])} missing tensors)")
        raise InputError(f"{what}{summary.get('path')}: {what_left}, so the audit would measure a partly random "
                         "model", hint="give a checkpoint of this config's model (the same architecture and "
                         "number of classes); compare= takes another checkpoint of the same config")


def _check_annotations(session: Session, ann: Annotations, paths: list[Path], root: Path | None, where: str) -> None:
    """Say what the annotation file left out; refuse one that names none of the run's images."""
    from visctl.errors import InputError

    for line in ann.problems:
        session.warn(f"{ann.source}: {line}")
    if ann.masks is not None:
        if paths and not any(ann.mask_file(p, root) is not None for p in paths):
            raise InputError(f"{ann.masks} holds a mask for none of the {len(paths)} images of {where} (e.g. "
                             f"{paths[0].name})", hint="name each mask like its image (.png or .npy), mirroring "
                             "the class folders or at the folder's top")
        return
    if paths and not any(ann.objects(p) is not None for p in paths):
        listed = [name for entries in list(ann.by_name.values())[:2] for name, _ in entries[:1]]
        raise InputError(f"{ann.source} lists none of the {len(paths)} images of {where} (it lists e.g. "
                         f"{', '.join(map(repr, listed))}; the images are e.g. {str(paths[0])!r})",
                         hint="an image's file_name (COCO) or filename (VOC) must end with the image's path or "
                         "file name: give the annotation file of these images")


class AuditRun(Run):
    """One audit: its parameters (the manifest's), then one row per image (:meth:`items`), then the summary.

    The CLI (``visctl.commands._shared.execute``) writes each row to ``audit.csv`` as it comes (:meth:`record`),
    closes the CSVs once every rank's rows are in (:meth:`merge_ranks`) and writes the report (:meth:`close`);
    the library gathers the rows into an :class:`AuditResult` (:meth:`collect`).
    """

    command: ClassVar[str] = "audit"
    writer_threads = 1  # the thumbnails, written while the report is made

    def __init__(self, session: Session, mi: ModelInputs, settings: AuditOptions, methods: tuple[Any, Any], *,
                 labels: dict[str, int], ds_classes: list[str] | None, root: Path | None, where: str,
                 annotations: Annotations | None, compare: Any, left_out: list[tuple[Path, str]] | None = None,
                 since: Since = (0, 0, 0.0)) -> None:
        from visctl import audits as A
        from visctl import cams, config
        from visctl.layers import trace
        from visctl.library._common import output_names
        from visctl.library.cam import _channels_last

        o = self.settings = settings
        self.session, self.mi, self.labels, self.root = session, mi, labels, root
        self.annotations, (self.method, self.agree_with) = annotations, methods
        self.border_width, self.batch_size = o.border, o.batch_size
        self.thresholds = dict(o.fail_under or {})
        self.left_out = list(left_out or [])
        self.started = time.time()
        self.since = since  # the session's (failures, notes) when planned (:func:`mark`)
        self.channels_last = _channels_last(mi, session.device)
        traced = trace(mi.model, mi.example)
        target_layers = list(o.target_layers) if o.target_layers else None
        setup = cams.plan(mi.model, mi.example, target_layers, None, None, config.tool_option(mi.cfg, "target_layers"),
                          traced=traced)
        for note in setup.notes:
            session.note(note)
        self.setup = setup
        self.num_classes = setup.num_classes
        self.names, _ = output_names(session, mi, setup.num_classes)
        self.to_model = self._class_map(ds_classes, where)
        self.engine = cams.CamEngine(mi.model, self.method, setup.layers, setup.layouts, batch_size=o.batch_size)
        self.agree = (cams.CamEngine(mi.model, self.agree_with, setup.layers, setup.layouts, batch_size=o.batch_size)
                      if self.agree_with is not None else None)
        self.other = None
        if compare is not None:
            if self.channels_last:
                import torch

                compare.to(memory_format=torch.channels_last)
            self.other = cams.CamEngine(compare, self.method, setup.layers, setup.layouts, batch_size=o.batch_size)
        self.tally: dict[int, A.Tally] = {}
        self.total = A.Tally()
        self.tally_b: dict[int, A.Tally] = {}
        self.total_b = A.Tally()
        self.flips = dict(lost_pointing=0, gained_pointing=0, lost_correct=0, gained_correct=0)
        self.worst = A.Worst(o.worst)
        self.moved = A.Worst(o.worst) if compare is not None else None
        self.unannotated = 0
        self.compare_nonfinite: list[str] = []  # images whose --compare scores or maps are NaN or infinite
        self.bands: set[tuple[int, bool]] = set()  # the border bands used (pixels, widened to 1 px)
        self.index = {str(p): i for i, p in enumerate(mi.paths)}
        self.params = dict(
            config=mi.cfg_spec, checkpoint=mi.checkpoint, data=where, images=len(mi.paths), method=self.method.value,
            agree_with=self.agree_with.value if self.agree_with is not None else None, target_layers=setup.layers,
            annotations=annotations.source if annotations else None, tolerance=o.tolerance,
            top_percent=o.top_percent, border=o.border, worst=o.worst, compare=o.compare,
            fail_under=self.thresholds or None, device=session.device, batch_size=o.batch_size)
        #: the manifest's ``audit`` (:meth:`summarise`), once every rank's rows are in
        self.overview: dict[str, Any] = {}
        self._streams: list[tuple[CsvStream, str]] = []  # the CLI's CSVs (:meth:`record`), with their captions
        self._done: list[str] = []  # one process: listed as inputs once the CSV holding their rows is in place
        self._complete = False  # every row written and every CSV in place: the report may be written

    def _class_map(self, ds_classes: list[str] | None, where: str) -> dict[int, int]:
        """Dataset label -> the model's output index: by name where both have names, else the same number."""
        if not ds_classes or not self.names or list(ds_classes) == list(self.names):
            return {}
        pos = {n: i for i, n in enumerate(self.names)}
        mapping = {i: pos[n] for i, n in enumerate(ds_classes) if n in pos}
        missing = [n for n in ds_classes if n not in pos]
        if not mapping:  # numbering them as the model's outputs would audit each image as another class
            from visctl.errors import InputError

            raise InputError(f"none of the {len(ds_classes)} classes of {where} ({', '.join(map(repr, ds_classes[:5]))}"
                             f"{', ...' if len(ds_classes) > 5 else ''}) is one of the model's "
                             f"{len(self.names)} classes ({', '.join(map(repr, self.names[:3]))}, ...)",
                             hint="name the class folders (or the dataset's classes) after the model's classes, "
                             "or audit the checkpoint trained on these classes")
        if missing:
            self.session.warn(f"{len(missing)} class(es) of {where} are none of the model's classes "
                              f"({', '.join(missing[:5])}): their images are left out")
        return mapping

    def _label(self, path: Any) -> int | None:
        lab = self.labels.get(str(path))
        if lab is None:
            return None
        if self.to_model:
            return self.to_model.get(lab)
        return lab if 0 <= lab < self.num_classes else None

    def class_name(self, c: int) -> str:
        from visctl import classes

        return classes.label(self.names, c)

    # -- the work --
    def items(self) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        """Per image, in the run's order: its row (:data:`visctl.audits.COLUMNS`) and, with a compared
        checkpoint, its compare row.

        The maps of a batch are measured in a thread of their own while the model makes the next batch's
        (as cam draws its figures off the model's thread); the rows come out in the run's order."""
        from concurrent.futures import ThreadPoolExecutor

        session = self.session
        if not session.rank:  # once: rank 0's records are the run's
            for p, why in self.left_out:
                session.skip(p, why)
        pending: tuple[Any, Any] | None = None
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="visctl-audit") as pool:
                for b in batches(session, self.mi, self.batch_size, "audit", channels_last=self.channels_last,
                                 grad=True):
                    work = self._maps(b)
                    job = pool.submit(self._measure, *work) if work is not None else None
                    if pending is not None:
                        yield from self._collect(*pending)
                    pending = (b, job) if job is not None else None
                if pending is not None:
                    yield from self._collect(*pending)
        except BaseException:  # also on every rank under torchrun, where only rank 0 closes the run
            self._abort()
            raise

    def _maps(self, b: Any) -> tuple[Any, ...] | None:
        """The model's part of a batch (this thread): the labels, every map, the predictions."""
        from visctl import cams

        session = self.session
        group, batch = list(b.items), b.tensor
        labels = [self._label(p) for p, _, _ in group]
        keep = [i for i, lab in enumerate(labels) if lab is not None]
        for i, (p, _, _) in enumerate(group):
            if labels[i] is None:
                session.skip(p, "its label is none of the model's classes")
                b.advance()
        if not keep:
            return None
        if len(keep) < len(group):
            group, batch = [group[i] for i in keep], batch[keep]
        known = [int(labels[i]) for i in keep]  # type: ignore[arg-type]  # None filtered out above
        labels = known  # type: ignore[assignment]
        sides = [self._side(self.engine, batch, known)]
        if self.other is not None:
            sides.append(self._side(self.other, batch, known))
        agree = None
        if self.agree is not None:
            agree, _ = self.agree(batch, [cams.ClassTarget(c) for c in known])
        return group, labels, sides, agree

    def _measure(self, group: list, labels: list[int], sides: list[dict], agree: Any) -> list[Any]:
        """The measures of a batch's maps (the measuring thread): per image its rows (one per checkpoint,
        each with its map on the original pixels), the object's region and boxes; or why it is skipped (a str)."""
        from visctl import transforms
        from visctl.errors import VisctlError

        bad = set(sides[0]["nonfinite"])  # the audited checkpoint's: the image is skipped
        out: list[Any] = []
        for i, (p, img, state) in enumerate(group):
            if i in bad:
                out.append("the model's scores or maps for this image are NaN or infinite")
                continue
            hw = img.shape[:2]
            try:
                region, boxes = self._region(p, labels[i], hw)
            except VisctlError as err:  # this image's object (a mask of another size, boxes off the image)
                out.append(err.message)
                continue
            rows: list[Any] = []
            for s in sides:
                if s is not sides[0] and i in s["nonfinite"]:  # the --compare checkpoint's: its columns empty
                    rows.append(None)
                    continue
                fmap = transforms.to_original(s["maps"][i], state, hw)
                pred_map = transforms.to_original(s["pred_maps"][i], state, hw) if i in s["pred_maps"] else None
                other_map = (transforms.to_original(agree[i], state, hw) if agree is not None and s is sides[0]
                             else None)
                rows.append(self._row(p, labels[i], s["probs"][i], fmap, pred_map, other_map, region))
                rows[-1]["_map"] = fmap
            if self.worst.may_take(self._key(rows[0])):  # drawn here, off the model's thread, where it may be kept
                rows[0]["_thumb"] = self._thumb(img, rows[0], boxes=boxes, region=region)
            out.append((rows, region, boxes))
        return out

    def _collect(self, b: Any, job: Any) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        """A measured batch, in order (this thread): the tallies, the worst images, the rows."""
        import functools

        group = [item for item in b.items if self._label(item[0]) is not None]
        for (p, img, _state), found in zip(group, job.result()):
            if isinstance(found, str):  # skipped: why
                self.session.skip(p, found)
                b.advance()
                continue
            rows, region, boxes = found
            row = rows[0]
            self._add(self.tally, self.total, row)
            thumb = functools.partial(self._thumb, img, boxes=boxes, region=region)
            drawn = row.pop("_thumb", None)
            draw: Any = functools.partial(_given, drawn) if drawn is not None else functools.partial(thumb, row)
            self.worst.offer(self._key(row), _public(row), draw)
            pair = None
            if len(rows) > 1 and rows[1] is None:  # the --compare checkpoint gave NaN or inf for this image
                self.compare_nonfinite.append(str(p))
                pair = self._pair(row, None)
            elif len(rows) > 1:
                self._add(self.tally_b, self.total_b, rows[1])
                pair = self._pair(row, rows[1])
                assert self.moved is not None
                self.moved.offer(self._move_key(pair), pair, functools.partial(_pair_thumb, thumb, row, rows[1]))
            for r in rows:
                if r is not None:
                    del r["_map"]
            b.advance()
            yield _public(row), pair

    def _side(self, engine: Any, batch: Any, labels: list[int]) -> dict[str, Any]:
        """One checkpoint's maps of a batch: the true classes', the predictions, and the predicted classes'
        maps of the wrong ones (one more engine call on those images only)."""
        from visctl import cams

        maps, logits = engine(batch, [cams.ClassTarget(int(c)) for c in labels])
        probs = logits.float().softmax(-1).cpu().numpy()
        nonfinite = cams.nonfinite_rows(logits, maps)
        preds = probs.argmax(-1)
        wrong = [i for i, c in enumerate(labels) if int(preds[i]) != int(c)]
        pred_maps: dict[int, Any] = {}
        if wrong:
            more, _ = engine(batch[wrong], [cams.ClassTarget(int(preds[i])) for i in wrong])
            pred_maps = {i: more[k] for k, i in enumerate(wrong)}
        return dict(maps=maps, probs=probs, nonfinite=nonfinite, pred_maps=pred_maps)

    def _region(self, path: Any, label: int, hw: tuple[int, int]) -> tuple[Any, list]:
        """The object of the image's class (a boolean mask) and its boxes, or (None, [])."""
        from visctl import audits as A

        ann = self.annotations
        if ann is None:
            return None, []
        if ann.masks is not None:
            f = ann.mask_file(path, self.root)
            if f is None:
                self.unannotated += 1
                return None, []
            mask = A.mask_region(f, hw, self.session.max_pixels)
            if not mask.any():  # an empty mask: no object in this image (as a COCO image with no object)
                self.unannotated += 1
                return None, []
            return mask, []
        objs = ann.objects(path)
        if objs is None:
            self.unannotated += 1
            return None, []
        name = self.class_name(label)
        named = bool(ann.categories & set(self.names or ()))
        mine = [o for o in objs if not named or o.category == name]
        if not mine:  # listed, but no object of its class: measured without one, and counted in the note
            self.unannotated += 1
            return None, []
        region = A.object_region(objs, name, hw, ann.categories, self.names)
        if region is None:  # its boxes cover none of its pixels: the file does not describe this image
            from visctl.errors import InputError

            x0, y0, x1, y1 = mine[0].box
            inside = x1 > 0 and y1 > 0 and x0 < hw[1] and y0 < hw[0]
            where_ = (f"cover none of its {hw[1]}x{hw[0]} pixels' centres (too small)" if inside
                      else f"lie outside its {hw[1]}x{hw[0]} pixels")
            raise InputError(f"its {name} object(s) in {ann.source} {where_} (e.g. "
                             f"the box x {x0:g}..{x1:g}, y {y0:g}..{y1:g})",
                             hint="COCO's bbox is [x, y, width, height] in the image's pixels; VOC's corners are "
                             "1-based pixels")
        boxes = [o.box for o in mine if not o.polygons]
        return region, boxes

    def _row(self, path: Any, label: int, probs: Any, fmap: Any, pred_map: Any, other_map: Any, region: Any,
             ) -> dict[str, Any]:
        from visctl import audits as A

        pred = int(probs.argmax())
        o = self.settings
        kw = dict(tolerance=o.tolerance, percent=o.top_percent, border_width=o.border)
        fmap = A.clean(fmap)  # in place: the map is this row's own (carried back to the original pixels)
        at = A._peak(fmap)
        row: dict[str, Any] = dict(index=self.index.get(str(path), -1), path=str(path), label=label,
                                   predicted=pred, correct=pred == label, p_true=float(probs[label]),
                                   p_predicted=float(probs[pred]), object=region is not None,
                                   peak_x=at[0] if at else None, peak_y=at[1] if at else None)
        row["class"], row["predicted_class"] = self.class_name(label), self.class_name(pred)
        row.update(A.measure_clean(fmap, region, **kw))
        short = min(fmap.shape)
        self.bands.add((max(1, int(round(self.border_width * short))), int(round(self.border_width * short)) < 1))
        if other_map is not None:
            row.update(A.agreement(fmap, other_map, o.top_percent))
        if region is not None and row["correct"]:
            row["right_for_wrong_reason"] = row["pointing"] < 1
        if pred_map is not None:
            row.update({f"pred_{k}": v for k, v in A.measure_clean(A.clean(pred_map), region, **kw).items()})
        return row

    def _add(self, tally: dict[int, Any], total: Any, row: dict[str, Any]) -> None:
        from visctl import audits as A

        tally.setdefault(row["label"], A.Tally()).add(row)
        total.add(row)

    def _key(self, row: dict[str, Any]) -> tuple[float, ...]:
        from visctl import audits as A

        return A.badness(row)

    def _move_key(self, pair: dict[str, Any]) -> tuple[float, ...]:
        """Biggest decline first: of pointing and energy where an object is known, else of the border share."""
        if pair.get("pointing_delta") is not None:
            return (pair["pointing_delta"], pair["energy_delta"], pair["index"])
        return (-pair["border_delta"], pair["index"])

    def _pair(self, a: dict[str, Any], b: dict[str, Any] | None) -> dict[str, Any]:
        """The compare row of an image (``b`` None: the compared checkpoint has no numbers for it)."""
        out: dict[str, Any] = {k: a[k] for k in ("index", "path", "label", "class")}
        b = b or {}
        out["predicted_a"], out["predicted_b"] = a["predicted_class"], b.get("predicted_class")
        for m in COMPARED:
            va, vb = a.get(m), b.get(m)
            va = float(va) if va is not None else None
            vb = float(vb) if vb is not None else None
            out[f"{m}_a"], out[f"{m}_b"] = va, vb
            out[f"{m}_delta"] = vb - va if va is not None and vb is not None else None
        for m, lost, gained in (("pointing", "lost_pointing", "gained_pointing"),
                                ("correct", "lost_correct", "gained_correct")):
            if out[f"{m}_delta"] is not None:
                self.flips[lost] += int(out[f"{m}_delta"] < 0)
                self.flips[gained] += int(out[f"{m}_delta"] > 0)
        return out

    def _thumb(self, img: Any, row: dict[str, Any], *, boxes: list, region: Any) -> Any:
        from visctl import audits as A

        at = (row["peak_x"], row["peak_y"]) if row["peak_x"] is not None else None
        return A.thumbnail(img, row["_map"], boxes, region, at)

    # -- the end --
    def record(self, writer: OutputWriter, item: tuple[dict[str, Any], dict[str, Any] | None]) -> None:
        """One image's row (and compare row) on disk as it is made: nothing per image is kept but its path."""
        from visctl import audits as A

        row, pair = item
        streams = self._open(writer)
        streams[0][0].write(A.csv_line(row))
        if len(streams) > 1 and pair is not None:
            streams[1][0].write(compare_line(pair))
        if self.session.world > 1:  # torchrun: the ranks' inputs are merged by merge_ranks
            writer.add_input(row["path"])
        else:
            self._done.append(row["path"])

    def _open(self, writer: OutputWriter) -> list[tuple[CsvStream, str]]:
        """The CLI's CSVs, opened at the first row (each a hidden part file until it is complete)."""
        from visctl import audits as A

        if not self._streams:
            self._streams.append((CsvStream(writer, CSV_NAME, A.csv_header()), "one row per image: every measure"))
            if self.other is not None:
                self._streams.append((CsvStream(writer, COMPARE_CSV, compare_header()),
                                      "both checkpoints per image, and what moved"))
        return self._streams

    def merge_ranks(self, writer: OutputWriter) -> None:
        """After the last image, on every rank: under torchrun every rank's records (inputs, failures, notes),
        tallies, worst images and counts merged as a one-process run has them (exact sums: the same digits);
        then the summary (:attr:`overview`) and the CSVs moved into place (under torchrun rank 0 merges every
        rank's rows in the run's order), their rows' images listed as inputs."""
        streams = self._open(writer)  # also where this rank made no row: the header
        try:
            if self.session.world > 1:
                self._merge_records(writer)
            self.overview = self.summarise()
            for stream, caption in streams:
                if self.session.world > 1:
                    from visctl import distributed

                    parts = distributed.gather(stream.part())
                    if not self.session.rank:
                        stream.merge(parts, caption)
                else:
                    stream.close(caption)
            for path in self._done:
                writer.add_input(path)
            self._complete = True
        finally:
            self._abort()

    def _abort(self) -> None:
        """No part file left behind by a CSV not in place (an error, an interrupt)."""
        for stream, _ in self._streams:
            stream.abort()

    def close(self, writer: OutputWriter) -> None:
        """Rank 0, once every CSV is in place: the worst images' thumbnails, ``report.html`` and the manifest's
        ``audit`` (after an error or an interrupt: none, and no CSV's part file)."""
        self._abort()
        if not self._complete:
            return
        write_report(writer, self.overview, self.worst.kept, self.moved.kept if self.moved else [])
        writer.manifest["timings"]["audit_s"] = round(time.time() - self.started, 3)

    def summary(self) -> list[str]:
        """The per-class table (:func:`visctl.audits.table`)."""
        from visctl import audits as A

        return A.table(self.overview)

    def failed_checks(self) -> list[str]:
        """The ``fail_under`` thresholds the run fell under, as one line."""
        failed = self.overview.get("failed") or []
        return [f"{'; '.join(failed)} (fail_under=)"] if failed else []

    def collect(self) -> AuditResult:
        """Every image's row, the summary and the worst images, as :func:`audit` returns them."""
        rows, pairs = [], []
        for row, pair in self.items():
            rows.append(row)
            if pair is not None:
                pairs.append(pair)
        self.overview = self.summarise()
        return AuditResult(**self.gathered(), inputs=tuple(dict(path=r["path"]) for r in rows), rows=tuple(rows),
                           summary=self.overview, worst=tuple(self.worst.kept), compare_rows=tuple(pairs),
                           moved=tuple(self.moved.kept) if self.moved else ())

    def _merge_records(self, writer: OutputWriter) -> None:
        """Under torchrun: every rank's records, tallies, worst images and counts, on every rank."""
        from visctl import audits as A
        from visctl import distributed

        mine = dict(tally=self.tally, total=self.total, tally_b=self.tally_b, total_b=self.total_b,
                    flips=self.flips, unannotated=self.unannotated, worst=self.worst.kept,
                    compare_nonfinite=self.compare_nonfinite, bands=self.bands,
                    moved=self.moved.kept if self.moved else [])
        parts = distributed.merge_records(writer, self.mi.paths, self.batch_size, mine)
        self.total, self.total_b = A.Tally(), A.Tally()
        self.tally, self.tally_b = {}, {}
        self.flips = {k: 0 for k in self.flips}
        self.unannotated = 0
        self.compare_nonfinite, self.bands = [], set()
        self.worst.kept, self.worst.bar = [], None
        if self.moved is not None:
            self.moved.kept, self.moved.bar = [], None
        for part in parts:
            self.total.merge(part["total"])
            self.total_b.merge(part["total_b"])
            for mine_, theirs in ((self.tally, part["tally"]), (self.tally_b, part["tally_b"])):
                for c, t in theirs.items():
                    mine_.setdefault(c, A.Tally()).merge(t)
            for k, v in part["flips"].items():
                self.flips[k] += v
            self.unannotated += part["unannotated"]
            self.compare_nonfinite += part["compare_nonfinite"]
            self.bands |= part["bands"]
            self.worst.merge(part["worst"])
            if self.moved is not None:
                self.moved.merge(part["moved"])

    def summarise(self) -> dict[str, Any]:
        """The manifest's ``audit``: overall and per-class means and counts, the worst images, what moved,
        and the ``fail_under`` thresholds with the ones the run fell under."""
        from visctl import audits as A

        overall = self.total.summary()
        out: dict[str, Any] = dict(
            images=self.total.n, method=self.method.value, target_layers=list(self.setup.layers),
            data_root=str(self.root) if self.root is not None else None,
            annotations=self.annotations.source if self.annotations else None, overall=overall,
            per_class=[dict(label=c, **{"class": self.class_name(c)}, **t.summary())
                       for c, t in sorted(self.tally.items())],
            measures={k: v[2] for k, v in A.MEASURES.items()},
            worst=[dict(path=k.row["path"], **{"class": k.row["class"]}, predicted=k.row["predicted_class"],
                        **{m: k.row.get(m) for m in ("pointing", "energy", "iou", "border")})
                   for k in self.worst.kept[:10]])
        if self.bands:
            px = sorted(b for b, _ in self.bands)
            out["border_px"] = [px[0], px[-1]]  # the band used: --border of each image's short side, at least 1 px
            if any(widened for _, widened in self.bands):
                self.session.note(f"border={self.border_width:g} is under one pixel of some images' short side: "
                                  "their border band is 1 px (the manifest's audit.border_px: the bands used)")
        if self.annotations is not None:
            out["unannotated"] = self.unannotated
            if self.unannotated:
                self.session.note(f"{self.unannotated} image(s) have no object in {self.annotations.source}: "
                                  "their pointing, energy and iou are empty")
        if self.other is not None and self.compare_nonfinite:
            self.session.warn(f"the compare= checkpoint {self.params['compare']} gives NaN or infinite scores or "
                              f"maps for {len(self.compare_nonfinite)} image(s) (e.g. {self.compare_nonfinite[0]}): "
                              "their compare= columns of audit_compare.csv are empty and they are left out of "
                              "its means; the audited checkpoint's rows are kept")
        if self.other is not None:
            b = self.total_b.summary()
            per_b = {c: t.summary() for c, t in self.tally_b.items()}
            names = ["accuracy", *A.MEASURES, "right_reason", "right_for_wrong_reason"]
            out["compare"] = dict(
                overall={m: _delta(overall.get(m), b.get(m)) for m in names if m in overall or m in b},
                per_class=[dict(label=c, **{"class": self.class_name(c)},
                                **{m: _delta(t.summary().get(m), per_b.get(c, {}).get(m))
                                   for m in names if m in t.summary()})
                           for c, t in sorted(self.tally.items())],
                flips=dict(self.flips), checkpoint=self.params["compare"])
        out["thresholds"] = dict(self.thresholds)
        out["failed"] = A.failed_thresholds(overall, self.thresholds)
        return out


def _delta(a: Any, b: Any) -> dict[str, Any]:
    return dict(a=a, b=b, delta=None if a is None or b is None else float(f"{b - a:.6g}"))


def _given(value: Any) -> Any:
    return value


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _pair_thumb(thumb: Any, a: dict[str, Any], b: dict[str, Any]) -> Any:
    """Both checkpoints' thumbnails of one image, side by side."""
    from visctl import audits as A

    return A.side_by_side(thumb(a), thumb(b))


class CsvStream:
    """A CSV written row by row into a hidden part file of the run's folder, moved into place (one atomic
    rename) and listed in the manifest when it is complete: never half a file under its name."""

    def __init__(self, writer: OutputWriter, name: str, header: str) -> None:
        self.writer, self.name = writer, name
        self.tmp = writer.path(f".{name}.{writer.id}.part")
        self.fh = open(self.tmp, "w", encoding="utf-8", newline="")
        self.fh.write(header)

    def write(self, line: str) -> None:
        self.fh.write(line)

    def close(self, caption: str) -> Path:
        import os

        from visctl.output.writer import uninterrupted

        self.fh.close()
        with uninterrupted():
            target = self.writer._claim(self.writer.path(self.name))
            os.replace(self.tmp, target)
            self.writer.add_output(target, "table", caption)
        return target

    def part(self) -> str:
        """Under torchrun: this rank's rows, closed in its part file (rank 0 merges them: :meth:`merge`)."""
        self.fh.close()
        return str(self.tmp)

    def merge(self, parts: list[str], caption: str) -> Path:
        """Rank 0: every rank's part file merged in the run's order (each row's ``index``; each part is in it
        already), then moved into place: the file a one-process run writes."""
        import csv
        import heapq
        import os

        merged = self.tmp.with_name(self.tmp.name + ".merge")
        files = [open(p, encoding="utf-8", newline="") for p in parts]
        try:
            with open(merged, "w", encoding="utf-8", newline="") as out:
                # records, not lines: a quoted file name may hold a newline; written again as csv_line writes
                from visctl import audits as A

                readers: list[Iterator[list[str]]] = [iter(csv.reader(f)) for f in files]
                out.write(A.csv_record(next(readers[0])))  # the header, once
                for r in readers[1:]:
                    next(r)
                for rec in heapq.merge(*readers, key=lambda rec: int(rec[0])):  # type: ignore[arg-type,index]
                    out.write(A.csv_record(rec))
        finally:
            for f in files:
                f.close()
        for p in parts:
            Path(p).unlink(missing_ok=True)
        os.replace(merged, self.tmp)
        self.fh = open(self.tmp, "a", encoding="utf-8", newline="")
        return self.close(caption)

    def abort(self) -> None:
        """After an error or an interrupt: no part file is left behind (a finished stream is left alone: under
        torchrun rank 0 reads the other ranks' parts after they finished them)."""
        if self.fh.closed:
            return
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


# ---- the compare CSV -------------------------------------------------------------------------------------

def compare_columns() -> list[str]:
    cols = ["index", "path", "label", "class", "predicted_a", "predicted_b"]
    for m in COMPARED:
        cols += [f"{m}_a", f"{m}_b", f"{m}_delta"]
    return cols


def compare_header() -> str:
    return ",".join(compare_columns()) + "\n"


def compare_line(row: dict[str, Any]) -> str:
    from visctl import audits as A

    cells = []
    for c in compare_columns():
        v = row.get(c)
        cells.append("" if v is None or (isinstance(v, float) and math.isnan(v))
                     else f"{v:.6g}" if isinstance(v, float) else str(v))
    return A.csv_record(cells)


# ---- the report ------------------------------------------------------------------------------------------

def thumbnails(worst: Sequence[Kept], moved: Sequence[Kept]) -> list[Figure]:
    """The worst images' thumbnails (``worst/NNN_<stem>.png``) and, with a comparison, the images that moved the
    most (``moved/...``), as the CLI writes them."""
    from visctl.output.writer import _slug

    figs = [Figure(f"worst/{pos:03d}_{_slug(Path(k.row['path']).stem)}.png", k.thumb,
                   f"{Path(k.row['path']).name}: {k.row['class']} -> {k.row['predicted_class']}",
                   {"input": k.row["path"]}) for pos, k in enumerate(worst)]
    figs += [Figure(f"moved/{pos:03d}_{_slug(Path(k.row['path']).stem)}.png", k.thumb,
                    f"{Path(k.row['path']).name}: before | after", {"input": k.row["path"]})
             for pos, k in enumerate(moved)]
    return figs


def write_report(writer: OutputWriter, summary: dict[str, Any], worst: list[Kept], moved: list[Kept]) -> None:
    """The worst images' thumbnails (``worst/``, ``moved/``), ``report.html`` and the manifest's ``audit``."""
    from visctl import audit_page

    figs = thumbnails(worst, moved)
    for fig in figs:
        writer.save_image(fig.name, fig.image, caption=fig.caption, **fig.info)
    entries = [dict(k.row, thumb=fig.name) for k, fig in zip(worst, figs)]
    movers = [dict(k.row, thumb=fig.name) for k, fig in zip(moved, figs[len(worst):])]
    writer.manifest["audit"] = summary
    page = audit_page.render(summary, entries, movers, writer.manifest.get("params", {}))
    writer.write_output(REPORT, page.encode(), "page", caption="the audit: per class, worst images first")
