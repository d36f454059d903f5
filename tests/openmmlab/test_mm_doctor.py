"""``visctl doctor`` in the real OpenMMLab environment: its "ok" lines are true (each package really built a model
through its registry), a broken build or mmcv without compiled ops is said, and the run exits 1."""

from __future__ import annotations

import json
import sys

import pytest
from mmstack import need, need_mmcv_ops

pytestmark = pytest.mark.filterwarnings("ignore::ImportWarning", "ignore::UserWarning:mm")

# distribution -> (module, class doctor builds)
PACKAGES = {"mmpretrain": ("mmpretrain", "ImageClassifier"), "mmdet": ("mmdet", "RetinaNet"),
            "mmyolo": ("mmyolo", "YOLOv5CSPDarknet"), "mmsegmentation": ("mmseg", "EncoderDecoder")}


def _doctor(invoke):
    result = invoke("doctor", "--json")
    return result, {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_doctor_builds_a_model_through_each_installed_package(invoke, monkeypatch):
    import importlib.util

    installed = {d: v for d, v in PACKAGES.items() if importlib.util.find_spec(v[0]) is not None}
    if not installed:
        pytest.skip("no OpenMMLab package is installed (the OpenMMLab stage of .ci/run installs them)")
    from visctl import environment

    built = []
    real = environment.build_tiny_model

    def spy(module, model):
        name = real(module, model)
        built.append((module, name))
        return name

    monkeypatch.setattr(environment, "build_tiny_model", spy)
    result, checks = _doctor(invoke)
    ops, _ = environment.mmcv_ops()
    # without mmcv's compiled ops (mmcv-lite: .ci/run when ../shared/wheels has no wheel) mmdet's, mmyolo's and
    # mmseg's models import mmcv._ext: doctor must say so and exit 1; mmpretrain's builds without them
    needs_ops = {} if ops else {d: v for d, v in installed.items() if d != "mmpretrain"}
    assert result.exit_code == (1 if needs_ops else 0), result.stdout
    for dist, (module, cls) in installed.items():
        if dist in needs_ops:
            assert checks[dist]["status"] == "problem", checks[dist]
            assert (module, cls) not in built or "_ext" in checks[dist]["detail"]
            continue
        assert checks[dist]["status"] == "ok"
        assert f"built a tiny {cls} through its registry (default_scope='{module}')" in checks[dist]["detail"]
        assert (module, cls) in built  # the line says what happened


@pytest.mark.parametrize(("dist", "target"), [
    ("mmsegmentation", "mmseg.models.segmentors.EncoderDecoder"),
    ("mmpretrain", "mmpretrain.models.classifiers.ImageClassifier"),
])
def test_a_broken_registry_build_is_a_problem(invoke, monkeypatch, dist, target):
    module, _, cls = target.rpartition(".")
    need(module.split(".")[0])
    if dist == "mmsegmentation":
        need_mmcv_ops()  # mmseg's models import mmcv._ext
    owner = __import__(module, fromlist=[cls])

    def broken(self, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'ftfy'", name="ftfy")

    monkeypatch.setattr(getattr(owner, cls), "__init__", broken)
    result, checks = _doctor(invoke)
    assert result.exit_code == 1
    c = checks[dist]
    assert c["status"] == "problem" and "cannot be built through its registry" in c["detail"]
    assert "No module named 'ftfy'" in c["detail"] and c["fix"] == "pip install ftfy"


def test_mmcv_without_compiled_ops_is_said(invoke, monkeypatch):
    need("mmcv")
    from visctl import environment

    ok, detail = environment.mmcv_ops()
    monkeypatch.setitem(sys.modules, "mmcv._ext", None)  # as mmcv-lite: no compiled extension
    result, checks = _doctor(invoke)
    dist = next(d for d in environment.MMCV_DISTS if d in checks)
    c = checks[dist]
    assert "no compiled ops" in c["detail"] and "need them (nms)" in c["detail"]
    detectors = [d for d in environment.DETECTOR_PACKAGES if d in checks]
    if detectors:
        assert c["status"] == "problem" and result.exit_code == 1
    else:
        assert c["status"] == "info"
    if ok:  # and with its ops, the line says they ran
        monkeypatch.delitem(sys.modules, "mmcv._ext")
        _, checks = _doctor(invoke)
        assert checks[dist]["status"] == "ok" and "compiled ops present" in checks[dist]["detail"]
