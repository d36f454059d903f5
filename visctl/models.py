"""Models: build from a config, load checkpoints, find layers by path, preview the module tree."""

from __future__ import annotations

import contextlib
import functools
import importlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visctl.errors import LayerError, ModelError, VisctlError, closest

if TYPE_CHECKING:
    import torch
    from torch import nn

# keys of the model dict that describe the tool's data handling, not the model's constructor
_NON_MODEL_KEYS = ("type", "data_preprocessor", "init_cfg", "_scope_")


def _torchvision_builder(name: str) -> Callable[..., Any] | None:
    import torchvision.models as tvm

    bare = name.removeprefix("torchvision.").removeprefix("models.")
    try:
        builder = tvm.get_model_builder(bare.lower())
    except ValueError:
        return None
    return builder


def _import_module(module_name: str, search: list[Path]) -> Any:
    """Import ``module_name``, also from ``search`` (the config's folder, the working directory)."""
    import sys

    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        if exc.name != top or not any((d / top).is_dir() or (d / f"{top}.py").is_file() for d in search):
            raise
    added = [str(d) for d in search if str(d) not in sys.path]
    sys.path[:0] = added
    try:
        return importlib.import_module(module_name)
    finally:
        for d in added:
            sys.path.remove(d)


def _import_path(spec: str, search: list[Path] | None = None) -> Callable[..., Any]:
    from visctl.config import is_stdlib_module

    module_name, _, attr_path = spec.partition(":")
    search = search or [Path.cwd()]
    if is_stdlib_module(module_name):  # refused before the import: some stdlib imports act (antigravity)
        raise ModelError(f"model type {spec!r} names {module_name!r}, a module of the Python standard library, "
                         "which builds no model", hint=_MODEL_HINT)
    try:
        obj: Any = _import_module(module_name, search)
    except ImportError as exc:
        where = ", ".join(dict.fromkeys(str(d) for d in search))
        raise ModelError(f"cannot import {module_name!r} for model {spec!r}: {exc}",
                         hint=f"looked in the installed packages and in {where}; install the package that provides "
                         "it, or check the spelling (import paths look like package.module:Class or "
                         "package.module:factory)") from exc
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            near = closest(part, names)
            raise ModelError(f"{module_name} has no attribute {part!r} (from model type {spec!r})",
                             hint=f"did you mean: {', '.join(near)}" if near else None)
        obj = getattr(obj, part)
    check_model_builder(obj, spec)
    return obj


_MODEL_HINT = ("a model type is a torchvision or timm name, an nn.Module subclass (package.module:Class) or a "
               "function of model code that returns one (package.module:factory); see README, Security")

# packages whose functions build no model but may load pickles, run hub code, compile or import code
# (torch.hub.load, torch.load, torch.utils.cpp_extension.load_inline, mmengine.hub.get_model, pip, ...);
# their nn.Module classes remain usable
_NOT_MODEL_CODE = ("torch", "mmengine", "mmcv", "pip", "setuptools", "pkg_resources", "distutils", "_pytest", "pytest",
                   "IPython", "typer", "click", "rich", "yaml", "numpy", "cv2", "PIL", "matplotlib", "sklearn",
                   "scipy", "requests", "urllib3", "huggingface_hub", "fsspec")


def _unwrap_function(obj: Any) -> Any:
    """The Python function behind ``obj`` (a function, a classmethod or a bound method), else None."""
    import inspect

    if inspect.ismethod(obj):
        obj = obj.__func__
    return obj if inspect.isfunction(obj) else None


def _refers_to_torch_nn(fn: Any) -> bool:
    """Whether ``fn`` is model code: its module imports ``torch.nn`` (or an nn.Module class from anywhere), or
    the function itself uses ``torch.nn`` (a lazy ``from torch import nn`` inside it)."""
    import sys
    import types

    from torch import nn

    module = sys.modules.get(fn.__module__)
    for value in vars(module).values() if module is not None else ():
        if isinstance(value, types.ModuleType) and (value.__name__ == "torch.nn" or value.__name__.startswith("torch.nn.")):
            return True
        if isinstance(value, type) and issubclass(value, nn.Module):
            return True
    codes = [fn.__code__]
    while codes:  # the function's own code and the functions nested in it
        code = codes.pop()
        names = set(code.co_names)
        if {"torch", "nn"} <= names or any(n == "torch.nn" or n.startswith("torch.nn.") for n in names):
            return True
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return False


def check_model_builder(obj: Any, spec: str) -> None:
    """Refuse a model type that cannot build an ``nn.Module``, before anything calls it.

    Accepted: a class that subclasses ``torch.nn.Module``; a Python function (or classmethod) of model code
    -- defined in a module that imports ``torch.nn`` or an nn.Module class, or using ``torch.nn`` itself --
    outside the standard library and the tool packages (torch, mmengine, numpy, ...: their functions load
    files, hub code and pickles, not models). Its result is checked to be an nn.Module after the call.
    Refused: built-in functions (``os.system``), other classes (``subprocess.Popen``), objects with
    ``__call__``, ``functools.partial``.

    Raises:
        ModelError: naming what ``spec`` resolved to and why it is refused.
    """
    import inspect

    from torch import nn

    from visctl.config import is_stdlib_module

    if inspect.isclass(obj):
        if issubclass(obj, nn.Module):
            return
        raise ModelError(f"model type {spec!r} is the class {obj.__module__}.{obj.__qualname__}, which is not a "
                         "torch.nn.Module", hint=_MODEL_HINT)
    fn = _unwrap_function(obj)
    if fn is None:
        what = "a built-in function" if inspect.isbuiltin(obj) else f"a {type(obj).__name__}"
        raise ModelError(f"model type {spec!r} is {what}, not an nn.Module class or a model factory function",
                         hint=_MODEL_HINT)
    module = str(getattr(fn, "__module__", "") or "")
    if is_stdlib_module(module) or module.split(".")[0] in _NOT_MODEL_CODE:
        raise ModelError(f"model type {spec!r} is the function {module}.{fn.__qualname__}, which builds no model "
                         f"({module.split('.')[0]} is not model code)", hint=_MODEL_HINT)
    if _refers_to_torch_nn(fn):
        return
    raise ModelError(f"model type {spec!r} is the function {module}.{fn.__qualname__}, which is not model code "
                     "(its module does not import torch.nn)", hint=_MODEL_HINT)


def build_model(model_cfg: Any, default_scope: str | None = None, search: list[Path] | None = None) -> nn.Module:
    """Build a model from ``model = dict(type=..., **kwargs)``, never downloading weights.

    Resolution order: a torchvision model name (bare or ``torchvision.``-prefixed), ``timm.<name>``, an
    import path ``package.module:attr[.attr]``, a name in an mmengine registry when ``default_scope`` is set.
    An import path's module is looked up in the installed packages, then in ``search`` (default: the working
    directory).

    The build cannot reach the network: a constructor that fetches weights (a config's ``weights=`` or
    ``pretrained=True``, mmpretrain's MILAN fetching its CLIP tokenizer) fails with a :class:`ModelError`
    naming the host it tried.

    Raises:
        ModelError: the config names no buildable model, its constructor failed, or it tried to download.
    """
    tried: list[str] = []
    with _offline(tried):
        try:
            return _build_model(model_cfg, default_scope, search)
        except Exception as exc:
            if not tried:
                raise
            spec = model_cfg.get("type") if isinstance(model_cfg, dict) else model_cfg
            raise ModelError(f"building {spec!r} tried to download from {tried[0]}: visctl never downloads "
                             "while it builds a model",
                             hint="give a local file in the config (or --cfg-options key=PATH), or drop the "
                             "pretrained weights (weights=None, pretrained=False, init_cfg=None); the trained "
                             "weights come from the checkpoint argument") from exc


class _Offline(OSError):
    """What a socket call raises while a model is built (an OSError, as an unreachable network gives)."""


@contextmanager
def _offline(tried: list[str]) -> Iterator[None]:
    """While a model is built, name resolution and socket connections fail; each attempt's host is appended
    to ``tried``. Constructors download through urllib, requests, torch.hub or mmengine's file client, and
    all of them resolve the host or connect a socket first."""
    import socket

    real_getaddrinfo, real_connect, real_connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def refuse(where: Any) -> Any:
        host = where[0] if isinstance(where, tuple) and where else where
        tried.append(str(host))
        raise _Offline(f"visctl allows no network access while it builds a model (tried {host})")

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        return refuse((host, port))

    def connect(self: Any, address: Any) -> Any:
        return refuse(address)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.getaddrinfo = real_getaddrinfo  # type: ignore[assignment]
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]


def _build_model(model_cfg: Any, default_scope: str | None, search: list[Path] | None) -> nn.Module:
    from collections.abc import Mapping

    if not isinstance(model_cfg, Mapping):  # model = 'resnet18' in a config, or --cfg-options model=...
        raise ModelError(f"the config's model is a {type(model_cfg).__name__} ({model_cfg!r}), not a dict",
                         hint=f"write model = dict(type={str(model_cfg)!r}) with the constructor's keyword "
                         "arguments beside type")
    if not model_cfg or "type" not in model_cfg:
        raise ModelError("the config has no model = dict(type=...)",
                         hint="add one, e.g. model = dict(type='resnet18', num_classes=10)")
    model_cfg = dict(model_cfg)
    if not isinstance(model_cfg["type"], str) or not model_cfg["type"].strip():
        raise ModelError(f"the config's model type is {model_cfg['type']!r}, not a name",
                         hint="use a torchvision name, timm.<name>, or an import path package.module:attr")
    spec = str(model_cfg["type"])
    kwargs = {k: v for k, v in dict(model_cfg).items() if k not in _NON_MODEL_KEYS}
    builder = None
    if not spec.startswith("timm.") and ":" not in spec:
        builder = _torchvision_builder(spec)
    if builder is not None:
        kwargs.setdefault("weights", None)
        if _takes(builder, "weights_backbone"):
            # detection and segmentation builders fetch an ImageNet backbone unless told not to
            kwargs.setdefault("weights_backbone", None)
        return _call(builder, kwargs, spec)
    if spec.startswith("timm."):
        try:
            import timm
        except ImportError as exc:
            raise ModelError(f"model {spec!r} needs timm", hint="pip install timm") from exc
        name = spec.removeprefix("timm.")
        if not timm.is_model(name):
            raise ModelError(f"timm has no model {name!r}",
                             hint=f"did you mean: {', '.join(closest(name, timm.list_models()))}")
        kwargs.pop("pretrained", None)
        return _call(lambda **kw: timm.create_model(name, pretrained=False, **kw), kwargs, spec)
    if ":" in spec:
        return _call(_import_path(spec, search), kwargs, spec)
    if default_scope:
        return _build_from_registry(model_cfg, default_scope)
    import torchvision.models as tvm

    near = closest(spec, tvm.list_models())
    raise ModelError(f"unknown model type {spec!r}",
                     hint=(f"did you mean: {', '.join(near)}; " if near else "")
                     + "use a torchvision name, timm.<name>, or an import path package.module:attr")


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` has a parameter ``name`` (torchvision's builders are wrapped; signature follows them)."""
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _call(builder: Callable[..., Any], kwargs: dict, spec: str) -> nn.Module:
    from torch import nn

    try:
        model = builder(**kwargs)
    except TypeError as exc:
        raise ModelError(f"cannot build {spec!r} with {kwargs}: {exc}",
                         hint="check the keyword arguments in the config's model dict") from exc
    except Exception as exc:  # the constructor is the config's code: what it raises is a problem of the config
        raise ModelError(f"building {spec!r} with {kwargs} failed: {_one_line(exc)}",
                         hint="check the config's model dict; --debug shows where the constructor failed") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"model type {spec!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


def _build_from_registry(model_cfg: dict, scope: str) -> nn.Module:
    from torch import nn

    from visctl import openmmlab
    from visctl.config import is_stdlib_module

    spec = str(model_cfg["type"])
    if is_stdlib_module(scope):
        raise ModelError(f"default_scope {scope!r} names a module of the Python standard library",
                         hint="default_scope names an OpenMMLab package such as mmpretrain or mmdet")
    try:
        importlib.import_module(scope)
    except ImportError as exc:
        if openmmlab.is_package(scope):  # installed, but a dependency of it is missing
            raise openmmlab.dependency_error(scope, exc) from exc
        raise ModelError(f"model {spec!r} is an OpenMMLab {scope} model, and {scope} is not installed",
                         hint=f"pip install {scope}, or use a torchvision/timm model or an import path") from exc
    from mmengine.registry import MODELS

    # the Runner leaves the default scope set after it builds the model: model code may rely on it
    openmmlab.set_default(scope)
    refused: list[str] = []
    # as mmengine's build_from_cfg: the default scope's registry (mmpretrain.registry.MODELS, a child of the
    # root), whose get() imports the package's model modules (its `locations`) before it looks; the root
    # registry's own get() sees neither
    with openmmlab.registry(MODELS, scope) as registry, _registry_locates_models_only(refused):
        try:
            obj = registry.get(spec)
            if obj is None:
                raise ModelError(f"{scope} has no model {spec!r} in its registry",
                                 hint="check the name, or use an import path package.module:Class")
            check_model_builder(obj, spec)
            model = registry.build(dict(model_cfg))
        except ModelError:
            raise
        except Exception as exc:
            if refused:  # mmengine turns the refusal into "Failed to get ..."
                raise ModelError(refused[0], hint=_MODEL_HINT) from None
            if "Failed to get" in str(exc):
                raise ModelError(f"{scope} has no model {spec!r} in its registry",
                                 hint="check the name, or use an import path package.module:Class") from None
            # mmengine wraps the constructor's error; what it raises is a config problem
            raise ModelError(f"building {model_cfg['type']!r} from the {scope} registry failed: {_one_line(exc)}",
                             hint="check the config's model dict; --debug shows where it failed") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"model type {spec!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


@contextmanager
def _registry_locates_models_only(refused: list[str]) -> Iterator[None]:
    """While an OpenMMLab model is built, a ``type`` that its registry resolves as an import path
    (``'os.system'``: mmengine's ``Registry.get`` falls back to ``get_object_from_string`` for any dotted name)
    must be model code: no standard-library module is imported, and what is found passes
    :func:`check_model_builder` (nested parts may also be other classes of non-tool packages, such as box
    assigners). Refusals are appended to ``refused``."""
    import inspect

    from mmengine.registry import registry as registry_module

    from visctl.config import is_stdlib_module

    original = registry_module.get_object_from_string

    def locate(name: str) -> Any:
        if is_stdlib_module(name):
            refused.append(f"model type {name!r} names a module of the Python standard library, which builds no model")
            raise ModelError(refused[-1])
        obj = original(name)
        if obj is None or inspect.ismodule(obj):
            return obj
        if inspect.isclass(obj) and str(obj.__module__).split(".")[0] not in _NOT_MODEL_CODE:
            return obj
        try:
            check_model_builder(obj, name)
        except ModelError as err:
            refused.append(err.message)
            raise
        return obj

    registry_module.get_object_from_string = locate
    try:
        yield
    finally:
        registry_module.get_object_from_string = original


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


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_REFUSED = (re.compile(r"GLOBAL (\S+) was not an allowed global"),  # torch >= 2.4
            re.compile(r"unsupported GLOBAL (\S+) whose module \S+ is blocked"),
            re.compile(r"Unsupported class (\S+)"),  # torch < 2.4
            re.compile(r"(getattr\(.*?\)) is not allowed"))


def _one_line(exc: BaseException) -> str:
    """An exception as one plain line: no ANSI codes, torch's advice cut, the exception type when it says nothing."""
    text = _ANSI.sub("", str(exc))
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line if len(line) <= 300 else line[:297] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


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
        refused = next((m.group(1) for r in _REFUSED if (m := r.search(_ANSI.sub("", str(exc))))), None)
        if refused and "." not in refused and "(" not in refused:
            refused = f"builtins.{refused}"  # torch drops the module of builtins: 'GLOBAL exec'
        if not unsafe:
            import torch

            what = f"{refused}, which" if refused else "an object that"
            old = "" if hasattr(torch.serialization, "safe_globals") else "; torch >= 2.5 reads numpy and mmengine data safely"
            raise ModelError(
                f"checkpoint {path} needs {what} safe loading refuses: unpickling it could run code",
                hint="only if you trust the file: add --unsafe-load-checkpoint (a full pickle load runs any code "
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
        return ModelError(f"checkpoint {path} ends early ({_one_line(exc)})",
                          hint="its save or download did not finish: save or download it again")
    if "PytorchStreamReader" in str(exc) or "corrupted" in str(exc):
        return ModelError(f"checkpoint {path} is damaged ({_one_line(exc)})",
                          hint="its save or download did not finish, or the file was changed: get it again")
    if isinstance(exc, (IndexError, KeyError, ValueError)) or "Weights only load failed" in str(exc):
        return ModelError(f"checkpoint {path} cannot be unpickled ({_one_line(exc)})",
                          hint="it is damaged, or it was not written by torch.save")
    return ModelError(f"cannot read checkpoint {path}: {_one_line(exc)}", hint="--debug shows the traceback")


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
        parts.append("read by a full pickle load (--unsafe-load-checkpoint)")
    return line + "; " + "; ".join(parts)


_INDEX = re.compile(r"\[(-?\d+)\]")


def _split_path(path: str) -> list[str]:
    # 'encoder.layers[11].ln_1' -> ['encoder', 'layers', '11', 'ln_1']
    return [p for p in _INDEX.sub(r".\1", path).split(".") if p != ""]


def find_layer(model: nn.Module, path: str) -> tuple[str, nn.Module]:
    """Find a module by a path over ``named_modules()``.

    ``backbone.layer4.2``, ``backbone.layer4[-1]``, ``encoder.layers[11].ln_1`` and ``blocks.-1`` all work;
    negative numbers index the children of a container. A wrong path raises :class:`LayerError` naming
    the closest existing modules.

    Returns:
        The canonical dotted name and the module.
    """
    node = model
    parts = _split_path(path)
    canonical: list[str] = []
    for part in parts:
        children = dict(node.named_children())
        if part in children:
            node, name = children[part], part
        elif re.fullmatch(r"-?\d+", part) and children:
            names = list(children)
            idx = int(part)
            if not -len(names) <= idx < len(names):
                raise LayerError(f"layer {path!r}: index {idx} is out of range, "
                                 f"{'.'.join(canonical) or 'the model'} has {len(names)} children",
                                 hint=f"use an index from {-len(names)} to {len(names) - 1}")
            name = names[idx]
            node = children[name]
        else:
            all_names = [n for n, _ in model.named_modules() if n]
            near = closest(path, all_names)
            raise LayerError(f"the model has no layer {path!r}",
                             hint=(f"closest: {', '.join(near)}; " if near else "")
                             + "run with --preview-model to list every layer")
        canonical.append(name)
    if not parts:
        raise LayerError("empty layer path", hint="name a layer like layer4 or backbone.layer4[-1]")
    return ".".join(canonical), node


def trace(model: nn.Module, example: torch.Tensor) -> tuple[list[tuple[str, Any]], Any]:
    """One no-grad forward of ``example`` with a hook on every module.

    Returns:
        ``(name, output)`` of each module's first call, in the order the calls finished, and the model's output.
    """
    import torch

    fired: list[tuple[str, Any]] = []
    seen: set[str] = set()
    handles = []
    for name, module in model.named_modules():
        def hook(_m: Any, _i: Any, out: Any, name: str = name) -> None:
            if name not in seen:  # a module called twice (a shared ReLU) keeps its first output
                seen.add(name)
                fired.append((name, out))
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            result = model(example)
    finally:
        for h in handles:
            h.remove()
    return fired, result


def describe_output(out: Any) -> str:
    """A module output's shape as text: ``1x64x16x16``, ``(1x8x8, 1x4x4)``, ``{p3: 1x8x8}``."""
    import torch

    if isinstance(out, torch.Tensor):
        return "x".join(str(s) for s in out.shape)
    if isinstance(out, (list, tuple)):
        return "(" + ", ".join(describe_output(o) for o in out) + ")"
    if isinstance(out, dict):
        return "{" + ", ".join(f"{k}: {describe_output(v)}" for k, v in out.items()) + "}"
    return type(out).__name__


def preview_lines(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The module tree, one line per module: indented name, class and output shape."""
    shapes = {name: describe_output(out) for name, out in trace(model, example)[0]}
    lines = []
    for name, module in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        label = name or "(model)"
        lines.append(f"{'  ' * depth}{label}  {type(module).__name__}  -> {shapes.get(name, 'not called')}")
    return lines


def output_tensor(out: Any) -> torch.Tensor:
    """The logits tensor of a model output: the tensor itself, the first of a tuple, ``logits`` of a dict."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        for key in ("logits", "cls_score", "pred", "out"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):
        return out.logits
    raise ModelError(f"the model returned {type(out).__name__}; visctl needs a logits tensor",
                     hint="wrap the model so that forward returns the class scores")


def config_dirs(cfg: Any) -> list[Path]:
    """Where a config's import-path models are looked for: the config file's folder, the working directory."""
    filename = getattr(cfg, "filename", None)
    return ([Path(filename).resolve().parent] if filename else []) + [Path.cwd()]


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


def switch_to_deploy(model: nn.Module) -> list[str]:
    """Call ``switch_to_deploy()`` on every module that has one (RepVGG-style blocks fuse their branches into
    one convolution, as mmyolo's ``--deploy``); returns the names of the switched modules."""
    switched = []
    for name, module in list(model.named_modules()):
        fn = getattr(module, "switch_to_deploy", None)
        if callable(fn):
            fn()
            switched.append(name or type(module).__name__)
    return switched


def native_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The (h, w) input a model was built for, when it says: a timm patch embedding that accepts only its
    ``img_size`` (ViT, DeiT, DINOv2 at 518 px, ...), else timm's ``pretrained_cfg`` / ``default_cfg``
    ``input_size``; None when the model does not say."""
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if size is not None and getattr(embed, "strict_img_size", True) and not getattr(embed, "dynamic_img_pad", False):
        h, w = (size, size) if isinstance(size, int) else size
        return int(h), int(w)
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attr, None)
        if isinstance(cfg, dict) and isinstance(cfg.get("input_size"), (tuple, list)) and len(cfg["input_size"]) == 3:
            return int(cfg["input_size"][1]), int(cfg["input_size"][2])
    return None


def check_input_size(model: nn.Module, hw: tuple[int, int], from_pipeline: bool) -> None:
    """Refuse an input size a model cannot take (a strict timm patch embedding) with the option that fixes it."""
    embed = getattr(model, "patch_embed", None)
    if embed is None or not getattr(embed, "strict_img_size", False) or getattr(embed, "dynamic_img_pad", False):
        return
    size = getattr(embed, "img_size", None)
    if size is None:
        return
    need = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(hw) != tuple(need):
        where = "the config's pipeline gives" if from_pipeline else "visctl.input_size gives"
        raise ModelError(f"the model takes {need[0]}x{need[1]} inputs only (its patch embedding is strict); "
                         f"{where} {hw[0]}x{hw[1]}",
                         hint=f"--cfg-options visctl.input_size={need[0]} (without a test_pipeline), a pipeline that "
                         f"resizes to {need[0]}x{need[1]}, or build the model for your size (model.img_size=...)")


def pinned_transfer(device: str) -> bool:
    """Whether a CPU batch goes to ``device`` through pinned (page-locked) memory with a non-blocking copy:
    on CUDA only (the copy then overlaps the host's work until the forward needs the batch)."""
    return str(device).startswith("cuda")


def use_channels_last(model: Any, device: str) -> bool:
    """Whether to run ``model`` in channels_last (NHWC): for a model with 2-D convolutions, on CUDA (cuDNN's
    tensor-core kernels are NHWC) and on a CPU with oneDNN (mkldnn), whose NHWC convolutions made a GradCAM
    forward + backward 0.82-0.89x the time of NCHW for resnet18 and efficientnet_b0 at 1 and 2 threads on
    this project's machine, and never slower (convnext_tiny 1.0x, mobilenet_v3_small 0.87-0.98x); the maps
    differ from NCHW's by float rounding (~4e-6 of the [0, 1] range). Nothing gained for a transformer."""
    import torch
    from torch import nn

    dev = str(device)
    fast = dev.startswith("cuda") or (dev == "cpu" and torch.backends.mkldnn.is_available())
    return fast and any(isinstance(m, nn.Conv2d) for m in model.modules())


def to_device(batch: Any, device: str, channels_last: bool = False) -> Any:
    """A CPU batch (B, 3, H, W) on ``device``: pinned and non-blocking on CUDA (:func:`pinned_transfer`), in
    channels_last when the model runs so (:func:`use_channels_last`); elsewhere a plain ``.to``."""
    import torch

    if pinned_transfer(device):
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch
