"""The types and ranges of the public functions' arguments, which are the CLI's options: checked in one place.

:data:`LIMITS` holds every numeric argument's range, by command; the CLI declares the same bounds on its options
(a test compares the two), and each library function calls :func:`check` before any work, so that
``visctl.cam(..., topk=0)`` is refused as ``visctl cam --topk 0`` is. :func:`names` reads a list argument
(layers, classes, methods) the way the CLI reads a repeatable, comma-separated option. Stdlib only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from visctl.errors import ArgumentError

#: numpy's legacy seeding takes 0 .. 2**32 - 1, and every generator is seeded from one --seed
SEED_MAX = 2**32 - 1
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

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        if self.low is not None and self.high is not None:
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
    "browse": dict(number=_ONE_OR_ALL, rows=_INT1, cols=_INT1, num_workers=_WORKERS, seed=_SEED),
    "lr": dict(dataset_size=_INT1, ngpus=_INT1, batch_size=_INT1),
    "audit": dict(tolerance=Limit(0.0), top_percent=Limit(0.0, 100.0), border=Limit(0.0, 0.5),
                  worst=Limit(0, integer=True), batch_size=_INT1),
}
#: the arguments given as a pair (rows, cols / height, width), each value in the range
PAIRS = {("featmap", "arrangement"), ("featmap", "resize_shape")}
#: the arguments given as a list of values, each in the range
LISTS = {("tsne", "class_idx")}
#: arguments that must be above their low bound, not at it (a factor of 0 scales nothing)
ABOVE_LOW = {("pipeline", "rescale_factor"), ("audit", "top_percent"), ("audit", "border")}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def number(command: str, name: str, value: Any) -> None:
    """Refuse ``value`` unless it is a number in ``name``'s range (:data:`LIMITS`); None means "the default"."""
    limit = LIMITS[command][name]
    if value is None:
        return
    if (command, name) in PAIRS:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) or len(list(value)) != 2:
            raise ArgumentError(f"{_flag(name)} {value!r} is not a pair of numbers",
                                hint=f"give two values, each {limit.describe()} ({name}= in Python)")
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
    # named as the CLI's option, as visctl's other messages name them; the hint gives the Python argument
    given = whole if whole is not None else value
    shown = f"{_flag(name)} {' '.join(map(str, given)) if isinstance(given, (list, tuple)) else given}"
    each = "two values, each " if (command, name) in PAIRS else "a list of values, each " if whole is not None else ""
    hint = f"give {each}{limit.describe()} ({name}= in Python)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{shown}: {value!r} is not a number", hint=hint)
    if limit.integer and not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{shown}: {value!r} is not a whole number", hint=hint)
    if not math.isfinite(float(value)):
        raise ArgumentError(f"{shown}: {value!r} is not a finite number", hint=hint)
    if not limit.allows(float(value)) or ((command, name) in ABOVE_LOW and value == limit.low):
        raise ArgumentError(f"{shown} is out of range", hint=hint.replace(" of at least 0 ", " above 0 ")
                            if (command, name) in ABOVE_LOW else hint)


def check(command: str, **values: Any) -> None:
    """Check every numeric argument of ``command`` given in ``values`` (see :data:`LIMITS`)."""
    for name, value in values.items():
        number(command, name, value)


def flag(name: str, value: Any) -> bool:
    """A yes/no argument: a bool (numpy's included), else refused."""
    if value is None or isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ArgumentError(f"{name}={value!r} is not True or False", hint=f"pass True or False ({_flag(name)})")


def names(value: Any, name: str, what: str, *, numbers_too: bool = False, option: str | None = None
          ) -> list[str] | None:
    """A list argument (layers, classes, methods) as the CLI reads its repeatable, comma-separated option:
    None (the default), a string ``"a,b"``, or a list of strings (``numbers_too``: of ints as well).

    An empty string, an empty list or an empty item (``"a,,b"``) names nothing and is refused: it would
    otherwise silently mean the default. ``option``: the CLI's flag, named in the messages instead of ``name``.
    """
    if value is None:
        return None
    shown, flag_name = (option, option) if option else (name, _flag(name))
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
                            hint=f"pass a string, a comma-separated string or a list of strings ({flag_name})")
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
                                hint=f"pass strings{' or class indices' if numbers_too else ''} ({flag_name})")
        parts = [p.strip() for p in str(item).split(",")]
        if not all(parts):
            raise ArgumentError(f"{shown} {str(item)!r} has an empty {bare}",
                                hint=f"name each one (e.g. {flag_name} a,b), or leave it out for the default")
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
            raise ArgumentError(f"{name}: {item!r} is not a class index or name",
                                hint="pass ints (class indices) or strings (class names)")
        if isinstance(item, numbers.Integral):
            item = int(item)
            if item < 0:
                raise ArgumentError(f"{name}: class index {item} is negative", hint="class indices start at 0")
        elif not item.strip():
            raise ArgumentError(f"{name}: an empty class name", hint="name the class, or give its index")
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
    raise ArgumentError(f"{name}={value!r} is not one of {valid}", hint=f"use {valid} ({_flag(name)})")


def skip_types(value: Any) -> list[str] | None:
    """``skip_type``: None (the default list), transform names (a string, comma-separated, or a list), or an
    empty list -- or only empty names, the CLI's ``--skip-type ''`` -- to skip nothing."""
    if value is not None and not isinstance(value, str) and isinstance(value, Iterable):
        items = list(value)
        if all(isinstance(v, str) and not v.strip() for v in items):
            return []
    return names(value, "skip_type", "a transform name")
