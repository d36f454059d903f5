"""The whole-run hot loop of cam: figures drawn, encoded and written in a bounded background pool, the next
batch read ahead, --format, and the CUDA decisions (--amp, pinned transfers, channels_last) tested on a CPU.

Each guarantee is checked against the serial path it replaces: the same files, byte for byte, and the same
manifest; a bounded queue; a failed write that ends as one error; an interrupt that leaves a true manifest.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DEMO_CFG, manifest

import visctl
from visctl.choices import Method
from visctl.errors import VisctlError


def _rgb(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return (rng.random((40 + i, 50, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def five_images(tmp_path_factory) -> Path:
    from visctl.shapes import write_scenes

    folder = tmp_path_factory.mktemp("hot_loop")
    write_scenes(folder, range(100_000, 100_005), size=72)
    return folder


def _files(out: Path) -> dict[str, bytes]:
    return {o["path"]: (out / o["path"]).read_bytes() for o in manifest(out)["outputs"]}


# -- the background pool --

def _write_run(folder: Path, workers: int, drawn_later: bool) -> dict:
    from visctl.output.writer import OutputWriter

    w = OutputWriter(folder, "cam", {})
    w.background(workers)
    for i in range(12):
        img = _rgb(i)
        w.save_image(f"img{i}.png", (lambda img=img: img) if drawn_later else img, caption=str(i), input=f"in{i}")
        w.add_input(f"in{i}")
    w.finish("ok")
    w.close()
    return manifest(folder)


def test_background_writes_give_the_files_and_manifest_of_a_serial_run(tmp_path):
    serial = _write_run(tmp_path / "serial", 0, drawn_later=False)
    pooled = _write_run(tmp_path / "pooled", 4, drawn_later=True)
    assert [o["path"] for o in pooled["outputs"]] == [o["path"] for o in serial["outputs"]] == \
        [f"img{i}.png" for i in range(12)]
    assert pooled["inputs"] == serial["inputs"]
    assert _files(tmp_path / "pooled") == _files(tmp_path / "serial")
    assert not list((tmp_path / "pooled").glob(".*.part"))


def test_cli_pool_writes_the_bytes_of_the_serial_library_save(invoke, five_images, tmp_path):
    """The CLI draws and encodes in 4 writer threads; visctl.cam(...).save() draws and writes serially."""
    cli_out = tmp_path / "cli"
    run = invoke("cam", five_images, DEMO_CFG, "--method", "gradcam,layercam", "--batch-size", "2",
                 "--threads", "4", "-o", cli_out, "--quiet")
    assert run.exit_code == 0, run.output
    result = visctl.cam(five_images, DEMO_CFG, method="gradcam,layercam", batch_size=2)
    result.save(tmp_path / "api")
    cli, api = manifest(cli_out), manifest(tmp_path / "api")
    assert [o["path"] for o in cli["outputs"]] == [o["path"] for o in api["outputs"]]  # the same order
    assert len(cli["outputs"]) == 5
    assert [i["path"] for i in cli["inputs"]] == sorted(str(p) for p in five_images.rglob("*.png"))
    assert _files(cli_out) == _files(tmp_path / "api")


@pytest.mark.parametrize("workers,queue,held", [(1, 0, 2), (1, 3, 3), (2, 0, 4)])
def test_background_writes_are_bounded(tmp_path, monkeypatch, workers, queue, held):
    """At most max(2 x workers, queue) images wait in memory: the next save_image blocks until a write ends."""
    from visctl.output import files
    from visctl.output.writer import OutputWriter

    gate = threading.Event()
    real = files._write_file

    def slow(fh, data, target):
        gate.wait(30)
        real(fh, data, target)
    monkeypatch.setattr(files, "_write_file", slow)
    w = OutputWriter(tmp_path, "cam", {})
    w.background(workers, queue=queue)
    submitted: list[int] = []

    def produce() -> None:
        for i in range(6):
            w.save_image(f"img{i}.png", _rgb(i))
            submitted.append(i)
    t = threading.Thread(target=produce)
    t.start()
    deadline = time.time() + 10
    while len(submitted) < held and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert len(submitted) == held  # the next one waits for a free slot
    gate.set()
    t.join(30)
    w.close()
    assert len(submitted) == 6 and len(list(tmp_path.glob("img*.png"))) == 6


def _disk_full_at(monkeypatch, name_part: str) -> None:
    from visctl.output import files

    real = files._write_file

    def fill(fh, data, target):
        if name_part in Path(target).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fh, data, target)
    monkeypatch.setattr(files, "_write_file", fill)


def test_a_failed_background_write_is_one_error_and_a_true_manifest(invoke, five_images, tmp_path, monkeypatch):
    _disk_full_at(monkeypatch, "100002_cam")  # the third image's figure
    out = tmp_path / "out"
    run = invoke("cam", five_images, DEMO_CFG, "--batch-size", "2", "--threads", "2", "-o", out, "--quiet")
    assert run.exit_code == 2, run.output
    assert run.stderr.count("error:") == 1 and "Traceback" not in run.stderr
    assert "disk" in run.stderr and "100002" in run.stderr
    m = manifest(out)
    assert m["status"] == "error"
    listed = {o["path"] for o in m["outputs"]}
    on_disk = {p.name for p in out.glob("*.png")}
    assert listed == on_disk and not any("100002" in p for p in listed)
    assert not list(out.glob(".*.part"))  # nothing half-written
    assert not any(i["path"].endswith("100002.png") for i in m["inputs"])


def test_interrupt_waits_for_the_writes_and_keeps_a_true_manifest(invoke, five_images, tmp_path, monkeypatch):
    from visctl.library import cam as library

    real = library.CamRun.record
    calls = []

    def record(self, writer, item, target=None):
        real(self, writer, item, target)
        calls.append(item)
        if len(calls) == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(library.CamRun, "record", record)
    out = tmp_path / "out"
    run = invoke("cam", five_images, DEMO_CFG, "--batch-size", "2", "--threads", "2", "-o", out, "--quiet")
    assert run.exit_code == 130, run.output
    m = manifest(out)
    assert m["status"] == "interrupted" and len(m["outputs"]) == 3 and len(m["inputs"]) == 3
    import cv2

    for o in m["outputs"]:  # every listed file is whole
        assert cv2.imread(str(out / o["path"])) is not None
    assert {o["path"] for o in m["outputs"]} == {p.name for p in out.glob("*.png")}


# -- reading ahead --

def test_reading_ahead_keeps_the_order_and_the_failures(tmp_path):
    import cv2

    from visctl import transforms

    paths = []
    for i in range(11):
        p = tmp_path / f"{i:02d}.png"
        if i in (3, 8):
            p.write_bytes(b"not an image")
        else:
            cv2.imwrite(str(p), _rgb(i))
        paths.append(p)
    steps = transforms.default_pipeline(32)

    def flat(workers: int) -> list:
        out = []
        for groups, failures in transforms.prepared_batches(paths, steps, 4, workers=workers):
            out.append(([(p, s.img.tobytes()) for g in groups for p, _, s in g], [p for p, _ in failures]))
        return out
    serial, ahead = flat(0), flat(3)
    assert ahead == serial
    assert [f for _, fails in serial for f in fails] == [paths[3], paths[8]]
    assert [p for got, _ in serial for p, _ in got] == [p for i, p in enumerate(paths) if i not in (3, 8)]


def test_batches_are_stacked_in_the_readers_threads_as_in_the_callers(tmp_path):
    """prepared_batches(stack=...): the normalised tensor of a group is made beside the model (in a reader),
    and equals the one the calling thread makes without readers."""
    import threading

    import cv2
    import torch

    from visctl import transforms

    paths = []
    for i in range(9):
        p = tmp_path / f"{i:02d}.png"
        cv2.imwrite(str(p), _rgb(i))
        paths.append(p)
    steps = transforms.default_pipeline(16)
    where: list[str] = []

    def stack(group: list) -> torch.Tensor:
        where.append(threading.current_thread().name)
        return transforms.to_tensor([s for _, _, s in group], (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), True)

    def run(workers: int) -> list:
        return [(g, t) for groups, _ in transforms.prepared_batches(paths, steps, 4, workers=workers, stack=stack)
                for g, t in groups]
    serial, ahead = run(0), run(2)
    assert where[:3] == ["MainThread"] * 3 and len(where) == 6
    assert all(name.startswith("visctl-read") for name in where[3:])
    assert [[p for p, _, _ in g] for g, _ in ahead] == [[p for p, _, _ in g] for g, _ in serial]
    for (_, got), (_, want) in zip(ahead, serial):
        assert got.shape[0] in (1, 4) and torch.equal(got, want)
    # for a channels_last model: the same values, already in its memory format (no copy on the model's thread)
    nhwc = transforms.to_tensor([s for _, _, s in serial[0][0]], (1.0, 2.0, 3.0), (4.0, 5.0, 6.0), True, True)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and torch.equal(nhwc, serial[0][1])


def test_reading_ahead_holds_at_most_the_next_batch(tmp_path, monkeypatch):
    import cv2

    from visctl import images, transforms

    paths = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.png"
        cv2.imwrite(str(p), _rgb(i))
        paths.append(p)
    read: list[Path] = []
    real = images.read_image

    def counting(p, max_pixels=None):
        read.append(p)
        return real(p, max_pixels)
    monkeypatch.setattr(images, "read_image", counting)
    batches = transforms.prepared_batches(paths, transforms.default_pipeline(16), 3, workers=2)
    next(batches)
    time.sleep(0.3)  # the readers had time to run ahead as far as they may
    assert len(read) == 6  # this batch and the next, no more
    batches.close()


@pytest.mark.parametrize("threads, cores, expected", [
    (1, 2, 1),    # one core left for reading and writing
    (2, 2, 1),    # torch takes every core: one thread still writes (the run must finish), no more
    (4, 16, 8),   # capped at 8
    (12, 16, 4),  # the cores torch leaves
    (16, 16, 1),
    (None, 4, 3),
])
def test_io_threads_leave_torchs_cores_to_torch(threads, cores, expected):
    from visctl.output.writer import io_threads

    assert io_threads(threads, cores=cores) == expected


# -- --format --

@pytest.mark.parametrize("fmt,magic", [("jpg", b"\xff\xd8\xff"), ("webp", b"RIFF"), ("png", b"\x89PNG")])
def test_format_writes_that_format_and_it_decodes_to_the_png_figure(invoke, five_images, tmp_path, fmt, magic):
    import cv2

    one = next(iter(sorted(five_images.rglob("*.png"))))
    png = invoke("cam", one, DEMO_CFG, "-o", tmp_path / "png", "--quiet")
    assert png.exit_code == 0, png.output
    out = tmp_path / fmt
    run = invoke("cam", one, DEMO_CFG, "--format", fmt, "-o", out, "--quiet")
    assert run.exit_code == 0, run.output
    m = manifest(out)
    assert m["params"]["format"] == fmt
    (o,) = m["outputs"]
    assert o["path"].endswith(f".{fmt}") and o["kind"] == "image"
    data = (out / o["path"]).read_bytes()
    assert data[: len(magic)] == magic
    ref = cv2.imread(str(tmp_path / "png" / manifest(tmp_path / "png")["outputs"][0]["path"]))
    got = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert got.shape == ref.shape
    err = np.abs(got.astype(int) - ref.astype(int)).mean()
    assert err == 0 if fmt == "png" else 0 < err < 4  # lossy, but the same picture
    assert o["path"] in (out / "index.html").read_text()


def test_library_format_names_the_figures(five_images, tmp_path):
    one = next(iter(sorted(five_images.rglob("*.png"))))
    result = visctl.cam(one, DEMO_CFG, image_format="webp")
    assert result[0].figure is not None and result[0].figure.name.endswith(".webp")
    result.save(tmp_path)
    assert (tmp_path / result[0].figure.name).read_bytes()[:4] == b"RIFF"
    with pytest.raises(VisctlError, match="image_format=.gif. is not one of"):
        visctl.cam(one, DEMO_CFG, image_format="gif")


# -- the CUDA decisions, on a CPU --

def test_amp_dtype_decision():
    import torch

    from visctl import cams
    from visctl.errors import VisctlError

    grad = [Method.gradcam, Method.layercam]
    assert cams.autocast_dtype("off", "cpu", grad) is None
    assert cams.autocast_dtype("bf16", "cuda", grad) is torch.bfloat16
    assert cams.autocast_dtype("fp16", "cuda:1", grad) is torch.float16
    with pytest.raises(VisctlError, match="needs a CUDA device"):
        cams.autocast_dtype("bf16", "cpu", grad)
    with pytest.raises(VisctlError, match="needs a CUDA device"):
        cams.autocast_dtype("fp16", "mps", grad)
    for method in (Method.scorecam, Method.fullgrad, Method.eigencam):
        with pytest.raises(VisctlError, match=method.value):
            cams.autocast_dtype("fp16", "cuda", [Method.gradcam, method])
    with pytest.raises(VisctlError, match="unknown amp="):
        cams.autocast_dtype("fp8", "cuda", grad)


def test_amp_on_cpu_is_refused_before_the_model_loads(invoke, five_images, tmp_path, monkeypatch):
    from visctl import checkpoints

    def boom(*a, **k):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(checkpoints, "load_model", boom)
    run = invoke("cam", five_images, DEMO_CFG, "--amp", "bf16", "--device", "cpu", "-o", tmp_path / "o")
    assert run.exit_code == 2, run.output
    assert "needs a CUDA device" in run.stderr and "Traceback" not in run.stderr
    with pytest.raises(VisctlError, match="needs a CUDA device"):
        visctl.cam(five_images, DEMO_CFG, amp="fp16", options=visctl.RunOptions(device="cpu"))


def test_autocast_engine_hands_grad_cam_float32_and_the_same_maps():
    """CamEngine under autocast (CPU bf16 here, the logic --amp uses on CUDA): float32 maps, close to float32's."""
    import torch
    from tiny_models import TinyCNN

    from visctl import cams
    from visctl.layers import detect_layout

    torch.manual_seed(0)
    model = TinyCNN().eval()
    batch = torch.randn(3, 3, 64, 64)
    layout = detect_layout((1, 12, 16, 16), (64, 64), False, None, "features.5")
    plain = cams.CamEngine(model, Method.gradcam, ["features.5"], [layout])
    mixed = cams.CamEngine(model, Method.gradcam, ["features.5"], [layout], autocast=("cpu", torch.bfloat16))
    ref, _ = plain(batch, [cams.ClassTarget(1)] * 3)
    got, logits = mixed(batch, [cams.ClassTarget(1)] * 3)
    assert logits.dtype == torch.bfloat16  # the forward did run in bf16
    assert got.dtype == np.float32 and got.shape == ref.shape
    corr = np.corrcoef(got.ravel(), ref.ravel())[0, 1]
    assert corr > 0.95 and not np.array_equal(got, ref)


def test_pinned_transfer_and_channels_last_decisions(monkeypatch):
    import torch
    from tiny_models import TinyCNN

    from visctl import model_inputs

    assert model_inputs.pinned_transfer("cuda") and model_inputs.pinned_transfer("cuda:3")
    assert not model_inputs.pinned_transfer("cpu") and not model_inputs.pinned_transfer("mps")
    batch = torch.zeros(2, 3, 4, 4)
    assert model_inputs.to_device(batch, "cpu") is batch  # no pinning, no copy on a CPU
    nhwc = model_inputs.to_device(batch, "cpu", channels_last=True)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and torch.equal(nhwc, batch)
    linear = torch.nn.Sequential(torch.nn.Linear(3, 4))
    assert model_inputs.use_channels_last(TinyCNN(), "cuda:0")
    assert model_inputs.use_channels_last(TinyCNN(), "cpu") == torch.backends.mkldnn.is_available()
    assert not model_inputs.use_channels_last(linear, "cuda") and not model_inputs.use_channels_last(linear, "cpu")
    assert not model_inputs.use_channels_last(TinyCNN(), "mps")
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)  # a CPU build without oneDNN
    assert not model_inputs.use_channels_last(TinyCNN(), "cpu")


def test_cam_in_channels_last_on_a_cpu_gives_the_nchw_maps(monkeypatch):
    """A conv net visctl built runs its CAM in channels_last on a CPU with oneDNN (faster); its maps are the
    NCHW run's up to float rounding, and so is the predicted class."""
    import torch

    import visctl
    from visctl import model_inputs

    if not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no oneDNN: visctl keeps NCHW on its CPU")
    rng = np.random.default_rng(5)
    images = [(rng.random((72, 88, 3)) * 255).astype(np.uint8) for _ in range(3)]
    seen: list[bool] = []
    real = model_inputs.to_device
    monkeypatch.setattr(model_inputs, "to_device", lambda b, d, cl=False: seen.append(cl) or real(b, d, cl))
    opts = visctl.RunOptions(device="cpu", threads=1)
    nhwc = visctl.cam(images, DEMO_CFG, method="gradcam,layercam,eigencam", options=opts)  # eigencam: grad-cam's
    assert seen and all(seen)
    monkeypatch.setattr(model_inputs, "use_channels_last", lambda model, device: False)
    nchw = visctl.cam(images, DEMO_CFG, method="gradcam,layercam,eigencam", options=opts)
    assert seen[-1] is False
    assert len(nhwc.items) == 3 and all(len(i.maps) == 3 for i in nhwc.items)
    for a, b in zip(nhwc.items, nchw.items):
        assert a.targets == b.targets and a.maps.keys() == b.maps.keys()
        for key in a.maps:
            assert float(np.nanmax(a.maps[key])) > 0.5
            np.testing.assert_allclose(a.maps[key], b.maps[key], atol=1e-4)


def test_a_model_whose_forward_refuses_channels_last_stays_nchw(monkeypatch, invoke, image_file, tmp_path):
    """mmpretrain's VGG flattens a conv's output with ``.view``, which an NHWC tensor refuses: the run keeps
    NCHW for it (it crashed with "view size is not compatible" before), and a CAM runs."""
    import torch
    from tiny_models import TinyCNN, ViewNet

    from visctl import model_inputs
    from visctl.library import _common
    from visctl.library.cam import _channels_last

    monkeypatch.setattr(model_inputs, "use_channels_last", lambda model, device: True)  # as with oneDNN or on CUDA
    example = torch.rand(1, 3, 32, 32)
    refuses = ViewNet()
    mi = _common.ModelInputs([], None, "config.py", None, refuses, None, [], (0,), (1,), True, example)
    with pytest.raises(RuntimeError, match="view size"):
        refuses.to(memory_format=torch.channels_last)(example.contiguous(memory_format=torch.channels_last))
    assert not _channels_last(mi, "cpu")
    assert refuses.features[0].weight.is_contiguous()  # put back in NCHW
    takes = TinyCNN()
    mi = _common.ModelInputs([], None, "config.py", None, takes, None, [], (0,), (1,), True, example)
    assert _channels_last(mi, "cpu")
    assert takes.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    result = invoke("cam", image_file, "tiny_models:ViewNet", "--method", "gradcam", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output


def test_channels_last_leaves_a_callers_module_alone(monkeypatch):
    import torch
    from tiny_models import TinyCNN

    from visctl import model_inputs
    from visctl.library import _common
    from visctl.library.cam import _channels_last

    monkeypatch.setattr(model_inputs, "use_channels_last", lambda model, device: True)  # as on CUDA
    mine = TinyCNN()
    mi = _common.ModelInputs([], None, "<nn.Module>", None, mine, None, [], (0,), (1,), True, torch.zeros(1, 3, 8, 8))
    assert not _channels_last(mi, "cuda")
    assert mine.features[0].weight.is_contiguous()  # the caller's layout is kept
    built = TinyCNN()
    mi = _common.ModelInputs([], None, "config.py", None, built, None, [], (0,), (1,), True, torch.zeros(1, 3, 8, 8))
    assert _channels_last(mi, "cuda")
    assert built.features[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("words,expected", [("visctl cam --form", {"--format"}), ("visctl cam --format ", {"png", "jpg", "webp"}),
                                            ("visctl cam --amp ", {"off", "bf16", "fp16"})])
def test_the_new_options_complete(words, expected):
    import subprocess
    import sys

    env = {**os.environ, "_VISCTL_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split(" ")) - 1)}
    out = subprocess.run([sys.executable, "-m", "visctl"], env=env, capture_output=True, text=True)
    assert expected <= set(out.stdout.split()), out.stdout + out.stderr


def test_autocast_with_two_target_layers_keeps_every_layer_float32():
    """--amp with several target layers: each layer's activations and gradients reach numpy as float32 (the
    first starts the graph from a float32 copy; a later conv, whose output autocast makes bf16 again, is cast
    inside the graph), on the native path and through grad-cam's classes alike (--amp refuses the methods
    without a gradient graph)."""
    import torch
    from torch import nn

    from visctl import cams
    from visctl.layers import detect_layout

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4)).eval()
    batch = torch.randn(2, 3, 32, 32)
    layers = ["0", "1"]
    layouts = [detect_layout((1, 8, 32, 32), (32, 32), False, None, n) for n in layers]
    ref, _ = cams.CamEngine(model, Method.gradcam, layers, layouts)(batch, [cams.ClassTarget(1)] * 2)
    for method, native in ((Method.gradcam, True), (Method.gradcam, False), (Method.layercam, False)):
        engine = cams.CamEngine(model, method, layers, layouts, autocast=("cpu", torch.bfloat16), native=native)
        got, logits = engine(batch, [cams.ClassTarget(1)] * 2)
        assert logits.dtype == torch.bfloat16 and got.dtype == np.float32 and got.shape == ref.shape
        assert np.isfinite(got).all()
        if method is Method.gradcam:
            assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9


def test_a_write_failing_between_two_looks_is_not_lost(tmp_path):
    """The pool's check of finished writes takes one snapshot: a write that fails just after it was seen
    running stays pending, and the next check raises it (it is not dropped as if it had succeeded)."""
    from visctl.output.writer import OutputWriter

    class Flipping:  # running when first asked, failed from then on
        def __init__(self):
            self.asked = 0

        def done(self):
            self.asked += 1
            return self.asked > 1

        def exception(self):
            return OSError(28, "No space left on device")

        def result(self):
            raise self.exception()

    writer = OutputWriter(tmp_path, "cam", {})
    writer._pending = [(Flipping(), {})]
    writer._raise_failed()  # seen running: kept
    assert len(writer._pending) == 1
    with pytest.raises(Exception, match="space"):
        writer._raise_failed()
