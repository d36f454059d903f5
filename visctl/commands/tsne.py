"""`visctl tsne`: 2-D embeddings of a model's features, per layer, on one machine or many (torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from visctl import _options as opt
from visctl.arguments import WORKERS_MAX
from visctl.choices import EmbedMethod, Phase, Pooling, TsneInit, VisStage
from visctl.context import RunContext
from visctl.options import TsneOptions

EPILOG = """Examples:

  visctl tsne cfg.py ckpt.pth --phase test --max-num-samples-per-class 200

  visctl tsne cfg.py ckpt.pth --all-stages --method pca

  torchrun --nproc-per-node 4 -m visctl tsne cfg.py ckpt.pth     # each rank extracts a shard

  visctl tsne mocov2.py --checkpoint ckpt.pth --work-dir out/ --test-cfg tsne_data.py --vis-stage neck
"""


def _number_or_word(text: str) -> float | str:
    """``--learning-rate 200`` as the number the library takes; a word (auto) as it is."""
    try:
        return float(text)
    except ValueError:
        return text


@opt.shared(*opt.after("out_dir", "work_dir"), batch_size=32,
            seed=opt.seed("Seed of the sampling and the embedding."), settings=TsneOptions)
def tsne(
    config_file: Annotated[str, typer.Argument(metavar="CONFIG", help="A config with a model and a dataset.",
                                               show_default=False)],
    checkpoint: Annotated[Optional[str], typer.Argument(metavar="[CHECKPOINT]", help="Weights [default: load_from].",
                                                        show_default=False)] = None,
    phase: Annotated[Optional[Phase], typer.Option("--phase", "-p", help="Dataset of this dataloader "
                                                   "[default: test, else val].", show_default=False)] = None,
    checkpoint_opt: opt.CheckpointOption = None,
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
    init: Annotated[TsneInit, typer.Option("--init", case_sensitive=False,
                                           help="The t-SNE/UMAP starting layout: pca or random.")] = TsneInit.pca,
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
    learning_rate: Annotated[str, typer.Option("--learning-rate", help="A number or auto.", parser=_number_or_word)
                             ] = "auto",
    early_exaggeration: Annotated[float, typer.Option(
        "--early-exaggeration", min=1.0, help="t-SNE: how much clusters are pulled apart in the first iterations.")] = 12.0,
    metric: Annotated[str, typer.Option("--metric", help="Distance between features for t-SNE and UMAP "
                                        "(euclidean, cosine, ...).")] = "euclidean",
    legend: Annotated[bool, typer.Option("--legend/--no-legend", help="Class names in a legend.")] = True,
    marker_size: Annotated[float, typer.Option("--marker-size", min=0.1, help="Point size in the plot.")] = 12.0,
    thumbnails: Annotated[bool, typer.Option("--thumbnails", help="Draw small images at their points.")] = False,
    title: Annotated[Optional[str], typer.Option("--title", help="Plot title [default: CONFIG stem | layer].",
                                                 show_default=False)] = None,
    num_workers: Annotated[int, typer.Option("--num-workers", "-j", min=0, max=WORKERS_MAX,
                                                 help="DataLoader workers.")] = 0,
    work_dir: Annotated[Optional[Path], typer.Option(
        "--work-dir", "--work_dir", help="The seeds' name for --out-dir.", rich_help_panel="Output",
        show_default=False)] = None,
    *,
    opts: opt.CommandOptions,
    settings: TsneOptions,
) -> None:
    """Embed a model's features of a dataset in 2-D, coloured by class, with k-NN quality figures."""
    with RunContext("tsne", opts, out_dir=opts.out_dir or work_dir) as ctx:
        from visctl.commands._shared import execute
        from visctl.errors import VisctlError
        from visctl.library import embed

        if opts.out_dir and work_dir and opts.out_dir.resolve() != Path(work_dir).resolve():
            raise VisctlError(f"--out-dir {opts.out_dir} and --work-dir {work_dir} name two directories",
                              hint="--work-dir is the seeds' name for --out-dir: give one of them")
        if checkpoint and checkpoint_opt:
            raise VisctlError(f"two checkpoints: {checkpoint} (positional) and --checkpoint {checkpoint_opt}",
                              hint="give the checkpoint once, either after CONFIG or with --checkpoint")
        notes = ["--deterministic: visctl always seeds the sampling and the embedding (--seed), so the flag "
                 "changes nothing"] if deterministic else []
        execute(ctx, embed.plan(ctx.session, config_file, checkpoint or checkpoint_opt, settings, notes=notes))
