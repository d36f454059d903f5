"""``visctl.tsne``: a model's features of a config's dataset, embedded in 2-D (t-SNE, UMAP or PCA).

The work of ``visctl tsne``: sample the dataset per class, pool the chosen layers' outputs, embed them and score
the embedding (5-NN accuracy in 2-D and in feature space); per layer the scatter plot, the interactive page and
the CSV the CLI writes, under the same names. Under ``torchrun`` each rank extracts a shard
(:func:`plan` under a joined session, :meth:`TsneRun.items`) and rank 0 embeds and writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from visctl import arguments
from visctl.choices import EmbedMethod, VisStage
from visctl.library._common import ModelInputs
from visctl.library._run import Run, Since, mark
from visctl.options import TsneOptions
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
        """The plot, the page and the CSV (the features are written by :meth:`TsneResult.write` or streamed)."""
        writer.write_output(f"tsne_{self.tag}.png", self.png, "image", caption=self.figure.caption, layer=self.label,
                            knn5_2d=round(self.knn5_2d, 4))
        writer.write_output(f"tsne_{self.tag}.html", self.page.encode(), "page",
                            caption=f"interactive scatter of {self.label}")
        writer.write_output(f"tsne_{self.tag}.csv", self.table.encode(), "table",
                            caption=f"{self.label}: coordinates, labels, paths")


@dataclass(frozen=True)
class TsneResult(Result):
    """What :func:`tsne` returns: per layer a :class:`LayerEmbedding`, and each row's sample."""

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
        return (f"TsneResult(samples={len(self.rows)}, classes={len(self.class_names)}, layers=[{quality}], "
                f"failures={len(self.failures)})")


def write_labels(writer: OutputWriter, rows: list[int], labels: list[int], names: list[str],
                 class_names: list[str]) -> None:
    """``labels.json``: each row's dataset index, label, file, and the class names."""
    import json

    writer.write_output("labels.json", json.dumps(dict(rows=rows, labels=labels, names=names,
                                                       classes=class_names)).encode(), "data",
                        caption="each row's dataset index, label, file and the class names")


#: the options only an embedding method takes, in the order the errors name them
EMBED_OPTIONS = ("perplexity", "n_iter", "learning_rate", "early_exaggeration", "n_iter_without_progress", "metric",
                 "init")
#: the options each method takes; the others are errors when given (and recorded as not used: None)
METHOD_OPTIONS: dict[str, frozenset[str]] = {
    "tsne": frozenset(EMBED_OPTIONS),
    "umap": frozenset({"metric", "init"}),
    "pca": frozenset(),
}
# the params the run settles once the features are extracted
SETTLED = ("method", "method_requested", "perplexity", "perplexity_requested", "n_iter", "learning_rate",
           "early_exaggeration", "metric", "init", "n_iter_without_progress", "n_components", "n_components_requested",
           "num_extra_tokens", "samples")


@dataclass
class Extraction:
    """The pooled features of the sampled dataset: one ``features_<tag>.npy`` per layer, a row per sample."""

    features: dict[str, Path]  # label -> its file (the CLI's output folder, or a temporary one)
    arrays: dict[str, Any]  # label -> its (N, D) features: the file memory-mapped, or read into memory
    rows: list[int]  # each row's dataset index
    labels: list[int]
    names: list[str]
    failures: list[tuple[str, str]]
    tokens: list[str]  # the layers whose outputs were tokens
    listed: bool  # the files are in the run's manifest already (recorded as they were completed)

    def write(self, writer: OutputWriter) -> None:
        """The features files (every one listed, or none) and the inputs, in the run's manifest."""
        from visctl.output.writer import uninterrupted

        if not self.listed:
            with uninterrupted():
                list_features(writer, self.features)
        for name in self.names:
            writer.add_input(name)


@dataclass
class TsneRun(Run):
    """``visctl tsne``'s run (:func:`plan`): extract the features of the sampled dataset (each rank its shard;
    rank 0 gathers them), settle what the samples allow, then embed and draw each layer.

    Its items are the :class:`Extraction` first, then a :class:`LayerEmbedding` per layer; under torchrun the
    other ranks yield nothing (rank 0 gathered their shards).
    """

    command: ClassVar[str] = "tsne"

    session: Session
    settings: TsneOptions
    mi: ModelInputs
    dataset: Any
    samples: Any  # datasets.PipelineSamples
    indices: list[int]
    layers: dict[str, Any]  # label -> module
    inputs_of: frozenset[str]  # the labels whose layer's input is taken (pre_logits)
    extra_tokens: int
    params: dict[str, Any]
    remarks: list[str]  # what the run remarked (planning, settling, embedding): written after the layers
    title_stem: str
    learning_rate: float | str  # a number, or "auto"
    # what the extracted samples allow (:meth:`_settle`): the method, the perplexity and the dimensions used
    method: EmbedMethod = field(init=False)
    perplexity: float = field(init=False)
    n_components: int = field(init=False)
    writer: OutputWriter | None = None  # the CLI's: the features are streamed into its folder
    folder: Path | None = None  # where the features are written (the CLI's output folder, or a temporary one)
    extraction: Extraction | None = None
    extract_s: float = 0.0  # seconds from the run's start to the extracted features
    quality: dict[str, Any] = field(default_factory=dict)  # label -> the layer's quality, as recorded
    since: Since = (0, 0, 0.0)  # where the call began (:func:`mark`)

    def __post_init__(self) -> None:
        self.method = self.settings.method
        self.perplexity = self.settings.perplexity
        self.n_components = self.settings.n_components

    def begin(self, writer: OutputWriter) -> None:
        """The features stream into the writer's folder, and are listed in its manifest as they are completed."""
        self.writer, self.folder = writer, writer.out_dir

    def items(self) -> Iterator[Extraction | LayerEmbedding]:
        """The extraction (rank 0: every rank's), then each layer's embedding as it is done."""
        import time

        started = time.time()
        ext = self._extract()
        if ext is None:  # another rank: its shard is gathered by rank 0
            return
        self.extraction = ext
        self.extract_s = time.time() - (self.writer.started if self.writer is not None else started)
        self._settle(ext)
        yield ext
        for name, message in ext.failures:
            self.session.skip(name, message)
        yield from self._embed(ext)

    def record(self, writer: OutputWriter, item: Extraction | LayerEmbedding) -> None:
        if isinstance(item, Extraction):
            writer.manifest["params"].update({k: self.params[k] for k in SETTLED})
        else:
            self.quality[item.label] = item.quality
        item.write(writer)

    def close(self, writer: OutputWriter) -> None:
        """After the last layer: the labels, the notes, the quality figures and the extraction's time."""
        ext = self.extraction
        if ext is None or len(self.quality) < len(ext.features):  # stopped before: the manifest says so
            return
        write_labels(writer, ext.rows, ext.labels, ext.names, self.class_names(ext.labels))
        for note in self.remarks:
            writer.note(note)
        writer.manifest["quality"] = self.quality
        writer.manifest["timings"]["extract_s"] = round(self.extract_s, 3)

    def collect(self) -> TsneResult:
        import tempfile

        import numpy as np

        steps = self.items()
        with tempfile.TemporaryDirectory(prefix="visctl-embed-") as tmp:
            self.folder = Path(tmp)  # the features pass through it, read into memory
            ext = next(steps)
        assert isinstance(ext, Extraction)
        layers = tuple(lay for lay in steps if isinstance(lay, LayerEmbedding))
        return TsneResult(**self.gathered(notes=tuple(self.remarks)), inputs=tuple(dict(path=n) for n in ext.names),
                         layers=layers, rows=tuple(ext.rows), labels=np.asarray(ext.labels), names=tuple(ext.names),
                         class_names=tuple(self.class_names(ext.labels)))

    def class_names(self, labels: list[int]) -> list[str]:
        """The dataset's class names, else the label numbers."""
        return list(self.dataset.classes or [str(i) for i in range(max(labels) + 1 if len(labels) else 1)])

    def _extract(self) -> Extraction | None:
        """Pool the layers' features of this rank's shard into ``features_<tag>.npy`` files in :attr:`folder`
        (memory-mapped, streamed batch by batch); with a writer (one process) the files are recorded in its
        manifest as they are completed, in one uninterrupted step. With several ranks, rank 0 gathers and merges
        the shards and returns the whole; the other ranks return None."""
        import numpy as np

        from visctl import embedding

        session, o = self.session, self.settings
        rank, world = session.rank, session.world
        assert self.folder is not None, "begin(writer) or collect() gives the folder"
        listed: list[bool] = []

        def record(paths: dict[str, Path]) -> None:
            if self.writer is not None and world == 1:
                list_features(self.writer, paths)
                listed.append(True)

        shard = self.indices[rank::world]
        with session.progress(len(shard), "features") as advance:
            result = embedding.extract(self.mi.model, self.layers, self.samples, shard, mean=self.mi.mean,
                                       std=self.mi.std, rgb=self.mi.rgb, device=session.device,
                                       batch_size=o.batch_size, num_workers=o.num_workers, pooling=o.pooling,
                                       extra_tokens=self.extra_tokens,
                                       out_dir=self.folder / (".shards" if world > 1 else ""),
                                       prefix=f"features.rank{rank}" if world > 1 else "features", progress=advance,
                                       inputs_of=self.inputs_of, on_done=record)
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
            result = embedding.merge_shards(gathered, self.folder)
            dist.barrier()
            dist.destroy_process_group()
        if self.writer is None:  # the library's: read into memory (the temporary folder goes)
            arrays = {label: np.array(np.load(path, allow_pickle=False)) for label, path in result["features"].items()}
        else:
            arrays = {label: np.load(path, mmap_mode="r", allow_pickle=False)
                      for label, path in result["features"].items()}
        return Extraction(features=result["features"], arrays=arrays, rows=result["rows"], labels=result["labels"],
                          names=result["names"], failures=result["failures"], tokens=result.get("tokens", []),
                          listed=bool(listed))

    def _settle(self, ext: Extraction) -> None:
        """What the embedding can use on the extracted samples, each change said once and recorded in the params
        and notes: PCA for fewer than 4 samples (t-SNE and UMAP need more), a lower perplexity for few samples,
        fewer components than samples or features, extra tokens only for token outputs."""
        from visctl import embedding

        def say(message: str) -> None:
            self.remarks.append(message)
            self.session.warn(message)

        o, p = self.settings, self.params
        samples = len(ext.rows)
        dims = {label: int(a.shape[1]) for label, a in ext.arrays.items()}
        asked_method = o.method
        if asked_method is not EmbedMethod.pca and 2 <= samples < 4:  # fewer than 2: embedding.embed's error
            given = sorted(f"{name}=" for name in METHOD_OPTIONS[asked_method.value])
            say(f"{samples} samples: too few for method={asked_method.value} (it needs 4), so PCA embedded them "
                f"({', '.join(given)} not used)")
            self.method = EmbedMethod.pca
        method = self.method
        p.update(method_params(o, method, self.learning_rate))
        asked = o.perplexity
        if method is EmbedMethod.tsne:
            self.perplexity = embedding.effective_perplexity(asked, samples)
            if self.perplexity != asked:
                say(f"perplexity={asked:g} lowered to {self.perplexity:.2f} for {samples} samples (t-SNE needs 3 x "
                    "perplexity neighbours of each)")
        p.update(method=method.value, perplexity=self.perplexity if method is EmbedMethod.tsne else None,
                 perplexity_requested=asked if asked_method is EmbedMethod.tsne else None, samples=samples)
        # components: n centred points span n - 1 dimensions, d features d; more would be columns of zeros
        want = p["n_components_requested"]
        if dims and samples >= 2:
            label, d = min(dims.items(), key=lambda kv: embedding.max_components(samples, kv[1]))
            most = embedding.max_components(samples, d)
            if want > most:
                say(f"n_components={want} lowered to {most}: {samples} samples of {d} features ({label}) span at "
                    f"most {most} dimensions")
            self.n_components = min(want, most)
            if samples == 2:
                say("2 samples lie on one line: the second coordinate is 0 (embed more samples for a 2-D picture)")
        p["n_components"] = self.n_components
        if method is EmbedMethod.tsne and self.n_components <= 3 and p["n_iter_without_progress"] is not None:
            try:  # openTSNE has no early stop (embedding.embed says so), scikit-learn's t-SNE does
                import openTSNE  # noqa: F401

                p["n_iter_without_progress"] = None
            except ImportError:
                pass
        if not ext.tokens:  # no layer gave tokens: nothing to leave out of the pooling
            if o.num_extra_tokens is not None:
                say(f"num_extra_tokens={o.num_extra_tokens} not used: the outputs of "
                    f"{', '.join(dims) or 'the layers'} are feature maps or vectors, not tokens")
            p["num_extra_tokens"] = None

    def _embed(self, ext: Extraction) -> Iterator[LayerEmbedding]:
        """Embed each layer's features and draw its plot, page and CSV, yielding each layer when it is done."""
        import csv
        import io
        import time

        import numpy as np

        from visctl import embedding, render
        from visctl.gallery import scatter_html
        from visctl.session import default_threads

        session, o = self.session, self.settings
        threads = session.threads or default_threads()  # openTSNE / scikit-learn jobs; torch is left alone
        labels = np.asarray(ext.labels)
        class_names = self.class_names(ext.labels)
        # small images for the interactive page's hover (and thumbnails), at most 500 of them
        thumb_imgs = [_thumb(self.samples, i) for i in ext.rows[:500]]
        thumbs_b64 = [_b64(t) for t in thumb_imgs]
        said: list[str] = []

        def warn_once(message: str) -> None:
            if message not in said:
                said.append(message)
                self.remarks.append(message)
                session.warn(message)
        for label, feats in ext.arrays.items():
            t0 = time.time()
            coords, how = embedding.embed(np.asarray(feats), self.method, perplexity=self.perplexity,
                                          n_iter=o.n_iter, learning_rate=self.learning_rate,
                                          early_exaggeration=o.early_exaggeration, metric=o.metric, seed=o.seed,
                                          threads=threads, warn=warn_once, n_components=self.n_components,
                                          init=o.init.value, n_iter_without_progress=o.n_iter_without_progress)
            k2d = embedding.knn_accuracy(coords[:, :2], labels)  # the two plotted dimensions
            kfeat = embedding.knn_accuracy(np.asarray(feats), labels)
            embed_s = time.time() - t0
            session.log(f"{label}: {how}, {feats.shape[1]}-d, 5-NN accuracy {k2d:.3f} in 2-D, {kfeat:.3f} in "
                        "feature space")
            tag = embedding.file_tag(label)  # not the features file's name: that may have been moved aside
            head = o.title or f"{self.title_stem} | {label}"
            fig = render.scatter_figure(coords[:, :2], labels, class_names, f"{head}\n{how}, {len(labels)} samples, "
                                        f"5-NN accuracy {k2d:.3f} (2-D) / {kfeat:.3f} (features)", o.legend,
                                        o.marker_size, thumb_imgs if o.thumbnails else None)
            png = render.figure_png(fig)
            page = scatter_html(coords[:, :2], labels, class_names, ext.names, thumbs_b64, f"{head} ({how})",
                                render.class_colors(len(class_names)))
            buf = io.StringIO()
            w = csv.writer(buf)
            dims = ["x", "y"] + [f"dim{d}" for d in range(2, coords.shape[1])]  # n_components > 2: every dimension
            w.writerow(["index", "path", "label", "class", *dims])
            for idx, name, lab, point in zip(ext.rows, ext.names, labels, coords):
                w.writerow([idx, name, int(lab), class_names[lab] if 0 <= lab < len(class_names) else "",
                            *(f"{v:.6f}" for v in point)])
            figure = Figure(f"tsne_{tag}.png", _decode(png), f"{label}: {how}",
                            dict(layer=label, knn5_2d=round(k2d, 4)))
            yield LayerEmbedding(label=label, tag=tag, method=how, knn5_2d=k2d, knn5_features=kfeat, embed_s=embed_s,
                                 features=feats, coords=coords, figure=figure, png=png, page=page,
                                 table=buf.getvalue())


def method_params(settings: TsneOptions, method: EmbedMethod, learning_rate: float | str) -> dict[str, Any]:
    """The embedding options as the params record them (``learning_rate`` as read): None where ``method`` does
    not take one."""
    takes, given = METHOD_OPTIONS[method.value], settings.as_dict()  # plain values (init: "pca")
    return {name: (learning_rate if name == "learning_rate" else given[name]) if name in takes else None
            for name in EMBED_OPTIONS}


def list_features(writer: OutputWriter, features: dict[str, Any]) -> None:
    """Record each layer's ``features_<tag>.npy`` in the run's manifest."""
    import numpy as np

    for label, path in features.items():
        shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        writer.add_output(path, "array", caption=f"{label}: features ({shape[0]} x {shape[1]})")


def plan(session: Session, model: Any, checkpoint: str | None = None, settings: TsneOptions | None = None, *,
         notes: Sequence[str] = ()) -> TsneRun:
    """Check the options, load the model and the dataset, sample it and choose the layers: the run of
    ``visctl tsne`` (:class:`TsneRun`). ``notes``: the caller's remarks on its own arguments (the CLI's on a
    flag that changes nothing), said as warnings and kept with the run's notes. Under torchrun (``session``
    joined) each rank extracts its shard."""
    import math

    from visctl import config, datasets, embedding, transforms
    from visctl.errors import ConfigError, VisctlError
    from visctl.layers import default_layers, find_layer, probe
    from visctl.library import _common

    o, since = settings or TsneOptions(), mark(session)
    arguments.model_spec(model)
    if o.test_cfg is not None:
        arguments.model_spec(o.test_cfg, "test_cfg", modules=False)
    target_layers, stage, phase = list(o.target_layers or ()), o.vis_stage, o.phase.value if o.phase else None
    if stage and target_layers:
        raise VisctlError("vis_stage= and target_layers= both choose the layer", hint="give one of them")
    if o.all_stages and (stage or target_layers):
        raise VisctlError(f"all_stages=True and {'vis_stage=' if stage else 'target_layers='} both choose the "
                          "layers", hint="give one of them")
    try:
        lr_value: float | str = float(o.learning_rate)
    except ValueError:
        if o.learning_rate != "auto":
            raise VisctlError(f"learning_rate={o.learning_rate!r}", hint="a number, or auto") from None
        lr_value = "auto"
    if isinstance(lr_value, float) and not (lr_value > 0 and math.isfinite(lr_value)):
        raise VisctlError(f"learning_rate={lr_value:g}: the step must be a positive number",
                          hint="a number such as 200, or auto (the sample count / 12)")
    embedding.check_metric(o.method, o.metric)
    # an option the method does not take: said before the model loads (a value left at its default says nothing)
    defaults, given = TsneOptions(), method_params(o, EmbedMethod.tsne, lr_value)  # every one, as given
    unused = [f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
              for name, value in given.items()
              if name not in METHOD_OPTIONS[o.method.value] and value != getattr(defaults, name)]
    if unused:
        raise VisctlError(f"method={o.method.value} does not use {', '.join(unused)}",
                          hint=f"leave {'it' if len(unused) == 1 else 'them'} out, or use method=tsne, which does")
    notes = list(notes)
    for note in notes:
        session.warn(note)
    mi = _common.open_model(session, model, checkpoint)
    cfg = mi.cfg
    test_cfg = o.test_cfg
    if test_cfg is not None:  # mmpretrain's vis_tsne: `cfg.test_dataloader = Config.fromfile(args.test_cfg).test_dataloader`
        if isinstance(test_cfg, (str, Path)):
            session.protect(test_cfg)
            other = config.load_config(str(test_cfg), [])
        else:
            other = config.as_config(test_cfg)
        if not config.cfg_get(other, "test_dataloader.dataset"):
            raise ConfigError(f"{test_cfg} has no test_dataloader.dataset", hint="test_cfg= takes a config with one")
        cfg.test_dataloader = other.test_dataloader
        if phase and phase != "test":
            raise VisctlError(f"test_cfg= gives the test dataloader, and phase= is {phase}",
                              hint="leave phase= out (or use phase=test) with test_cfg=")
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
                          hint="give test_cfg=, a config with a test_dataloader (as mmpretrain's vis_tsne.py; "
                          "self-supervised pretraining configs have none), add one, or pick another phase=")
    dataset = datasets.build_dataset(ds_cfg, used_phase, warn=session.warn, max_pixels=session.max_pixels)
    steps = steps or mi.steps
    known = dataset.classes
    wanted = (list(o.class_idx) if o.class_idx is not None else
              list(range(min(o.max_num_class, len(known)))) if known else None)
    if datasets.knows_labels(dataset):
        labels_all, stopped = datasets.scan_labels(dataset, wanted, o.max_num_samples_per_class)
    else:  # each label is a loaded sample: bounded, and shown
        total = min(datasets.length(dataset), datasets.LABEL_SCAN_LIMIT)
        with session.progress(total, "labels") as advance:
            labels_all, stopped = datasets.scan_labels(dataset, wanted, o.max_num_samples_per_class,
                                                        advance=advance)
    if stopped:
        session.warn(stopped)
    if labels_all and all(lab < 0 for lab in labels_all):
        raise VisctlError(f"the {used_phase} dataset's {len(labels_all)} images have no class labels, and t-SNE "
                          "colours its points and scores its k-NN accuracy by class",
                          hint="put the images in one folder per class (ROOT/cat/1.jpg, ROOT/dog/2.jpg) or give "
                          "the dataset an ann_file with labels")
    indices = embedding.sample_indices(labels_all, list(o.class_idx) if o.class_idx is not None else None,
                                       o.max_num_class, o.max_num_samples_per_class, o.seed)
    if not indices:
        raise VisctlError("no samples of the chosen classes", hint="check class_idx= against the dataset's labels")
    session.protect(*(dataset.name(i) for i in indices))
    # the layers: a probe on one real sample gives the default and the stage list
    samples = datasets.PipelineSamples(dataset, steps, seed=o.seed, skip_types=("PackInputs", "Normalize", "ToTensor"))
    first = samples[indices[0]]
    if first["error"]:
        raise VisctlError(f"cannot read {first['name']}: {first['error']}")
    example = transforms.to_tensor([transforms.ImageState(img=first["views"][0])], mi.mean, mi.std, mi.rgb)
    example = example.to(session.device)
    in_hw = (int(example.shape[2]), int(example.shape[3]))
    cfg_default = config.tool_option(cfg, "tsne_layers") or config.tool_option(cfg, "target_layers")
    self_supervised = embedding.is_self_supervisor(mi.model)
    if not (target_layers or stage or cfg_default or o.all_stages):
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
        notes.append(f"vis_stage={why}")
        session.log(f"layer: {why}")
    else:
        if o.all_stages:
            names = default_layers(mi.model, pr, in_hw).stages
        elif cfg_default:
            names = [find_layer(mi.model, n)[0] for n in cfg_default]
        else:
            names = [embedding.last_stage(mi.model, example)]
        session.log(f"layers: {', '.join(names)}")
    extra = o.num_extra_tokens
    if extra is None:
        extra = embedding.guess_extra_tokens(mi.model, [pr.shape_of(module_of.get(n, n)) for n in names], in_hw)
    layers = {n: find_layer(mi.model, module_of.get(n, n))[1] for n in names}
    used = method_params(o, o.method, lr_value)
    params = dict(config=mi.cfg_spec, checkpoint=mi.checkpoint, phase=used_phase, layers=names,
                  pooling=o.pooling.value, method=o.method.value, method_requested=o.method.value,
                  **{k: used[k] for k in ("perplexity", "n_iter", "learning_rate", "early_exaggeration", "metric")},
                  seed=o.seed, samples=None, world_size=session.world,
                  max_num_class=o.max_num_class, max_num_samples_per_class=o.max_num_samples_per_class,
                  n_components=o.n_components, n_components_requested=o.n_components,
                  init=used["init"], n_iter_without_progress=used["n_iter_without_progress"], num_extra_tokens=extra,
                  test_cfg=test_cfg if test_cfg is None or isinstance(test_cfg, str) else str(test_cfg),
                  vis_stage=stage.value if stage else None)
    title_stem = Path(mi.cfg_spec).stem if mi.cfg_spec not in ("<nn.Module>", "<config>") else "model"
    return TsneRun(session, o, mi, dataset, samples, indices, layers, inputs_of, extra, params, notes, title_stem,
                   lr_value, since=since)


@arguments.typed("tsne")
def tsne(model: Any, checkpoint: str | None = None, settings: TsneOptions | None = None, *,
         options: RunOptions | None = None, session: Session | None = None, **fields: Any) -> TsneResult:
    """Embed a model's features of a dataset in 2-D, coloured by class, with k-NN quality figures (``visctl tsne``).

    Args:
        model: a config (path, dict or mmengine Config) with a model and a dataset (``test_dataloader``,
            ``val_dataloader`` or ``extract_dataloader``), or an nn.Module with ``test_cfg`` giving the dataset.
        checkpoint: weights [default: the config's ``load_from``].
        settings: the options (:class:`visctl.TsneOptions`: the CLI's options of the same names, e.g. ``phase``,
            ``test_cfg``, ``target_layers``, ``vis_stage``, ``pooling``, ``method``); the defaults when left out.
        options: the shared run options (device, threads, cfg_options, ...).
        session: a :class:`visctl.Session` to run in (its options instead of ``options``).
        **fields: any of :class:`visctl.TsneOptions`' fields, replacing those of ``settings``.

    Returns:
        :class:`TsneResult`: per layer the features, coordinates, 5-NN accuracies and figures; each row's dataset
        index, label and file; the class names. Nothing is written (the features pass through a temporary folder
        that is removed) until ``save()``.
    """
    o = TsneOptions.build(settings, **fields)
    return plan(session or Session(options), model, checkpoint, o).collect()


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


#: release 0.1's name of :class:`TsneResult` (it goes in the next release)
Embedding = TsneResult
