"""``visctl.tsne``: a model's features of a config's dataset, embedded in 2-D (t-SNE, UMAP or PCA).

The work of ``visctl tsne``: sample the dataset per class, pool the chosen layers' outputs, embed them and score
the embedding (5-NN accuracy in 2-D and in feature space); per layer the scatter plot, the interactive page and
the CSV the CLI writes, under the same names. Under ``torchrun`` each rank extracts a shard
(:func:`visctl.distributed.join`, :func:`extract`) and rank 0 embeds and writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.library._common import ModelInputs
from visctl.results import Figure, Result
from visctl.session import RunOptions, Session

if TYPE_CHECKING:
    import numpy as np

    from visctl.output.writer import OutputWriter


@dataclass(frozen=True)
class LayerEmbedding:
    """One layer's features (N, D) float32, their coordinates (N, n_components) and the embedding's quality."""

    label: str  # the layer as named in the outputs (``backbone.layer4``, ``pre_logits``)
    tag: str  # its part of the file names: ``tsne_<tag>.png``, ``features_<tag>.npy``
    method: str  # what embedded it, in words (``t-SNE (openTSNE FFT)``, ``PCA``)
    knn5_2d: float  # 5-NN accuracy of the labels on the two plotted dimensions
    knn5_features: float  # ... and in feature space
    embed_s: float
    features: np.ndarray = field(repr=False)
    coords: np.ndarray = field(repr=False)
    figure: Figure = field(repr=False)  # the scatter plot
    png: bytes = field(repr=False)  # the scatter plot as the CLI writes it
    page: str = field(repr=False)  # the interactive scatter (HTML)
    table: str = field(repr=False)  # the CSV: index, path, label, class, coordinates

    @property
    def path(self) -> str:
        """The layer's path in the model (its :attr:`label`): a t-SNE's item comes from a layer, not one input."""
        return self.label

    @property
    def quality(self) -> dict[str, Any]:
        """The manifest's ``quality`` entry of this layer."""
        return dict(knn5_2d=round(self.knn5_2d, 4), knn5_features=round(self.knn5_features, 4), method=self.method,
                    embed_s=round(self.embed_s, 3), dims=int(self.features.shape[1]))

    def write(self, writer: OutputWriter) -> None:
        """The plot, the page and the CSV (the features are written by :meth:`Embedding.write` or streamed)."""
        writer.write_output(f"tsne_{self.tag}.png", self.png, "image", caption=self.figure.caption, layer=self.label,
                            knn5_2d=round(self.knn5_2d, 4))
        writer.write_output(f"tsne_{self.tag}.html", self.page.encode(), "page",
                            caption=f"interactive scatter of {self.label}")
        writer.write_output(f"tsne_{self.tag}.csv", self.table.encode(), "table",
                            caption=f"{self.label}: coordinates, labels, paths")


@dataclass(frozen=True)
class Embedding(Result):
    """What :func:`embed` returns: per layer a :class:`LayerEmbedding`, and each row's sample."""

    command: ClassVar[str] = "tsne"

    layers: tuple[LayerEmbedding, ...] = ()
    rows: tuple[int, ...] = field(default=(), repr=False)  # each row's dataset index
    labels: np.ndarray | None = field(default=None, repr=False)  # each row's class index (-1: none)
    names: tuple[str, ...] = field(default=(), repr=False)  # each row's file
    class_names: tuple[str, ...] = ()

    @property
    def items(self) -> tuple[LayerEmbedding, ...]:
        """The layers, one embedding each (:attr:`layers`), as the result's sequence."""
        return self.layers

    @property
    def quality(self) -> dict[str, dict[str, Any]]:
        """layer -> its quality figures (the manifest's ``quality``)."""
        return {lay.label: lay.quality for lay in self.layers}

    def layer(self, label: str) -> LayerEmbedding:
        """The embedding of one layer, by its label."""
        for lay in self.layers:
            if lay.label == label:
                return lay
        raise KeyError(f"{label!r}: the layers are {', '.join(lay.label for lay in self.layers)}")

    def figures(self) -> list[Figure]:
        return [lay.figure for lay in self.layers]

    def write(self, writer: OutputWriter) -> None:
        for lay in self.layers:
            n, d = lay.features.shape
            writer.save_array(f"features_{lay.tag}.npy", lay.features, caption=f"{lay.label}: features ({n} x {d})")
        for lay in self.layers:
            lay.write(writer)
        write_labels(writer, list(self.rows), [int(v) for v in self.labels] if self.labels is not None else [],
                     list(self.names), list(self.class_names))
        writer.manifest["quality"] = self.quality

    def __repr__(self) -> str:
        quality = ", ".join(f"{lay.label}: 5-NN {lay.knn5_2d:.3f} (2-D) / {lay.knn5_features:.3f} (features)"
                            for lay in self.layers)
        return (f"Embedding(samples={len(self.rows)}, classes={len(self.class_names)}, layers=[{quality}], "
                f"failures={len(self.failures)})")


def write_labels(writer: OutputWriter, rows: list[int], labels: list[int], names: list[str],
                 class_names: list[str]) -> None:
    """``labels.json``: each row's dataset index, label, file, and the class names."""
    import json

    writer.write_output("labels.json", json.dumps(dict(rows=rows, labels=labels, names=names,
                                                       classes=class_names)).encode(), "data",
                        caption="each row's dataset index, label, file and the class names")


@dataclass
class EmbedPlan:
    """The model, the sampled dataset and the chosen layers, before extraction."""

    mi: ModelInputs
    dataset: Any
    samples: Any  # datasets.PipelineSamples
    indices: list[int]
    layers: dict[str, Any]  # label -> module
    names: list[str]
    inputs_of: frozenset[str]
    extra_tokens: int
    params: dict[str, Any]
    notes: list[str]
    title_stem: str
    opts: dict[str, Any]  # the embedding's settings


def plan(session: Session, model: Any, checkpoint: str | None = None, *, phase: str | None = None,
         test_cfg: Any = None, target_layers: list[str] | None = None, vis_stage: str | None = None,
         all_stages: bool = False, pooling: str = "avg", num_extra_tokens: int | None = None,
         max_num_class: int = 20, max_num_samples_per_class: int = 100, class_idx: list[int] | None = None,
         method: str = "tsne", n_components: int = 2, init: str = "pca", n_iter_without_progress: int | None = None,
         perplexity: float = 30.0, n_iter: int = 1000, learning_rate: str | float = "auto",
         early_exaggeration: float = 12.0, metric: str = "euclidean", legend: bool = True, marker_size: float = 12.0,
         thumbnails: bool = False, title: str | None = None, seed: int = 0, world_size: int = 1,
         notes: list[str] | None = None) -> EmbedPlan:
    """Check the settings, load the model and the dataset, sample it and choose the layers."""
    import math

    from visctl import arguments, config, datasets, embedding, transforms
    from visctl.choices import EmbedMethod, Pooling, VisStage
    from visctl.errors import ConfigError, VisctlError
    from visctl.layers import default_layers, find_layer, probe
    from visctl.library import _common

    arguments.model_spec(model)
    if test_cfg is not None:
        arguments.model_spec(test_cfg, "test_cfg", modules=False)
    arguments.check("tsne", num_extra_tokens=num_extra_tokens, max_num_class=max_num_class,
                    max_num_samples_per_class=max_num_samples_per_class, class_idx=class_idx,
                    n_components=n_components, n_iter_without_progress=n_iter_without_progress, perplexity=perplexity,
                    n_iter=n_iter, early_exaggeration=early_exaggeration, marker_size=marker_size, seed=seed)
    target_layers = arguments.names(target_layers, "target_layers", "a layer name")
    pool_mode, how = arguments.choice(Pooling, pooling, "pooling"), arguments.choice(EmbedMethod, method, "method")
    stage = arguments.choice(VisStage, vis_stage, "vis_stage") if vis_stage else None
    if stage and target_layers:
        raise VisctlError("--vis-stage and --target-layers both choose the layer", hint="give one of them")
    if all_stages and (stage or target_layers):
        raise VisctlError(f"--all-stages and {'--vis-stage' if stage else '--target-layers'} both choose the layers",
                          hint="give one of them")
    try:
        lr_value: float | str = float(learning_rate)
    except ValueError:
        if learning_rate != "auto":
            raise VisctlError(f"--learning-rate {learning_rate!r}", hint="a number, or auto") from None
        lr_value = "auto"
    if init not in ("pca", "random"):
        raise VisctlError(f"--init {init!r}", hint="use pca or random")
    if isinstance(lr_value, float) and not (lr_value > 0 and math.isfinite(lr_value)):
        raise VisctlError(f"--learning-rate {learning_rate!r}: the step must be a positive number",
                          hint="a number such as 200, or auto (the sample count / 12)")
    embedding.check_metric(how, metric)
    # an option the method does not take: said before the model loads (a value left at its default says nothing)
    given = {"--perplexity": (perplexity, 30.0), "--n-iter": (n_iter, 1000), "--learning-rate": (lr_value, "auto"),
             "--early-exaggeration": (early_exaggeration, 12.0), "--n-iter-without-progress": (n_iter_without_progress,
                                                                                              None),
             "--metric": (metric, "euclidean"), "--init": (init, "pca")}
    unused = [f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"
              for flag, (value, default) in given.items() if flag not in METHOD_OPTIONS[how.value] and value != default]
    if unused:
        raise VisctlError(f"--method {how.value} does not use {', '.join(unused)}",
                          hint=f"leave {'it' if len(unused) == 1 else 'them'} out, or use --method tsne, which does")
    notes = list(notes or [])
    for note in notes:
        session.warn(note)
    mi = _common.open_model(session, model, checkpoint)
    cfg = mi.cfg
    if test_cfg is not None:  # mmpretrain's vis_tsne: `cfg.test_dataloader = Config.fromfile(args.test_cfg).test_dataloader`
        if isinstance(test_cfg, (str, Path)):
            session.protect(test_cfg)
            other = config.load_config(str(test_cfg), [])
        else:
            other = config.as_config(test_cfg)
        if not config.cfg_get(other, "test_dataloader.dataset"):
            raise ConfigError(f"{test_cfg} has no test_dataloader.dataset", hint="--test-cfg takes a config with one")
        cfg.test_dataloader = other.test_dataloader
        if phase and phase != "test":
            raise VisctlError(f"--test-cfg gives the test dataloader, and --phase is {phase}",
                              hint="leave --phase out (or use --phase test) with --test-cfg")
    # mmselfsup's configs/tsne/*.py name theirs extract_dataloader
    phases = [phase] if phase else ["test", "val", "extract"]
    ds_cfg = steps = None
    used_phase = phases[0]
    for ph in phases:
        if config.cfg_get(cfg, f"{ph}_dataloader.dataset"):
            ds_cfg, steps = datasets.dataset_config(cfg, ph)
            used_phase = ph
            break
    if ds_cfg is None:
        raise ConfigError(f"the config has no {' or '.join(f'{p}_dataloader' for p in phases)}.dataset",
                          hint="give --test-cfg CFG, a config with a test_dataloader (as mmpretrain's vis_tsne.py; "
                          "self-supervised pretraining configs have none), add one, or pick another --phase")
    dataset = datasets.build_dataset(ds_cfg, used_phase, warn=session.warn, max_pixels=session.max_pixels)
    steps = steps or mi.steps
    known = dataset.classes
    wanted = (list(class_idx) if class_idx is not None else
              list(range(min(max_num_class, len(known)))) if known else None)
    if datasets.knows_labels(dataset):
        labels_all, stopped = datasets.scan_labels(dataset, wanted, max_num_samples_per_class)
    else:  # each label is a loaded sample: bounded, and shown
        total = min(datasets.length(dataset), datasets.LABEL_SCAN_LIMIT)
        with session.progress(total, "labels") as advance:
            labels_all, stopped = datasets.scan_labels(dataset, wanted, max_num_samples_per_class, advance=advance)
    if stopped:
        session.warn(stopped)
    if labels_all and all(lab < 0 for lab in labels_all):
        raise VisctlError(f"the {used_phase} dataset's {len(labels_all)} images have no class labels, and t-SNE "
                          "colours its points and scores its k-NN accuracy by class",
                          hint="put the images in one folder per class (ROOT/cat/1.jpg, ROOT/dog/2.jpg) or give "
                          "the dataset an ann_file with labels")
    indices = embedding.sample_indices(labels_all, class_idx, max_num_class, max_num_samples_per_class, seed)
    if not indices:
        raise VisctlError("no samples of the chosen classes", hint="check --class-idx against the dataset's labels")
    session.protect(*(dataset.name(i) for i in indices))
    # the layers: a probe on one real sample gives the default and the stage list
    samples = datasets.PipelineSamples(dataset, steps, seed=seed, skip_types=("PackInputs", "Normalize", "ToTensor"))
    first = samples[indices[0]]
    if first["error"]:
        raise VisctlError(f"cannot read {first['name']}: {first['error']}")
    example = transforms.to_tensor([transforms.ImageState(img=first["views"][0])], mi.mean, mi.std, mi.rgb)
    example = example.to(session.device)
    in_hw = (int(example.shape[2]), int(example.shape[3]))
    cfg_default = config.tool_option(cfg, "tsne_layers") or config.tool_option(cfg, "target_layers")
    self_supervised = embedding.is_self_supervisor(mi.model)
    if not (target_layers or stage or cfg_default or all_stages):
        # mmpretrain vis_tsne's default: extract_feat's own stage, a classifier's neck output, a self-supervised
        # model's backbone output (its extract_feat is the backbone alone)
        stage = VisStage.backbone if self_supervised else VisStage.neck
    if stage and self_supervised:
        mi.model = embedding.self_supervised_stages(mi.model, stage)
    pr = probe(mi.model, example, logits=False)
    inputs_of: frozenset[str] = frozenset()
    module_of: dict[str, str] = {}
    if target_layers:
        names = [find_layer(mi.model, n)[0] for n in target_layers]
    elif stage:
        default = embedding.last_stage(mi.model, example)
        label, path, take_input, why = embedding.vis_stage_layer(mi.model, stage, pr.shape_of, default)
        names, module_of = [label], {label: path}
        inputs_of = frozenset([label]) if take_input else frozenset()
        notes.append(f"--vis-stage {why}")
        session.log(f"layer: {why}")
    else:
        if all_stages:
            names = default_layers(mi.model, pr, in_hw).stages
        elif cfg_default:
            names = [find_layer(mi.model, n)[0] for n in cfg_default]
        else:
            names = [embedding.last_stage(mi.model, example)]
        session.log(f"layers: {', '.join(names)}")
    extra = num_extra_tokens
    if extra is None:
        extra = embedding.guess_extra_tokens(mi.model, [pr.shape_of(module_of.get(n, n)) for n in names], in_hw)
    layers = {n: find_layer(mi.model, module_of.get(n, n))[1] for n in names}
    takes = METHOD_OPTIONS[how.value]  # the others are recorded as not used (None)
    params = dict(config=mi.cfg_spec, checkpoint=mi.checkpoint, phase=used_phase, layers=names,
                  pooling=pool_mode.value, method=how.value, method_requested=how.value,
                  perplexity=perplexity if "--perplexity" in takes else None,
                  n_iter=n_iter if "--n-iter" in takes else None,
                  learning_rate=lr_value if "--learning-rate" in takes else None,
                  early_exaggeration=early_exaggeration if "--early-exaggeration" in takes else None,
                  metric=metric if "--metric" in takes else None,
                  seed=seed, samples=None, world_size=world_size,
                  max_num_class=max_num_class, max_num_samples_per_class=max_num_samples_per_class,
                  n_components=n_components, n_components_requested=n_components,
                  init=init if "--init" in takes else None,
                  n_iter_without_progress=n_iter_without_progress if "--n-iter-without-progress" in takes else None,
                  num_extra_tokens=extra,
                  test_cfg=test_cfg if test_cfg is None or isinstance(test_cfg, str) else str(test_cfg),
                  vis_stage=stage.value if stage else None)
    title_stem = Path(mi.cfg_spec).stem if mi.cfg_spec not in ("<nn.Module>", "<config>") else "model"
    return EmbedPlan(mi, dataset, samples, indices, layers, names, inputs_of, extra, params, notes, title_stem,
                     dict(method=how, perplexity=perplexity, n_iter=n_iter, learning_rate=lr_value,
                          early_exaggeration=early_exaggeration, metric=metric, seed=seed, n_components=n_components,
                          init=init, n_iter_without_progress=n_iter_without_progress, legend=legend,
                          marker_size=marker_size, thumbnails=thumbnails, title=title, pooling=pool_mode,
                          num_extra_tokens=num_extra_tokens))


def extract(session: Session, p: EmbedPlan, out_dir: Path, *, batch_size: int = 32, num_workers: int = 0,
            rank: int = 0, world: int = 1, writer: OutputWriter | None = None) -> dict[str, Any] | None:
    """Pool the layers' features of this rank's shard into ``features_<tag>.npy`` files under ``out_dir``
    (memory-mapped, streamed batch by batch). With several ranks, rank 0 gathers and merges the shards and
    returns the whole; the other ranks return None. Returns ``dict(features={label: path}, rows, labels,
    names, failures)``. With ``writer`` (one process), the files are recorded in its manifest as they are completed,
    in one uninterrupted step."""
    from visctl import embedding

    listed: list[bool] = []

    def record(paths: dict[str, Path]) -> None:
        if writer is not None and world == 1:
            list_features(writer, paths)
            listed.append(True)

    shard = p.indices[rank::world]
    with session.progress(len(shard), "features") as advance:
        result = embedding.extract(p.mi.model, p.layers, p.samples, shard, mean=p.mi.mean, std=p.mi.std,
                                   rgb=p.mi.rgb, device=session.device, batch_size=batch_size,
                                   num_workers=num_workers, pooling=p.opts["pooling"], extra_tokens=p.extra_tokens,
                                   out_dir=out_dir / (".shards" if world > 1 else ""),
                                   prefix=f"features.rank{rank}" if world > 1 else "features", progress=advance,
                                   inputs_of=p.inputs_of, on_done=record)
    result["listed"] = bool(listed)
    if world > 1:
        import torch.distributed as dist

        meta = {k: result[k] for k in ("rows", "labels", "names", "failures", "tokens")}
        meta["features"] = {k: str(v) for k, v in result["features"].items()}
        gathered: list = [None] * world
        dist.all_gather_object(gathered, meta)
        if rank:
            dist.barrier()
            dist.destroy_process_group()
            return None
        result = embedding.merge_shards(gathered, out_dir)
        dist.barrier()
        dist.destroy_process_group()
    return result


# the options each --method takes (library.embed's names are the CLI's); the others are errors when given
METHOD_OPTIONS: dict[str, frozenset[str]] = {
    "tsne": frozenset({"--perplexity", "--n-iter", "--learning-rate", "--early-exaggeration", "--n-iter-without-progress",
                       "--metric", "--init"}),
    "umap": frozenset({"--metric", "--init"}),
    "pca": frozenset(),
}
# the params settle() may change once the features are extracted
SETTLED = ("method", "method_requested", "perplexity", "perplexity_requested", "n_iter", "learning_rate",
           "early_exaggeration", "metric", "init", "n_iter_without_progress", "n_components", "n_components_requested",
           "num_extra_tokens", "samples")


def settle(session: Session, p: EmbedPlan, ext: dict[str, Any], dims: dict[str, int]) -> None:
    """What the embedding can use on the extracted samples (``dims``: each layer's feature size), each change said
    once and recorded in the plan's params and notes: PCA for fewer than 4 samples (t-SNE and UMAP need more), a
    lower perplexity for few samples, fewer components than samples or features, extra tokens only for token
    outputs."""
    from visctl import embedding
    from visctl.choices import EmbedMethod

    def say(message: str) -> None:
        p.notes.append(message)
        session.warn(message)

    samples = len(ext["rows"])
    o = p.opts
    asked_method = EmbedMethod(p.params["method_requested"])
    if asked_method is not EmbedMethod.pca and 2 <= samples < 4:  # fewer than 2: embedding.embed's error
        given = sorted(METHOD_OPTIONS[asked_method.value])
        say(f"{samples} samples: too few for --method {asked_method.value} (it needs 4), so PCA embedded them "
            f"({', '.join(given)} not used)")
        o["method"] = EmbedMethod.pca
    method = o["method"]
    takes = METHOD_OPTIONS[method.value]
    for key, flag in (("n_iter", "--n-iter"), ("learning_rate", "--learning-rate"), ("metric", "--metric"),
                      ("early_exaggeration", "--early-exaggeration"), ("init", "--init"),
                      ("n_iter_without_progress", "--n-iter-without-progress")):
        p.params[key] = o[key] if flag in takes else None
    asked = o["perplexity"]
    used = asked
    if method is EmbedMethod.tsne:
        used = embedding.effective_perplexity(asked, samples)
        if used != asked:
            say(f"--perplexity {asked:g} lowered to {used:.2f} for {samples} samples (t-SNE needs 3 x perplexity "
                "neighbours of each)")
    o["used_perplexity"] = used
    p.params.update(method=method.value, perplexity=used if method is EmbedMethod.tsne else None,
                    perplexity_requested=asked if asked_method is EmbedMethod.tsne else None, samples=samples)
    # components: n centred points span n - 1 dimensions, d features d; more would be columns of zeros
    want = p.params["n_components_requested"]
    if dims and samples >= 2:
        label, d = min(dims.items(), key=lambda kv: embedding.max_components(samples, kv[1]))
        most = embedding.max_components(samples, d)
        if want > most:
            say(f"--n-components {want} lowered to {most}: {samples} samples of {d} features ({label}) span at most "
                f"{most} dimensions")
        o["n_components"] = min(want, most)
        if samples == 2:
            say("2 samples lie on one line: the second coordinate is 0 (embed more samples for a 2-D picture)")
    p.params["n_components"] = o["n_components"]
    if method is EmbedMethod.tsne and o["n_components"] <= 3 and p.params["n_iter_without_progress"] is not None:
        try:  # openTSNE has no early stop (embedding.embed says so), scikit-learn's t-SNE does
            import openTSNE  # noqa: F401

            p.params["n_iter_without_progress"] = None
        except ImportError:
            pass
    if not ext.get("tokens"):  # no layer gave tokens: nothing to leave out of the pooling
        if o["num_extra_tokens"] is not None:
            say(f"--num-extra-tokens {o['num_extra_tokens']} not used: the outputs of {', '.join(dims) or 'the layers'} "
                "are feature maps or vectors, not tokens")
        p.params["num_extra_tokens"] = None


def list_features(writer: OutputWriter, features: dict[str, Any]) -> None:
    """Record each layer's ``features_<tag>.npy`` in the run's manifest."""
    import numpy as np

    for label, path in features.items():
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        writer.add_output(path, "array", caption=f"{label}: features ({shape[0]} x {shape[1]})")


def write_run(session: Session, p: EmbedPlan, ext: dict[str, Any], writer: OutputWriter, extract_s: float) -> None:
    """Write an extraction as ``visctl tsne`` does: the features first (listed whatever happens to the embedding),
    the inputs and the skipped ones, each layer's embedding as it is done, the labels, notes, quality, timing."""
    import numpy as np

    from visctl.output.writer import uninterrupted

    settle(session, p, ext, {label: int(np.load(path, mmap_mode="r", allow_pickle=False).shape[1])
                             for label, path in ext["features"].items()})
    writer.manifest["params"].update({k: p.params[k] for k in SETTLED})
    if not ext.get("listed"):
        with uninterrupted():  # every layer's features listed, or none
            list_features(writer, ext["features"])
    for name in ext["names"]:
        writer.add_input(name)
    for name, message in ext["failures"]:
        session.skip(name, message)
    quality = {}
    for layer in iter_layers(session, p, ext):
        layer.write(writer)
        quality[layer.label] = layer.quality
    write_labels(writer, ext["rows"], ext["labels"], ext["names"], class_names_of(p, ext["labels"]))
    for note in p.notes:
        writer.note(note)
    writer.manifest["quality"] = quality
    writer.manifest["timings"]["extract_s"] = round(extract_s, 3)


def class_names_of(p: EmbedPlan, labels: list[int]) -> list[str]:
    """The dataset's class names, else the label numbers."""
    return list(p.dataset.classes or [str(i) for i in range(max(labels) + 1 if len(labels) else 1)])


def iter_layers(session: Session, p: EmbedPlan, ext: dict[str, Any], features: dict[str, Any] | None = None,
                ) -> Iterator[LayerEmbedding]:
    """Embed each layer's features (``features``: label -> array; default: the extracted files, mapped) and
    draw its plot, page and CSV, yielding each layer when it is done."""
    import csv
    import io
    import time

    import numpy as np

    from visctl import embedding, render
    from visctl.gallery import scatter_html
    from visctl.session import default_threads

    o = p.opts
    threads = session.threads or default_threads()  # openTSNE / scikit-learn jobs; torch is left alone
    labels = np.asarray(ext["labels"])
    class_names = class_names_of(p, ext["labels"])
    # small images for the interactive page's hover (and thumbnails), at most 500 of them
    thumb_imgs = [_thumb(p.samples, i) for i in ext["rows"][:500]]
    thumbs_b64 = [_b64(t) for t in thumb_imgs]
    said: list[str] = []

    def warn_once(message: str) -> None:
        if message not in said:
            said.append(message)
            p.notes.append(message)
            session.warn(message)
    for label, path in ext["features"].items():
        feats = features[label] if features is not None else np.load(path, mmap_mode="r", allow_pickle=False)
        t0 = time.time()
        coords, how = embedding.embed(np.asarray(feats), o["method"], perplexity=o["used_perplexity"],
                                      n_iter=o["n_iter"], learning_rate=o["learning_rate"],
                                      early_exaggeration=o["early_exaggeration"], metric=o["metric"], seed=o["seed"],
                                      threads=threads, warn=warn_once, n_components=o["n_components"],
                                      init=o["init"], n_iter_without_progress=o["n_iter_without_progress"])
        k2d = embedding.knn_accuracy(coords[:, :2], labels)  # the two plotted dimensions
        kfeat = embedding.knn_accuracy(np.asarray(feats), labels)
        embed_s = time.time() - t0
        session.log(f"{label}: {how}, {feats.shape[1]}-d, 5-NN accuracy {k2d:.3f} in 2-D, {kfeat:.3f} in feature "
                    "space")
        tag = embedding.file_tag(label)  # not the features file's name: that may have been moved aside
        head = o["title"] or f"{p.title_stem} | {label}"
        fig = render.scatter_figure(coords[:, :2], labels, class_names, f"{head}\n{how}, {len(labels)} samples, "
                                    f"5-NN accuracy {k2d:.3f} (2-D) / {kfeat:.3f} (features)", o["legend"],
                                    o["marker_size"], thumb_imgs if o["thumbnails"] else None)
        png = render.figure_png(fig)
        page = scatter_html(coords[:, :2], labels, class_names, ext["names"], thumbs_b64, f"{head} ({how})",
                                   render.class_colors(len(class_names)))
        buf = io.StringIO()
        w = csv.writer(buf)
        dims = ["x", "y"] + [f"dim{d}" for d in range(2, coords.shape[1])]  # n_components > 2: every dimension
        w.writerow(["index", "path", "label", "class", *dims])
        for idx, name, lab, point in zip(ext["rows"], ext["names"], labels, coords):
            w.writerow([idx, name, int(lab), class_names[lab] if 0 <= lab < len(class_names) else "",
                        *(f"{v:.6f}" for v in point)])
        figure = Figure(f"tsne_{tag}.png", _decode(png), f"{label}: {how}", dict(layer=label, knn5_2d=round(k2d, 4)))
        yield LayerEmbedding(label=label, tag=tag, method=how, knn5_2d=k2d, knn5_features=kfeat, embed_s=embed_s,
                             features=feats, coords=coords, figure=figure, png=png, page=page, table=buf.getvalue())


@arguments.typed("tsne")
def embed(model: Any, checkpoint: str | None = None, *, phase: str | None = None, test_cfg: Any = None,
          target_layers: list[str] | None = None, vis_stage: str | None = None, all_stages: bool = False,
          pooling: str = "avg", num_extra_tokens: int | None = None, max_num_class: int = 20,
          max_num_samples_per_class: int = 100, class_idx: list[int] | None = None, method: str = "tsne",
          n_components: int = 2, init: str = "pca", n_iter_without_progress: int | None = None,
          perplexity: float = 30.0, n_iter: int = 1000, learning_rate: str | float = "auto",
          early_exaggeration: float = 12.0, metric: str = "euclidean", legend: bool = True, marker_size: float = 12.0,
          thumbnails: bool = False, title: str | None = None, num_workers: int = 0, batch_size: int = 32,
          seed: int = 0, options: RunOptions | None = None, session: Session | None = None) -> Embedding:
    """Embed a model's features of a dataset in 2-D, coloured by class, with k-NN quality figures (``visctl tsne``).

    The arguments not listed below are the CLI's options of the same names.

    Args:
        model: a config (path, dict or mmengine Config) with a model and a dataset (``test_dataloader``,
            ``val_dataloader`` or ``extract_dataloader``), or an nn.Module with ``test_cfg`` giving the dataset.
        checkpoint: weights [default: the config's ``load_from``].
        phase: the dataloader whose dataset is used (``test``, ``val``, ...) [default: test, else val].
        test_cfg: a config (path or dict) whose ``test_dataloader`` replaces the model config's.
        target_layers: the layers, by name [default: the neck's output, as mmpretrain].
        vis_stage: ``backbone``, ``neck`` or ``pre_logits``, as mmpretrain's ``--vis-stage``.
        all_stages: every stage of the backbone.
        pooling: ``avg``, ``max``, ``cls`` or ``flatten``.
        method: ``tsne``, ``umap`` or ``pca``.

    Returns:
        :class:`Embedding`: per layer the features, coordinates, 5-NN accuracies and figures; each row's dataset
        index, label and file; the class names. Nothing is written (the features pass through a temporary folder
        that is removed) until ``save()``.
    """
    import tempfile

    import numpy as np

    from visctl import arguments

    arguments.check("tsne", num_workers=num_workers, batch_size=batch_size)
    session = session or Session(options)
    p = plan(session, model, checkpoint, phase=phase, test_cfg=test_cfg, target_layers=target_layers,
             vis_stage=vis_stage, all_stages=all_stages, pooling=pooling, num_extra_tokens=num_extra_tokens,
             max_num_class=max_num_class, max_num_samples_per_class=max_num_samples_per_class, class_idx=class_idx,
             method=method, n_components=n_components, init=init, n_iter_without_progress=n_iter_without_progress,
             perplexity=perplexity, n_iter=n_iter, learning_rate=learning_rate, early_exaggeration=early_exaggeration,
             metric=metric, legend=legend, marker_size=marker_size, thumbnails=thumbnails, title=title, seed=seed)
    with tempfile.TemporaryDirectory(prefix="visctl-embed-") as tmp:
        ext = extract(session, p, Path(tmp), batch_size=batch_size, num_workers=num_workers)
        assert ext is not None
        features = {label: np.array(np.load(path, allow_pickle=False)) for label, path in ext["features"].items()}
    for name, message in ext["failures"]:
        session.skip(name, message)
    settle(session, p, ext, {label: int(f.shape[1]) for label, f in features.items()})
    layers = tuple(iter_layers(session, p, ext, features))
    params = dict(p.params, max_pixels=session.max_pixels) if session.max_pixels is not None else p.params
    return Embedding(params=params, inputs=tuple(dict(path=n) for n in ext["names"]),
                     failures=tuple((f.path, f.error) for f in session.failures),
                     notes=tuple(session.notes) + tuple(p.notes), layers=layers, rows=tuple(ext["rows"]),
                     labels=np.asarray(ext["labels"]), names=tuple(ext["names"]),
                     class_names=tuple(class_names_of(p, ext["labels"])))


def _thumb(samples: Any, index: int) -> Any:
    from visctl import render

    item = samples[index]
    return render.fit(item["views"][0], 48) if not item["error"] else None


def _b64(img: Any) -> str:
    import base64

    import cv2

    if img is None:
        return ""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def _decode(png: bytes) -> Any:
    """A PNG's pixels as RGB uint8."""
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "matplotlib wrote a PNG OpenCV cannot read"
    return img[..., ::-1].copy()
