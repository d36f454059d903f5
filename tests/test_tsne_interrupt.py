"""tsne records its features files in one uninterrupted step with their completion: an interrupt that arrives while
they are being recorded is held back until every file is listed (CI once saw layer 1 listed and layers 2-4 on disk
unlisted after a SIGINT)."""

from __future__ import annotations

import json

from conftest import DEMO_CFG


def test_an_interrupt_while_the_features_are_recorded_leaves_every_file_listed(invoke, held_out, tmp_path,
                                                                                monkeypatch):
    from visctl.library import embed
    from visctl.output.writer import interrupt

    real = embed.list_features

    def interrupted(writer, features):
        real_add = writer.add_output
        calls = []

        def add(*a, **k):
            calls.append(a)
            if len(calls) == 1:  # the signal handler's call, between the first and the second file
                interrupt(KeyboardInterrupt())
            return real_add(*a, **k)

        writer.add_output = add
        try:
            real(writer, features)
        finally:
            writer.add_output = real_add

    monkeypatch.setattr(embed, "list_features", interrupted)
    root = next(iter(held_out)).parents[1]
    out = tmp_path / "out"
    result = invoke("tsne", DEMO_CFG, "--cfg-options", f"test_dataloader.dataset.data_root={root}",
                    "--target-layers", "backbone.layer3,backbone.layer4", "--max-num-samples-per-class", "3",
                    "--method", "pca", "-o", out)
    assert result.exit_code == 130, result.output
    on_disk = sorted(p.name for p in out.glob("features_*.npy"))
    assert on_disk == ["features_backbone_layer3.npy", "features_backbone_layer4.npy"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(o["path"] for o in manifest["outputs"] if o["path"].startswith("features_")) == on_disk
