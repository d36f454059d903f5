"""Config files (mmengine ``Config``), ``--cfg-options``, and the keys visctl reads from them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from visctl.errors import ConfigError
from visctl.pymodules import is_stdlib_module
from visctl.yamldata import RefusedYaml, load_yaml

CONFIG_SUFFIXES = (".py", ".yaml", ".yml", ".json")
MODEL_PREFIXES = ("torchvision.", "timm.")

# ImageNet statistics in 0-255, as mmpretrain writes them
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def looks_like_config(arg: str) -> bool:
    """Whether a command-line argument names a config (a config file, or a model name)."""
    if arg.lower().endswith(CONFIG_SUFFIXES) or arg.startswith(MODEL_PREFIXES):
        return True
    if Path(arg).exists() or "://" in arg or any(ch in arg for ch in "*?[/\\"):
        return False
    if ":" in arg:
        return True
    import torchvision.models as tvm  # a bare torchvision name such as resnet50

    return arg.lower() in tvm.list_models()


def parse_cfg_options(options: list[str] | None) -> dict[str, Any]:
    """Parse ``key=value`` strings with mmengine's ``DictAction`` semantics."""
    if not options:
        return {}
    parse_value = _parse_iterable
    if mmengine_present():
        from mmengine.config import DictAction

        parse_value = DictAction._parse_iterable
    out: dict[str, Any] = {}
    for item in options:
        if "=" not in item:
            raise ConfigError(
                f"cfg_options={[item]!r}: expects key=value",
                hint="for example cfg_options=['model.num_classes=10'], "
                "cfg_options=['test_dataloader.dataset.pipeline.1.scale=(224,224)']",
            )
        key, value = item.split("=", maxsplit=1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"cfg_options={[item]!r}: {'no key' if not key else 'an empty part in ' + repr(key)} "
                              "before '='", hint="name the key with dots between its parts, e.g. "
                              "cfg_options=['model.num_classes=10']")
        try:
            out[key] = parse_value(value)
        except Exception as exc:  # mmengine asserts on unbalanced brackets
            raise ConfigError(f"cfg_options={[item]!r}: cannot read the value {value!r} ({_reason(exc)})",
                              hint="lists and tuples need balanced brackets: key=[1,2] or key=\"(1,2)\"; "
                              "quote the whole option for the shell") from exc
    return out


def _parse_scalar(val: str) -> Any:
    """mmengine's ``DictAction._parse_int_float_bool``."""
    for kind in (int, float):
        try:
            return kind(val)
        except ValueError:
            pass
    if val.lower() in ("true", "false"):
        return val.lower() == "true"
    return None if val == "None" else val


def _parse_iterable(val: str) -> Any:
    """mmengine's ``DictAction._parse_iterable`` (``--cfg-options`` values), for an install without mmengine."""
    def next_comma(text: str) -> int:
        if text.count("(") != text.count(")") or text.count("[") != text.count("]"):
            raise ValueError(f"Imbalanced brackets exist in {text}")
        for idx, char in enumerate(text):
            pre = text[:idx]
            if char == "," and pre.count("(") == pre.count(")") and pre.count("[") == pre.count("]"):
                return idx
        return len(text)

    val = val.strip("'\"").replace(" ", "")
    is_tuple = False
    if val.startswith("(") and val.endswith(")"):
        is_tuple, val = True, val[1:-1]
    elif val.startswith("[") and val.endswith("]"):
        val = val[1:-1]
    elif "," not in val:
        return _parse_scalar(val)
    values = []
    while val:
        comma = next_comma(val)
        values.append(_parse_iterable(val[:comma]))
        val = val[comma + 1:]
    return tuple(values) if is_tuple else values


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _not_found(spec: str, models: bool) -> ConfigError:
    return ConfigError(f"config file not found: {spec}", hint="check the path" + (
        ", or pass a model name such as torchvision.resnet18 instead of a config" if models else
        ": this takes a config file (a model name has no schedule or dataset)"))


def load_config(spec: str, options: list[str] | None = None, *, models: bool = True) -> Any:
    """Load an mmengine Config from a file, or wrap a bare model name into one.

    Args:
        spec: a config path (.py/.yaml/.yml/.json, with ``_base_`` inheritance) or a model name such as
            ``torchvision.resnet18``, ``timm.resnet18`` or ``package.module:attr``.
        options: ``--cfg-options`` strings merged on top.
        models: whether the caller takes a model name (a missing file's hint offers one only then).

    Returns:
        The mmengine ``Config``.
    """
    from visctl.environment import require_mmengine

    if not mmengine_present():  # a plain install: model names and configs of plain values, read without it
        if Path(spec).suffix.lower() in CONFIG_SUFFIXES and not Path(spec).is_file():
            raise _not_found(spec, models)
        plain = _load_plain(spec)
        check_pipeline_twins(plain)  # the config as written: an option changing one of the two is the user's word
        return merge_options(plain, options)
    require_mmengine()  # an unsupported mmengine is one error line, not an ImportError
    from mmengine.config import Config

    path = Path(spec)
    if path.suffix.lower() in CONFIG_SUFFIXES:
        if not path.is_file():
            raise _not_found(spec, models)
        refused: tuple[str, str] | None = None
        check_base_chain(path)
        try:
            with _yaml_as_data():
                cfg = Config.fromfile(str(path), import_custom_modules=False)
        except RefusedYaml as exc:
            refused = (exc.reason, exc.tag)
        except RecursionError:
            raise ConfigError(f"cannot read config {spec}: it is nested too deeply, or its _base_ files "
                              "inherit from each other in a cycle", hint="check the _base_ chain") from None
        except Exception as exc:  # mmengine raises many types for a broken file
            raise ConfigError(f"cannot read config {spec}: {_one_line(exc)}",
                              hint="run `python -c \"from mmengine import Config; Config.fromfile('"
                              f"{spec}')\"` to see the full error") from exc
        if refused is not None:
            _close_abandoned_files()
            reason, tag = refused
            where = spec if tag in path.read_text(errors="replace") else f"a _base_ file of {spec}"
            raise ConfigError(f"config {where}: {reason}",
                              hint="YAML and JSON configs are read as plain data; write a Python config for "
                              "anything else")
    elif looks_like_config(spec):
        cfg = Config(dict(model=dict(type=spec)))
    else:
        raise ConfigError(f"not a config file or model name: {spec}",
                          hint=f"configs end in {', '.join(CONFIG_SUFFIXES)}; models are named like "
                          "torchvision.resnet18, timm.resnet18 or package.module:attr")
    check_pipeline_twins(cfg)  # the config as written: an option changing one of the two is the user's word
    merge_options(cfg, options)
    # after the options: `--cfg-options custom_imports.imports=[mypkg.models]` is imported too, as the config's own
    import_custom_modules(cfg, spec)
    check_config(cfg)
    return cfg


#: the top-level keys visctl reads (DESIGN.md's table, and what lr reads of mmengine's runtime keys): a
#: ``--cfg-options`` key may add one of these to a config that lacks it; any other new top-level key is a mistake
KNOWN_KEYS = ("model", "load_from", "checkpoint_revise_keys", "data_preprocessor", "test_pipeline", "train_pipeline",
              "val_pipeline", "train_dataloader", "val_dataloader", "test_dataloader", "extract_dataloader",
              "classes", "dataset_meta", "optim_wrapper", "param_scheduler", "train_cfg", "visctl",
              "default_scope", "custom_imports", "default_hooks", "custom_hooks", "auto_scale_lr")
#: the keys of the ``visctl = dict(...)`` block (README, Configs)
TOOL_KEYS = ("target_layers", "featmap_layers", "tsne_layers", "input_size", "task", "patch_size")
TASK_NAMES = ("classification", "segmentation", "detection")
# the keys of dicts without a ``type`` that visctl reads, as their mmengine / OpenMMLab classes take them
_DATALOADER_KEYS = ("batch_size", "num_workers", "persistent_workers", "sampler", "batch_sampler", "collate_fn",
                    "dataset", "pin_memory", "drop_last", "prefetch_factor", "worker_init_fn", "pin_memory_device",
                    "timeout", "generator")
_SCHEMAS: dict[str, tuple[str, ...]] = {
    **{f"{ph}_dataloader": _DATALOADER_KEYS for ph in ("train", "val", "test", "extract")},
    "custom_imports": ("imports", "allow_failed_imports"),
    "train_cfg": ("type", "by_epoch", "max_epochs", "max_iters", "val_interval", "val_begin", "dynamic_intervals"),
    "visctl": TOOL_KEYS,
    # mmpretrain's ClsDataPreprocessor, mmdet's DetDataPreprocessor, mmseg's SegDataPreProcessor (without a type)
    "data_preprocessor": ("type", "mean", "std", "to_rgb", "bgr_to_rgb", "rgb_to_bgr", "pad_size_divisor",
                          "pad_value", "to_onehot", "num_classes", "batch_augments", "non_blocking", "pad_mask",
                          "mask_pad_value", "pad_seg", "seg_pad_value", "boxtype2tensor", "size", "size_divisor",
                          "pad_val", "seg_pad_val", "test_cfg"),
}


def _unknown_key(cfg: Any, key: str) -> tuple[str, list[str], list[str]] | None:
    """Whether ``--cfg-options KEY=...`` names a key neither ``cfg`` nor visctl knows: (the key up to the unknown
    part, the closest known names, the names known there), or None.

    A key that exists, or a new key of a constructor's dict (one with ``type``: its keyword arguments, which the
    constructor checks), is known; so is a new top-level key that visctl reads (:data:`KNOWN_KEYS`). A new key
    of a dict visctl reads without ``type`` (a dataloader, ``visctl``, ``custom_imports``, ``train_cfg``,
    ``data_preprocessor``) must be one that dict takes, and a new key spelled like an existing one
    (``bach_size`` beside ``batch_size``) is a typo in a dict without ``type`` and in a pipeline step.
    """
    import difflib

    node: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if isinstance(node, (list, tuple)):  # an index: merge_from_dict says what is wrong with it
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                return None
            node = node[int(part)]
            continue
        if not hasattr(node, "keys"):
            return None
        present = [str(k) for k in node.keys()]
        if part in present:
            node = node[part]
            continue
        if depth == 0:
            known = sorted(set(present) | set(KNOWN_KEYS))
            return None if part in KNOWN_KEYS else (part, difflib.get_close_matches(part, known, n=3, cutoff=0.6),
                                                    list(KNOWN_KEYS))
        parent = ".".join(parts[:depth])
        schema = _SCHEMAS.get(parent.split(".")[0] if depth == 1 else "")
        # a typo of an existing key, in a dict no constructor checks: a dataloader, the visctl block, or a pipeline
        # step (visctl's own transforms take what they know); a constructor refuses unknown keywords itself
        checked = "type" not in node or "pipeline" in parts[:depth - 1]
        near = difflib.get_close_matches(part, present, n=3, cutoff=0.8) if checked else []
        if near:
            return f"{parent}.{part}", near, present
        if schema is not None and "type" not in node and part not in schema:
            choices = sorted(set(present) | set(schema))
            return f"{parent}.{part}", difflib.get_close_matches(part, choices, n=3, cutoff=0.6), choices
        return None
    return None


def mmengine_present() -> bool:
    """Whether the mmengine module can be imported (a plain ``pip install visctl`` has none)."""
    from visctl.environment import _module_present

    return _module_present("mmengine")


def _load_plain(spec: str) -> Any:
    """:func:`load_config` without mmengine: a model name, or a config file of plain values."""
    from visctl import plain_config

    if Path(spec).suffix.lower() in CONFIG_SUFFIXES:
        return plain_config.read_config_file(spec)
    if looks_like_config(spec):
        return plain_config.PlainConfig(dict(model=dict(type=spec)))
    raise ConfigError(f"not a config file or model name: {spec}",
                      hint=f"configs end in {', '.join(CONFIG_SUFFIXES)}; models are named like "
                      "torchvision.resnet18, timm.resnet18 or package.module:attr")


def as_config(spec: Any) -> Any:
    """``spec`` (a dict, an mmengine ``Config``, a :class:`~visctl.plain_config.PlainConfig`) as a config:
    mmengine's ``Config`` where mmengine is installed, else a ``PlainConfig``."""
    from visctl.plain_config import PlainConfig

    if isinstance(spec, PlainConfig):
        return spec
    if not mmengine_present():
        return PlainConfig(dict(spec))
    from mmengine.config import Config

    return spec if isinstance(spec, Config) else Config(dict(spec))


def merge_options(cfg: Any, options: list[str] | None) -> Any:
    """``--cfg-options`` strings (``key=value``) merged into ``cfg`` in place, one at a time; returns ``cfg``.

    A key that neither the config nor visctl knows is an error naming the closest known key
    (:func:`_unknown_key`): mmengine would add it, and nothing would read it.
    """
    extra = parse_cfg_options(options)
    for key, value in extra.items():  # one at a time, so an error names its option
        unknown = _unknown_key(cfg, key)
        if unknown is not None:
            part, near, choices = unknown
            parent, _, name = part.rpartition(".")
            raise ConfigError(f"cfg_options={[key + '=...']!r}: unknown key {part!r}: "
                              f"{parent or 'the config'} has no {name!r}, and visctl reads none by that name",
                              hint=(f"did you mean {' or '.join(near)}?" if near else
                                    f"the keys known there: {', '.join(choices)}"))
        phase = key.split(".")[0].removesuffix("_pipeline")
        twin = f"{phase}_dataloader.dataset.pipeline{key[len(phase) + 9:]}"  # the pipeline that runs, same step
        if key.split(".")[0] == f"{phase}_pipeline" and twin not in extra and \
                cfg_get(cfg, f"{phase}_dataloader.dataset.pipeline"):
            import warnings

            from visctl.errors import InputWarning

            warnings.warn(f"cfg_options={[key + '=...']!r} changes {phase}_pipeline, which visctl does not run: the "
                          f"config's {phase}_dataloader.dataset.pipeline is the one run (as mmpretrain's tools); set "
                          f"{twin}=... instead", InputWarning, stacklevel=2)
        try:
            cfg.merge_from_dict({key: value})
        except Exception as exc:  # KeyError for an index past a list, TypeError for a key under a number, ...
            raise ConfigError(f"cfg_options={[key + '=...']!r}: cannot set {key!r} in the config ({_reason(exc)})",
                              hint="a number in the key indexes an existing list (0 .. len-1); the parts "
                              "before it must exist") from exc
    return cfg


def _close_abandoned_files() -> None:
    """Close, quietly, the temp copy that mmengine's ``_file2dict`` leaves open when reading fails.

    It is only reachable from the failed call's frames; once the exception is gone, a collection closes it
    (without this, its ResourceWarning surfaces at some later, unrelated moment).
    """
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def _one_line(exc: BaseException) -> str:
    """An exception's text on one line (YAML and mmengine errors span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


@contextmanager
def _yaml_as_data() -> Iterator[None]:
    """While a config is read, mmengine's YAML handler (full loader) is replaced by :func:`load_yaml`.

    mmengine reads every YAML file of a config chain (the file itself, its ``_base_`` files, a Python
    config's YAML bases) through the handlers registered in ``mmengine.fileio``; the swap is process-wide
    while it lasts, like torch's ``safe_globals``.
    """
    from mmengine.fileio.handlers import file_handlers
    from mmengine.fileio.handlers.yaml_handler import YamlHandler

    class SafeYamlHandler(YamlHandler):
        def load_from_fileobj(self, file: Any, **kwargs: Any) -> Any:
            return load_yaml(file)

    saved = {key: file_handlers.get(key) for key in ("yaml", "yml")}
    handler = SafeYamlHandler()
    for key in saved:
        file_handlers[key] = handler
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                file_handlers.pop(key, None)
            else:
                file_handlers[key] = old


def import_custom_modules(cfg: Any, spec: str) -> None:
    """mmengine's ``custom_imports`` (modules that register models), never a standard-library module.

    A standard-library module registers nothing, and importing some has effects (``antigravity`` opens a
    browser); from a YAML or JSON config, naming them is refused.
    """
    custom = cfg.get("custom_imports")
    if not custom:
        return
    hint = "custom_imports = dict(imports=['mypkg.models'], allow_failed_imports=False)"
    if not isinstance(custom, dict):
        raise ConfigError(f"{spec}: custom_imports is {custom!r}, not a dict with the modules under imports",
                          hint=hint)
    imports = custom.get("imports")
    names = [imports] if isinstance(imports, str) else imports
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{spec}: custom_imports.imports must be a list of module names, got {imports!r}",
                          hint=hint)
    for name in names:
        if is_stdlib_module(name):
            raise ConfigError(f"{spec}: custom_imports names {name!r}, a module of the Python standard library",
                              hint="custom_imports is for the modules that register your models")
    from mmengine.utils import import_modules_from_strings

    try:
        import_modules_from_strings(list(names), allow_failed_imports=bool(custom.get("allow_failed_imports")))
    except ImportError as exc:
        raise ConfigError(f"{spec}: cannot import custom_imports {', '.join(names)}: {_one_line(exc)}",
                          hint="install the package, or set PYTHONPATH to the folder that holds it") from None
    except Exception as exc:  # the module ran and raised: its own error, as a constructor's
        raise ConfigError(f"{spec}: importing custom_imports {', '.join(names)} failed: {_reason(exc)}",
                          hint="its traceback (the CLI's --debug) shows where the module failed") from exc


def _bases_of(path: Path) -> list[str]:
    """The ``_base_`` entries a config file names, read without running it (best effort: [] when unreadable)."""
    import ast
    import json

    try:
        text = path.read_text(errors="replace")
        if path.suffix.lower() == ".py":
            for node in ast.parse(text).body:
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_"
                                                        for t in node.targets):
                    value = ast.literal_eval(node.value)
                    break
            else:
                return []
        elif path.suffix.lower() == ".json":
            value = json.loads(text).get("_base_", [])
        else:
            import yaml

            data = yaml.safe_load(text)
            value = data.get("_base_", []) if isinstance(data, dict) else []
    except Exception:  # a broken file: mmengine reports it with its own words
        return []
    values = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else []
    return [v for v in values if isinstance(v, str) and "::" not in v]  # 'mmdet::...' lives in a package


def check_base_chain(path: Path) -> None:
    """Refuse a config whose ``_base_`` files include each other (mmengine recurses until Python gives up)."""
    def visit(p: Path, chain: list[Path]) -> None:
        if p in chain:
            loop = " -> ".join(str(c) for c in chain[chain.index(p):] + [p])
            raise ConfigError(f"the config's _base_ files form a cycle: {loop}",
                              hint="a base config must not inherit, directly or through others, from a config "
                              "that inherits from it")
        if len(chain) > 50 or not p.is_file():
            return
        for base in _bases_of(p):
            visit((p.parent / base).resolve(), chain + [p])

    visit(Path(path).resolve(), [])


def cfg_get(cfg: Any, dotted: str, default: Any = None) -> Any:
    """``cfg['a.b.c']`` that returns ``default`` when any part is missing."""
    node: Any = cfg
    for part in dotted.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, IndexError, AttributeError):
            return default
    return node


CLASS_KEYS = ("classes", "dataset_meta.classes", "test_dataloader.dataset.classes", "val_dataloader.dataset.classes",
              "train_dataloader.dataset.classes", "test_dataloader.dataset.metainfo.classes",
              "val_dataloader.dataset.metainfo.classes", "train_dataloader.dataset.metainfo.classes")


def class_names(cfg: Any) -> list[str] | None:
    """Class names from ``classes``, ``dataset_meta.classes`` or the test (val, train) dataset's ``classes`` or
    ``metainfo.classes``."""
    for key in CLASS_KEYS:
        names = check_class_names(cfg_get(cfg, key), key)
        if names:
            return names
    return None


def check_class_names(value: Any, where: str) -> list[str] | None:
    """A config's class list as names: a list/tuple of names (numbers read as text), or a text file with one name
    a line (mmpretrain's ``classes='classes.txt'``); None for None or an empty list.

    Raises:
        ConfigError: anything else (``classes = 5``, a dict, nested lists, a missing file).
    """
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return None
    hint = (f"write {where.rpartition('.')[2]}=['cat', 'dog', ...] (one name per model output, in order), or the "
            "path of a text file with one name a line; the number of classes is the model's (num_classes)")
    if isinstance(value, str) and value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"{where}={value!r}: a text is read as a file of class names, and it is not one",
                              hint=hint)
        try:
            return [line.rstrip("\r\n") for line in path.read_text().splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}={value!r}: cannot read the class names ({_reason(exc)})",
                              hint=hint) from None
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                for v in value):
        return [str(v) for v in value]
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    raise ConfigError(f"{where}={shown} is not a list of class names", hint=hint)


def tool_option(cfg: Any, key: str, default: Any = None) -> Any:
    """A per-model tool default from the config's ``visctl = dict(...)`` block, type-checked.

    ``target_layers``, ``featmap_layers``, ``tsne_layers``: a list of layer names (one name alone is a list of
    one); ``task``: one of :data:`TASK_NAMES`; ``patch_size``: a positive whole number; ``input_size``: a
    positive whole number or ``(w, h)``. None is the same as leaving the key out.
    """
    block = cfg_get(cfg, "visctl")
    if block is None:
        return default
    if not hasattr(block, "get"):
        raise ConfigError(f"the config's visctl is {type(block).__name__} ({block!r}), not a dict",
                          hint="visctl = dict(target_layers=['backbone.layer4'], input_size=224, ...)")
    value = block.get(key)
    if value is None:
        return default
    where = f"visctl.{key}"
    if key in ("target_layers", "featmap_layers", "tsne_layers"):
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value):
            return list(value)
        raise ConfigError(f"{where}={value!r} is not a list of layer names",
                          hint=f"visctl = dict({key}=['backbone.layer4']) (paths over named_modules(); "
                          "--preview-model lists them)")
    if key == "task":
        if value not in TASK_NAMES:
            raise ConfigError(f"{where}={value!r} is not a task visctl knows",
                              hint="task is one of " + ", ".join(repr(t) for t in TASK_NAMES))
        return value
    if key == "patch_size":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{where}={value!r} is not a positive whole number of pixels", hint="patch_size=640")
        return value
    if key == "input_size":
        sizes = [value] if isinstance(value, int) else list(value) if isinstance(value, (list, tuple)) else None
        if not sizes or len(sizes) > 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1
                                                  for v in sizes):
            raise ConfigError(f"{where}={value!r} is not a size in pixels",
                              hint="input_size=224, or (w, h) such as input_size=(320, 256)")
        return value
    return value


def check_config(cfg: Any) -> None:
    """Refuse, before anything is built, a config whose keys visctl reads have the wrong type.

    The ``visctl`` block's keys (unknown ones with the closest known name, and each value, :func:`tool_option`),
    the class lists (:func:`class_names`), ``data_preprocessor``, ``checkpoint_revise_keys``, ``default_scope``
    and the pipelines (a list of transform dicts, each with a ``type``).
    """
    import difflib

    block = cfg_get(cfg, "visctl")
    if block is not None:
        if not hasattr(block, "keys"):
            tool_option(cfg, "task")  # says what is wrong
        for k in block.keys():
            if k not in TOOL_KEYS:
                near = difflib.get_close_matches(str(k), TOOL_KEYS, n=2, cutoff=0.6)
                raise ConfigError(f"the config's visctl block has an unknown key {k!r}",
                                  hint=(f"did you mean {' or '.join(near)}? " if near else "")
                                  + "it takes " + ", ".join(TOOL_KEYS))
            tool_option(cfg, k)
    for key in CLASS_KEYS:
        check_class_names(cfg_get(cfg, key), key)
    for key in ("data_preprocessor", "model.data_preprocessor"):
        dp = cfg_get(cfg, key)
        if dp is not None and not hasattr(dp, "get"):
            raise ConfigError(f"the config's {key} is {type(dp).__name__} ({dp!r}), not a dict",
                              hint=f"{key} = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], "
                              "to_rgb=True)")
        for flag in ("to_rgb", "bgr_to_rgb", "rgb_to_bgr"):
            value = dp.get(flag) if dp is not None else None
            # the package reads it as a truth value: 'no' (a string) would swap the channels too
            if value is not None and not isinstance(value, bool) and value not in (0, 1):
                raise ConfigError(f"the config's {key}.{flag} is {value!r}, not True or False",
                                  hint=f"{key}.{flag} = True (swap BGR to RGB) or False")
    revise = cfg_get(cfg, "checkpoint_revise_keys")
    if revise is not None:
        import re

        pairs = revise if isinstance(revise, (list, tuple)) else None
        ok = pairs is not None and all(isinstance(p, (list, tuple)) and len(p) == 2
                                       and all(isinstance(v, str) for v in p) for p in pairs)
        if ok:
            try:
                for pattern, _ in pairs or []:
                    re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"checkpoint_revise_keys: {pattern!r} is not a regular expression ({exc})",
                                  hint="checkpoint_revise_keys = [(r'^module\\.', '')]") from None
        else:
            raise ConfigError(f"checkpoint_revise_keys={revise!r} is not a list of (pattern, replacement) pairs",
                              hint="checkpoint_revise_keys = [(r'^module\\.', ''), (r'^backbone\\.', '')]")
    scope = cfg_get(cfg, "default_scope")
    if scope is not None and not isinstance(scope, str):
        raise ConfigError(f"default_scope={scope!r} is not a package name", hint="default_scope = 'mmpretrain'")
    for key in ("test_pipeline", "val_pipeline", "train_pipeline", "test_dataloader.dataset.pipeline",
                "val_dataloader.dataset.pipeline", "train_dataloader.dataset.pipeline",
                "extract_dataloader.dataset.pipeline"):
        check_pipeline(cfg_get(cfg, key), key)


def check_pipeline(steps: Any, where: str) -> None:
    """A pipeline is a list of transform dicts, each with a ``type`` (a name, or a class in a lazy config)."""
    if steps is None:
        return
    hint = f"{where} = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=224), dict(type='PackInputs')]"
    if not isinstance(steps, (list, tuple)):
        raise ConfigError(f"{where} is {type(steps).__name__} ({steps!r}), not a list of transforms", hint=hint)
    for i, step in enumerate(steps):
        if not hasattr(step, "get") or not (isinstance(step.get("type"), str) or callable(step.get("type"))):
            raise ConfigError(f"{where}[{i}] is {step!r}, not a transform dict with a type", hint=hint)


def check_pipeline_twins(cfg: Any) -> None:
    """One warning when the config's ``test_pipeline`` and ``test_dataloader.dataset.pipeline`` differ: the
    dataloader's runs (:func:`test_pipeline`, as mmpretrain's tools), so a ``test_pipeline`` that a child config
    redefines without its dataloader -- which keeps the base's list -- would be silently ignored."""
    import warnings

    from visctl.errors import InputWarning

    ours, runs = cfg_get(cfg, "test_pipeline"), cfg_get(cfg, "test_dataloader.dataset.pipeline")
    if not isinstance(ours, (list, tuple)) or not isinstance(runs, (list, tuple)) or list(ours) == list(runs):
        return
    types = ", ".join(str(s.get("type", "?")) if hasattr(s, "get") else "?" for s in runs)
    warnings.warn("the config's test_pipeline differs from its test_dataloader.dataset.pipeline, and "
                  f"test_dataloader.dataset.pipeline runs ({types}), as in mmpretrain's tools; to run "
                  "test_pipeline, set test_dataloader = dict(dataset=dict(pipeline=test_pipeline)) in the config",
                  InputWarning, stacklevel=2)


def test_pipeline(cfg: Any) -> list[dict] | None:
    """The test pipeline: the test dataloader's dataset pipeline, else ``test_pipeline``, else the val ones.

    The dataloader's comes first because that is the one mmpretrain's tools run
    (``Compose(cfg.test_dataloader.dataset.pipeline)`` in tools/visualization/vis_cam.py) and the one a
    ``--cfg-options test_dataloader.dataset.pipeline.1.scale=...`` changes; ``test_pipeline`` is usually the
    same list before the override.
    """
    key = test_pipeline_key(cfg)
    return None if key is None else [dict(step) for step in cfg_get(cfg, key)]


def test_pipeline_key(cfg: Any) -> str | None:
    """The config key :func:`test_pipeline` reads the pipeline from; None when the config has none."""
    for key in ("test_dataloader.dataset.pipeline", "test_pipeline", "val_dataloader.dataset.pipeline",
                "val_pipeline"):
        if cfg_get(cfg, key):
            return key
    return None


def normalization(cfg: Any) -> tuple[tuple[float, ...], tuple[float, ...], bool]:
    """Mean, std (0-255) and whether the model takes RGB, from ``data_preprocessor``.

    Without a ``data_preprocessor`` the torchvision convention applies: RGB input, ImageNet statistics.
    With one, a missing ``to_rgb`` means BGR, as in mmpretrain's ``ClsDataPreprocessor``.
    """
    dp = cfg_get(cfg, "data_preprocessor") or cfg_get(cfg, "model.data_preprocessor")
    if not dp:
        return IMAGENET_MEAN, IMAGENET_STD, True
    mean, std = check_mean_std(dp.get("mean", IMAGENET_MEAN), dp.get("std", IMAGENET_STD), "data_preprocessor")
    to_rgb = bool(dp.get("to_rgb", dp.get("bgr_to_rgb", False)))
    return mean, std, to_rgb


def check_mean_std(mean: Any, std: Any, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``mean`` and ``std`` as three floats each (one value stands for all channels), std nonzero."""
    import math

    out = []
    for key, value in (("mean", mean), ("std", std)):
        try:
            values = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        except (TypeError, ValueError):
            values = ()
        if len(values) == 1:
            values = values * 3
        if len(values) != 3 or not all(math.isfinite(v) for v in values):
            example = list(IMAGENET_MEAN if key == "mean" else IMAGENET_STD)
            raise ConfigError(f"{where}: {key}={value!r} is not 3 numbers (one per colour channel)",
                              hint=f"write {key}=[r, g, b] in 0-255, e.g. {key}={example}")
        out.append(values)
    if any(v == 0 for v in out[1]):
        raise ConfigError(f"{where}: std={std!r} has a zero (every pixel would divide by it)",
                          hint=f"use the dataset's standard deviation per channel, e.g. std={list(IMAGENET_STD)}")
    return out[0], out[1]


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".pth.tar", ".tar")


def looks_like_checkpoint(arg: str) -> bool:
    """Whether a command-line argument names a checkpoint (a weights file or a URL)."""
    return arg.lower().endswith(CHECKPOINT_SUFFIXES) or "://" in arg


def pop_cfg_options(args: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``key=value`` words from positional arguments.

    ``--cfg-options a=1 b=2`` (mmengine's habit) hands ``b=2`` to the positional arguments; a word with
    ``=`` that is not an existing path is taken as a config option.
    """
    rest: list[str] = []
    options: list[str] = []
    for a in args:
        (options if "=" in a and not Path(a).exists() and "://" not in a else rest).append(a)
    return rest, options


def split_inputs(args: list[str]) -> tuple[list[str], str, str | None]:
    """Split ``IMG... CONFIG [CHECKPOINT]`` into images, config and checkpoint.

    The checkpoint is recognised by its suffix (.pth, .pt, ...) or a URL scheme; the config is the argument
    before it (or the last one).
    """
    from visctl.errors import InputError

    args = list(args)
    checkpoint = args.pop() if len(args) >= 3 and looks_like_checkpoint(args[-1]) else None
    if len(args) < 2:
        raise InputError("expected IMG... CONFIG [CHECKPOINT]",
                         hint="for example: visctl cam cat.jpg configs/resnet50.py resnet50.pth")
    config = args.pop()
    if not looks_like_config(config):
        raise InputError(f"{config!r} is not a config file or a model name",
                         hint=f"the config comes after the images and ends in {', '.join(CONFIG_SUFFIXES)}, "
                         "or is a model name like torchvision.resnet18 or timm.resnet18")
    for a in args:
        if a.lower().endswith(CONFIG_SUFFIXES):
            raise InputError(f"{a!r} looks like a config but stands among the images",
                             hint="put the images first, then CONFIG, then the optional CHECKPOINT")
    return args, config, checkpoint


RECORDER_KEYS = (("recorders", "mappings"), ("recorders1", "mappings1"), ("recorders2", "mappings2"),
                 ("teacher_recorders", "teacher_mappings"), ("student_recorders", "student_mappings"))


def is_recorder_config(path: str) -> bool:
    """Whether ``path`` is an mmrazor visualisation config (``recorders`` + ``mappings``, no model).

    mmrazor's ``feature_visualization.py IMG CONFIG VIS_CONFIG CHECKPOINT`` and
    ``feature_diff_visualization.py IMG CONFIG1 CONFIG2 VIS_CONFIG CKPT1 CKPT2`` take one after the configs.
    """
    p = Path(path)
    if p.suffix.lower() not in CONFIG_SUFFIXES or not p.is_file():
        return False
    text = p.read_text(errors="replace")
    return "recorders" in text and "mappings" in text and "model" not in _top_level_names(text)


def _top_level_names(text: str) -> set[str]:
    import ast

    try:
        tree = ast.parse(text)
    except SyntaxError:
        return set()
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)}


def recorder_layers(path: str) -> list[list[str]]:
    """The layers an mmrazor visualisation config records, as visctl labels, one list per model.

    A ``ModuleOutputs`` recorder with ``source='neck'`` and mappings ``p3=dict(recorder='neck', data_idx=0)``
    gives ``neck[0]``; without ``data_idx`` the whole output (``neck``). Only module outputs can be recorded
    by visctl (mmrazor's ``RecorderManager``, tools/visualizations/feature_visualization.py, reads the same
    keys; its method/function recorders patch code and are refused here).
    """
    from visctl.errors import ConfigError

    cfg = load_config(path)
    found: list[list[str]] = []
    for rec_key, map_key in RECORDER_KEYS:
        recorders = cfg.get(rec_key)
        if not recorders:
            continue
        labels: list[str] = []
        for name, mapping in (cfg.get(map_key) or {}).items():
            rec = recorders.get(mapping.get("recorder"))
            if rec is None:
                raise ConfigError(f"{path}: mapping {name!r} names recorder {mapping.get('recorder')!r}, "
                                  f"which {rec_key} does not define", hint=f"recorders: {', '.join(recorders)}")
            if rec.get("type") not in ("ModuleOutputs", "mmrazor.ModuleOutputs"):
                raise ConfigError(f"{path}: recorder {mapping.get('recorder')!r} is a {rec.get('type')}; visctl "
                                  "records module outputs only", hint="use type='ModuleOutputs', source=<layer>")
            idx = mapping.get("data_idx")
            label = rec["source"] if idx is None else f"{rec['source']}[{idx}]"
            if label not in labels:
                labels.append(label)
        found.append(labels)
    if not found:
        raise ConfigError(f"{path} defines no recorders", hint="an mmrazor vis config has recorders and mappings")
    return found


def split_recorder_args(args: list[str]) -> tuple[list[str], list[str] | None, list[str] | None]:
    """mmrazor's positional layouts with a visualisation config, as visctl's ``IMG... CONFIG [CHECKPOINT]``.

    ``IMG CONFIG VIS_CONFIG [CKPT]`` -> (``IMG CONFIG [CKPT]``, recorded layers, None);
    ``IMG CONFIG1 CONFIG2 VIS_CONFIG CKPT1 CKPT2`` -> (``IMG CONFIG1 CKPT1``, layers, ``[CONFIG2, CKPT2]``).
    Without a visualisation config the arguments come back unchanged.
    """
    from visctl.errors import InputError

    at = next((i for i, a in enumerate(args) if i > 0 and is_recorder_config(a)), None)
    if at is None:
        return args, None, None
    layers = recorder_layers(args[at])
    before, ckpts = args[:at], args[at + 1:]
    if len(layers) == 1:
        if len(ckpts) > 1:
            raise InputError("expected IMG... CONFIG VIS_CONFIG [CHECKPOINT]", hint=f"got {' '.join(args)}")
        return before + ckpts, layers[0], None
    if len(before) < 3 or len(ckpts) > 2:
        raise InputError("expected IMG... CONFIG1 CONFIG2 VIS_CONFIG [CKPT1 CKPT2] (mmrazor's feature difference)",
                         hint=f"got {' '.join(args)}")
    if layers[0] != layers[1]:
        raise InputError(f"{args[at]} records {layers[0]} in model 1 and {layers[1]} in model 2",
                         hint="visctl compares the same layers of both models")
    return before[:-1] + ckpts[:1], layers[0], [before[-1]] + ckpts[1:2]
