"""``lr --save-path`` / ``--csv`` naming a file of the training set lr counts (a sample, the annotation file) is
refused, as every command refuses to write over its inputs (docs/outputs.md), before anything is written."""

from __future__ import annotations

import pytest
from conftest import DEMO_CFG, assert_one_error

pytest.importorskip("mmengine")


@pytest.fixture
def dataset(tmp_path):
    from visctl.shapes import write_scenes

    write_scenes(tmp_path / "data", range(300_000, 300_012), 64, 1)
    sample = sorted((tmp_path / "data").rglob("*.png"))[0]
    ann = tmp_path / "ann.txt"
    ann.write_text("".join(f"{p.relative_to(tmp_path / 'data')} 0\n" for p in (tmp_path / "data").rglob("*.png")))
    folder = tmp_path / "data"
    cfg = tmp_path / "cls.py"
    cfg.write_text(f"_base_ = [{str(DEMO_CFG)!r}]\ntrain_dataloader = dict(batch_size=4, dataset=dict("
                   f"type='CustomDataset', data_root={str(folder)!r}))\n")
    cfg_ann = tmp_path / "cls_ann.py"
    cfg_ann.write_text(f"_base_ = [{str(DEMO_CFG)!r}]\ntrain_dataloader = dict(batch_size=4, dataset=dict("
                       f"type='RepeatDataset', times=2, dataset=dict(type='CustomDataset', data_root={str(folder)!r}, "
                       f"ann_file={str(ann)!r})))\n")
    return dict(sample=sample, ann=ann, cfg=cfg, cfg_ann=cfg_ann, folder=folder)


@pytest.mark.parametrize("flag", ["--save-path", "--csv"])
def test_a_sample_of_the_counted_dataset_is_never_written_over(invoke, dataset, tmp_path, flag):
    before = dataset["sample"].read_bytes()
    listing = sorted(p.name for p in dataset["sample"].parent.iterdir())
    out = ["-o", str(tmp_path / "o")] if flag == "--csv" else []
    result = invoke("lr", dataset["cfg"], flag, dataset["sample"], *out)
    assert_one_error(result, flag, str(dataset["sample"]), "never writes over its inputs")
    assert dataset["sample"].read_bytes() == before
    assert sorted(p.name for p in dataset["sample"].parent.iterdir()) == listing  # no manifest there either


def test_the_annotation_file_is_never_written_over(invoke, dataset):
    before = dataset["ann"].read_bytes()
    result = invoke("lr", dataset["cfg_ann"], "--csv", dataset["ann"], "-o", str(dataset["folder"].parent / "o"))
    assert_one_error(result, "--csv", "annotation file")
    assert dataset["ann"].read_bytes() == before


def test_a_new_file_beside_still_works(invoke, dataset, tmp_path):
    result = invoke("lr", dataset["cfg"], "--save-path", tmp_path / "plot.png", "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plot.png").stat().st_size > 0


def test_api_write_refuses_too(dataset, tmp_path):
    import visctl
    from visctl.errors import OutputError
    from visctl.output.writer import OutputWriter

    result = visctl.lr(str(dataset["cfg"]))
    writer = OutputWriter(tmp_path / "w", "lr", {})
    with pytest.raises(OutputError, match="never writes over its inputs"):
        result.write(writer, plot_target=dataset["sample"])
