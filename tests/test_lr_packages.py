"""`visctl lr` on configs whose optimizer, optim_wrapper constructor or hooks belong to an OpenMMLab package.

A package laid out as mmpretrain is (``<pkg>/registry.py`` with child registries of mmengine's, filled when
their ``locations`` are imported) registers a ``Lamb`` optimizer, a layer-decay constructor and a
``SimSiamHook`` under the names mmpretrain uses. With ``default_scope`` naming it, visctl finds them as the
Runner does and its values equal a real Runner's; with ``default_scope`` naming a package that is not
installed, each note says what is approximated, and the values are what the note says.
(tests/openmmlab/test_mm_lr.py does the same on mmpretrain itself.)
"""

from __future__ import annotations

import itertools
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

import visctl
from visctl import schedules

PKG = "visctl_fake_mm"

REGISTRY = f"""
from mmengine.registry import HOOKS as ROOT_HOOKS, MODELS as ROOT_MODELS, OPTIMIZERS as ROOT_OPTIMIZERS, \\
    OPTIM_WRAPPER_CONSTRUCTORS as ROOT_CONSTRUCTORS, Registry
LOCATIONS = ['{PKG}.engine']
MODELS = Registry('model', parent=ROOT_MODELS, scope='{PKG}', locations=LOCATIONS)
OPTIMIZERS = Registry('optimizer', parent=ROOT_OPTIMIZERS, scope='{PKG}', locations=LOCATIONS)
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor', parent=ROOT_CONSTRUCTORS, scope='{PKG}',
                                      locations=LOCATIONS)
HOOKS = Registry('hook', parent=ROOT_HOOKS, scope='{PKG}', locations=LOCATIONS)
"""

ENGINE = f"""
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import DefaultOptimWrapperConstructor
from torch import nn
from {PKG}.registry import HOOKS, MODELS, OPTIMIZERS, OPTIM_WRAPPER_CONSTRUCTORS


@MODELS.register_module()
class LayeredNet(BaseModel):
    # mmpretrain's classifiers tell a parameter's depth (get_layer_depth), which the layer-decay constructor needs
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 4))
        self.predictor = nn.Linear(4, 2)

    def get_layer_depth(self, name):
        if name.startswith('backbone.'):
            return int(name.split('.')[1]) + 1, 5
        return 4, 5

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.predictor(self.backbone(inputs))


@OPTIMIZERS.register_module()
class Lamb(torch.optim.Adam):
    # mmpretrain's Lamb keeps betas and weight_decay=0.01 by default, as here
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LearningRateDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    # mmpretrain's, reduced: one group per parameter, lr x rate ** (max - depth - 1), named and numbered
    def add_params(self, params, module, prefix='', **kwargs):
        rate = self.paramwise_cfg.get('layer_decay_rate', 1.0)
        for name, param in module.named_parameters():
            layer, top = module.get_layer_depth(name)
            wd = 0.0 if param.ndim == 1 else self.base_wd
            params.append(dict(params=[param], lr=self.base_lr * rate ** (top - layer - 1), weight_decay=wd,
                               layer_id=layer, param_name=name))


@HOOKS.register_module()
class SimSiamHook(Hook):
    # mmpretrain's: the predictor's lr fixed at the start of every epoch
    def __init__(self, fix_pred_lr, lr, adjust_by_epoch=True):
        self.fix_pred_lr, self.lr = fix_pred_lr, lr

    def before_train_epoch(self, runner):
        for group in runner.optim_wrapper.optimizer.param_groups:
            if group.get('fix_lr'):
                group['lr'] = self.lr
"""

SCHEDULE = """
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1)]
train_cfg = dict(by_epoch=True, max_epochs=4)
train_dataloader = dict(batch_size=4)
"""
LAYER_DECAY = dict(optimizer=dict(type="AdamW", lr=0.01, betas=(0.8, 0.999), weight_decay=0.05),
                   constructor="LearningRateDecayOptimWrapperConstructor", paramwise_cfg=dict(layer_decay_rate=0.5))
LAMB = dict(optimizer=dict(type="Lamb", lr=0.005, weight_decay=0.02), paramwise_cfg=dict(norm_decay_mult=0.0))
SIMSIAM = dict(optimizer=dict(type="SGD", lr=0.05, momentum=0.9, weight_decay=1e-4),
               paramwise_cfg=dict(custom_keys={"predictor": dict(fix_lr=True)}))
SIMSIAM_HOOKS = [dict(type="SimSiamHook", priority="HIGH", fix_pred_lr=True, lr=0.05)]


@pytest.fixture(scope="module")
def fake_package(tmp_path_factory) -> Any:
    """The package, importable for this module's tests. Once imported, its registries stay children of
    mmengine's for the whole process (mmengine refuses a second child of the same scope), so it is written
    and imported once."""
    lib = tmp_path_factory.mktemp("lib")
    (lib / PKG).mkdir()
    (lib / PKG / "__init__.py").write_text("")
    (lib / PKG / "registry.py").write_text(REGISTRY)
    (lib / PKG / "engine.py").write_text(ENGINE)
    sys.path.insert(0, str(lib))
    yield PKG
    sys.path.remove(str(lib))


def _config(tmp_path: Path, scope: str, optim_wrapper: dict, hooks: list | None = None) -> Path:
    path = tmp_path / f"cfg_{scope}_{len(list(tmp_path.glob('cfg_*')))}.py"
    path.write_text(f"default_scope = {scope!r}\nmodel = dict(type='LayeredNet')\n"
                    f"optim_wrapper = {optim_wrapper!r}\ncustom_hooks = {hooks or []!r}\n{SCHEDULE}")
    return path


_RUNS = itertools.count()


class Recorder(Hook):
    priority = "LOWEST"  # after every other before_train_iter, as the optimizer step sees the values

    def __init__(self) -> None:
        self.rows: list[list[tuple[float, float, float]]] = []
        self.first: list[str] = []

    def before_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        groups = runner.optim_wrapper.optimizer.param_groups
        if not self.first:
            names = {id(p): n for n, p in runner.model.named_parameters()}
            self.first = [names[id(g["params"][0])] for g in groups]
        self.rows.append([(g["lr"], g["momentum"] if "momentum" in g else g["betas"][0], g["weight_decay"])
                          for g in groups])


def _runner(config: Path, size: int, work_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Every param group's (lr, momentum or betas[0], weight decay) per iteration of Runner.train() on the config
    (its own model, optimizer wrapper, schedulers and custom_hooks, built under its default_scope)."""
    from mmengine.config import Config
    from mmengine.dataset import DefaultSampler

    cfg = Config.fromfile(str(config))
    data = [dict(inputs=torch.zeros(3))] * size
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.train_dataloader.batch_size,
                                         sampler=DefaultSampler(data, shuffle=False), collate_fn=lambda b: b)
    recorder = Recorder()
    runner = Runner(model=cfg.model, work_dir=str(work_dir), train_dataloader=loader, train_cfg=cfg.train_cfg,
                    optim_wrapper=cfg.optim_wrapper, param_scheduler=cfg.param_scheduler,
                    experiment_name=f"lr-packages-{next(_RUNS)}",  # Runners made in the same second need two names
                    default_scope=cfg.default_scope, custom_hooks=[*cfg.custom_hooks, recorder], log_level="ERROR",
                    default_hooks=dict(logger=None, timer=None, checkpoint=None))
    runner.model.train_step = lambda data, optim_wrapper: {}  # the values do not depend on the updates
    with warnings.catch_warnings():  # no optimizer.step() before the schedulers' step(): mmengine says so
        warnings.filterwarnings("ignore", message="Detected call of `scheduler.step")
        runner.train()
    return np.array(recorder.rows), recorder.first


def _compare(result: Any, expected: np.ndarray, first: list[str]) -> None:
    cols = [next(k for k, m in enumerate(result.members) if name in m) for name in first]
    ours = np.stack([result.lr[:, cols], result.momentum[:, cols], result.weight_decay[:, cols]], axis=-1)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("optim_wrapper,hooks", [(LAYER_DECAY, None), (LAMB, None), (SIMSIAM, SIMSIAM_HOOKS)],
                         ids=["layer-decay-constructor", "lamb", "simsiam-hook"])
def test_installed_package_equals_a_runner(fake_package, tmp_path, optim_wrapper, hooks):
    config = _config(tmp_path, fake_package, optim_wrapper, hooks)
    expected, first = _runner(config, 10, tmp_path / "work")
    result = visctl.lr(config, dataset_size=10)
    _compare(result, expected, first)
    assert not [n for n in result.notes if "not available" in n or "not registered" in n or "stand-in" in n]
    if optim_wrapper is LAYER_DECAY:  # 4 layers x (weights, 1-d parameters), named by layer
        assert len(result.groups) == 7 and result.groups[0] == "layer 1: backbone.0.weight"
        assert "layer 2: backbone.1.{weight|bias} (2 params; wd 0)" in result.groups
    if optim_wrapper is LAMB:
        assert np.all(result.momentum == 0.9) and set(result.weight_decay[0]) == {0.02, 0.0}


def test_missing_package_notes_say_what_is_approximated(tmp_path, invoke):
    missing = "visctl_missing_mm"
    decay = visctl.lr(_config(tmp_path, missing, LAYER_DECAY), dataset_size=10)
    assert any("model cannot be built" in n and f"{missing} is not installed" in n and "stand-in parameters" in n
               for n in decay.notes)
    note = next(n for n in decay.notes if "LearningRateDecayOptimWrapperConstructor is not available" in n)
    assert f"default_scope '{missing}': {missing} is not installed" in note and "layer_decay_rate=0.5" in note
    # what the note says: every group keeps the base lr (no layer decay), mmengine's default groups
    assert "every group here has the base lr" in note
    assert np.all(decay.lr == decay.lr[:, :1]) and decay.lr[0, 0] == pytest.approx(0.01 * 0.01)  # base lr x start_factor

    lamb = visctl.lr(_config(tmp_path, missing, LAMB), dataset_size=10)
    note = next(n for n in lamb.notes if "optimizer Lamb" in n)
    assert "not registered here" in note and "scheduled as torch's Adam" in note and "betas=(0.9, 0.999)" in note
    # Lamb's default betas, as the note says: betas[0] 0.9 as momentum; the config's weight decay (norms: 0)
    assert np.all(lamb.momentum == 0.9) and set(lamb.weight_decay[0]) == {0.02, 0.0}

    hooked = invoke("lr", _config(tmp_path, missing, SIMSIAM, SIMSIAM_HOOKS), "-d", "10", "-o", tmp_path / "out")
    assert hooked.exit_code == 0, hooked.output
    assert "custom_hooks SimSiamHook sets param-group values" in hooked.stderr and "not drawn" in hooked.stderr


def test_unknown_hook_and_param_scheduler_hook_are_named(fake_package, tmp_path):
    config = _config(tmp_path, fake_package, SIMSIAM, [dict(type="EMAHook"), dict(type="MyLrHook")])
    config.write_text(config.read_text() + "default_hooks = dict(param_scheduler=dict(type='YOLOv5ParamSchedulerHook'))\n")
    notes = visctl.lr(config, dataset_size=10).notes
    assert any("custom_hooks MyLrHook is not run" in n for n in notes)
    assert not any("EMAHook" in n for n in notes)  # it averages weights, never the optimizer's values
    assert any("default_hooks.param_scheduler is YOLOv5ParamSchedulerHook" in n for n in notes)


def test_dotted_names_are_never_imported(fake_package, tmp_path):
    """A constructor type that no registry holds is not imported as a dotted path (mmengine's Registry.get would)."""
    from visctl.errors import ConfigError

    config = _config(tmp_path, fake_package, dict(LAYER_DECAY, constructor="os.system"))
    with pytest.raises(ConfigError, match="unknown optim_wrapper constructor 'os.system'"):
        visctl.lr(config, dataset_size=10)
    scoped = _config(tmp_path, fake_package, dict(LAYER_DECAY, constructor=f"{PKG}.LearningRateDecayOptimWrapperConstructor"))
    assert len(visctl.lr(scoped, dataset_size=10).groups) == 7
    from mmengine.registry import OPTIMIZERS

    assert schedules.registered(OPTIMIZERS, "os.system", fake_package) is None


def test_a_model_that_downloads_in_its_constructor_is_not_built(tmp_path):
    """mmpretrain's MILAN fetches a CLIP checkpoint from a URL in its constructor: lr, which builds a model only
    for its parameter names, opens no connection and says why the groups are a stand-in's."""
    import socket

    (tmp_path / "fetching_net.py").write_text(
        "import socket\nfrom torch import nn\n\n\nclass FetchingNet(nn.Module):\n"
        "    def __init__(self, port):\n        super().__init__()\n"
        "        socket.create_connection(('127.0.0.1', port), timeout=2).close()\n"
        "        self.fc = nn.Linear(2, 2)\n")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        config = tmp_path / "cfg.py"
        config.write_text(f"model = dict(type='fetching_net:FetchingNet', port={server.getsockname()[1]})\n"
                          f"optim_wrapper = {SIMSIAM!r}\n{SCHEDULE}")
        result = visctl.lr(config, dataset_size=10)
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # nobody connected
    assert any("model cannot be built" in n and "visctl never downloads" in n and "stand-in" in n
               for n in result.notes)


def test_installed_constructor_without_the_model_falls_back_and_says_so(fake_package, tmp_path):
    """The package's constructor is there but the model cannot be built: its groups need the model (layer
    depths), so mmengine's default constructor groups the stand-in parameters, and the notes say both."""
    config = _config(tmp_path, fake_package, LAYER_DECAY)
    config.write_text(config.read_text().replace("type='LayeredNet'", "type='NoSuchNet'"))
    result = visctl.lr(config, dataset_size=10)
    assert any("model cannot be built" in n and "NoSuchNet" in n for n in result.notes)
    note = next(n for n in result.notes if "LearningRateDecayOptimWrapperConstructor is not available" in n)
    assert "it needs the config's model, and lr has only stand-in parameters" in note
    assert "every group here has the base lr" in note
    assert np.all(result.lr == result.lr[:, :1])
