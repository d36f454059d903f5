"""What the library functions share: the model (a config, a name or an nn.Module), its pipeline, one example."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visctl.session import Session


@dataclass
class ModelInputs:
    """What a model command has before its first batch."""

    paths: list[Path]
    cfg: Any
    cfg_spec: str
    checkpoint: str | None
    model: Any
    summary: dict | None
    steps: list[dict]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rgb: bool
    example: Any  # (1, 3, H, W) on the device
    detector: bool = False


@dataclass
class BuiltModel:
    """A model with what its inputs need (config, pipeline, normalisation), built once: the part of
    :func:`open_model` that an opened model (:class:`visctl.library.opened.OpenedModel`) keeps between calls."""

    cfg: Any
    cfg_spec: str
    checkpoint: str | None  # as given (the config's load_from is resolved in ModelInputs)
    model: Any
    summary: dict | None
    steps: list[dict]
    pipeline: list[dict] | None  # the config's own test pipeline (qualified), when it has one
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rgb: bool
    detector: bool


class Opened:
    """What :func:`open_model` reuses instead of building: a model opened once (``visctl.open``'s
    :class:`~visctl.library.opened.OpenedModel` derives from it, so this module needs not import that one)."""

    def inputs(self, ctx: Session, checkpoint: str | None, paths: list[Path] | None) -> ModelInputs:
        raise NotImplementedError


def open_model(ctx: Session, model: Any, checkpoint: str | None = None, paths: list[Path] | None = None,
               ) -> ModelInputs:
    """Load the model and its pipeline, and prepare one example batch from the first readable image.

    ``model``: a config file, a model name (``torchvision.resnet18``, ``timm.vit_small_patch16_224``,
    ``package.module:attr``), a config dict / mmengine ``Config``, an ``nn.Module`` (used as it is, in
    eval mode, with ImageNet normalisation and a 224 px resize unless ``ctx``'s config options say more), or a
    model opened by :func:`visctl.open` (its built model reused: nothing is loaded again).
    """
    if isinstance(model, Opened):
        return model.inputs(ctx, checkpoint, paths)
    return model_inputs(ctx, build_model(ctx, model, checkpoint, paths), paths)


def build_model(ctx: Session, model: Any, checkpoint: str | None = None, paths: list[Path] | None = None,
                ) -> BuiltModel:
    """The first part of :func:`open_model`: the config, the model and its checkpoint, the pipeline and the
    normalisation (``paths`` only protected as the run's inputs)."""
    from visctl import config, transforms

    ctx.protect(*(paths or []), checkpoint)  # before any work: --save-path naming an input is refused now
    module = _as_module(model)
    cfg_spec = "<nn.Module>" if module is not None else str(model) if isinstance(model, (str, Path)) else "<config>"
    cfg = ctx.load_config({} if module is not None else model)
    ctx.setup_torch()
    if module is not None:
        from visctl import checkpoints

        model, summary = module.eval().to(ctx.device), None
        if checkpoint:
            summary = checkpoints.load_checkpoint(model, str(checkpoint), unsafe=ctx.unsafe_load_checkpoint)
            say_checkpoint(ctx, summary)
        checkpoints.check_finite_weights(model, str(checkpoint) if checkpoint else None)
    else:
        from visctl import provenance

        with provenance.watch_loads() as loads:
            model, summary = load_model(ctx, cfg, checkpoint)
        if not summary:  # said as far as it is known: what the builder loaded, which tensors stay random
            level, text = provenance.initial_weights(cfg, model, loads)
            (ctx.warn if level == "warn" else ctx.note)(text)
        from visctl import segmentation

        if segmentation.is_mmseg_segmentor(model):  # its seg logits at the input's size, as mmseg predicts
            model = segmentation.mmseg_logits(model)
    from visctl.detection import is_torchvision_detector

    detector = is_torchvision_detector(model) or config.tool_option(cfg, "task") == "detection"
    from visctl.model_inputs import native_input_size

    pipeline = config.test_pipeline(cfg)
    size = config.tool_option(cfg, "input_size")
    if not pipeline and not detector and size is None:
        native = native_input_size(model)  # timm's DINOv2 ViTs take 518 px and nothing else
        size = (native[1], native[0]) if native and native != (224, 224) else 224  # (w, h), as mmcv writes it
        if native and native != (224, 224):
            ctx.note(f"input size {native[0]}x{native[1]}: the model's own (set visctl.input_size to change it)")
    if pipeline:  # names visctl does not write run through the default scope package's own registry
        from visctl.transforms import qualify

        pipeline = qualify([dict(s) for s in pipeline], config.cfg_get(cfg, "default_scope"))
    steps = pipeline or ([] if detector else transforms.default_pipeline(size))
    mean, std, rgb = config.normalization(cfg)
    if is_torchvision_detector(model) and not (cfg.get("data_preprocessor") or config.cfg_get(
            cfg, "model.data_preprocessor")):
        mean, std, rgb = (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), True  # they normalise 0-1 images themselves
    from visctl import mmdet_adapter

    if mmdet_adapter.is_mm_detector(model):  # mmdet's, mmyolo's, or a custom_imports project's detector
        mm_cfg = cfg if module is None else getattr(model, "cfg", None)  # init_detector keeps its config
        if mm_cfg is None:
            from visctl.errors import ModelError

            raise ModelError(f"an {type(model).__name__} (mmdet) detector needs its config for its test pipeline",
                             hint="pass the config file (and checkpoint) instead of the model, or a model from "
                             "mmdet.apis.init_detector, which keeps it as model.cfg")
        # the package's own test pipeline and data preprocessor; boxes and maps carried back from what its
        # transforms record (visctl.mmdet_adapter)
        model = mmdet_adapter.adapt(model, mm_cfg)
        detector = True
        steps = [dict(type="OpenMMLabPipeline", pipeline=model.pipeline)]
        mean, std, rgb = model.mean, model.std, model.rgb
    return BuiltModel(cfg=cfg, cfg_spec=cfg_spec, checkpoint=checkpoint, model=model, summary=summary, steps=steps,
                      pipeline=pipeline or None, mean=mean, std=std, rgb=rgb, detector=detector)


def model_inputs(ctx: Session, built: BuiltModel, paths: list[Path] | None = None) -> ModelInputs:
    """The second part of :func:`open_model`: one example batch from the first readable image of ``paths``
    (a blank 256 px image when none is), through the built model's pipeline; its input size checked."""
    import warnings

    import numpy as np

    from visctl import images as imgs
    from visctl import transforms
    from visctl.errors import InputError, InputWarning
    from visctl.model_inputs import check_input_size

    cfg, steps, pipeline, model = built.cfg, built.steps, built.pipeline, built.model
    mean, std, rgb = built.mean, built.std, built.rgb
    first = None
    for p in paths or []:
        try:
            with warnings.catch_warnings():  # the batch reads this image again and says what it has to say
                warnings.simplefilter("ignore", InputWarning)
                first = imgs.read_image(p, ctx.max_pixels)
            break
        except InputError:
            continue
    budget = ctx.max_pixels  # what the pipeline makes of an input obeys the budget; a stand-in is no input
    if first is None:
        first, budget = np.zeros((256, 256, 3), np.uint8), None
    if max(first.shape[:2]) > 2048:  # the example only probes shapes: a huge image would cost GBs as floats
        from visctl.render import fit

        first = fit(first, 1024)
    try:
        state = transforms.run_pipeline(first, steps, max_pixels=budget)
    except transforms.PipelineTooLarge as err:  # the same for every input: the config's mistake, said once
        step = err.step if steps is pipeline else None  # an OpenMMLab detector's steps are its package's
        raise transforms.PipelineTooLarge(err.message, hint=pipeline_hint(cfg, step) if pipeline else err.hint) from err
    example = transforms.to_tensor([state], mean, std, rgb).to(ctx.device)
    if steps:
        check_input_size(model, (int(example.shape[2]), int(example.shape[3])), from_pipeline=bool(pipeline))
    return ModelInputs(paths=list(paths or []), cfg=cfg, cfg_spec=built.cfg_spec,
                       checkpoint=built.checkpoint or cfg.get("load_from"), model=model, summary=built.summary,
                       steps=steps, mean=mean, std=std, rgb=rgb, example=example, detector=built.detector)


def pipeline_hint(cfg: Any, step: int | None) -> str:
    """The fix for a pipeline step that makes too large an image, naming its config key."""
    from visctl import config

    key = config.test_pipeline_key(cfg)
    where = f"{key}.{step}" if key and step is not None else key or "the test pipeline"
    return (f"make that step's size smaller (its scale, size or scale_factor: cfg_options=['{where}.scale=...'] "
            "for an OpenMMLab Resize), or raise max_pixels=")


def load_model(ctx: Session, cfg: Any, checkpoint: str | None, label: str = "") -> tuple[Any, dict | None]:
    """Build the config's model and load its checkpoint; the one place a load is summarised.

    The summary line goes to stderr and the manifest's notes alike (``label`` before it, e.g. ``compare: ``);
    ``--debug`` adds every key on stderr.
    """
    from visctl import checkpoints
    from visctl.errors import ModelError

    ctx.protect(checkpoint or cfg.get("load_from"))
    try:
        model, summary = checkpoints.load_model(cfg, checkpoint, ctx.device, unsafe=ctx.unsafe_load_checkpoint)
    except ModelError as err:  # the second model's: said as compare='s (the usual hint offers load_from)
        if label != "compare: " or not err.message.startswith("checkpoint not found"):
            raise
        raise ModelError(f"compare= names a checkpoint that is not found: {checkpoint}",
                         hint="check the path of the checkpoint to compare with") from None
    if summary:
        if summary["unsafe"]:
            ctx.warn(f"{summary['path']} was read by a full pickle load (unsafe_load_checkpoint=True): "
                     "any code it contains has run")
        say_checkpoint(ctx, summary, label)
        if ctx.debug and any(len(summary[k]) > 3 for k in ("missing", "unexpected", "mismatched")):
            ctx.log(label + checkpoints.checkpoint_note(summary, verbose=True))
    return model, summary


def say_checkpoint(ctx: Session, summary: dict, label: str = "") -> None:
    """A load's one-line summary: a note, or a warning (kept in the manifest's notes as well) when a
    meaningful share of the model's parameters did not load (:func:`visctl.checkpoints.checkpoint_warns`)."""
    from visctl import checkpoints

    line = label + checkpoints.checkpoint_note(summary)
    if not checkpoints.checkpoint_warns(summary):
        ctx.note(line)
        return
    ctx.warn(line)
    ctx.note(line, log=False)


def preview(ctx: Session, mi: ModelInputs) -> None:
    """Print the module tree with output shapes (``--preview-model``) on stdout."""
    from visctl import layers

    for line in layers.preview_lines(mi.model, mi.example):
        ctx.result(line)


def class_names(ctx: Session, mi: ModelInputs, num_classes: int | None = None) -> list[str] | None:
    """The model's class names (the config's, else the model's own, else its weights family's class list:
    see :func:`visctl.classes.class_names`); where they came from is noted when not from the config."""
    return output_names(ctx, mi, num_classes)[0]


def output_names(ctx: Session, mi: ModelInputs, num_classes: int | None = None) -> tuple[list[str] | None, bool]:
    """:func:`class_names`, and whether names were found that do not fit the model's ``num_classes`` outputs:
    such names are not used (None), with a warning, as no output can be said to be which of them."""
    from visctl.classes import class_names as find

    found = find(mi.cfg, mi.model, num_classes, (mi.summary or {}).get("classes"))
    if found.names and num_classes and len(found.names) != num_classes:
        ctx.warn(f"{found.source} name {len(found.names)} classes, and the model gives {num_classes} outputs: "
                 "the names are not used, and captions give each output's number instead")
        return None, True
    if found.names and found.source != "the config's classes":
        ctx.note(f"class names: {found.source} ({len(found.names)})")
    return found.names, False


def _as_module(model: Any) -> Any:
    """``model`` when it is an ``nn.Module`` (checked without importing torch for a path or a dict)."""
    if isinstance(model, (str, Path, dict)) or type(model).__module__.startswith("mmengine"):
        return None
    import torch

    return model if isinstance(model, torch.nn.Module) else None


@dataclass
class Batch:
    """One stack of images that went through the pipeline to the same size, ready for the model."""

    items: list[tuple[Any, Any, Any]]  # (path or ArrayImage, original RGB uint8, transforms.ImageState)
    tensor: Any  # (N, 3, H, W) on the device, normalised
    advance: Any  # advance(n=1) of the run's progress: call it once per finished image

    @property
    def paths(self) -> list[Any]:
        return [p for p, _, _ in self.items]


def batches(ctx: Session, mi: ModelInputs, batch_size: int, label: str, paths: list[Any] | None = None,
            channels_last: bool = False, grad: bool = False) -> Iterator[Batch]:
    """The one batch loop of the per-image commands: read, transform and stack ``batch_size`` images at a
    time; an unreadable image (or one over the pixel budget) is skipped through ``ctx.skip`` and counted in
    the progress; every yielded batch's images are the consumer's to count (``batch.advance``).

    The next batch is read in threads while the consumer works on this one (:func:`visctl.transforms.
    prepared_batches`); a batch goes to a CUDA device through pinned memory, in channels_last when asked
    (:func:`visctl.model_inputs.to_device`). A model input too large for the free memory (:mod:`visctl.memory`; ``grad``:
    the forward keeps its activations for a backward) is skipped in words, and a batch that does not fit is
    split."""
    from visctl import transforms
    from visctl.mmdet_adapter import bound
    from visctl.model_inputs import to_device
    from visctl.output.writer import io_threads

    paths = mi.paths if paths is None else paths
    if ctx.world > 1:  # under torchrun: this rank's whole batches (visctl.distributed.shard)
        from visctl.distributed import shard

        paths = shard(paths, batch_size, ctx.rank, ctx.world)
    footprints: dict[str, Any] = {}
    with ctx.progress(len(paths), label) as advance:
        def stack(group: list) -> Any:  # normalised and stacked in the readers' threads (~1.5 ms an image)
            return transforms.to_tensor([s for _, _, s in group], mi.mean, mi.std, mi.rgb, channels_last)

        for groups, failures in transforms.prepared_batches(paths, mi.steps, batch_size, ctx.max_pixels,
                                                            workers=io_threads(ctx.threads), stack=stack):
            for p, message in failures:
                ctx.skip(p, message)
                advance()
            for whole, full in groups:
                for group, stacked in _within_memory(ctx, mi, whole, full, grad, footprints, advance):
                    # an OpenMMLab detector reads their meta while the consumer works on this batch, not after
                    with bound(mi.model, [state for _, _, state in group]):
                        yield Batch(group, to_device(stacked, ctx.device, channels_last), advance)


def _within_memory(ctx: Session, mi: ModelInputs, group: list, stacked: Any, grad: bool, footprints: dict,
                   advance: Any) -> list[tuple[list, Any]]:
    """``group`` in parts the free memory holds; none when one image alone is too large (each is skipped)."""
    from visctl import memory

    h, w = group[0][2].img.shape[:2]
    if h * w < memory.CHECK_FROM_PIXELS:
        return [(group, stacked)]
    if "model" not in footprints:  # two small probe forwards, once per run, only for such large inputs
        footprints["model"] = memory.footprint(mi.model, mi.example, (h, w))
    found, free = footprints["model"], memory.available_bytes(ctx.device)
    if found is None or free is None:
        return [(group, stacked)]
    one = found.need(h * w, 1, grad)
    if one > free:
        for p, _, _ in group:
            ctx.skip(p, memory.too_large(one, free, (h, w), grad))
            advance()
        return []
    k = max(1, int(free // one))
    return [(group[i:i + k], stacked[i:i + k]) for i in range(0, len(group), k)]


def image_shapes(paths: Any) -> list[tuple[int, int]]:
    """The distinct (h, w) of the images ``paths`` (files' headers, without decoding; arrays' shapes), for the
    figure checks made before the model loads; an image whose header cannot be read is left out."""
    from visctl.images import image_size

    shapes: dict[tuple[int, int], None] = {}
    for p in paths:
        array = getattr(p, "array", None)
        if array is not None:
            shapes[(int(array.shape[0]), int(array.shape[1]))] = None
            continue
        size = image_size(p)
        if size is not None:
            shapes[(size[1], size[0])] = None
    return list(shapes)
