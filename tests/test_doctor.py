"""`visctl doctor` and dependency versions: flavours, clashes, one-line errors. Metadata is monkeypatched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest
from conftest import DEMO_CFG, ROOT

from visctl import _gradcam, environment
from visctl.choices import Method

_REAL_VERSION = metadata.version


def _fake_dists(monkeypatch, present: dict[str, str | None]) -> None:
    """Distributions as pip lists them: ``present`` overrides (None = not installed), the rest is real."""
    def version(name: str) -> str:
        if name in present:
            if present[name] is None:
                raise metadata.PackageNotFoundError(name)
            return present[name]
        return _REAL_VERSION(name)

    monkeypatch.setattr(metadata, "version", version)


def _doctor(invoke, *args):
    result = invoke("doctor", "--json", *args)
    return result, json.loads(result.stdout)


def _check(report, name):
    return next(c for c in report["checks"] if c["name"] == name)


def test_doctor_here_reports_every_part_and_exits_0(invoke):
    result, report = _doctor(invoke)
    assert result.exit_code == 0 and report["ok"], result.stdout
    names = [c["name"] for c in report["checks"]]
    for part in ("python", "torch", "torchvision", "mmengine", "grad-cam", "opencv", "openTSNE", "umap-learn",
                 "tensorboard", "wandb"):
        assert part in names
    assert _check(report, "grad-cam")["detail"].startswith(metadata.version("grad-cam"))
    assert "GUI:" in _check(report, "opencv")["detail"]


def test_both_mmengine_flavours_are_a_problem_with_a_fix(invoke, monkeypatch):
    _fake_dists(monkeypatch, {"mmengine": "0.10.7", "mmengine-lite": "0.10.7"})
    result, report = _doctor(invoke)
    assert result.exit_code == 1 and not report["ok"]
    c = _check(report, "mmengine")
    assert c["status"] == "problem" and "both" in c["detail"]
    assert c["fix"].startswith("pip uninstall -y mmengine-lite") and "mmengine==0.10.7" in c["fix"]


def test_full_mmengine_alone_is_fine(invoke, monkeypatch):
    _fake_dists(monkeypatch, {"mmengine": "0.10.7", "mmengine-lite": None})
    result, report = _doctor(invoke)
    assert _check(report, "mmengine") == {"name": "mmengine", "status": "ok", "detail": "mmengine 0.10.7", "fix": None}


def test_two_opencv_wheels_overwrite_each_other(invoke, monkeypatch):
    _fake_dists(monkeypatch, {"opencv-python": "4.10.0.84", "opencv-python-headless": "4.10.0.84",
                              "opencv-contrib-python": None, "opencv-contrib-python-headless": None})
    monkeypatch.setattr(environment, "cv2_gui", lambda: "NONE")
    result, report = _doctor(invoke)
    assert result.exit_code == 1
    c = _check(report, "opencv")
    assert c["status"] == "problem" and "overwrite" in c["detail"] and "GUI: NONE" in c["detail"]
    # keep the GUI wheel: uninstall both, reinstall opencv-python at its version
    assert c["fix"] == ("pip uninstall -y opencv-python-headless opencv-python && "
                        "pip install opencv-python==4.10.0.84")


def test_gui_opencv_alone_reports_its_backend(invoke, monkeypatch):
    _fake_dists(monkeypatch, {"opencv-python": "4.10.0.84", "opencv-python-headless": None,
                              "opencv-contrib-python": None, "opencv-contrib-python-headless": None})
    monkeypatch.setattr(environment, "cv2_gui", lambda: "GTK3")
    result, report = _doctor(invoke)
    assert _check(report, "opencv")["detail"] == "opencv-python 4.10.0.84 (GUI: GTK3)"


@pytest.mark.parametrize(("version", "ok"), [("1.4.8", True), ("1.5.7", True), ("1.5.0", True), ("1.4.7", False),
                                             ("1.3.9", False), ("1.6.0", False), ("1.5.5.post1", True)])
def test_grad_cam_range(version, ok):
    assert _gradcam.is_supported(version) is ok


def test_unsupported_grad_cam_is_a_problem_in_doctor(invoke, monkeypatch):
    _fake_dists(monkeypatch, {"grad-cam": "1.3.9"})
    result, report = _doctor(invoke)
    assert result.exit_code == 1
    c = _check(report, "grad-cam")
    assert c["status"] == "problem" and "1.3.9" in c["detail"] and ">=1.4.8,<1.6" in c["detail"]


def test_unsupported_grad_cam_stops_cam_with_one_error_line(invoke, monkeypatch, image_file, tmp_path):
    _fake_dists(monkeypatch, {"grad-cam": "1.6.2"})
    result = invoke("cam", image_file, DEMO_CFG, "-o", tmp_path)
    assert result.exit_code == 2
    assert "error: grad-cam 1.6.2 is installed; visctl supports grad-cam >=1.4.8,<1.6" in result.stderr
    assert "Traceback" not in result.output


def test_grad_cam_14_lacks_the_new_methods(monkeypatch):
    _fake_dists(monkeypatch, {"grad-cam": "1.4.8"})
    from visctl import cams

    methods = cams.parse_method("all")
    assert Method.gradcam in methods and Method.shapleycam not in methods and Method.fem not in methods


def test_missing_or_unsupported_mmengine_is_one_error_line(invoke, monkeypatch):
    _fake_dists(monkeypatch, {"mmengine": None, "mmengine-lite": "0.9.1"})
    result = invoke("lr", DEMO_CFG, "--dataset-size", "100")
    assert result.exit_code == 2
    assert "error: mmengine-lite 0.9.1 is installed; visctl supports mmengine-lite >=0.10,<1" in result.stderr
    real = environment._module_present
    monkeypatch.setattr(environment, "_module_present", lambda name: False if name == "mmengine" else real(name))
    _fake_dists(monkeypatch, {"mmengine": None, "mmengine-lite": None})
    result = invoke("lr", DEMO_CFG, "--dataset-size", "100")
    assert result.exit_code == 2 and "error: mmengine is not installed" in result.stderr
    assert 'visctl lr needs mmengine (pip install "visctl[lite]" or install into your OpenMMLab environment)' \
        in result.stderr and "hint:" in result.stderr


def test_broken_openmmlab_package_is_reported(invoke, monkeypatch, tmp_path):
    pkg = tmp_path / "mmpretrain"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import a_module_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "mmpretrain" or m.startswith("mmpretrain.")]:
        monkeypatch.delitem(sys.modules, name)  # a real mmpretrain imported before: the fake one is asked
    _fake_dists(monkeypatch, {"mmpretrain": "1.2.0"})
    result, report = _doctor(invoke)
    c = _check(report, "mmpretrain")
    assert result.exit_code == 1 and c["status"] == "problem"
    assert "ModuleNotFoundError" in c["detail"] and "a_module_that_is_missing" in c["detail"]


def test_doctor_help_is_light():
    code = ("import sys\nsys.argv = ['visctl', 'doctor', '--help']\nfrom visctl.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('torch', 'cv2', 'mmengine', 'pytorch_grad_cam', 'numpy') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    assert out.stdout.strip().splitlines()[-1] == "LOADED []"


# ---- the environment an OpenMMLab user has, built for real (slow: CI with VISCTL_SLOW=1) -----------------

@pytest.mark.skipif(os.environ.get("VISCTL_SLOW") != "1", reason="builds a venv from the package index: VISCTL_SLOW=1")
def test_install_into_an_openmmlab_environment_changes_nothing(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")

    def pip(*args):
        subprocess.run([py, "-m", "pip", "install", "-q", *args], check=True)

    pip("torch", "torchvision")  # what this machine's pip serves (CI: the same constraint file)
    pip("mmengine==0.10.7", "mmcv-lite==2.2.0", "mmpretrain==1.2.0", "opencv-python", "grad-cam==1.4.8")
    before = subprocess.run([py, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            check=True).stdout
    (tmp_path / "installed.txt").write_text(before)
    pip("-e", str(ROOT), "-c", str(tmp_path / "installed.txt"))  # the README's line
    after = subprocess.run([py, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                           check=True).stdout
    kept = {ln for ln in before.splitlines()}
    assert kept <= set(after.splitlines()), kept - set(after.splitlines())  # nothing changed version
    for dist in ("opencv-python-headless", "mmengine-lite"):
        assert f"{dist}==" not in after
    gui = subprocess.run([py, "-c", "import cv2; print(cv2.getBuildInformation())"], capture_output=True, text=True,
                         check=True).stdout
    assert "GUI:" in gui and "GUI:                           NONE" not in gui
    doctor = subprocess.run([str(venv / "bin" / "visctl"), "doctor", "--json"], capture_output=True, text=True)
    report = json.loads(doctor.stdout)
    assert _check(report, "grad-cam")["detail"].startswith("1.4.8")
    assert _check(report, "mmengine")["detail"] == "mmengine 0.10.7"
    img = tmp_path / "img.png"
    subprocess.run([py, "-c", f"import cv2, numpy; cv2.imwrite('{img}', numpy.zeros((40, 60, 3), numpy.uint8))"],
                   check=True)
    cam = subprocess.run([str(venv / "bin" / "visctl"), "cam", str(img), str(DEMO_CFG), "-o", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert cam.returncode == 0 and "Traceback" not in cam.stderr, cam.stderr  # grad-cam 1.4.8 draws the CAM
    tools = subprocess.run([py, "-c", "from pytorch_grad_cam import GradCAM; import torch; "
                            "GradCAM(torch.nn.Conv2d(3, 3, 1), [], use_cuda=False)"], capture_output=True, text=True)
    assert tools.returncode == 0, tools.stderr  # what mmpretrain's vis_cam.py calls still works


def test_listed_openmmlab_package_without_its_module_is_reported_missing(invoke, monkeypatch):
    """mmsegmentation is the distribution, mmseg its module: a listing without the module is a problem."""
    import importlib.util

    if importlib.util.find_spec("mmseg") is not None:
        pytest.skip("mmseg is installed here")
    _fake_dists(monkeypatch, {"mmsegmentation": "1.2.2"})
    result, report = _doctor(invoke)
    c = _check(report, "mmsegmentation")
    assert result.exit_code == 1 and c["status"] == "problem"
    assert "mmseg/ module is missing" in c["detail"] and c["fix"] == "pip install --force-reinstall mmsegmentation==1.2.2"


def test_openmmlab_package_whose_models_need_a_missing_module_names_it(invoke, monkeypatch, tmp_path):
    """The registry imports, but building a model imports the package's models, which need a module that is
    not installed (mmseg 1.2.2 without ftfy): doctor names the module to install."""
    pytest.importorskip("mmengine.registry")
    import importlib.util

    if importlib.util.find_spec("mmpretrain") is not None:  # its registry scope would clash with the fake's
        pytest.skip("mmpretrain is installed here")
    pkg = tmp_path / "mmpretrain"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "registry.py").write_text(
        "from mmengine.registry import MODELS as ROOT, Registry\n"
        "MODELS = Registry('model', parent=ROOT, scope='mmpretrain', locations=['mmpretrain.models'])\n")
    (pkg / "models.py").write_text("import a_tokenizer_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "mmpretrain" or m.startswith("mmpretrain.")]:
        monkeypatch.delitem(sys.modules, name)
    _fake_dists(monkeypatch, {"mmpretrain": "1.2.0"})
    result, report = _doctor(invoke)
    c = _check(report, "mmpretrain")
    assert result.exit_code == 1 and c["status"] == "problem", c
    assert "a tiny ImageClassifier cannot be built through its registry" in c["detail"]
    assert c["fix"] == "pip install a_tokenizer_that_is_missing", c


def test_no_openmmlab_package_is_said(invoke, monkeypatch):
    _fake_dists(monkeypatch, {d: None for d in (*environment.OPENMMLAB, *environment.MMCV_DISTS)})
    result, report = _doctor(invoke)
    assert _check(report, "openmmlab")["status"] == "info"
    assert not any(c["name"] in environment.OPENMMLAB for c in report["checks"])


@pytest.mark.parametrize(("with_mmdet", "status"), [(True, "problem"), (False, "info")])
def test_doctor_says_when_mmcv_has_no_compiled_ops(invoke, monkeypatch, tmp_path, with_mmdet, status):
    """mmcv-lite (an mmcv/ module without _ext and ops): a problem where mmdet's detectors need nms, else a note.
    tests/openmmlab/test_mm_doctor.py checks the "ok" on a real mmcv with its ops."""
    pkg = tmp_path / "mmcv"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "mmcv" or m.startswith("mmcv.")]:
        monkeypatch.delitem(sys.modules, name)
    _fake_dists(monkeypatch, {"mmcv-lite": "2.2.0", "mmcv": None, "mmcv-full": None,
                              "mmdet": "3.3.0" if with_mmdet else None, "mmyolo": None})
    result, report = _doctor(invoke)
    c = _check(report, "mmcv-lite")
    assert c["status"] == status, c
    assert "no compiled ops" in c["detail"]
    if status == "problem":
        assert result.exit_code == 1 and "mmdet detectors need them" in c["detail"] and "MMCV_WITH_OPS=1" in c["fix"]
    else:
        assert c["fix"] is None


def test_every_method_doctor_names_for_an_extra_is_a_method_tsne_takes():
    """doctor said openTSNE is "needed for tsne (--method opentsne)", a method tsne refuses."""
    import re

    from visctl.choices import EmbedMethod

    named = [m for use in environment.EXTRAS.values() for m in re.findall(r"--method (\w+)", use)]
    assert named and all(m in {e.value for e in EmbedMethod} for m in named), named
