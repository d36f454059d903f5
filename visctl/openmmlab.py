"""mmengine's default scope, switched in one place.

mmengine keeps one process-wide "current" ``DefaultScope``: its registries resolve an unprefixed name
(``ResNet``, ``RandAugment``, ``Lamb``) in the current scope's package. ``DefaultScope.overwrite_default_scope``
copies and reassigns the class's instance dict without a lock, so two threads switching it at once (the batch
readers building a package transform while the main thread builds a model) run under the wrong scope and can
leave a stray one behind. Every switch in visctl goes through :func:`scope` (and :func:`set_default`, the
model build's), which hold one process-wide lock. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from visctl.errors import DependencyError

#: held while mmengine's default scope is switched (re-entrant: a registry build nests scope switches)
LOCK = threading.RLock()

#: scopes that name no OpenMMLab package with registries of its own
_NOT_PACKAGES = ("mmengine", "torchvision", "visctl")


def is_package(name: str | None) -> bool:
    """Whether ``name`` (a config's ``default_scope``, a ``scope.Name`` prefix) is an installed OpenMMLab package
    whose registries a Runner would use: importable, not a module of Python's standard library, not mmengine
    (whose registries are the root ones), torchvision or visctl. Nothing is imported."""
    import importlib.util

    from visctl.pymodules import is_stdlib_module

    if not name or not isinstance(name, str) or name in _NOT_PACKAGES or not name.isidentifier() \
            or is_stdlib_module(name):
        return False
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def dependency_error(package: str, exc: ImportError) -> DependencyError:
    """The error for an installed ``package`` whose modules cannot be imported (mmsegmentation 1.2.2 without
    ``ftfy``): it names the missing module."""
    missing = getattr(exc, "name", None) or str(exc)
    top = str(missing).split(".")[0]
    if top == package:  # a module of the package itself is broken, not a missing dependency
        return DependencyError(f"{package} is installed but cannot be imported: {' '.join(str(exc).split())}",
                               hint=f"reinstall it: pip install --force-reinstall {package}")
    return DependencyError(f"{package} is installed but needs {top!r}, which is not installed ({exc})",
                           hint=f"pip install {top}")


def import_registry(package: str) -> None:
    """Import ``package.registry`` (where an OpenMMLab package declares its registries); a missing dependency is a
    :class:`~visctl.errors.DependencyError` naming it."""
    import importlib

    try:
        importlib.import_module(f"{package}.registry")
    except ImportError as exc:
        raise dependency_error(package, exc) from exc


@contextlib.contextmanager
def scope(name: str | None) -> Iterator[None]:
    """``name`` as mmengine's current default scope for the duration (under :data:`LOCK`), the previous one
    after; None switches nothing (the lock is still held)."""
    from mmengine.registry import DefaultScope

    with LOCK, DefaultScope.overwrite_default_scope(name):
        yield


def set_default(name: str) -> None:
    """``init_default_scope(name)`` under the lock: ``name`` stays the current scope after (as the Runner leaves
    it after building a model, which model code may rely on)."""
    from mmengine.registry import init_default_scope

    with LOCK:
        init_default_scope(name)


@contextlib.contextmanager
def registry(root: Any, name: str | None) -> Iterator[Any]:
    """``root``'s registry of scope ``name`` (``mmengine.registry.MODELS`` -> ``mmpretrain.registry.MODELS``),
    with ``name`` the current default scope, as mmengine's ``build_from_cfg`` finds it: its ``get`` imports the
    package's modules (its ``locations``) before it looks, and its ``build`` builds nested parts in the scope.
    Where ``name`` has no registry under ``root``, ``root`` itself (mmengine's fallback)."""
    with scope(name), root.switch_scope_and_registry(None) as found:
        yield found
