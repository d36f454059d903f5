"""The run protocol's record (``visctl.library._run.Run.gathered``): a library call's result holds the failures and
notes of that call only, also when the calls share one ``session=``."""

from __future__ import annotations

import warnings

import pytest
from conftest import DEMO_CFG, ROOT

import visctl

DET_CFG = ROOT / "examples" / "demo_detector" / "config.py"
MAE_CFG = ROOT / "examples" / "demo_mae" / "config.py"
PIPELINE = dict(test_pipeline=[dict(type="ResizeEdge", scale=48, edge="short"), dict(type="PackInputs")])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good image and two that cannot be decoded."""
    import cv2

    from visctl.shapes import make_scene

    folder = tmp_path_factory.mktemp("protocol")
    good = folder / "good.png"
    cv2.imwrite(str(good), make_scene(3, size=64).image[..., ::-1])
    (folder / "bad.png").write_bytes(b"not a png")
    (folder / "worse.png").write_bytes(b"nor this")
    return good, folder / "bad.png", folder / "worse.png"


#: the second call, on the images given (None: a call without images, its dataset's)
SECOND = {
    "cam": lambda images, s: visctl.cam(images, DEMO_CFG, session=s),
    "featmap": lambda images, s: visctl.featmap(images, DEMO_CFG, session=s),
    "boxam": lambda images, s: visctl.boxam(images, DET_CFG, session=s),
    "slice": lambda images, s: visctl.slice(images, DET_CFG, patch_size=64, session=s),
    "recon": lambda images, s: visctl.recon(images, MAE_CFG, seed=0, session=s),
    "pipeline": lambda images, s: visctl.pipeline(PIPELINE, images, phase="test", session=s),
    "tsne": lambda images, s: visctl.tsne(DEMO_CFG, method="pca", max_num_samples_per_class=3, session=s),
}


@pytest.mark.parametrize("command", sorted(SECOND))
def test_a_reused_session_gives_each_result_its_own_failures_and_notes(command, files, held_out):
    good, bad, worse = files
    held_root = next(iter(held_out)).parents[1]
    session = visctl.Session(visctl.RunOptions(device="cpu", cfg_options=(
        f"test_dataloader.dataset.data_root={held_root}",)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = visctl.cam([good, bad], DEMO_CFG, session=session)  # bad.png is skipped
        assert [path for path, _ in first.failures] == [str(bad)] and first.notes
        session.note("a remark between the calls")
        before = len(session.notes)
        second = SECOND[command](None if command == "tsne" else [good, worse], session)
    assert [path for path, _ in second.failures] == ([] if command == "tsne" else [str(worse)]), second.failures
    said = tuple(session.notes[before:])  # what this call noted, then what its run remarked (none before it)
    assert second.notes[:len(said)] == said and "a remark between the calls" not in second.notes, second.notes
    assert [path for path, _ in first.failures] == [str(bad)]  # the first result is as it was


def test_every_plan_runs_its_own_checks(files):
    """recon's plan() refuses what its check_options refuses, as every other plan() does, also where the caller
    did not check the options before the model loaded."""
    from visctl.errors import ArgumentError
    from visctl.library import _common, reconstruct

    good = files[0]
    session = visctl.Session(visctl.RunOptions(device="cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mae = _common.open_model(session, MAE_CFG, None, [good])
    with pytest.raises(ArgumentError, match="mask_file= and mask_ratio= both"):
        reconstruct.plan(session, mae, visctl.ReconOptions(mask_file=good, mask_ratio=0.5))
