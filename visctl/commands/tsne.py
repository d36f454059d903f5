"""`visctl tsne`: 2-D embeddings of a model's features, per layer, on one machine or many (torchrun)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.commands.pipeline import Phase
from visctl.context import RunContext
from visctl.embedding import EmbedMethod, Pooling, VisStage

EPILOG = """Examples:

  visctl tsne cfg.py ckpt.pth --phase test --max-num-samples-per-class 200

  visctl tsne cfg.py ckpt.pth --all-stages --method pca

  torchrun --nproc-per-node 4 -m visctl tsne cfg.py ckpt.pth     # each rank extracts a shard

  visctl tsne mocov2.py --checkpoint ckpt.pth --work-dir out/ --test-cfg tsne_data.py --vis-stage neck
"""


def tsne(
    config_file: Annotated[str, typer.Argument(metavar="CONFIG", help="A config with a model and a dataset.",
                                               show_default=False)],
    checkpoint: Annotated[Optional[str], typer.Argument(metavar="[CHECKPOINT]", help="Weights [default: load_from].",
                                                        show_default=False)] = None,
    phase: Annotated[Optional[Phase], typer.Option("--phase", "-p", help="Dataset of this dataloader "
                                                   "[default: test, else val].", show_default=False)] = None,
    checkpoint_opt: Annotated[Optional[str], typer.Option(
        "--checkpoint", help="Weights, as the seeds write them (instead of the positional CHECKPOINT).",
        show_default=False)] = None,
    test_cfg: Annotated[Optional[str], typer.Option(
        "--test-cfg", "--test_cfg", help="Take test_dataloader from this config (e.g. for a self-supervised "
        "model's config, which has none).", show_default=False)] = None,
    target_layers: opt.TargetLayers = None,
    vis_stage: Annotated[Optional[VisStage], typer.Option(
        "--vis-stage", "--vis_stage", case_sensitive=False, help="mmpretrain's stage instead of --target-layers: "
        "backbone (its last stage's output), neck (its output) or pre_logits (the input of the head's last "
        "linear layer).", show_default=False)] = None,
    all_stages: Annotated[bool, typer.Option("--all-stages", help="Every stage beside the default layer.")] = False,
    pooling: Annotated[Pooling, typer.Option("--pooling", help="avg, max, cls (the class token) or flatten.",
                                             case_sensitive=False)] = Pooling.avg,
    num_extra_tokens: Annotated[Optional[int], typer.Option(
        "--num-extra-tokens", min=0, help="Extra tokens before the patch tokens [default: from the model, else 1 "
        "when tokens fit a grid after one].")] = None,
    max_num_class: Annotated[int, typer.Option(
        "--max-num-class", "--max_num_class", min=1,
        help="Without --class-idx: the first N classes present in the dataset.")] = 20,
    max_num_samples_per_class: Annotated[int, typer.Option("--max-num-samples-per-class", "--max-num-samples",
                                                           min=1, help="Drawn at random with --seed.")] = 100,
    class_idx: Annotated[Optional[list[int]], typer.Option("--class-idx", help="Only these classes (repeatable).")
                         ] = None,
    method: Annotated[EmbedMethod, typer.Option("--method", help="tsne (openTSNE FFT when installed, else "
                                                "scikit-learn), umap (umap-learn), pca.", case_sensitive=False)
                      ] = EmbedMethod.tsne,
    n_components: Annotated[int, typer.Option(
        "--n-components", "--n_components", min=2, help="Embed in N dimensions; the plot shows the first two, "
        "the CSV has all.")] = 2,
    init: Annotated[str, typer.Option("--init", help="The t-SNE/UMAP starting layout: pca or random.")] = "pca",
    n_iter_without_progress: Annotated[Optional[int], typer.Option(
        "--n-iter-without-progress", "--n_iter_without_progress", min=1,
        help="scikit-learn's early stop (not used by openTSNE) [default: 300].", show_default=False)] = None,
    deterministic: Annotated[bool, typer.Option(
        "--deterministic", help="Accepted for mmselfsup's habit: visctl always seeds sampling and embedding "
        "(--seed).", hidden=True)] = False,
    perplexity: Annotated[float, typer.Option(
        "--perplexity", min=1.0, help="t-SNE: the effective number of neighbours (lowered to (N-1)/3 for N "
        "samples when larger).")] = 30.0,
    n_iter: Annotated[int, typer.Option("--n-iter", "--n_iter", "--max-iter", min=1,
                                        help="t-SNE iterations, early exaggeration included (scikit-learn runs "
                                        "at least 250).")] = 1000,
    learning_rate: Annotated[str, typer.Option("--learning-rate", help="A number or auto.")] = "auto",
    early_exaggeration: Annotated[float, typer.Option(
        "--early-exaggeration", min=1.0, help="t-SNE: how much clusters are pulled apart in the first iterations.")] = 12.0,
    metric: Annotated[str, typer.Option("--metric", help="Distance between features for t-SNE and UMAP "
                                        "(euclidean, cosine, ...).")] = "euclidean",
    legend: Annotated[bool, typer.Option("--legend/--no-legend", help="Class names in a legend.")] = True,
    marker_size: Annotated[float, typer.Option("--marker-size", min=0.1, help="Point size in the plot.")] = 12.0,
    thumbnails: Annotated[bool, typer.Option("--thumbnails", help="Draw small images at their points.")] = False,
    title: Annotated[Optional[str], typer.Option("--title", help="Plot title [default: CONFIG stem | layer].",
                                                 show_default=False)] = None,
    num_workers: Annotated[int, typer.Option("--num-workers", "-j", min=0, max=opt.WORKERS_MAX,
                                                 help="DataLoader workers.")] = 0,
    unsafe_load_checkpoint: opt.UnsafeLoadCheckpoint = False,
    device: opt.Device = "auto",
    threads: opt.Threads = None,
    batch_size: opt.BatchSize = 32,
    cfg_options: opt.CfgOptions = None,
    out_dir: opt.OutDir = None,
    work_dir: Annotated[Optional[Path], typer.Option(
        "--work-dir", "--work_dir", help="The seeds' name for --out-dir.", rich_help_panel="Output",
        show_default=False)] = None,
    backend: opt.Backend = None,
    show: opt.Show = False,
    json_out: opt.Json = False,
    quiet: opt.Quiet = False,
    seed: Annotated[int, typer.Option("--seed", min=0, max=opt.SEED_MAX, help="Seed of the sampling and the embedding.")] = 0,
    debug: opt.Debug = False,
    max_pixels: opt.MaxPixels = opt.DEFAULT_MAX_PIXELS,
) -> None:
    """Embed a model's features of a dataset in 2-D, coloured by class, with k-NN quality figures."""
    with RunContext("tsne", out_dir=out_dir or work_dir, device=device, threads=threads, quiet=quiet,
                    json_out=json_out, debug=debug, seed=seed, cfg_options=cfg_options, backend=backend,
                    show=show, unsafe_load_checkpoint=unsafe_load_checkpoint, max_pixels=max_pixels) as ctx:
        from visctl.errors import VisctlError

        if out_dir and work_dir and Path(out_dir).resolve() != Path(work_dir).resolve():
            raise VisctlError(f"--out-dir {out_dir} and --work-dir {work_dir} name two directories",
                              hint="--work-dir is the seeds' name for --out-dir: give one of them")
        if checkpoint and checkpoint_opt:
            raise VisctlError(f"two checkpoints: {checkpoint} (positional) and --checkpoint {checkpoint_opt}",
                              hint="give the checkpoint once, either after CONFIG or with --checkpoint")
        if vis_stage and target_layers:
            raise VisctlError("--vis-stage and --target-layers both choose the layer",
                              hint="give one of them")
        notes = []
        if deterministic:
            notes.append("--deterministic: visctl always seeds the sampling and the embedding (--seed), so "
                         "the flag changes nothing")
        _run(ctx, config_file, checkpoint or checkpoint_opt, phase=phase, target_layers=target_layers,
             test_cfg=test_cfg, vis_stage=vis_stage, n_components=n_components, init=init,
             n_iter_without_progress=n_iter_without_progress, notes=notes, all_stages=all_stages,
             pooling=pooling, num_extra_tokens=num_extra_tokens, max_num_class=max_num_class,
             per_class=max_num_samples_per_class, class_idx=class_idx, method=method, perplexity=perplexity,
             n_iter=n_iter, learning_rate=learning_rate, early_exaggeration=early_exaggeration, metric=metric,
             legend=legend, marker_size=marker_size, thumbnails=thumbnails, title=title, num_workers=num_workers,
             batch_size=batch_size, seed=seed)


def _run(ctx: RunContext, config_file: str, checkpoint: str | None, *, phase: Phase | None,
         target_layers: list[str] | None, test_cfg: str | None, vis_stage: VisStage | None, n_components: int,
         init: str, n_iter_without_progress: int | None, notes: list[str], all_stages: bool, pooling: Pooling,
         num_extra_tokens: int | None,
         max_num_class: int, per_class: int, class_idx: list[int] | None, method: EmbedMethod, perplexity: float,
         n_iter: int, learning_rate: str, early_exaggeration: float, metric: str, legend: bool, marker_size: float,
         thumbnails: bool, title: str | None, num_workers: int, batch_size: int, seed: int) -> None:
    import csv
    import io
    import json
    import math
    import time

    import numpy as np

    from visctl import cams, config, datasets, embedding, models, output, render, transforms
    from visctl.commands._shared import open_model
    from visctl.errors import ConfigError, VisctlError

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if ctx.device_spec.startswith("cuda") else "gloo")
        if rank:
            ctx.quiet = True
            ctx.console.quiet = True
        if ctx.device_spec == "auto" or ctx.device_spec.startswith("cuda"):
            import torch

            if torch.cuda.is_available():
                ctx.options = ctx.options.replace(device=f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
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
    embedding.check_metric(method, metric)
    for note in notes:
        ctx.warn(note)
    started = time.time()
    mi = open_model(ctx, [], images=False, cfg_spec=config_file, checkpoint=checkpoint)
    cfg = mi.cfg
    if test_cfg:  # mmpretrain's vis_tsne: `cfg.test_dataloader = Config.fromfile(args.test_cfg).test_dataloader`
        ctx.protect(test_cfg)
        other = config.load_config(test_cfg, [])
        if not config.cfg_get(other, "test_dataloader.dataset"):
            raise ConfigError(f"{test_cfg} has no test_dataloader.dataset", hint="--test-cfg takes a config with one")
        cfg.test_dataloader = other.test_dataloader
        if phase and phase.value != "test":
            raise VisctlError(f"--test-cfg gives the test dataloader, and --phase is {phase.value}",
                              hint="leave --phase out (or use --phase test) with --test-cfg")
    # mmselfsup's configs/tsne/*.py name theirs extract_dataloader
    phases = [phase.value] if phase else ["test", "val", "extract"]
    ds_cfg = steps = None
    for ph in phases:
        if config.cfg_get(cfg, f"{ph}_dataloader.dataset"):
            ds_cfg, steps = datasets.dataset_config(cfg, ph)
            used_phase = ph
            break
    if ds_cfg is None:
        raise ConfigError(f"the config has no {' or '.join(f'{p}_dataloader' for p in phases)}.dataset",
                          hint="add one, or pick another --phase")
    dataset = datasets.build_dataset(ds_cfg, used_phase, warn=ctx.warn, max_pixels=ctx.max_pixels)
    steps = steps or mi.steps
    labels_all = dataset.labels()
    if labels_all and all(lab < 0 for lab in labels_all):
        raise VisctlError(f"the {used_phase} dataset's {len(labels_all)} images have no class labels, and t-SNE "
                          "colours its points and scores its k-NN accuracy by class",
                          hint="put the images in one folder per class (ROOT/cat/1.jpg, ROOT/dog/2.jpg) or give "
                          "the dataset an ann_file with labels")
    indices = embedding.sample_indices(labels_all, class_idx, max_num_class, per_class, seed)
    if not indices:
        raise VisctlError("no samples of the chosen classes", hint="check --class-idx against the dataset's labels")
    ctx.protect(*(dataset.name(i) for i in indices))
    # the layers: a probe on one real sample gives the default and the stage list
    samples = datasets.PipelineSamples(dataset, steps, seed=seed, skip_types=("PackInputs", "Normalize", "ToTensor"))
    first = samples[indices[0]]
    if first["error"]:
        raise VisctlError(f"cannot read {first['name']}: {first['error']}")
    example = transforms.to_tensor([transforms.ImageState(img=first["views"][0])], mi.mean, mi.std, mi.rgb).to(ctx.device)
    in_hw = tuple(example.shape[2:])
    pr = cams.probe(mi.model, example, logits=False)
    inputs_of: frozenset[str] = frozenset()
    module_of: dict[str, str] = {}
    cfg_default = config.tool_option(cfg, "tsne_layers") or config.tool_option(cfg, "target_layers")
    if not (target_layers or vis_stage or cfg_default or all_stages):
        vis_stage = VisStage.neck  # mmpretrain vis_tsne's default: extract_feat's stage, the neck's output
    if target_layers:
        names = [models.find_layer(mi.model, n)[0] for n in opt.split_list(target_layers)]
    elif vis_stage:
        default = embedding.last_stage(mi.model, example)
        label, path, take_input, why = embedding.vis_stage_layer(mi.model, vis_stage, pr.shape_of, default)
        names, module_of = [label], {label: path}
        inputs_of = frozenset([label]) if take_input else frozenset()
        notes.append(f"--vis-stage {why}")
        ctx.log(f"layer: {why}")
    else:
        if all_stages:
            names = cams.default_layers(mi.model, pr, in_hw).stages
        elif cfg_default:
            names = [models.find_layer(mi.model, n)[0] for n in cfg_default]
        else:
            names = [embedding.last_stage(mi.model, example)]
        ctx.log(f"layers: {', '.join(names)}")
    extra = num_extra_tokens
    if extra is None:
        holder = getattr(mi.model, "backbone", mi.model)
        extra = next((getattr(holder, a) for a in ("num_extra_tokens", "num_prefix_tokens")
                      if isinstance(getattr(holder, a, None), int)), None)
        if extra is None:
            shapes = [pr.shape_of(module_of.get(n, n)) for n in names]
            tok = next((s for s in shapes if isinstance(s, tuple) and len(s) == 3), None)
            found = cams.token_grid(tok[1], in_hw, None) if tok else None
            extra = found[1] if found else 0
    layers = {n: models.find_layer(mi.model, module_of.get(n, n))[1] for n in names}

    params = dict(config=config_file, checkpoint=mi.checkpoint, phase=used_phase, layers=names,
                  pooling=pooling.value, method=method.value, perplexity=perplexity, n_iter=n_iter,
                  seed=seed, samples=None, world_size=world,
                  max_num_class=max_num_class, max_num_samples_per_class=per_class,
                  n_components=n_components, init=init,
                  n_iter_without_progress=n_iter_without_progress, test_cfg=test_cfg,
                  vis_stage=vis_stage.value if vis_stage else None)
    # rank 0 opens the run's record now, so that an interrupt during extraction leaves a true manifest
    writer = ctx.open_writer(params) if rank == 0 else None
    work = ctx.out_dir
    shard = indices[rank::world]
    with ctx.progress(len(shard), "features") as advance:
        result = embedding.extract(mi.model, layers, samples, shard, mean=mi.mean, std=mi.std, rgb=mi.rgb,
                                   device=ctx.device, batch_size=batch_size, num_workers=num_workers, pooling=pooling,
                                   extra_tokens=extra, out_dir=work / (".shards" if world > 1 else ""),
                                   prefix=f"features.rank{rank}" if world > 1 else "features", progress=advance,
                                   inputs_of=inputs_of)
    extracted = time.time() - started
    if world > 1:
        import torch.distributed as dist

        meta = {k: result[k] for k in ("rows", "labels", "names", "failures")}
        meta["features"] = {k: str(v) for k, v in result["features"].items()}
        gathered: list = [None] * world
        dist.all_gather_object(gathered, meta)
        if rank:
            dist.barrier()
            dist.destroy_process_group()
            return
        result = embedding.merge_shards(gathered, ctx.out_dir)
        dist.barrier()
        dist.destroy_process_group()
    asked_perplexity = perplexity
    if method is embedding.EmbedMethod.tsne and len(result["rows"]) >= 4:  # fewer: PCA (embedding.embed)
        perplexity = embedding.effective_perplexity(perplexity, len(result["rows"]))
        if perplexity != asked_perplexity:  # recorded as used, said once
            notes.append(f"--perplexity {asked_perplexity:g} lowered to {perplexity:.2f} for "
                         f"{len(result['rows'])} samples (t-SNE needs 3 x perplexity neighbours of each)")
            ctx.warn(notes[-1])
    assert writer is not None
    params = writer.manifest["params"]  # the record's own dict (open_writer copies what it is given)
    params["perplexity"], params["perplexity_requested"] = perplexity, asked_perplexity
    params["samples"] = len(result["rows"])
    for label, path in result["features"].items():  # finished: listed now, whatever happens to the embedding
        with output.uninterrupted():
            shape = np.load(path, mmap_mode="r").shape
            writer.add_output(path, "array", caption=f"{label}: features ({shape[0]} x {shape[1]})")
    for p in result["names"]:
        writer.add_input(p)
    embed_notes: list[str] = []

    def warn_once(message: str) -> None:
        if message not in embed_notes:
            embed_notes.append(message)
            ctx.warn(message)
    for name, message in result["failures"]:
        ctx.skip(name, message)
    labels = np.asarray(result["labels"])
    class_names = dataset.classes or [str(i) for i in range(max(labels) + 1 if len(labels) else 1)]
    quality = {}
    # small images for the interactive page's hover (and --thumbnails), at most 500 of them
    thumb_imgs = [_thumb(samples, i) for i in result["rows"][:500]]
    thumbs_b64 = [_b64(t) for t in thumb_imgs]
    for label, path in result["features"].items():
        feats = np.load(path, mmap_mode="r")
        t0 = time.time()
        coords, how = embedding.embed(np.asarray(feats), method, perplexity=perplexity, n_iter=n_iter,
                                      learning_rate=lr_value, early_exaggeration=early_exaggeration, metric=metric,
                                      seed=seed, threads=ctx.threads, warn=warn_once, n_components=n_components,
                                      init=init, n_iter_without_progress=n_iter_without_progress)
        k2d = embedding.knn_accuracy(coords[:, :2], labels)  # the two plotted dimensions
        kfeat = embedding.knn_accuracy(np.asarray(feats), labels)
        quality[label] = dict(knn5_2d=round(k2d, 4), knn5_features=round(kfeat, 4), method=how,
                              embed_s=round(time.time() - t0, 3), dims=int(feats.shape[1]))
        ctx.log(f"{label}: {how}, {feats.shape[1]}-d, 5-NN accuracy {k2d:.3f} in 2-D, {kfeat:.3f} in feature space")
        tag = path.stem.removeprefix("features_")
        head = title or f"{Path(config_file).stem} | {label}"
        fig = render.scatter_figure(coords[:, :2], labels, class_names, f"{head}\n{how}, {len(labels)} samples, "
                                    f"5-NN accuracy {k2d:.3f} (2-D) / {kfeat:.3f} (features)", legend, marker_size,
                                    thumb_imgs if thumbnails else None)
        png = writer.write_bytes(f"tsne_{tag}.png", render.figure_png(fig))
        writer.add_output(png, "image", caption=f"{label}: {how}", layer=label, knn5_2d=quality[label]["knn5_2d"])
        page = output.scatter_html(coords[:, :2], labels, class_names, result["names"], thumbs_b64, f"{head} ({how})",
                                   render.class_colors(len(class_names)))
        target = writer.write_bytes(f"tsne_{tag}.html", page.encode())
        writer.add_output(target, "page", caption=f"interactive scatter of {label}")
        buf = io.StringIO()
        w = csv.writer(buf)
        dims = ["x", "y"] + [f"dim{d}" for d in range(2, coords.shape[1])]  # --n-components > 2: every dimension
        w.writerow(["index", "path", "label", "class", *dims])
        for idx, name, lab, point in zip(result["rows"], result["names"], labels, coords):
            w.writerow([idx, name, int(lab), class_names[lab] if 0 <= lab < len(class_names) else "",
                        *(f"{v:.6f}" for v in point)])
        writer.add_output(writer.write_bytes(f"tsne_{tag}.csv", buf.getvalue().encode()), "table",
                          caption=f"{label}: coordinates, labels, paths")
    labels_json = writer.write_bytes("labels.json", json.dumps(dict(
        rows=result["rows"], labels=result["labels"], names=result["names"], classes=class_names)).encode())
    writer.add_output(labels_json, "data", caption="each row's dataset index, label, file and the class names")
    for note in notes + embed_notes:
        writer.note(note)
    writer.manifest["quality"] = quality
    writer.manifest["timings"]["extract_s"] = round(extracted, 3)
    ctx.finish()



def _thumb(samples: object, index: int) -> object:
    from visctl import render

    item = samples[index]  # type: ignore[index]
    return render.fit(item["views"][0], 48) if not item["error"] else None


def _b64(img: object) -> str:
    import base64

    import cv2

    if img is None:
        return ""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))  # type: ignore[arg-type]
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()
