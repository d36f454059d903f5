"""What can truly be said of a built model: whether its builder loaded weights (and which of them stay random),
and whether its output is class scores or something else (an embedding, a headless model's features)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


@contextmanager
def watch_loads() -> Iterator[list[str]]:
    """While the block runs, every weight load is recorded in the yielded list: ``torch.load``, ``numpy.load``
    (timm's ``.npz`` ViT weights), ``safetensors`` files and ``load_state_dict`` into any module (torch's, and
    mmengine's, which calls ``_load_from_state_dict`` module by module). Torchvision's ``weights=``, timm's
    ``pretrained=True`` and a factory that loads its own state dict all pass through one of them."""
    import sys

    import numpy as np
    import torch
    from torch import nn

    seen: list[str] = []
    patched: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, attr: str, what: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:
            return

        def watched(*args: Any, **kwargs: Any) -> Any:
            seen.append(what)
            return original(*args, **kwargs)

        patched.append((owner, attr, original))
        setattr(owner, attr, watched)

    wrap(torch, "load", "torch.load")
    wrap(np, "load", "numpy.load")
    wrap(nn.Module, "_load_from_state_dict", "load_state_dict")
    st = sys.modules.get("safetensors.torch")
    if st is not None:
        wrap(st, "load_file", "safetensors")
        wrap(st, "load", "safetensors")
    try:
        yield seen
    finally:
        for owner, attr, original in reversed(patched):
            setattr(owner, attr, original)


def seed_dependent(cfg: Any, model: nn.Module) -> tuple[list[str], int]:
    """The names of ``model``'s weight tensors whose values change when the config's model is built again under
    another random seed (the random ones: nothing loaded them), and the number of weight tensors compared.

    The second build runs with torch's, numpy's and Python's random states forked, so the run's own random
    sequence (``--seed``) is as it was.
    """
    import contextlib
    import itertools
    import random
    import sys
    import warnings

    import numpy as np
    import torch

    from visctl import building

    py_state, np_state = random.getstate(), np.random.get_state()
    seed = (torch.initial_seed() + 0x5EED) % (2**31)
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed)
            other = building.build_model(cfg.get("model") or {}, cfg.get("default_scope"), building.config_dirs(cfg))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    theirs = dict(itertools.chain(other.named_parameters(), other.named_buffers()))
    changed, compared = [], 0
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        o = theirs.get(name)
        if o is None or not t.is_floating_point() or o.shape != t.shape:
            continue
        compared += 1
        if not torch.equal(t.detach().cpu(), o.detach().cpu()):
            changed.append(name)
    return changed, compared


def initial_weights(cfg: Any, model: nn.Module, loads: list[str]) -> tuple[str, str]:
    """What is true of the weights of a model built with no checkpoint and no ``load_from``: ``("warn", text)``
    or ``("note", text)``.

    ``loads``: what :func:`watch_loads` saw while the model was built. A builder that loaded nothing left every
    weight as its initialisation drew it: random. One that loaded something (torchvision's ``weights=``, timm's
    ``pretrained=True`` with a local file, a factory that loads its own state dict) is built once more under
    another seed, and the tensors that change are the random ones.
    """
    why = "no checkpoint given and no load_from in the config"
    if not loads:
        return "warn", f"{why}, and its builder loaded no weights: the model has random weights"
    changed, compared = seed_dependent(cfg, model)
    how = ", ".join(dict.fromkeys(loads))
    if not changed:
        return "note", (f"{why}: the model has the weights its builder loaded ({how}); none of its {compared} "
                        "weight tensors change with the random seed")
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return "warn", (f"{why}: its builder loaded weights ({how}), but {len(changed)} of its {compared} weight "
                    f"tensors are random (they change with the seed: {shown})")


def output_kind(model: nn.Module, traced: tuple[list[tuple[str, Any]], Any]) -> str | None:
    """Why the model's output is not class scores, or None when nothing says so.

    Known when the model says ``num_classes=0`` (timm's headless models, ``reset_classifier(0)``) or
    ``with_head=False`` (mmpretrain's ``ImageClassifier`` with ``head=None``), or when its
    output comes, through identities, dropouts and flattens only, out of an ``nn.Identity`` put where a
    classifier was (torchvision's ``fc = nn.Identity()``) and not out of a linear or convolution layer.

    Args:
        model: the model.
        traced: :func:`visctl.layers.trace` of the model on one example: ``(name, output)`` of every module
            in the order they finished, and the model's output.
    """
    import torch
    from torch import nn

    from visctl.layers import output_tensor

    fired, out = traced
    try:
        t = output_tensor(out)
    except Exception:
        return None
    size = int(t.shape[-1]) if t.ndim else 0
    holder = model if hasattr(model, "num_classes") else getattr(model, "module", None)
    n = getattr(holder, "num_classes", None)
    if isinstance(n, int) and not isinstance(n, bool) and n == 0:
        return f"the model has num_classes=0: its output is its pooled features (an embedding of {size} values)"
    if getattr(model, "with_head", None) is False:  # mmpretrain's ImageClassifier with head=None
        return f"the model has no head (with_head=False): its output is its features (an embedding of {size} values)"
    modules = dict(model.named_modules())
    identity = None

    def same(o: Any) -> bool:
        return isinstance(o, torch.Tensor) and o.numel() == t.numel() and o.data_ptr() == t.data_ptr()

    for name, o in reversed(fired):
        m = modules.get(name)
        if m is None or next(iter(m.children()), None) is not None or not same(o):
            continue  # a container, or a module whose output is not the model's
        if isinstance(m, nn.Identity) or type(m).__name__ == "Identity":
            identity = identity or name
        elif isinstance(m, (nn.Flatten, nn.modules.dropout._DropoutNd)):
            continue
        else:
            if identity and not isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
                return (f"the model's output is what its {type(m).__name__} {name!r} gives, passed through the "
                        f"nn.Identity at {identity!r} (an embedding of {size} values), not class scores")
            return None
    if identity:
        return (f"the model's output comes out of the nn.Identity at {identity!r} (an embedding of {size} values), "
                "not class scores")
    return None
