"""The types and ranges of the public functions' arguments, which are the CLI's options: checked in one place.

:data:`LIMITS` holds every numeric argument's range, by command; the CLI declares the same bounds on its options
(a test compares the two), and each library function calls :func:`check` before any work, so that
``visctl.cam(..., topk=0)`` is refused as ``visctl cam --topk 0`` is. :func:`names` reads a list argument
(layers, classes, methods) the way the CLI reads a repeatable, comma-separated option. Stdlib only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from visctl.errors import ArgumentError

#: numpy's legacy seeding takes 0 .. 2**32 - 1, and every generator is seeded from one --seed
SEED_MAX = 2**32 - 1
#: far more threads than any machine has cores; torch crashes (SIGSEGV) when asked for ~100000
THREADS_MAX = 1024
#: DataLoader worker processes: each is a process; more than this would only exhaust the machine
WORKERS_MAX = 64


@dataclass(frozen=True)
class Limit:
    """The values a numeric argument takes: ``low``..``high`` (``high`` itself excluded with ``below_high``),
    whole numbers only with ``integer``, plus the ``also`` values that mean something else (-1: all)."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    below_high: bool = False
    also: tuple[int, ...] = ()
    meaning: str = ""  # what an ``also`` value means, for the hint

    def allows(self, value: float) -> bool:
        if value in self.also:
            return True
        if self.low is not None and not value >= self.low:
            return False
        if self.high is not None and not (value < self.high if self.below_high else value <= self.high):
            return False
        return True

    def describe(self, above_low: bool = False) -> str:
        """The values in words; ``above_low``: the low bound itself is refused (a factor of 0 scales nothing)."""
        kind = "a whole number" if self.integer else "a number"
        if above_low and self.low is not None:
            text = f"{kind} above {_num(self.low)}" + (f", at most {_num(self.high)}" if self.high is not None else "")
        elif self.low is not None and self.high is not None:
            text = f"{kind} from {_num(self.low)} to {_num(self.high)}" + (" (excluded)" if self.below_high else "")
        elif self.low is not None:
            text = f"{kind} of at least {_num(self.low)}"
        elif self.high is not None:
            text = f"{kind} of at most {_num(self.high)}"
        else:
            text = kind
        return text + (f", or {self.meaning}" if self.also else "")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_INT1 = Limit(1, integer=True)
_UNIT = Limit(0.0, 1.0)
_PANEL = Limit(32, 8192, integer=True)
_SEED = Limit(0, SEED_MAX, integer=True)
_WORKERS = Limit(0, WORKERS_MAX, integer=True)
_ONE_OR_ALL = Limit(1, integer=True, also=(-1,), meaning="-1 for all")

#: command (the CLI's name) -> argument -> its range; the CLI's options of the same names have the same bounds
LIMITS: dict[str, dict[str, Limit]] = {
    "cam": dict(topk=_INT1, num_extra_tokens=Limit(0, integer=True), ratio_channels_to_ablate=_UNIT, alpha=_UNIT,
                panel_size=_PANEL, batch_size=_INT1),
    "featmap": dict(topk=Limit(1, integer=True, also=(-1,), meaning="-1 to draw a 1- or 3-channel feature as it is"),
                    alpha=_UNIT, score_thr=_UNIT, panel_size=_PANEL, batch_size=_INT1,
                    arrangement=_INT1, resize_shape=Limit(1, 8192, integer=True)),
    "boxam": dict(topk=_ONE_OR_ALL, score_thr=_UNIT, alpha=_UNIT, ratio_channels_to_ablate=_UNIT,
                  panel_size=_PANEL, batch_size=_INT1),
    "slice": dict(patch_size=Limit(8, integer=True), patch_overlap_ratio=Limit(0.0, 0.95), merge_iou_thr=_UNIT,
                  score_thr=_UNIT, max_side=Limit(256, integer=True), batch_size=_INT1),
    "recon": dict(mask_ratio=Limit(0.0, 0.99), batch_size=_INT1, seed=_SEED),
    "tsne": dict(num_extra_tokens=Limit(0, integer=True), max_num_class=_INT1, max_num_samples_per_class=_INT1,
                 class_idx=Limit(0, integer=True), n_components=Limit(2, integer=True),
                 n_iter_without_progress=_INT1, perplexity=Limit(1.0), n_iter=_INT1, early_exaggeration=Limit(1.0),
                 marker_size=Limit(0.1), num_workers=_WORKERS, batch_size=_INT1, seed=_SEED),
    "pipeline": dict(number=_ONE_OR_ALL, min_edge_length=_INT1, max_edge_length=_INT1,
                     rescale_factor=Limit(0.0), seed=_SEED),
    "browse": dict(number=_ONE_OR_ALL, rows=_INT1, cols=_INT1, num_workers=_WORKERS, rescale_factor=Limit(0.0),
                   seed=_SEED),
    "lr": dict(dataset_size=_INT1, ngpus=_INT1, batch_size=_INT1),
    "audit": dict(tolerance=Limit(0.0), top_percent=Limit(0.0, 100.0), border=Limit(0.0, 0.5),
                  worst=Limit(0, integer=True), batch_size=_INT1),
}
#: the arguments given as a pair (rows, cols / height, width), each value in the range
PAIRS = {("featmap", "arrangement"), ("featmap", "resize_shape")}
#: the arguments given as a list of values, each in the range
LISTS = {("tsne", "class_idx")}
#: arguments that must be above their low bound, not at it (a factor of 0 scales nothing)
ABOVE_LOW = {("pipeline", "rescale_factor"), ("browse", "rescale_factor"), ("audit", "top_percent"),
             ("audit", "border")}


def number(command: str, name: str, value: Any) -> None:
    """Refuse ``value`` unless it is a number in ``name``'s range (:data:`LIMITS`); None means "the default"."""
    limit = LIMITS[command][name]
    if value is None:
        return
    if (command, name) in PAIRS:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or len(list(value)) != 2:
            raise ArgumentError(f"{name}={value!r} is not a pair of numbers",
                                hint=f"give two values, each {limit.describe()}")
        for v in value:
            _one(command, name, v, limit, whole=value)
        return
    if (command, name) in LISTS:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            value = [value]
        for v in value:
            _one(command, name, v, limit, whole=value)
        return
    _one(command, name, value, limit)


def _one(command: str, name: str, value: Any, limit: Limit, whole: Any = None) -> None:
    # named as the argument (the CLI says its flag: visctl._options.cli_text)
    given = whole if whole is not None else value
    shown = f"{name}={tuple(given) if isinstance(given, (list, tuple)) else given!r}"
    each = "two values, each " if (command, name) in PAIRS else "a list of values, each " if whole is not None else ""
    hint = f"give {each}{limit.describe(above_low=(command, name) in ABOVE_LOW)}"
    part = f": {value!r}" if whole is not None else ""  # the item that is wrong, in a list
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{shown}{part} is not a number", hint=hint)
    if limit.integer and not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{shown}{part} is not a whole number", hint=hint)
    if not math.isfinite(float(value)):
        raise ArgumentError(f"{shown}{part} is not a finite number", hint=hint)
    if not limit.allows(float(value)) or ((command, name) in ABOVE_LOW and value == limit.low):
        raise ArgumentError(f"{shown} is out of range", hint=hint)


def within(name: str, value: Any, limit: Limit) -> None:
    """Refuse ``value`` unless it is a number in ``limit`` (None means "the default")."""
    if value is not None:
        _one("", name, value, limit)


def check(command: str, **values: Any) -> None:
    """Check every numeric argument of ``command`` given in ``values`` (see :data:`LIMITS`)."""
    for name, value in values.items():
        number(command, name, value)


def _numpy_bool(value: Any) -> bool:
    """numpy's bool (``np.bool_``; named ``bool`` in numpy 2), told apart without importing numpy."""
    return type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")


def flag(name: str, value: Any) -> bool:
    """A yes/no argument: a bool (numpy's included), else refused."""
    if value is None or isinstance(value, bool) or _numpy_bool(value):
        return bool(value)
    raise ArgumentError(f"{name}={value!r} is not True or False", hint="pass True or False")


def names(value: Any, name: str, what: str, *, numbers_too: bool = False, option: str | None = None
          ) -> list[str] | None:
    """A list argument (layers, classes, methods) as the CLI reads its repeatable, comma-separated option:
    None (the default), a string ``"a,b"``, or a list of strings (``numbers_too``: of ints as well).

    An empty string, an empty list or an empty item (``"a,,b"``) names nothing and is refused: it would
    otherwise silently mean the default. ``option``: the CLI's flag, named in the messages instead of ``name``.
    """
    if value is None:
        return None
    shown, flag_name = (option, option) if option else (name, f"{name}=")
    bare = what.removeprefix("a ").removeprefix("an ")
    items: list[Any]
    if isinstance(value, (str, Path)):
        items = [value]
    elif numbers_too and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
        items = list(value)
    else:
        raise ArgumentError(f"{shown}={value!r} is not {what}",
                            hint="pass a string, a comma-separated string or a list of strings")
    if not items:
        raise ArgumentError(f"{shown}=[] names no {bare}",
                            hint=f"leave {name} out (None) for the default, or name at least one")
    found: list[str] = []
    for item in items:
        if numbers_too and isinstance(item, numbers.Integral) and not isinstance(item, bool):
            found.append(str(int(item)))
            continue
        if not isinstance(item, (str, Path)):
            raise ArgumentError(f"{shown}: {item!r} is not {what}",
                                hint=f"pass strings{' or class indices' if numbers_too else ''}")
        parts = [p.strip() for p in str(item).split(",")]
        if not all(parts):
            raise ArgumentError(f"{shown}{' ' if option else '='}{str(item)!r} has an empty {bare}",
                                hint=f"name each one (e.g. {flag_name}{' ' if option else ''}'a,b'), or leave it "
                                "out for the default")
        found += parts
    return found


def split_option(values: list[str] | None, option: str, what: str) -> list[str] | None:
    """A repeatable, comma-separated CLI option's values (``-t a,b -t c``); an empty value is refused (it
    would silently mean the default)."""
    if values is None:
        return None
    return names(values, option.lstrip("-").replace("-", "_"), what, option=option)


def model_spec(value: Any, name: str = "model", *, modules: bool = True) -> None:
    """Refuse a model (or config) argument that is none of: a config file or model name, a config dict, an
    mmengine Config, or (``modules``) an ``nn.Module`` -- checked without importing torch or mmengine."""
    import sys
    from collections.abc import Mapping

    if isinstance(value, (str, Path)) and str(value).strip():
        return
    if isinstance(value, Mapping) or type(value).__module__.startswith("mmengine"):
        return
    if modules and type(value).__module__ == "visctl.library.opened":  # visctl.open's model, built already
        return
    torch = sys.modules.get("torch")  # a caller holding an nn.Module has imported torch
    if modules and torch is not None and isinstance(value, torch.nn.Module):
        return
    what = ("a config file, a model name, a config dict or an nn.Module" if modules
            else "a config file, a config dict or an mmengine Config")
    shown = repr(value) if len(repr(value)) <= 60 else f"<{type(value).__name__}>"
    raise ArgumentError(f"{name}={shown} is not {what}",
                        hint=f"pass {what} as {name}" + (" (e.g. 'torchvision.resnet18')" if modules else ""))


def categories(value: Any, name: str = "target_category") -> list[str] | None:
    """Classes asked for: None (the predicted ones), an index, a name, or a list of them. Names are kept whole
    (an ImageNet name holds commas); an empty name or list is refused."""
    if value is None:
        return None
    items = [value] if isinstance(value, (str, numbers.Integral)) else value
    if isinstance(items, (bytes, dict)) or not isinstance(items, Iterable):
        raise ArgumentError(f"{name}={value!r} is not a class", hint="pass a class index, a class name or a list")
    found = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, numbers.Integral)):
            raise ArgumentError(f"{name}={item!r} is not a class index or name",
                                hint="pass ints (class indices) or strings (class names)")
        if isinstance(item, numbers.Integral):
            item = int(item)
            if item < 0:
                raise ArgumentError(f"{name}={item} is a negative class index", hint="class indices start at 0")
        elif not item.strip():
            raise ArgumentError(f"{name}={item!r} names an empty class", hint="name the class, or give its index")
        found.append(str(item))
    if not found:
        raise ArgumentError(f"{name}=[] names no class",
                            hint=f"leave {name} out (None) for the predicted classes, or name at least one")
    return found


E = TypeVar("E", bound=Enum)


def choice(kind: type[E], value: Any, name: str) -> E:
    """One of an Enum's values (the CLI's choices; case-insensitive, as the CLI reads them), else refused
    naming them all."""
    if isinstance(value, kind):
        return value
    raw = getattr(value, "value", value)
    for member in kind:
        if isinstance(raw, str) and raw.lower() == str(member.value).lower():
            return member
    valid = ", ".join(str(m.value) for m in kind)
    if isinstance(value, (list, tuple)):
        raise ArgumentError(f"{name}={list(value)!r}: one value, not a list",
                            hint=f"give one of {valid}; for several, call once per value")
    raise ArgumentError(f"{name}={value!r} is not one of {valid}", hint=f"use {valid}")


def skip_types(value: Any) -> list[str] | None:
    """``skip_type``: None (the default list), transform names (a string, comma-separated, or a list), or an
    empty list -- or only empty names, the CLI's ``--skip-type ''`` -- to skip nothing."""
    if value is not None and not isinstance(value, str) and isinstance(value, Iterable):
        items = list(value)
        if all(isinstance(v, str) and not v.strip() for v in items):
            return []
    return names(value, "skip_type", "a transform name")


# --- every public argument's type, checked before any work ---------------------------------------------------

#: function (``visctl.<name>``) -> argument -> its kind (see :func:`_KINDS`); every argument of every public
#: function has one (a test compares this table with the signatures), and :func:`typed` checks them all
#: before the function runs, so that a value of the wrong type is an :class:`ArgumentError` naming the argument
#: instead of a raw Python error from deep inside the run. Numeric arguments (``number``) are checked against
#: :data:`LIMITS` as well.
_RUN = dict(settings="settings", options="options", session="session")
_MODEL = dict(images="images", model="model", checkpoint="path?")
TYPES: dict[str, dict[str, str]] = {
    "cam": dict(_MODEL, method="names", target_layers="names", target_category="categories", topk="number",
                vit_like="bool?", num_extra_tokens="number", aug_smooth="bool", eigen_smooth="bool",
                ratio_channels_to_ablate="number", alpha="number", colormap="str?", panel_size="number",
                save_raw="bool", batch_size="number", score="bool", task="str", target_mask="mask",
                target_box="box", image_format="str", amp="str", **_RUN),
    "featmap": dict(_MODEL, target_layers="names", channel_reduction="str", topk="number", arrangement="number",
                    overlaid="bool", alpha="number", use_norm="bool", normalize="str", resize_shape="number",
                    colormap="str?", compare="compare", compare_checkpoint="path?", signed="bool",
                    score_thr="number", repo="str?", panel_size="number", batch_size="number", save_raw="bool",
                    image_format="str", **_RUN),
    "boxam": dict(_MODEL, method="names", target_layers="names", topk="number", score_thr="number",
                  norm_in_bbox="bool", per_box="bool", no_boxes="bool", alpha="number", colormap="str?",
                  ratio_channels_to_ablate="number", max_shape="max_shape?", panel_size="number",
                  batch_size="number", save_raw="bool", image_format="str", **_RUN),
    "slice": dict(_MODEL, patch_size="number", patch_overlap_ratio="number", merge="str", merge_iou_thr="number",
                  merge_metric="str?", score_thr="number", full_image="bool", max_side="number",
                  batch_size="number", debug="bool", deploy="bool", save_patch="bool", **_RUN),
    "tsne": dict(model="model", checkpoint="path?", phase="str?", test_cfg="config?", target_layers="names",
                 vis_stage="str?", all_stages="bool", pooling="str", num_extra_tokens="number",
                 max_num_class="number", max_num_samples_per_class="number", class_idx="number", method="str",
                 n_components="number", init="str", n_iter_without_progress="number", perplexity="number",
                 n_iter="number", learning_rate="learning_rate", early_exaggeration="number", metric="str",
                 legend="bool", marker_size="number", thumbnails="bool", title="str?", num_workers="number",
                 batch_size="number", seed="number", **_RUN),
    "recon": dict(_MODEL, mask_ratio="number", mask_file="path?", use_vis_pipeline="bool", norm_pix="bool",
                  target_generator="bool", save_raw="bool", batch_size="number", seed="number",
                  norm_pix_stats="str", **_RUN),
    "lr": dict(config="config", dataset_size="number", ngpus="number", batch_size="number", drop_last="bool?",
               model="model?", title="str?", style="str?", window_size="window", log_scale="bool",
               parameter="str?", **_RUN),
    "pipeline": dict(config="config", images="images?", phase="str", number="number", skip_type="skip_type",
                     mode="str", adaptive="bool", min_edge_length="number", max_edge_length="number",
                     bgr2rgb="bool", rescale_factor="number", channel_order="str?", seed="number", **_RUN),
    "browse": dict(config="config", phase="str", number="number", skip_type="skip_type", mode="str",
                   rescale_factor="number", rows="number", cols="number", num_workers="number", channel_order="str?",
                   seed="number", **_RUN),
    "audit": dict(model="audit_model", checkpoint="path?", data="path?", phase="str?", annotations="path?",
                  region="path?", method="str", agree_with="str?", target_layers="names", tolerance="number",
                  top_percent="number", border="number", worst="number", compare="path?",
                  fail_under="fail_under", batch_size="number", **_RUN),
    "open": dict(model="model", checkpoint="path?", options="options"),
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"<{type(value).__name__}>"


def _wrong(name: str, value: Any, what: str, hint: str | None = None) -> ArgumentError:
    if name != "settings" and isinstance(getattr(type(value), "command", None), str) and hasattr(value, "as_dict"):
        hint = f"pass the options as settings={type(value).__name__}(...)"  # a visctl.XOptions given positionally
    return ArgumentError(f"{name}={_shown(value)} is not {what}", hint=hint or f"pass {what}")


def _is_text(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, Enum) and isinstance(value.value, str))


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not _numpy_bool(value)


def _is_array(value: Any) -> bool:
    return hasattr(value, "dtype") and hasattr(value, "shape") and not isinstance(value, (str, Path))


def _image_item(name: str, value: Any) -> None:
    if isinstance(value, (str, Path)):
        if not str(value).strip():
            raise ArgumentError(f"{name}={value!r} is an empty path", hint="pass a file, a folder or a glob")
        return
    if _is_array(value):
        kind = getattr(value.dtype, "kind", "")
        if kind not in "biuf" or not kind:  # complex, object, strings, dates: no pixel values
            raise ArgumentError(f"{name}: an array of {value.dtype} is not an image",
                                hint="pass real pixel values: uint8 (0..255) or floats (0..1), H x W x 3 RGB "
                                     "or H x W gray")
        return
    if hasattr(value, "convert") and hasattr(value, "mode"):  # a PIL image
        return
    raise _wrong(name, value, "an image", "pass a path (file, folder or glob), a numpy RGB image, a PIL image "
                 "or a list of them")


def _check_kind(function: str, name: str, kind: str, value: Any) -> None:  # noqa: C901 - one branch a kind
    if kind.endswith("?"):
        if value is None:
            return
        kind = kind[:-1]
    if kind == "number":
        number(function, name, value)
    elif kind == "bool":
        flag(name, value)
        if value is None:
            raise _wrong(name, value, "True or False")
    elif kind == "str":
        if not _is_text(value):
            raise _wrong(name, value, "a string")
    elif kind == "path":
        if not isinstance(value, (str, Path)) or not str(value).strip():
            raise _wrong(name, value, "a file name", "name a file or folder")
    elif kind == "names":
        names(value, name, "a name")
    elif kind == "categories":
        categories(value, name)
    elif kind == "skip_type":
        skip_types(value)
    elif kind in ("model", "config", "audit_model"):
        model_spec(value, name, modules=kind == "model")
    elif kind == "images":
        if value is None:
            raise _wrong(name, value, "an image", "pass a path (file, folder or glob), a numpy RGB image, a PIL "
                         "image or a list of them")
        for item in value if isinstance(value, (list, tuple)) else [value]:
            _image_item(name, item)
    elif kind == "settings":
        pass  # the command's Options object: visctl.options.Options.build checks its class
    elif kind in ("options", "session"):
        cls = "RunOptions" if kind == "options" else "Session"  # by name: visctl.session checks its values here
        if value is not None and not any(c.__module__ == "visctl.session" and c.__name__ == cls
                                         for c in type(value).__mro__):
            raise _wrong(name, value, f"a visctl.{cls} or None",
                         "pass visctl.RunOptions(device='cpu', cfg_options=['a=1'], ...)" if kind == "options"
                         else "pass a visctl.Session(options), or leave it out")
    elif kind == "mask":
        if _is_array(value):
            raise ArgumentError(f"{name}: an array is not taken as the mask (only a file is)",
                                hint=f"save it (np.save('mask.npy', mask)) and pass the path ({name}='mask.npy'), "
                                "or give the region as target_box")
        if value is not None and (not isinstance(value, (str, Path)) or not str(value).strip()):
            raise _wrong(name, value, "a mask file", "pass the path of a mask image or .npy file")
    elif kind == "box":
        if value is None or isinstance(value, str):
            return
        if not isinstance(value, Iterable) or isinstance(value, (bytes, dict)) or not all(
                _real(v) for v in value):
            raise _wrong(name, value, "a box", "pass four numbers x0,y0,x1,y1 as a string or a list")
    elif kind == "compare":
        if isinstance(value, (tuple, list)):
            if len(value) != 2 or not isinstance(value[1], (str, Path)) and value[1] is not None:
                raise _wrong(name, value, "a model, or a (config, checkpoint) pair",
                             "pass a config file, a model name, a config dict, an nn.Module, or (config, "
                             "checkpoint) as the CLI's --compare CONFIG2,CHECKPOINT2")
            model_spec(value[0], name)
        elif value is not None:
            model_spec(value, name)
    elif kind == "max_shape":
        items = [value] if _real(value) else value
        if (value is None or isinstance(items, (str, bytes, dict)) or not isinstance(items, Iterable)
                or not 1 <= len(list(items)) <= 2
                or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items)
                or any(v < 1 and v != -1 for v in items)):
            raise _wrong(name, value, "one or two whole numbers, each 1 or more (or -1)",
                         f"give H, W or one size for both, or -1 for no cap, e.g. {name}=(20, 30)")
    elif kind == "learning_rate":
        if not (value == "auto" if isinstance(value, str) else _real(value)):
            raise _wrong(name, value, "'auto' or a number", "pass 'auto' or a positive number, e.g. 200.0")
    elif kind == "window":
        if not isinstance(value, str):
            raise _wrong(name, value, "a 'W*H' string", "pass the window size in inches as 'W*H', e.g. '12*7'")
    elif kind == "fail_under":
        if isinstance(value, dict):
            if not all(isinstance(k, str) and _real(v) for k, v in value.items()):
                raise _wrong(name, value, "a dict of measure name -> number", "e.g. {'pointing': 0.5}")
        else:
            names(value, name, "a measure=number bound")
    else:  # pragma: no cover - the table names only the kinds above
        raise AssertionError(f"unknown argument kind {kind!r}")


def types(function: str, **values: Any) -> None:
    """Check each argument of ``visctl.<function>`` in ``values`` against its kind in :data:`TYPES`; an
    argument the table does not know is a bug (AssertionError)."""
    spec = TYPES[function]
    for name, value in values.items():
        if name not in spec:  # pragma: no cover - the signature test keeps the table complete
            raise AssertionError(f"visctl.{function}: argument {name!r} has no type in visctl.arguments.TYPES")
        _check_kind(function, name, spec[name], value)


F = TypeVar("F", bound=Callable[..., Any])


def typed(function: str) -> Callable[[F], F]:
    """Decorate ``visctl.<function>`` so that all its arguments are checked (:func:`types`) before it runs."""
    import functools
    import inspect

    def wrap(f: F) -> F:
        signature = inspect.signature(f)

        @functools.wraps(f)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError:
                return f(*args, **kwargs)  # a missing or unknown argument: Python's own message
            values = dict(bound.arguments)
            for name, param in signature.parameters.items():  # ``**fields``: the options' fields, by name
                if param.kind is inspect.Parameter.VAR_KEYWORD:
                    given = values.pop(name, {})
                    values.update({k: v for k, v in given.items() if k in TYPES[function]})
            types(function, **values)
            return f(*args, **kwargs)

        run.typed_as = function  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return wrap
