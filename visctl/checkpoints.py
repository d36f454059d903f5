"""Checkpoints: reading them safely, fitting their keys to a model, loading them and the one-line report.

:func:`read_checkpoint` unpickles with ``weights_only`` and an allow-list of mmengine's and numpy's data classes;
:func:`load_checkpoint` revises the keys and loads what fits; :func:`checkpoint_note` says how well in one line;
:func:`load_model` builds a config's model (:mod:`visctl.building`) and loads its checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from visctl.building import ANSI, build_model, config_dirs, one_line
from visctl.errors import ModelError, VisctlError

if TYPE_CHECKING:
    from torch import nn

class _TrainingLog:
    """What mmengine's ``HistoryBuffer`` (the training log in ``message_hub``) becomes in a safe load: inert data.

    The real class's ``__setstate__`` writes the file's ``statistics_methods`` into a registry shared by the
    whole process; visctl keeps only the weights, so the log is kept as a plain dict.
    """

    state: dict

    def __setstate__(self, state: dict) -> None:
        self.state = state


# HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, 'min'); see __getstate__ in
# mmengine/logging/history_buffer.py
_TRAINING_LOG_METHODS = frozenset({"min", "max", "mean", "current"})


def _checkpoint_getattr(obj: Any, name: str) -> Any:
    """``builtins.getattr`` as a safe load sees it: only HistoryBuffer's statistics methods.

    A general getattr in a pickle reaches any attribute of any allowed object (``__init__.__globals__``,
    ``__builtins__``, ``eval``), which is as good as running code.
    """
    import pickle

    if obj is _TrainingLog and name in _TRAINING_LOG_METHODS:
        return f"HistoryBuffer.{name}"
    owner = getattr(obj, "__qualname__", type(obj).__name__)
    raise pickle.UnpicklingError(f"getattr({owner}, {name!r}) is not allowed")


def _safe_globals() -> list[tuple[Any, str]]:
    """The data classes mmengine and numpy put in checkpoints, as ``(object, 'module.name')`` for torch's allow-list.

    Each one builds data from data (bytes, numbers, dicts) and calls nothing the file names; torch itself
    already allows ``collections.OrderedDict``/``Counter``, ``_codecs.encode``, tensors and storages.
    """
    import numpy as np

    from visctl.config import mmengine_present

    if mmengine_present():
        from mmengine.config import ConfigDict
    else:  # a plain install: the same dict, read without mmengine (its pickle is ConfigDict(dict))
        from visctl.plain_config import ConfigNode as ConfigDict
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: list[tuple[Any, str]] = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):  # numpy 2 and numpy 1 pickles
        allowed += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    scalars = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
               np.float16, np.float32, np.float64, np.longdouble, np.complex64, np.complex128, np.str_, np.bytes_)
    for t in scalars:  # the scalar types themselves (meta['dtype'] = np.float32)
        allowed.append((t, f"numpy.{t.__name__}"))
    allowed.append((np.bool_, "numpy.bool_"))  # numpy 1 spells it bool_, numpy 2 bool
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: one class per dtype, e.g. numpy.dtypes.Float64DType
    for name in dir(dtypes) if dtypes is not None else ():
        cls = getattr(dtypes, name)
        if isinstance(cls, type) and issubclass(cls, np.dtype):
            allowed.append((cls, f"numpy.dtypes.{name}"))
    allowed += [
        # a dataset's metainfo from a config (meta['dataset_meta']): built from a plain dict
        (ConfigDict, "mmengine.config.config.ConfigDict"),
        (_TrainingLog, "mmengine.logging.history_buffer.HistoryBuffer"),
        (_checkpoint_getattr, "builtins.getattr"),
    ]
    return allowed


@contextmanager
def _torch_load_mode(weights_only: bool) -> Iterator[None]:
    """Every ``torch.load`` inside gets ``weights_only`` (and the allow-list when true), then all is put back.

    mmengine's loaders call ``torch.load`` without ``weights_only`` (so the result would depend on the torch
    version and TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD), and for http(s):// and torchvision:// they go through
    ``torch.hub.load_state_dict_from_url``, whose default is ``weights_only=False``. Like torch's own
    ``safe_globals``, the change is process-wide while it lasts.
    """
    import torch

    original = torch.load

    @functools.wraps(original)
    def load(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = weights_only
        return original(*args, **kwargs)

    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5; older ones refuse numpy & co.
    scope = allow(_safe_globals()) if weights_only and allow is not None else contextlib.nullcontext()
    torch.load = load  # type: ignore[assignment]
    try:
        with scope:
            yield
    finally:
        torch.load = original  # type: ignore[assignment]


_REFUSED = (re.compile(r"GLOBAL (\S+) was not an allowed global"),  # torch >= 2.4
            re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked"),
            re.compile(r"Unsupported class (\S+)"),  # torch < 2.4
            re.compile(r"(getattr\(.*?\)) is not allowed"))


def _check_local_file(path: str) -> None:
    """Name what is wrong with a local file before torch does it in many lines (empty, cut off, not torch's)."""
    import zipfile
    from pathlib import Path

    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelError(f"checkpoint not found: {path}", hint="check the path, or leave it out to use "
                         "the config's load_from (or random weights)")
    size = file.stat().st_size
    if size == 0:
        raise ModelError(f"checkpoint {path} is empty (0 bytes)",
                         hint="its save or download did not finish: save or download it again")
    with file.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"PK"):  # torch.save's zip format (torch >= 1.6)
        if not zipfile.is_zipfile(file):
            raise ModelError(f"checkpoint {path} is cut off: its zip archive has no end ({size} bytes)",
                             hint="its save or download did not finish: save or download it again")
        return
    if head.startswith(b"\x80"):  # a plain pickle: the legacy torch format (torch < 1.6)
        return
    if len(head) >= 9 and head[8:9] == b"{":
        raise ModelError(f"checkpoint {path} is a safetensors file, which visctl does not read",
                         hint="convert it: torch.save(safetensors.torch.load_file(path), 'weights.pth')")
    import tarfile

    if tarfile.is_tarfile(file):  # the oldest torch format
        return
    raise ModelError(f"checkpoint {path} is not a PyTorch checkpoint (it starts with {head[:8]!r})",
                     hint="pass a file written by torch.save (.pth/.pt)")


def read_checkpoint(path: str, unsafe: bool = False) -> tuple[Any, bool]:
    """Read a checkpoint through mmengine's loader (local path, ``http(s)://``, ``torchvision://``), safely.

    The file is unpickled with ``weights_only=True`` plus an allow-list of the data classes mmengine and
    numpy put in checkpoints (numpy scalars, arrays and dtypes, ``ConfigDict``, the ``HistoryBuffer`` log),
    so the ``epoch_N.pth`` files mmengine's ``CheckpointHook`` writes load as they are. Anything else is a
    :class:`ModelError` naming the refused global, unless ``unsafe`` allows a full pickle load, which runs
    whatever code the file contains.

    Returns:
        The checkpoint object, and whether the full (unsafe) pickle load was needed.
    """
    import pickle
    import sys

    local = "://" not in path  # every scheme mmengine's CheckpointLoader registers besides '' has "://"
    if local:
        _check_local_file(path)

    def load(weights_only: bool) -> Any:
        # torch.hub prints "Downloading: ..." on stdout, which carries only results (--json)
        with _torch_load_mode(weights_only), contextlib.redirect_stdout(sys.stderr):
            if local:
                # what mmengine's loader does for a local path (runner/checkpoint.py: load_from_local), without
                # importing mmengine.runner, whose package imports the runners, FSDP and the optimizers (~1 s)
                import os

                import torch

                return torch.load(os.path.expanduser(path), map_location="cpu")
            from mmengine.runner.checkpoint import _load_checkpoint

            return _load_checkpoint(path, map_location="cpu", logger="silent")

    try:
        return load(True), False
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise _unreadable(path, exc) from exc
        refused = next((m.group(1) for r in _REFUSED if (m := r.search(ANSI.sub("", str(exc))))), None)
        if refused and "." not in refused and "(" not in refused:
            refused = f"builtins.{refused}"  # torch drops the module of builtins: 'GLOBAL exec'
        if not unsafe:
            import torch

            what = f"{refused}, which" if refused else "an object that"
            old = "" if hasattr(torch.serialization, "safe_globals") else "; torch >= 2.5 reads numpy and mmengine data safely"
            raise ModelError(
                f"checkpoint {path} needs {what} safe loading refuses: unpickling it could run code",
                hint="only if you trust the file: add unsafe_load_checkpoint=True (a full pickle load runs any code "
                f"in the file){old}") from exc
    except ModelError:
        raise
    except Exception as exc:  # torch.load raises many kinds
        raise _unreadable(path, exc) from exc
    try:
        return load(False), True
    except ModuleNotFoundError as exc:
        raise ModelError(f"cannot read checkpoint {path}: it pickles objects of {exc.name!r}, which is not installed",
                         hint=f"install the package that provides {exc.name}") from exc
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path: str, exc: BaseException) -> VisctlError:
    from visctl.errors import missing_optional

    if (missing := missing_optional(exc, f"reading checkpoint {path}")) is not None:  # a URL without mmengine
        return missing
    if isinstance(exc, EOFError):
        return ModelError(f"checkpoint {path} ends early ({one_line(exc)})",
                          hint="its save or download did not finish: save or download it again")
    if "PytorchStreamReader" in str(exc) or "corrupted" in str(exc):
        return ModelError(f"checkpoint {path} is damaged ({one_line(exc)})",
                          hint="its save or download did not finish, or the file was changed: get it again")
    if isinstance(exc, (IndexError, KeyError, ValueError)) or "Weights only load failed" in str(exc):
        return ModelError(f"checkpoint {path} cannot be unpickled ({one_line(exc)})",
                          hint="it is damaged, or it was not written by torch.save")
    return ModelError(f"cannot read checkpoint {path}: {one_line(exc)}", hint="its traceback: the CLI's --debug shows it")


def load_checkpoint(model: nn.Module, path: str, revise_keys: list | None = None,
                    min_match: float = 0.5, unsafe: bool = False) -> dict[str, Any]:
    """Load a checkpoint into ``model`` (see :func:`read_checkpoint`); return a summary of how well it matched.

    Takes the weights from ``state_dict`` (mmengine training checkpoints), ``model``, ``model_state_dict``
    or ``module`` wrappers, or a raw state dict; applies ``revise_keys`` (``[(regex, replacement), ...]``),
    and raises :class:`ModelError` when fewer than ``min_match`` of the model's tensors are found in the
    checkpoint (a silently random model is worse than an error).

    Returns:
        ``{'path', 'loaded', 'total', 'missing', 'unexpected', 'mismatched', 'unsafe', 'classes'}`` (the class
        names in the checkpoint's ``meta``, or None).
    """
    ckpt, used_unsafe = read_checkpoint(path, unsafe)
    state = ckpt
    if isinstance(ckpt, dict):
        for key in ("state_dict", "model", "model_state_dict", "module"):
            if isinstance(ckpt.get(key), dict):
                state = ckpt[key]
                break
    if not isinstance(state, dict):
        raise ModelError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict",
                         hint="save model.state_dict() rather than the model object")
    rules = list(revise_keys or []) + [(r"^module\.", "")]
    revised = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        revised[key] = value
    own = model.state_dict()
    fitting = {k: v for k, v in revised.items() if k in own and hasattr(v, "shape") and v.shape == own[k].shape}
    mismatched = [k for k, v in revised.items() if k in own and hasattr(v, "shape") and v.shape != own[k].shape]
    missing = [k for k in own if k not in fitting]
    unexpected = [k for k in revised if k not in own]
    # what counts is values, not tensors: 21 of 26 tensors can be 0.3% of the weights when every conv and
    # linear weight has another shape (the BN and bias vectors still fit)
    params = {name for name, _ in model.named_parameters()} & set(own)
    counted = params or {k for k, v in own.items() if v.is_floating_point()}
    summary = dict(path=path, loaded=len(fitting), total=len(own), missing=missing, unexpected=unexpected,
                   mismatched=mismatched, unsafe=used_unsafe, classes=_checkpoint_classes(ckpt),
                   loaded_values=sum(own[k].numel() for k in counted if k in fitting),
                   total_values=sum(own[k].numel() for k in counted))
    if len(own) and len(fitting) / len(own) < min_match:
        example = f" (e.g. checkpoint key {unexpected[0]!r}, model key {missing[0]!r})" if unexpected and missing else ""
        raise ModelError(
            f"checkpoint {path} fits only {len(fitting)} of the model's {len(own)} tensors{example}",
            hint=_mismatch_hint(unexpected, list(own), mismatched))
    model.load_state_dict(fitting, strict=False)
    return summary


def _mismatch_hint(unexpected: list[str], own: list[str], mismatched: list[str]) -> str:
    """What would make a checkpoint fit, from its keys: the prefix rename most of them need (a checkpoint saved
    from a wrapper, or from a backbone alone), else that the tensors have other shapes (another size of the
    family, other num_classes), else that it is another model's."""
    from collections import Counter

    own_set = set(own)
    renames: Counter[tuple[str, str]] = Counter()
    for key in unexpected[:500]:
        parts = key.split(".")
        for i in range(1, min(len(parts), 4)):  # the checkpoint's key has a prefix the model's has not
            if ".".join(parts[i:]) in own_set:
                renames[(r"^" + re.escape(".".join(parts[:i]) + "."), "")] += 1
                break
        else:  # the model's key has a prefix the checkpoint's has not
            for name in own[:2000]:
                if name.endswith("." + key):
                    renames[(r"^", name[: -len(key)])] += 1
                    break
    if renames:
        (pattern, repl), hits = renames.most_common(1)[0]
        if hits >= max(1, len(unexpected) // 2):
            return (f"its keys need a rename ({hits} of {len(unexpected)}): checkpoint_revise_keys = "
                    f"[({pattern!r}, {repl!r})] in the config")
    if mismatched and len(mismatched) >= len(unexpected):
        return (f"{len(mismatched)} tensors are there with other shapes (e.g. {mismatched[0]!r}): a checkpoint of "
                "another size of this family, or of other num_classes? Check the config matches the checkpoint")
    return "is it the checkpoint of this config's model? Its keys name other modules than the model's"


def _checkpoint_classes(ckpt: Any) -> list[str] | None:
    """Class names an mmengine checkpoint carries: ``meta['dataset_meta']['classes']`` (what mmpretrain's
    ``init_model`` copies to ``model.dataset_meta``), or mmcls 0.x's ``meta['CLASSES']``."""
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict):
        return None
    dataset_meta = meta.get("dataset_meta")
    names = dataset_meta.get("classes") if isinstance(dataset_meta, dict) else None
    names = names or meta.get("CLASSES")
    if isinstance(names, (list, tuple)) and names and all(isinstance(n, str) for n in names):
        return list(names)
    return None


#: the share of a model's parameter values that may stay unloaded with a note; more is a warning
UNLOADED_WARN = 0.01


def checkpoint_unloaded(summary: dict[str, Any]) -> float:
    """The share (0..1) of the model's parameter values that the checkpoint did not load (missing or of
    another shape): they keep the model's random initialisation."""
    total = summary.get("total_values") or 0
    return 0.0 if not total else 1.0 - summary.get("loaded_values", total) / total


def checkpoint_warns(summary: dict[str, Any]) -> bool:
    """Whether a load left a meaningful share of the parameters random (:data:`UNLOADED_WARN`): a warning,
    not a note."""
    return checkpoint_unloaded(summary) >= UNLOADED_WARN


def _percent(part: int, whole: int) -> str:
    """``part / whole`` as a percentage that never rounds to 0% or 100% unless it is."""
    share = 100.0 * part / whole
    if 0 < share < 0.1:
        return "<0.1%"
    if 99.9 < share < 100:
        return ">99.9%"
    return f"{share:.1f}%".replace(".0%", "%")


def checkpoint_note(summary: dict[str, Any], verbose: bool = False) -> str:
    """The one-line summary of a checkpoint load: matched, missing and unexpected keys (every key with ``verbose``);
    when some tensors did not load, the share of the model's parameter values that did."""
    line = f"checkpoint {summary['path']}: loaded {summary['loaded']}/{summary['total']} tensors"
    loaded, total = int(summary.get("loaded_values") or 0), int(summary.get("total_values") or 0)
    if summary["loaded"] < summary["total"] and total:
        line = (f"checkpoint {summary['path']}: loaded {_percent(loaded, total)} of the model's parameters "
                f"({loaded:,} of {total:,} values; {summary['loaded']}/{summary['total']} tensors)")
        if checkpoint_warns(summary):
            line += " -- the rest keep their random initialisation"
    parts = []
    for key in ("missing", "unexpected", "mismatched"):
        keys = summary[key]
        if key == "missing":  # a key of another shape is counted once, as mismatched
            keys = [k for k in keys if k not in set(summary["mismatched"])]
        if keys:
            shown = keys if verbose else keys[:3]
            more = "" if verbose or len(keys) <= 3 else f", +{len(keys) - 3} more"
            parts.append(f"{len(keys)} {key} ({', '.join(shown)}{more})")
        elif key != "mismatched":
            parts.append(f"0 {key}")
    if summary.get("unsafe"):
        parts.append("read by a full pickle load (unsafe_load_checkpoint=True)")
    return line + "; " + "; ".join(parts)


def load_model(cfg: Any, checkpoint: str | None, device: str = "cpu",
               unsafe: bool = False) -> tuple[nn.Module, dict[str, Any] | None]:
    """Build the config's model in eval mode on ``device`` and load ``checkpoint`` (else ``load_from``).

    ``unsafe`` allows a full pickle load of a checkpoint that safe loading refuses (see :func:`read_checkpoint`).
    """
    model = build_model(cfg.get("model") or {}, cfg.get("default_scope"), config_dirs(cfg))
    checkpoint = checkpoint or cfg.get("load_from")
    summary = None
    if checkpoint:
        summary = load_checkpoint(model, str(checkpoint), cfg.get("checkpoint_revise_keys"), unsafe=unsafe)
    check_finite_weights(model, str(checkpoint) if checkpoint else None)
    return model.to(device).eval(), summary


def check_finite_weights(model: nn.Module, checkpoint: str | None = None) -> None:
    """Refuse a model with NaN or infinite weights: every output would be NaN, and every map and box with it.

    Raises:
        ModelError: naming the first tensors that hold such values.
    """
    import itertools

    import torch

    bad = [name for name, t in itertools.chain(model.named_parameters(), model.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        where = f"after loading {checkpoint}" if checkpoint else "as built (no checkpoint)"
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ModelError(f"{len(bad)} weight tensor(s) hold NaN or infinite values {where}: {shown}",
                         hint="the checkpoint is from a training run that diverged, or is damaged: use an earlier "
                         "one" if checkpoint else "check the model's initialisation")
