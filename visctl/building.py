"""Building a model from a config: torchvision, timm, import-path and registry builders, never online.

:func:`build_model` turns ``model = dict(type=..., **kwargs)`` into an ``nn.Module``: a torchvision name, ``timm.<name>``,
an import path ``package.module:attr`` (refused unless it is model code, :func:`check_model_builder`), or a name in an
OpenMMLab registry; while it builds, the network is refused (the offline guard).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visctl.errors import ModelError, closest

if TYPE_CHECKING:
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
    from visctl.pymodules import is_stdlib_module

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

    from visctl.pymodules import is_stdlib_module

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
                             hint="give a local file in the config (or cfg_options=['key=PATH']), or drop the "
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
        raise ModelError(f"building {spec!r} with {kwargs} failed: {one_line(exc)}",
                         hint="check the config's model dict; its traceback (the CLI's --debug) shows where") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"model type {spec!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


def _build_from_registry(model_cfg: dict, scope: str) -> nn.Module:
    from torch import nn

    from visctl import openmmlab
    from visctl.pymodules import is_stdlib_module

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
            raise ModelError(f"building {model_cfg['type']!r} from the {scope} registry failed: {one_line(exc)}",
                             hint="check the config's model dict; its traceback (the CLI's --debug) shows where") from exc
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

    from visctl.pymodules import is_stdlib_module

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


def config_dirs(cfg: Any) -> list[Path]:
    """Where a config's import-path models are looked for: the config file's folder, the working directory."""
    filename = getattr(cfg, "filename", None)
    return ([Path(filename).resolve().parent] if filename else []) + [Path.cwd()]


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


#: the colour codes in an exception's text (mmengine and torch colour theirs); checkpoints.py reads through them too
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def one_line(exc: BaseException) -> str:
    """An exception as one plain line: no ANSI codes, torch's advice cut, the exception type when it says nothing."""
    text = ANSI.sub("", str(exc))
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = line if len(line) <= 300 else line[:297] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
