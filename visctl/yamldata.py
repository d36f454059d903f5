"""YAML read as data: plain values, lists, dicts and tuples, never a Python object, and no alias bomb.

Used by every config reader (visctl.config under mmengine, visctl.plain_config without it); imports only PyYAML,
inside its functions.
"""

from __future__ import annotations

from typing import Any


class RefusedYaml(Exception):
    """A YAML document that safe loading refuses (a tag that would build Python objects), or a bomb."""

    def __init__(self, reason: str, tag: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.tag = tag


# the most nodes a YAML/JSON config may hold once its aliases (&a ... *a) are expanded; real configs hold a
# few thousand, while nine nested levels of ten aliases make 10**9 (the "billion laughs")
MAX_CONFIG_NODES = 1_000_000


def _expanded_nodes(obj: Any, memo: dict[int, int], busy: set[int]) -> int:
    """How many nodes ``obj`` holds with every shared (aliased) part counted each time it is used."""
    if not isinstance(obj, (dict, list, tuple)):
        return 1
    key = id(obj)
    if key in memo:
        return memo[key]
    if key in busy:
        raise RefusedYaml("a YAML alias contains itself (a recursive structure)", "&")
    busy.add(key)
    items = [v for kv in obj.items() for v in kv] if isinstance(obj, dict) else obj
    n = 1
    for item in items:
        n += _expanded_nodes(item, memo, busy)
        if n > MAX_CONFIG_NODES:
            raise RefusedYaml(f"its YAML aliases expand to more than {MAX_CONFIG_NODES:,} values "
                               "(an alias bomb)", "*")
    busy.discard(key)
    memo[key] = n
    return n


def _yaml_loader() -> Any:
    """PyYAML's safe loader, plus ``!!python/tuple`` (mmengine's ``Config.dump`` writes tuples that way)."""
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        pass

    Loader.add_constructor("tag:yaml.org,2002:python/tuple",
                           lambda loader, node: tuple(loader.construct_sequence(node)))
    return Loader


def load_yaml(stream: Any) -> Any:
    """Read YAML as data: plain values, lists and dicts (and tuples); never a Python object.

    PyYAML's full loader, which mmengine uses, builds any object a tag names
    (``!!python/object/apply:os.system [...]`` runs a command while the file is read).

    Raises:
        RefusedYaml: a tag safe loading does not know, a recursive alias, or an alias bomb.
    """
    import yaml

    try:
        data = yaml.load(stream, Loader=_yaml_loader())  # noqa: S506 - the loader is a SafeLoader
    except yaml.constructor.ConstructorError as exc:
        import re

        found = re.search(r"tag '([^']*)'", str(exc.problem))
        tag = found.group(1) if found else "?"
        line = f" (line {exc.problem_mark.line + 1})" if exc.problem_mark is not None else ""
        short = tag.replace("tag:yaml.org,2002:", "!!")
        raise RefusedYaml(f"the YAML tag {short}{line} is refused: a config is read as data, and this tag would "
                           "build a Python object (python/object tags run code)", short) from None
    _expanded_nodes(data, {}, set())
    return data
