"""Feature embeddings: pooling layer outputs to vectors, sampling classes, t-SNE / UMAP / PCA, k-NN quality."""

from __future__ import annotations

import inspect
import os
from typing import TYPE_CHECKING, Any

from visctl.choices import EmbedMethod, Pooling, VisStage
from visctl.errors import VisctlError, closest

if TYPE_CHECKING:
    import numpy as np
    import torch



def vis_stage_layer(model: Any, stage: VisStage, shape_of: Any, default: str) -> tuple[str, str, bool, str]:
    """The layer of an mmpretrain stage: ``(label, module path, take its input, what was chosen and why)``.

    ``backbone`` is the backbone's output (its last stage; ``default``, the last spatial stage, when the
    model has no ``backbone`` or it returns several maps); ``neck`` the neck's output, or the backbone's
    when there is none (as mmpretrain's ``extract_feat``); ``pre_logits`` the input of the head's last
    linear layer, captured by a forward pre-hook.
    """
    from torch import nn

    children = dict(model.named_children())
    if stage is VisStage.pre_logits:
        holder = children.get("head", model)
        prefix = "head." if "head" in children else ""
        linears = [n for n, m in holder.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise VisctlError("vis_stage=pre_logits: the model has no linear layer to take the input of",
                              hint="use vis_stage=neck or backbone, or target_layers=")
        name = prefix + linears[-1]
        return "pre_logits", name, True, f"pre_logits: the input of {name} (the head's last linear layer)"
    if stage is VisStage.neck:
        if "neck" in children and shape_of("neck") is not None:
            return "neck", "neck", False, "neck: the neck's output"
        why = "the model has no neck: its backbone's output, as mmpretrain's extract_feat"
    else:
        why = "the backbone's output"
    if "backbone" in children and isinstance(shape_of("backbone"), tuple):
        return "backbone", "backbone", False, f"{stage.value}: {why}"
    if "backbone" in children and shape_of("backbone") == "tuple" and type(model).__module__.startswith("mmpretrain."):
        # an mmpretrain backbone returns a tuple (its out_indices; a ViT's class token after its final norm): one
        # feature per element, as vis_tsne.py saves feat_<index> for each
        return "backbone", "backbone", False, f"{stage.value}: {why}"
    return default, default, False, f"{stage.value}: {why} (the last stage, {default})"


def is_self_supervisor(model: Any) -> bool:
    """An mmpretrain self-supervised model (``BaseSelfSupervisor``: MoCo v3, SimCLR, BYOL, MAE, ...), whose
    ``extract_feat`` is its backbone alone and takes no ``stage``."""
    if not type(model).__module__.startswith("mmpretrain."):
        return False
    try:
        from mmpretrain.models.selfsup import BaseSelfSupervisor
    except ImportError:
        return False
    return isinstance(model, BaseSelfSupervisor)


def self_supervised_stages(model: Any, stage: VisStage) -> Any:
    """The model whose forward reaches ``stage`` of an mmpretrain self-supervised model.

    Its forward (``mode='tensor'``) is ``extract_feat``, the backbone alone, so its neck never runs; for
    ``neck`` this returns a module holding the same ``backbone`` and ``neck`` whose forward is
    ``neck(extract_feat(x))``, the projection its ``loss()`` computes (MoCo v3, SimCLR, BYOL, ...). mmpretrain's
    ``vis_tsne.py`` stops there with a TypeError (``extract_feat() got an unexpected keyword argument 'stage'``).

    Raises:
        VisctlError: ``pre_logits`` (no classification head), or ``neck`` on a model without one.
    """
    from torch import nn

    name = type(model).__name__
    if stage is VisStage.pre_logits:
        raise VisctlError(f"vis_stage=pre_logits: {name} is a self-supervised model with no classification head "
                          "(pre_logits is the input of a classifier's last layer)",
                          hint="use vis_stage=neck (its projection) or vis_stage=backbone")
    if stage is VisStage.backbone:
        return model
    if getattr(model, "neck", None) is None:
        raise VisctlError(f"vis_stage=neck: {name} has no neck", hint="use vis_stage=backbone")

    # SwAV's neck takes the list of its multi-crop backbone outputs (SwAV.loss: output.append(_out); self.neck(output))
    as_list = name == "SwAV"

    class NeckOfBackbone(nn.Module):
        """``neck(backbone(x))``, with the model's own modules under their own names."""

        def __init__(self, backbone: nn.Module, neck: nn.Module, extract_feat: Any) -> None:
            super().__init__()
            self.backbone = backbone
            self.neck = neck
            self.extract_feat = extract_feat  # the model's own: its backbone without masking (MAE: mask=None)

        def forward(self, x: Any) -> Any:
            feats = self.extract_feat(x)
            try:
                return self.neck([feats] if as_list else feats)
            except (RuntimeError, TypeError, ValueError, AssertionError, IndexError) as exc:
                raise VisctlError(f"vis_stage=neck: {name}'s neck ({type(self.neck).__name__}) does not take its "
                                  f"backbone's output: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                                  hint="use vis_stage=backbone, or target_layers= with a layer of the neck") from exc

    return NeckOfBackbone(model.backbone, model.neck, model.extract_feat).eval()


def last_stage(model: Any, example: Any) -> str:
    """The model's last stage (visctl.layers' default layer), chosen the same whatever the input size.

    The default-layer rule takes the last output with a spatial map larger than 1x1, so a small input (a 32 px CIFAR
    image into a ResNet) would move it to an earlier stage; here it is chosen on an input whose short
    side is at least 224 px, the layout a model is built for. A model that takes one input size only
    keeps the choice made on ``example``.
    """
    import torch

    from visctl import layers

    in_hw = (int(example.shape[2]), int(example.shape[3]))
    if min(in_hw) < 224:
        f = 224 / min(in_hw)
        big = torch.zeros(1, example.shape[1], round(in_hw[0] * f), round(in_hw[1] * f), dtype=example.dtype,
                          device=example.device)
        try:
            pr = layers.probe(model, big, logits=False)
            big_hw = (int(big.shape[2]), int(big.shape[3]))
            return layers.default_target_layers(model, pr, big_hw, layers.is_vit_like(pr, big_hw))[0]
        except (RuntimeError, ValueError, AssertionError, VisctlError):  # a fixed-size model (ViT img_size)
            pass
    pr = layers.probe(model, example, logits=False)
    return layers.default_target_layers(model, pr, in_hw, layers.is_vit_like(pr, in_hw))[0]


def pool(t: torch.Tensor, mode: Pooling, extra_tokens: int = 1) -> torch.Tensor:
    """(N, C, H, W), channels-last, tokens (N, L, C) or vectors (N, C) -> (N, D).

    For tokens, ``cls`` takes the first token and ``avg``/``max`` pool the patch tokens only (the
    ``extra_tokens`` leading tokens are left out).
    """
    if t.ndim == 2:
        return t.float()
    if t.ndim == 3:  # tokens
        if mode is Pooling.cls:
            if extra_tokens < 1:
                raise VisctlError("pooling=cls needs a class token, and this model has none",
                                  hint="use pooling=avg (the mean of the patch tokens)")
            return t[:, 0].float()
        patches = t[:, extra_tokens:]
        if mode is Pooling.flatten:
            return patches.flatten(1).float()
        return (patches.mean(1) if mode is Pooling.avg else patches.amax(1)).float()
    if t.ndim == 4:
        if mode is Pooling.cls:
            raise VisctlError("pooling=cls applies to token outputs (ViT-like layers)",
                              hint="use pooling=avg or max for convolutional feature maps")
        if mode is Pooling.flatten:
            return t.flatten(1).float()
        return (t.mean((2, 3)) if mode is Pooling.avg else t.amax((2, 3))).float()
    raise VisctlError(f"cannot pool a {t.ndim}-D output {tuple(t.shape)} into vectors")


def metrics(method: EmbedMethod) -> list[str] | None:
    """The ``--metric`` names ``method`` accepts whatever the number of samples (None: it takes no metric).

    openTSNE finds neighbours exactly (scikit-learn) below 1000 samples and approximately (Annoy, or
    pynndescent when installed) above, so only the metrics both accept are safe; scikit-learn's t-SNE takes its
    neighbour metrics; UMAP its named distances.
    """
    if method is EmbedMethod.pca:
        return None
    if method is EmbedMethod.umap:
        try:
            from umap.distances import named_distances
        except ImportError:
            return None  # embed() says umap-learn is missing
        return sorted(named_distances)
    try:
        from openTSNE import nearest_neighbors as nn
    except ImportError:
        from sklearn.neighbors import VALID_METRICS

        return sorted(m for m in VALID_METRICS["brute"] if m != "precomputed")
    approx = set(nn.Annoy.VALID_METRICS)
    try:
        import pynndescent  # noqa: F401

        approx |= set(nn.NNDescent.VALID_METRICS)
    except ImportError:
        pass
    return sorted(set(nn.Sklearn.VALID_METRICS) & approx)


def check_metric(method: EmbedMethod, metric: str) -> None:
    """Refuse a ``--metric`` the embedding cannot use, before any feature is extracted."""
    names = metrics(method)
    if names is not None and metric not in names:
        near = closest(metric, names)
        raise VisctlError(f"metric={metric!r}: {method.value} does not know this distance",
                          hint=(f"did you mean {', '.join(near)}? " if near else "") + f"choose one of {', '.join(names)}")


def sample_indices(labels: list[int], classes: list[int] | None, max_classes: int, per_class: int,
                   seed: int) -> list[int]:
    """Up to ``per_class`` random samples of each chosen class (the first ``max_classes`` present by default).

    Unlabelled samples (label -1) are never chosen.

    Returns:
        Dataset indices, sorted.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        if lab >= 0:  # -1: a file outside the class folders, with no class to colour it by
            by_class.setdefault(lab, []).append(i)
    chosen = classes if classes is not None else sorted(by_class)[:max_classes]
    out: list[int] = []
    for c in chosen:
        members = by_class.get(c, [])
        if len(members) > per_class:
            members = list(rng.choice(members, size=per_class, replace=False))
        out.extend(int(m) for m in members)
    return sorted(out)


def knn_accuracy(x: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy: each point's majority label among its ``k`` nearest other points."""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    n = len(labels)
    if n <= k:
        return float("nan")
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    idx = nn.kneighbors(x, return_distance=False)[:, 1:]  # drop the point itself
    votes = labels[idx]
    pred = np.array([np.bincount(v).argmax() for v in votes])
    return float((pred == labels).mean())


def effective_perplexity(perplexity: float, n: int) -> float:
    """The perplexity t-SNE can use on ``n`` points: below n / 3 (each point needs 3 x perplexity neighbours)."""
    return perplexity if perplexity * 3 < n else max(1.0, (n - 1) / 3.0)


def max_components(samples: int, dims: int) -> int:
    """The most dimensions ``samples`` points of ``dims`` features can be embedded in without a column of zeros:
    centred, ``n`` points span at most ``n - 1`` dimensions; never fewer than the plot's 2."""
    return max(2, min(samples - 1, dims))


def embed(features: np.ndarray, method: EmbedMethod, *, perplexity: float = 30.0, n_iter: int = 1000,
          learning_rate: float | str = "auto", early_exaggeration: float = 12.0, metric: str = "euclidean",
          seed: int = 0, threads: int = 1, warn: Any = None, n_components: int = 2, init: str = "pca",
          n_iter_without_progress: int | None = None) -> tuple[np.ndarray, str]:
    """Project features to ``n_components`` dimensions; returns the coordinates and a description of what ran.

    t-SNE uses openTSNE with FFT gradients when installed (its "auto" would pick the slower Barnes-Hut
    below 10,000 points; FFT exists for 1 and 2 dimensions only, so 3 take Barnes-Hut), else (or for more than
    3 dimensions, where openTSNE's Barnes-Hut grows as 2^d) scikit-learn after PCA to 50 dimensions (Barnes-Hut
    below 4 dimensions, the exact method above). ``n_components`` must not exceed :func:`max_components`.
    ``init`` (pca or random) is the starting layout; ``n_iter_without_progress`` is scikit-learn's
    early stop and has no openTSNE counterpart. Every method is seeded.
    """
    import numpy as np

    x = np.asarray(features, dtype=np.float32)
    n = len(x)
    if n < 2:
        raise VisctlError(f"{n} sample(s): an embedding needs at least 2", hint="raise max_num_samples_per_class=")
    if n_components < 2:
        raise VisctlError(f"n_components={n_components}: the plot needs 2 dimensions", hint="use 2 or more")
    if init not in ("pca", "random"):
        raise VisctlError(f"init={init!r}", hint="use pca or random")
    if x.shape[1] < 2:
        raise VisctlError(f"features of {x.shape[1]} dimension: a 2-D picture needs at least 2",
                          hint="choose a layer with more channels (target_layers=)")
    most = max_components(n, x.shape[1])
    if n_components > most:  # a caller that did not settle it (library.embed lowers it with a warning)
        raise VisctlError(f"n_components={n_components}: {n} samples of {x.shape[1]} features span at most "
                          f"{most} dimensions", hint=f"use n_components={most} or fewer, or embed more samples")
    if method is EmbedMethod.pca or n < 4:
        from sklearn.decomposition import PCA

        return PCA(n_components=n_components, random_state=seed).fit_transform(x), "PCA"
    if method is EmbedMethod.umap:
        try:
            import umap
        except ImportError as exc:
            raise VisctlError("method=umap needs umap-learn", hint="pip install umap-learn") from exc
        if warn:
            warn("umap: the first call in a process spends ~30 s compiling (numba)")
        reducer = umap.UMAP(n_components=n_components, metric=metric, random_state=seed, n_neighbors=min(15, n - 1),
                            init="pca" if init == "pca" else "random")
        return reducer.fit_transform(x), "UMAP (umap-learn)"
    used = effective_perplexity(perplexity, n)
    if used != perplexity:
        perplexity = used
        if warn:
            warn(f"perplexity lowered to {perplexity:.1f} for {n} samples")
    try:
        import openTSNE
    except ImportError:
        openTSNE = None
    if openTSNE is not None and n_components <= 3:  # its Barnes-Hut above 3 dimensions grows as 2^d (and segfaults)
        if n_iter_without_progress is not None and warn:
            warn("n_iter_without_progress= does not apply to openTSNE (it runs every iteration); it is "
                 "scikit-learn's early stop, used when openTSNE is not installed")
        early = min(250, max(1, n_iter // 4))
        gradient = "fft" if n_components <= 2 else "bh"  # openTSNE's FFT gradients exist for 1-2 dimensions only
        tsne = openTSNE.TSNE(n_components=n_components, perplexity=perplexity, learning_rate=learning_rate,
                             early_exaggeration=early_exaggeration, early_exaggeration_iter=early,
                             n_iter=max(1, n_iter - early), metric=metric, negative_gradient_method=gradient,
                             initialization=init, random_state=seed, n_jobs=threads)
        return np.asarray(tsne.fit(x)), f"t-SNE (openTSNE {openTSNE.__version__}, {gradient.upper()})"
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if x.shape[1] > 50 and n > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    kwargs: dict[str, Any] = dict(n_components=n_components, perplexity=perplexity,
                                  early_exaggeration=early_exaggeration, learning_rate=learning_rate, metric=metric,
                                  init=init, random_state=seed, n_jobs=threads,
                                  method="barnes_hut" if n_components < 4 else "exact")  # Barnes-Hut: < 4 dims
    if n_iter_without_progress is not None:
        kwargs["n_iter_without_progress"] = n_iter_without_progress
    # scikit-learn renamed n_iter to max_iter in 1.5 and removed the old name in 1.7
    iter_key = "max_iter" if "max_iter" in inspect.signature(TSNE.__init__).parameters else "n_iter"
    kwargs[iter_key] = max(250, n_iter)
    return TSNE(**kwargs).fit_transform(x), "t-SNE (scikit-learn, PCA-50)"


def file_tag(label: str) -> str:
    """A layer's part of its file names: ``features_<tag>.npy``, ``tsne_<tag>.png``."""
    return label.replace(".", "_").replace("[", "-").replace("]", "")


def feature_file(path: Any, rows: int, dims: int) -> Any:
    """A (rows, dims) float32 .npy to fill in place through a memory map, its disk space taken first.

    Writing through a map onto a full disk is a SIGBUS that kills the process with nothing said. So the free
    space is checked against the file's size, and the file's blocks are reserved (``posix_fallocate``) before
    it is mapped: a full disk is an ``OSError(ENOSPC)`` here, which the run reports as one clear error.
    """
    import errno
    import shutil
    from pathlib import Path

    import numpy as np

    path = Path(path)
    need = rows * dims * 4 + 4096  # float32 rows and the .npy header
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise OSError(errno.ENOSPC, f"the features need {need / 2**20:.1f} MiB and the disk has "
                      f"{free / 2**20:.1f} MiB free", str(path))
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dims))
    if hasattr(os, "posix_fallocate"):
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
                del mm
                path.unlink(missing_ok=True)
                raise
        finally:
            os.close(fd)
    return mm


def extract(model: Any, layers: dict[str, Any], samples: Any, indices: list[int], *, mean: Any, std: Any, rgb: bool,
            device: str, batch_size: int, num_workers: int, pooling: Pooling, extra_tokens: int,
            out_dir: Any, prefix: str = "features", progress: Any = None,
            inputs_of: frozenset[str] = frozenset(), on_done: Any = None) -> dict[str, Any]:
    """Pool the chosen layers' outputs for ``indices`` of ``samples`` into memory-mapped .npy files.

    For the labels in ``inputs_of`` the layer's input is taken instead of its output (``pre_logits``: the
    input of the head's last linear layer).

    Features stream to disk batch by batch, so 100,000 images x 2048 dims need no more memory than one
    batch. Returns ``dict(features={label: path}, rows=[dataset index per row], labels, names, failures,
    tokens=[the labels whose outputs were tokens])``.
    When extraction stops (an interrupt, a full disk, an error), the half-filled files are removed.
    ``on_done(paths)`` (a run recording the files in its manifest) is called once they are complete, in the same
    uninterrupted step as their completion: an interrupt leaves either no file or every file recorded.
    """
    from pathlib import Path

    import numpy as np

    from visctl import datasets, featmaps, transforms
    from visctl.output.manifest import free_name
    from visctl.output.writer import uninterrupted

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    paths: dict[str, Path] = {}
    rows: list[int] = []
    labels: list[int] = []
    names: list[str] = []
    failures: list[tuple[str, str]] = []
    pending: list[dict] = []
    tokens: set[str] = set()  # the layers whose outputs were tokens (their extra tokens left out of the pooling)
    done = False

    def flush() -> None:
        if not pending:
            return
        states = [transforms.ImageState(img=item["views"][0]) for item in pending]
        batch = transforms.to_tensor(states, mean, std, rgb).to(device)
        feats = featmaps.capture(model, layers, batch, inputs_of=inputs_of)
        for label, t in feats.items():
            if t.ndim == 3:
                tokens.add(label)
            vec = pool(t, pooling, extra_tokens).cpu().numpy().astype(np.float32)
            if label not in files:
                name = f"{prefix}_{file_tag(label)}.npy"
                paths[label] = free_name(out_dir / name)  # never a link's target, a FIFO, another's file
                files[label] = feature_file(paths[label], len(indices), vec.shape[1])
            if vec.shape[1] != files[label].shape[1]:
                raise VisctlError(f"{label}: images give features of different sizes ({vec.shape[1]} vs "
                                  f"{files[label].shape[1]})", hint="use a pipeline that makes every image one size, "
                                  "or pooling=avg")
            files[label][len(rows):len(rows) + len(vec)] = vec
        for item in pending:
            rows.append(item["index"])
            labels.append(-1 if item["label"] is None else int(item["label"]))
            names.append(item["name"])
        pending.clear()

    try:
        for item in datasets.iterate(samples, indices, num_workers=num_workers, batch_size=batch_size):
            if progress:
                progress()
            if item["error"]:
                failures.append((item["name"], item["error"]))
                continue
            if pending and item["views"][0].shape != pending[0]["views"][0].shape:
                flush()
            pending.append(item)
            if len(pending) == batch_size:
                flush()
        flush()
        with uninterrupted():  # an interrupt from here on is raised once the files are complete and recorded
            for label in list(files):
                files[label].flush()
                if len(rows) < files[label].shape[0]:  # some inputs failed: keep only the written rows
                    kept = np.array(files[label][:len(rows)])
                    files[label] = None
                    tmp = paths[label].with_name(f".{paths[label].name}.part")
                    with open(tmp, "wb") as fh:
                        np.save(fh, kept)
                    os.replace(tmp, paths[label])
            if on_done is not None:
                on_done(paths)
            done = True
    except BaseException:
        if done:  # complete and recorded: an interrupt held back until now
            raise
        files.clear()  # unmap before removing
        for path in paths.values():
            path.unlink(missing_ok=True)
            path.with_name(f".{path.name}.part").unlink(missing_ok=True)
        raise
    return dict(features=paths, rows=rows, labels=labels, names=names, failures=failures, tokens=sorted(tokens))


def merge_shards(shards: list[dict], out_dir: Any) -> dict[str, Any]:
    """Rank 0 of a distributed run: join every rank's shard into one memory-mapped file per layer, in the
    order a single process would have written (ascending dataset index), and remove the shards."""
    from pathlib import Path

    import numpy as np

    out_dir = Path(out_dir)
    entries = [(row, r, k) for r, sh in enumerate(shards) for k, row in enumerate(sh["rows"])]
    entries.sort()
    result: dict[str, Any] = dict(rows=[e[0] for e in entries], features={},
                                  labels=[shards[r]["labels"][k] for _, r, k in entries],
                                  names=[shards[r]["names"][k] for _, r, k in entries],
                                  failures=[f for sh in shards for f in sh["failures"]],
                                  tokens=sorted({t for sh in shards for t in sh.get("tokens", ())}))
    labels = sorted({lab for sh in shards for lab in sh["features"]})
    for label in labels:
        parts = [np.load(sh["features"][label], mmap_mode="r", allow_pickle=False) for sh in shards]
        name = Path(shards[0]["features"][label]).name.replace("features.rank0_", "features_")
        from visctl.output.manifest import free_name

        target = free_name(out_dir / name)  # never a link's target, a FIFO, another's file
        merged = feature_file(target, len(entries), parts[0].shape[1])
        for i, (_, r, k) in enumerate(entries):
            merged[i] = parts[r][k]
        merged.flush()
        del merged
        result["features"][label] = target
        for sh in shards:
            Path(sh["features"][label]).unlink(missing_ok=True)
    for sh in shards:
        for f in sh["features"].values():
            try:
                Path(f).parent.rmdir()  # the shard folder, once empty
            except OSError:
                pass
    return result


def guess_extra_tokens(model: Any, shapes: list[Any], in_hw: tuple[int, int]) -> int:
    """How many tokens (class, register, distillation) precede the patch tokens: the model's (or its
    backbone's) ``num_extra_tokens`` / ``num_prefix_tokens``; else, from the first (N, L, C) layer output, the
    count that leaves a token grid of the input's shape (:func:`visctl.layers.token_grid`); else 0."""
    from visctl.layers import token_grid

    holder = getattr(model, "backbone", model)
    extra = next((getattr(holder, a) for a in ("num_extra_tokens", "num_prefix_tokens")
                  if isinstance(getattr(holder, a, None), int)), None)
    if extra is not None:
        return int(extra)
    tok = next((s for s in shapes if isinstance(s, tuple) and len(s) == 3), None)
    found = token_grid(tok[1], in_hw, None) if tok else None
    return int(found[1]) if found else 0
