"""Configs read without mmengine (a plain ``pip install visctl``): plain values only, never code.

A Python config of assignments whose values are literals, ``dict(...)``/``list(...)``/``tuple(...)``, names
assigned above it, f-strings and arithmetic, a JSON file, or a YAML file (safe loading), with mmengine's
predefined variables (``{{ fileDirname }}``, ...). The Python file is parsed, not run: nothing in it executes.
Anything more (``_base_`` inheritance, imports, function calls, ``{{ _base_.x }}``, ``{{ $ENV }}``,
``custom_imports``) is what mmengine's ``Config`` reads, and the error says to install it.

:class:`PlainConfig` behaves as the parts of mmengine's ``Config`` visctl uses: a dict whose dicts are read as
attributes too, ``get``, ``merge_from_dict`` with dotted keys (``--cfg-options``).
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from pathlib import Path
from typing import Any

from visctl.errors import ConfigError, DependencyError

# the most characters or items one string or list operation of a config may make ('a' * 10**9 is refused)
MAX_VALUE_SIZE = 1_000_000

_PREDEFINED = ("fileDirname", "fileBasename", "fileBasenameNoExtension", "fileExtname")


class ConfigNode(dict):
    """A dict whose keys read as attributes too, as mmengine's ``ConfigDict`` (nested dicts become nodes)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, _node(value))

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict:
        """Plain dicts all the way down."""
        return _plain(self)

    def __deepcopy__(self, memo: dict) -> ConfigNode:
        import copy

        return type(self)({copy.deepcopy(k, memo): copy.deepcopy(v, memo) for k, v in self.items()})


class PlainConfig(ConfigNode):
    """A config read without mmengine: the top-level node, with ``filename`` and ``merge_from_dict``."""

    filename: str | None

    def __init__(self, cfg_dict: dict | None = None, filename: str | None = None) -> None:
        super().__init__(cfg_dict or {})
        object.__setattr__(self, "filename", filename)

    def merge_from_dict(self, options: dict, allow_list_keys: bool = True) -> None:
        """Merge ``{'a.b.0.c': value}`` into the config, with mmengine's ``Config.merge_from_dict`` meaning."""
        tree: dict = {}
        for full_key, value in options.items():
            node = tree
            *parents, leaf = full_key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        merged = _merge_a_into_b(tree, dict(self), allow_list_keys)
        self.clear()
        for key, value in merged.items():
            self[key] = value

    @property
    def pretty_text(self) -> str:
        """The config as Python source of plain values."""
        return "\n".join(f"{key} = {value!r}" for key, value in self.to_dict().items())


def _merge_a_into_b(a: dict, b: Any, allow_list_keys: bool) -> Any:
    """mmengine's ``Config._merge_a_into_b``: values of ``a`` replace those of ``b``, dicts merge (not in place)."""
    b = list(b) if isinstance(b, list) else dict(b)
    for k, v in a.items():
        if allow_list_keys and k.isdigit() and isinstance(b, list):
            index = int(k)
            if len(b) <= index:
                raise KeyError(f"Index {index} exceeds the length of list {b}")
            b[index] = _merge_a_into_b(v, b[index], allow_list_keys) if isinstance(v, dict) else v
        elif isinstance(v, dict):
            v = dict(v)
            if k in b and not v.pop("_delete_", False):
                allowed: tuple[type, ...] = (dict, list) if allow_list_keys else (dict,)
                if not isinstance(b[k], allowed):
                    raise TypeError(f"{k}={v} cannot be merged: {k} is of type {type(b[k]).__name__} in the config")
                b[k] = _merge_a_into_b(v, b[k], allow_list_keys)
            else:
                b[k] = ConfigNode(v)
        else:
            b[k] = v
    return b


def _node(value: Any) -> Any:
    if isinstance(value, dict) and not isinstance(value, ConfigNode):
        return ConfigNode(value)
    if isinstance(value, list):
        return [_node(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_node(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _needs_mmengine(spec: str, why: str) -> DependencyError:
    from visctl.errors import needs

    return needs(f"config {spec}: {why}; reading it", "mmengine", "mmengine is not installed")


def read_config_file(spec: str) -> PlainConfig:
    """Read a ``.py``, ``.json``, ``.yaml`` or ``.yml`` config of plain values, without mmengine.

    Raises:
        ConfigError: the file is missing or broken.
        DependencyError: the file uses what only mmengine reads (``_base_``, imports, calls, ...).
    """
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"config file not found: {spec}", hint="check the path, or pass a model name "
                          "such as torchvision.resnet18 instead of a config")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {spec}: {exc}", hint="a config is a UTF-8 text file") from None
    for found in re.finditer(r"\{\{\s*([^{}]*?)\s*\}\}", text):
        if found.group(1) not in _PREDEFINED:
            raise _needs_mmengine(spec, f"it uses {{{{ {found.group(1)} }}}}")
    import os.path

    absolute = os.path.abspath(os.path.expanduser(spec))  # as mmengine's _file2dict
    values = dict(fileDirname=os.path.dirname(absolute), fileBasename=os.path.basename(absolute),
                  fileBasenameNoExtension=os.path.splitext(os.path.basename(absolute))[0],
                  fileExtname=os.path.splitext(absolute)[1])
    for key, value in values.items():
        text = re.sub(r"\{\{\s*" + key + r"\s*\}\}", value.replace("\\", "/"), text)
    suffix = path.suffix.lower()
    if suffix == ".py":
        data = _read_python(text, spec)
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"cannot read config {spec}: {exc}", hint="check the JSON syntax") from None
    else:
        from visctl.yamldata import RefusedYaml, load_yaml

        try:
            data = load_yaml(text)
        except RefusedYaml as exc:
            raise ConfigError(f"config {spec}: {exc.reason}", hint="YAML and JSON configs are read as plain "
                              "data; write a Python config for anything else") from None
        except Exception as exc:  # yaml.YAMLError and its kin
            raise ConfigError(f"cannot read config {spec}: {' '.join(str(exc).split())}",
                              hint="check the YAML syntax") from None
    if data is None and suffix != ".py":
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {spec} holds a {type(data).__name__}, not a mapping of keys to values",
                          hint="a config is a mapping: model=..., test_pipeline=..., ...")
    if "_base_" in data:
        raise _needs_mmengine(spec, "it inherits from _base_ files")
    if "custom_imports" in data:
        raise _needs_mmengine(spec, "it sets custom_imports (modules that register into mmengine's registries)")
    return PlainConfig(data, filename=absolute)


def _read_python(text: str, spec: str) -> dict:
    try:
        tree = ast.parse(text, filename=spec)
    except SyntaxError as exc:
        raise ConfigError(f"cannot read config {spec}: {exc.msg} (line {exc.lineno})",
                          hint="check the Python syntax") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ConfigError(f"cannot read config {spec}: {type(exc).__name__}", hint="check the file") from None
    names: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):  # a docstring or a bare value
            continue
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
            value = _Reader(spec, names).value(stmt.value)
            for target in stmt.targets:
                names[target.id] = value  # type: ignore[attr-defined]
            continue
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            names[stmt.target.id] = _Reader(spec, names).value(stmt.value)
            continue
        raise _needs_mmengine(spec, f"line {stmt.lineno} is {_what(stmt)}, not an assignment of a plain value")
    return {k: v for k, v in names.items() if not k.startswith("__")}


def _what(node: ast.AST) -> str:
    kinds = {ast.Import: "an import", ast.ImportFrom: "an import", ast.FunctionDef: "a function definition",
             ast.ClassDef: "a class definition", ast.Call: "a call", ast.Attribute: "an attribute lookup",
             ast.Lambda: "a lambda", ast.If: "an if statement", ast.For: "a loop", ast.While: "a loop",
             ast.With: "a with statement", ast.Try: "a try statement"}
    for kind, words in kinds.items():
        if isinstance(node, kind):
            return words
    return f"a {type(node).__name__} expression" if isinstance(node, ast.expr) else f"a {type(node).__name__} statement"


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_BUILDERS: dict[str, Any] = {"dict": dict, "list": list, "tuple": tuple}


class _Reader:
    """Evaluates one expression of plain values; anything else is refused (nothing runs)."""

    def __init__(self, spec: str, names: dict[str, Any]) -> None:
        self.spec, self.names = spec, names

    def refuse(self, node: ast.AST) -> DependencyError:
        return _needs_mmengine(self.spec, f"line {getattr(node, 'lineno', '?')} holds {_what(node)}, not a plain value")

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.names:
                return self.names[node.id]
            if node.id in ("inf", "nan"):  # not Python names: refused as mmengine would fail on them
                raise self.refuse(node)
            raise ConfigError(f"config {self.spec}: line {node.lineno} uses {node.id!r}, which is not assigned "
                              "above it", hint="assign a name before using it")
        if isinstance(node, ast.List):
            return [self.value(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self.value(e) for e in node.elts)
        if isinstance(node, ast.Set):
            return {self.value(e) for e in node.elts}
        if isinstance(node, ast.Dict):
            out: dict = {}
            for k, v in zip(node.keys, node.values):
                if k is None:  # {**other}
                    out.update(self._mapping(v))
                else:
                    out[self.value(k)] = self.value(v)
            return out
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _BUILDERS \
                and node.func.id not in self.names:
            return self._build(node)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return self._apply(node, _UNARY[type(node.op)], self.value(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = self.value(node.left), self.value(node.right)
            self._check_size(node, node.op, left, right)
            return self._apply(node, _BINARY[type(node.op)], left, right)
        if isinstance(node, ast.Subscript):
            target, index = self.value(node.value), self.value(node.slice)
            return self._apply(node, operator.getitem, target, index)
        if isinstance(node, ast.Slice):
            return slice(*(self.value(p) if p is not None else None for p in (node.lower, node.upper, node.step)))
        if isinstance(node, ast.JoinedStr):
            return "".join(self._format(v) for v in node.values)
        raise self.refuse(node)

    def _mapping(self, node: ast.AST) -> dict:
        value = self.value(node)
        if not isinstance(value, dict):
            raise ConfigError(f"config {self.spec}: line {node.lineno} unpacks a {type(value).__name__} with **",  # type: ignore[attr-defined]
                              hint="** takes a dict")
        return value

    def _build(self, node: ast.Call) -> Any:
        kind = node.func.id  # type: ignore[attr-defined]
        args = [self.value(a) for a in node.args]
        kwargs: dict[str, Any] = {}
        for kw in node.keywords:
            if kw.arg is None:
                kwargs.update(self._mapping(kw.value))
            else:
                kwargs[kw.arg] = self.value(kw.value)
        if any(isinstance(a, ast.Starred) for a in node.args) or (kind != "dict" and kwargs) or len(args) > 1:
            raise self.refuse(node)
        return self._apply(node, _BUILDERS[kind], *args, **kwargs)

    def _format(self, node: ast.AST) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.FormattedValue):
            value = self.value(node.value)
            if not isinstance(value, (str, int, float, bool, type(None))):
                raise self.refuse(node)
            conv: Any = {ord("r"): repr, ord("s"): str, ord("a"): ascii}.get(node.conversion)
            if conv is not None:
                value = conv(value)
            spec = "".join(self._format(v) for v in node.format_spec.values) if node.format_spec else ""  # type: ignore[attr-defined]
            return self._apply(node, format, value, spec)
        raise self.refuse(node)

    def _check_size(self, node: ast.AST, op: ast.operator, left: Any, right: Any) -> None:
        if isinstance(op, ast.Pow) and isinstance(left, (int, float)) and isinstance(right, (int, float)):
            if abs(right) > 64 and abs(left) > 1:
                raise ConfigError(f"config {self.spec}: line {node.lineno}: {left} ** {right} is too large",  # type: ignore[attr-defined]
                                  hint="write the number itself")
        if isinstance(op, ast.Mult):
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_VALUE_SIZE:
                    raise ConfigError(f"config {self.spec}: line {node.lineno} makes a value of more than "  # type: ignore[attr-defined]
                                      f"{MAX_VALUE_SIZE:,} items", hint="a config holds settings, not data")

    def _apply(self, node: ast.AST, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            out = fn(*args, **kwargs)
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError, ArithmeticError) as exc:
            raise ConfigError(f"config {self.spec}: line {getattr(node, 'lineno', '?')}: {type(exc).__name__}: "
                              f"{exc}", hint="check the value") from None
        if isinstance(out, float) and not math.isfinite(out) and not any(isinstance(a, float) for a in args):
            raise ConfigError(f"config {self.spec}: line {getattr(node, 'lineno', '?')} makes {out}",
                              hint="check the value")
        return out
