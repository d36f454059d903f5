"""The real OpenMMLab stack: the packages' own configs, models built through their registries, checkpoints saved
as mmengine's Runner saves them. The tests beside this module run in CI's second environment (.ci/run,
"OpenMMLab stage"); where a package is not installed they skip, one line saying which.

Not a conftest.py: a second ``conftest`` module would replace tests/conftest.py's under the same name, which
the other tests import (``from conftest import ROOT``); the fixtures these tests share live there."""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import pytest


def _missing(reason: str, required_by: str) -> None:
    """Skip, or fail where .ci/run's OpenMMLab stage says it installed what is missing (``required_by`` set):
    a stage whose tests all skip must not pass."""
    if os.environ.get(required_by) == "1":
        pytest.fail(f"{reason}, though {required_by}=1 says this environment has it")
    pytest.skip(reason)


def need(package: str) -> None:
    """Skip the calling test unless ``package`` is installed (the OpenMMLab stage installs them all and sets
    VISCTL_OPENMMLAB_STAGE=1, which makes a missing package a failure)."""
    if importlib.util.find_spec(package) is None:
        _missing(f"{package} is not installed (the OpenMMLab stage of .ci/run installs it)", "VISCTL_OPENMMLAB_STAGE")


def need_mmcv_ops() -> None:
    """Skip unless mmcv has its compiled ops (nms): mmdet's and mmyolo's detectors need them."""
    need("mmcv")
    try:
        importlib.import_module("mmcv._ext")
    except ImportError:
        _missing("mmcv has no compiled ops (mmcv-lite, or no wheel in ../shared/wheels/): detectors need nms",
                 "VISCTL_REQUIRE_MMCV_OPS")


def package_configs(package: str) -> Path:
    """The configs a package's wheel ships (``<package>/.mim/configs``)."""
    need(package)
    module = importlib.import_module(package)
    return Path(module.__file__).parent / ".mim" / "configs"


_CHECKPOINTS: dict[tuple[str, tuple[str, ...]], Path] = {}


def runner_checkpoint(config: Path, folder: Path, options: tuple[str, ...] = (), seed: int = 0) -> Path:
    """A random-weight checkpoint of ``config``'s model saved as mmengine's Runner saves one.

    The model is built as the Runner builds it (``init_default_scope``, ``MODELS.build``; no visctl code), with
    torch's default initialisation under ``seed`` (``init_weights`` would fetch the ``Pretrained`` weights some
    configs name). The file holds what ``Runner.save_checkpoint`` writes (mmengine/runner/runner.py): ``meta``
    (epoch, iter, cfg, seed, experiment_name, time, mmengine_version, the training dataset's ``dataset_meta``),
    ``state_dict``, ``message_hub`` (its HistoryBuffer log and runtime info), ``optimizer`` (an OptimWrapper's
    state after a step: momentum buffers) and ``param_schedulers``.
    """
    key = (str(config), options)
    if key in _CHECKPOINTS and _CHECKPOINTS[key].exists():
        return _CHECKPOINTS[key]
    import time

    import mmengine
    import torch
    from mmengine.logging import MessageHub
    from mmengine.optim import CosineAnnealingLR, LinearLR, OptimWrapper
    from mmengine.registry import DATASETS, MODELS, init_default_scope
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu

    cfg = mm_config(config, options)
    init_default_scope(cfg.get("default_scope", "mmengine"))
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    _fill_uninitialised(model)
    state = weights_to_cpu(model.state_dict())
    dataset = (cfg.get("train_dataloader") or {}).get("dataset") or {}
    while isinstance(dataset, dict) and "dataset" in dataset and "type" not in dataset:
        dataset = dataset["dataset"]
    try:
        with DATASETS.switch_scope_and_registry(None) as registry:  # the default scope's, as the Runner's build
            dataset_meta = dict(getattr(registry.get(dataset.get("type")), "METAINFO", {}) or {})
    except Exception:  # a dataset type this environment cannot import: the Runner would have failed earlier
        dataset_meta = {}
    hub = MessageHub.get_instance(f"visctl-test-{config.stem}")
    hub.update_scalar("train/loss", 1.25)
    hub.update_info("epoch", 1)
    hub.update_info("iter", 10)
    params = [p for p in model.parameters() if p.requires_grad]
    wrapper = OptimWrapper(torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4))
    for p in params:
        p.grad = torch.zeros_like(p)
    wrapper.step()  # momentum buffers in the state, as after training (a zero gradient leaves the weights)
    schedulers = [LinearLR(wrapper, start_factor=0.1, by_epoch=False, begin=0, end=5),
                  CosineAnnealingLR(wrapper, T_max=10, by_epoch=True, begin=0, end=10)]
    path = folder / f"{config.stem}.pth"
    save_checkpoint({"meta": {"epoch": 1, "iter": 10, "cfg": cfg.pretty_text, "seed": seed,
                              "experiment_name": f"{config.stem}_{time.strftime('%Y%m%d_%H%M%S')}",
                              "time": time.strftime("%Y%m%d_%H%M%S"), "mmengine_version": mmengine.__version__,
                              "dataset_meta": dataset_meta},
                     "state_dict": state, "message_hub": hub.state_dict(), "optimizer": wrapper.state_dict(),
                     "param_schedulers": [s.state_dict() for s in schedulers]}, str(path))
    _CHECKPOINTS[key] = path
    return path


def _fill_uninitialised(model) -> None:
    """Initialise what torch's defaults leave as raw memory, as the Runner's ``init_weights`` would.

    Some modules allocate a parameter with ``torch.Tensor(n)`` and rely on their parent's ``init_cfg`` to fill it
    (mmdet's ``L2Norm`` in SSDNeck): without it the checkpoint holds whatever the memory held, NaN on some runs.
    Each module owning such a parameter is initialised by its nearest ancestor's ``init_weights`` that names no
    ``Pretrained`` weights (which would download); every other weight keeps torch's default initialisation.
    """
    import torch

    def raw(param) -> bool:
        return bool(param.is_floating_point() and (~torch.isfinite(param) | (param.abs() > 1e6)).any())

    names = [name for name, param in model.named_parameters() if raw(param)]
    for name in names:
        parts = name.split(".")[:-1]
        for depth in range(len(parts), -1, -1):
            owner = model.get_submodule(".".join(parts[:depth]))
            init_cfg = getattr(owner, "init_cfg", None)
            cfgs = init_cfg if isinstance(init_cfg, list) else [init_cfg]
            if init_cfg and hasattr(owner, "init_weights") and all(c.get("type") != "Pretrained" for c in cfgs):
                owner.init_weights()
                break
        else:
            raise AssertionError(f"{name} is uninitialised and no module above it can initialise it")
        if raw(model.get_parameter(name)):
            raise AssertionError(f"{name} is still uninitialised after its module's init_weights")


def mm_config(path: Path, options: tuple[str, ...] = ()):
    """``path``'s mmengine Config with ``--cfg-options`` merged as the packages' tools merge them (DictAction)."""
    import argparse

    from mmengine.config import Config, DictAction

    cfg = Config.fromfile(str(path))
    if options:
        parser = argparse.ArgumentParser()
        parser.add_argument("--cfg-options", nargs="+", action=DictAction)
        cfg.merge_from_dict(parser.parse_args(["--cfg-options", *options]).cfg_options)
    return cfg


def load_mmpretrain(cfg, checkpoint: Path):
    """mmpretrain's own ``get_model(cfg, checkpoint)`` on the CPU, as its tools load a model (mmengine's
    ``torch.load`` reads the test's own Runner-style checkpoint, which holds more than tensors)."""
    import os
    import warnings

    from mmpretrain.apis import get_model

    old = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return get_model(cfg, str(checkpoint), device="cpu")
    finally:
        if old is None:
            del os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = old
