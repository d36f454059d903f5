"""Transforms of a config's OpenMMLab package run through its registry (visctl.package_transforms).

The package here is laid out as the OpenMMLab ones are (``<pkg>/registry.py`` with a child ``TRANSFORMS``
registry whose ``locations`` register the transforms on first look-up); tests/openmmlab/test_mm_browse.py runs
mmpretrain's own (RandAugment, EfficientNetRandomCrop, RandomErasing) against its browse_dataset.py.
"""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

from visctl import package_transforms, transforms
from visctl.errors import ConfigError

PKG = "visctl_fake_tf"
PKG2 = "visctl_fake_tf_two"


@pytest.fixture(scope="module")
def fake_package(tmp_path_factory):
    """Imported once: mmengine's root registry keeps one child per scope for the life of the process."""
    tmp_path = tmp_path_factory.mktemp("fake_tf")
    pkg = tmp_path / PKG
    (pkg / "transforms").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "registry.py").write_text(
        "from mmengine.registry import TRANSFORMS as ROOT, Registry\n"
        f"TRANSFORMS = Registry('transform', parent=ROOT, scope='{PKG}', locations=['{PKG}.transforms'])\n")
    (pkg / "transforms" / "__init__.py").write_text(
        "import numpy as np\n"
        f"from {PKG}.registry import TRANSFORMS\n"
        "@TRANSFORMS.register_module()\n"
        "class ZeroBlue:\n"  # OpenMMLab images are BGR: channel 0 is blue
        "    def __call__(self, results):\n"
        "        results['img'] = results['img'].copy(); results['img'][..., 0] = 0\n"
        "        return results\n"
        "@TRANSFORMS.register_module()\n"
        "class Noise:\n"  # draws from numpy's global generator, as mmpretrain's transforms do
        "    def __init__(self, amount=20):\n        self.amount = amount\n"
        "    def __call__(self, results):\n"
        "        noise = np.random.randint(0, self.amount, results['img'].shape)\n"
        "        results['img'] = np.clip(results['img'] + noise, 0, 255).astype(np.uint8)\n"
        "        return results\n"
        "@TRANSFORMS.register_module()\n"
        "class HalfWidth:\n"
        "    def __call__(self, results):\n"
        "        results['img'] = results['img'][:, ::2]; return results\n"
        "@TRANSFORMS.register_module()\n"
        "class Broken:\n"
        "    def __call__(self, results):\n"
        "        raise RuntimeError('no good')\n")
    for name in (PKG, PKG2):  # two packages with a transform that records the scope it was built under
        if name == PKG2:
            (tmp_path / name / "transforms").mkdir(parents=True)
            (tmp_path / name / "__init__.py").write_text("")
            (tmp_path / name / "registry.py").write_text(
                "from mmengine.registry import TRANSFORMS as ROOT, Registry\n"
                f"TRANSFORMS = Registry('transform', parent=ROOT, scope='{name}', locations=['{name}.transforms'])\n")
            (tmp_path / name / "transforms" / "__init__.py").write_text(f"from {name}.registry import TRANSFORMS\n")
        with open(tmp_path / name / "transforms" / "__init__.py", "a") as f:
            f.write("import time\n"
                    "@TRANSFORMS.register_module()\n"
                    "class ScopeProbe:\n"
                    "    def __init__(self, i=0):\n"
                    "        from mmengine.registry import DefaultScope\n"
                    "        time.sleep(0.0005)\n"
                    "        self.seen = DefaultScope.get_current_instance().scope_name\n"
                    "    def __call__(self, results):\n"
                    "        return results\n")
    sys.path.insert(0, str(tmp_path))
    package_transforms._KNOWN.clear()
    yield
    sys.path.remove(str(tmp_path))
    package_transforms._KNOWN.clear()
    package_transforms._BUILT.clear()


def _run(steps, seed=0):
    img = np.full((8, 10, 3), 100, np.uint8)
    img[..., 0] = 200  # red
    steps = transforms.qualify(steps, PKG)
    return transforms.run_pipeline(img, steps, np.random.default_rng([seed, 0])), steps


def test_the_default_scopes_own_transforms_run_through_its_registry_on_bgr(fake_package):
    state, steps = _run([dict(type="LoadImageFromFile"), dict(type="ZeroBlue"), dict(type="Resize", scale=(5, 4))])
    # only the name visctl does not write itself is the package's
    assert [s["type"] for s in steps] == ["LoadImageFromFile", f"{PKG}.ZeroBlue", "Resize"]
    assert state.img.shape == (4, 5, 3)
    assert (state.img[..., 2] == 0).all() and (state.img[..., 0] == 200).all()  # RGB's blue is BGR's channel 0
    assert not state.geometry_known  # a transform visctl cannot map back


def test_package_random_draws_follow_the_seed_and_leave_the_global_generators(fake_package):
    np.random.seed(123)
    random.seed(5)
    import torch

    torch.manual_seed(9)
    before_np, before_py, before_torch = np.random.get_state()[1].copy(), random.getstate(), torch.get_rng_state()
    a, _ = _run([dict(type="Noise", amount=50)], seed=1)
    b, _ = _run([dict(type="Noise", amount=50)], seed=1)
    c, _ = _run([dict(type="Noise", amount=50)], seed=2)
    assert np.array_equal(a.img, b.img) and not np.array_equal(a.img, c.img)
    assert np.array_equal(np.random.get_state()[1], before_np) and random.getstate() == before_py
    assert torch.equal(torch.get_rng_state(), before_torch)


def test_size_changes_and_failures_of_package_transforms(fake_package):
    state, _ = _run([dict(type="HalfWidth")])
    assert state.img.shape == (8, 5, 3) and not state.geometry_known and state.scale == (0.5, 1.0)
    with pytest.raises(ConfigError, match="Broken failed: RuntimeError: no good"):
        _run([dict(type="Broken")])
    with pytest.raises(ConfigError, match="cannot build Noise"):
        _run([dict(type="Noise", nonsense=1)])


def test_without_the_package_names_are_left_as_they_are():
    steps = [dict(type="RandAugment", policies="timm_increasing")]
    assert transforms.qualify(steps, "visctl_no_such_package") == steps
    assert transforms.qualify(steps, None) == steps


def test_transforms_built_in_reader_threads_each_see_their_own_scope_and_leave_none(fake_package):
    """mmengine's DefaultScope.overwrite_default_scope copies and reassigns a global dict without a lock: reader
    threads building package transforms at once ran under another thread's scope and left a stray one."""
    import threading

    from mmengine.registry import DefaultScope

    def scopes() -> list[tuple[str, str]]:
        # by name: mmengine's overwrite_default_scope puts back a deep copy of its instances, not the same objects
        return [(k, v.scope_name) for k, v in DefaultScope._instance_dict.items()]

    before = scopes()
    seen: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def build(worker: int) -> None:
        try:
            for k in range(40):
                scope = (PKG, PKG2)[(worker + k) % 2]
                transform = package_transforms._build(scope, "ScopeProbe", {"i": worker * 1000 + k})
                seen.append((scope, transform.seen))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    package_transforms._BUILT.clear()
    assert not errors
    assert len(seen) == 160 and all(scope == got for scope, got in seen)
    assert scopes() == before  # no scope left behind, the current one unchanged


BROKEN = "visctl_fake_tf_needs_dep"
DEP = "visctl_no_such_dependency"


@pytest.fixture(scope="module")
def broken_package(tmp_path_factory):
    """A package whose transforms' module imports a dependency that is not installed (mmsegmentation 1.2.2's
    transforms without ftfy)."""
    tmp_path = tmp_path_factory.mktemp("broken_tf")
    pkg = tmp_path / BROKEN
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "registry.py").write_text(
        "from mmengine.registry import TRANSFORMS as ROOT, Registry\n"
        f"TRANSFORMS = Registry('transform', parent=ROOT, scope='{BROKEN}', locations=['{BROKEN}.transforms'])\n")
    (pkg / "transforms.py").write_text(f"import {DEP}\n")
    sys.path.insert(0, str(tmp_path))
    yield
    sys.path.remove(str(tmp_path))
    package_transforms._KNOWN.clear()


def test_a_package_whose_registry_cannot_import_is_a_dependency_error_not_torchvisions_class(broken_package):
    from visctl.errors import DependencyError

    img = np.full((8, 10, 3), 100, np.uint8)
    steps = [dict(type="ColorJitter", brightness=0.5)]  # torchvision has a class of that name
    for _ in range(2):  # asked again, it fails again (no failure is cached)
        with pytest.raises(DependencyError, match=DEP) as info:
            transforms.qualify(steps, BROKEN)
        assert info.value.hint == f"pip install {DEP}"
    assert (BROKEN, "ColorJitter") not in package_transforms._KNOWN
    with pytest.raises(DependencyError, match=DEP):
        transforms.run_pipeline(img, [dict(type=f"{BROKEN}.ColorJitter", brightness=0.5)])


def test_a_scope_qualified_name_never_runs_torchvisions_class(fake_package):
    from visctl.errors import DependencyError

    img = np.full((8, 10, 3), 100, np.uint8)
    with pytest.raises(DependencyError, match="visctl_no_such_package is not installed"):
        transforms.run_pipeline(img, [dict(type="visctl_no_such_package.ColorJitter", brightness=0.5)])
    with pytest.raises(ConfigError, match=f"{PKG}'s transform registry has no 'ColorJitter'"):
        transforms.run_pipeline(img, [dict(type=f"{PKG}.ColorJitter", brightness=0.5)])
    state = transforms.run_pipeline(img, [dict(type="torchvision.ColorJitter", brightness=0.5)])  # asked for
    assert state.img.shape == img.shape


def test_package_failures_keep_their_cause_and_name_no_flag_model_commands_lack(fake_package, monkeypatch):
    with pytest.raises(ConfigError, match="Broken failed") as info:
        _run([dict(type="Broken")])
    assert isinstance(info.value.__cause__.__cause__, RuntimeError)  # run_pipeline's, then apply's
    assert "--skip-type Broken" not in str(info.value.hint) and "config's pipeline" in str(info.value.hint)
    with pytest.raises(ConfigError, match="cannot build Noise") as info:
        _run([dict(type="Noise", nonsense=1)])
    assert info.value.__cause__.__cause__ is not None

    def bug(*_args):  # a fault of visctl's own code around the package's call: not a user error
        raise AttributeError("visctl's own")

    monkeypatch.setattr(np.random, "seed", bug)
    with pytest.raises(AttributeError):
        _run([dict(type="ZeroBlue")])
