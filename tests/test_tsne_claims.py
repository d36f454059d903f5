"""`visctl tsne` records what it used: the method it switched to, the components the data has, the options that a
method does not take (issue 24, items 11, 12, the tsne parts of 15; item 1's traceback)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import DEMO_CFG, manifest

from visctl import embedding
from visctl.choices import EmbedMethod
from visctl.errors import InputWarning, VisctlError


def _data(held_out) -> str:
    return f"test_dataloader.dataset.data_root={next(iter(held_out)).parents[1]}"


def _columns(path) -> dict[str, np.ndarray]:
    rows = list(csv.DictReader(path.read_text().splitlines()))
    dims = [k for k in rows[0] if k in ("x", "y") or k.startswith("dim")]
    return {k: np.array([float(r[k]) for r in rows]) for k in dims}


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_more_components_than_the_samples_span_are_lowered_and_recorded(invoke, held_out, tmp_path, method):
    # 3 classes x 4 samples = 12 points of 64 features: at most 11 dimensions that are not zero
    out = tmp_path / method
    result = invoke("tsne", DEMO_CFG, "--cfg-options", _data(held_out), "--class-idx", "0", "--class-idx", "1",
                    "--class-idx", "2", "--max-num-samples-per-class", "4", "--method", method,
                    "--n-components", "50", *(["--n-iter", "250"] if method == "tsne" else []), "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("--n-components 50 lowered to 11") == 1 and "Traceback" not in result.output
    p = manifest(out)["params"]
    assert p["samples"] == 12 and p["n_components"] == 11 and p["n_components_requested"] == 50
    cols = _columns(out / "tsne_backbone_layer4.csv")
    assert len(cols) == 11 and all(np.abs(c).max() > 1e-3 for c in cols.values())  # no column of zeros


def test_too_few_samples_for_tsne_record_pca_beside_the_method_asked(invoke, held_out, tmp_path):
    result = invoke("tsne", DEMO_CFG, "--cfg-options", _data(held_out), "--class-idx", "0",
                    "--max-num-samples-per-class", "3", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("3 samples: too few for --method tsne (it needs 4), so PCA embedded them") == 1
    m = manifest(tmp_path / "o")
    p = m["params"]
    assert p["method"] == "pca" and p["method_requested"] == "tsne"
    assert p["perplexity"] is None and p["n_iter"] is None and p["init"] is None and p["metric"] is None
    assert any("so PCA embedded them" in n for n in m["notes"])
    assert m["quality"]["backbone.layer4"]["method"] == "PCA"


@pytest.mark.parametrize("method, args, named", [
    ("pca", ["--perplexity", "5"], "--perplexity 5"),
    ("pca", ["--init", "random", "--n-iter", "5"], "--n-iter 5, --init random"),
    ("pca", ["--learning-rate", "10"], "--learning-rate 10"),
    ("pca", ["--metric", "cosine"], "--metric cosine"),
    ("pca", ["--early-exaggeration", "30"], "--early-exaggeration 30"),
    ("umap", ["--perplexity", "5"], "--perplexity 5"),
])
def test_options_the_method_does_not_take_are_errors_before_the_model_loads(invoke, tmp_path, method, args, named,
                                                                             monkeypatch):
    from visctl.library import _common

    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(_common, "open_model", no_model)
    result = invoke("tsne", DEMO_CFG, "--method", method, *args, "-o", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert f"error: --method {method} does not use {named}" in result.stderr and "hint: " in result.stderr


def test_pca_records_the_tsne_options_as_not_used(invoke, held_out, tmp_path):
    result = invoke("tsne", DEMO_CFG, "--cfg-options", _data(held_out), "--method", "pca",
                    "--max-num-samples-per-class", "3", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    p = manifest(tmp_path / "o")["params"]
    assert p["method"] == p["method_requested"] == "pca"
    assert all(p[k] is None for k in ("perplexity", "perplexity_requested", "n_iter", "learning_rate",
                                      "early_exaggeration", "metric", "init", "n_iter_without_progress"))


def test_extra_tokens_on_a_cnn_are_recorded_as_not_used(invoke, held_out, tmp_path):
    result = invoke("tsne", DEMO_CFG, "--cfg-options", _data(held_out), "--method", "pca", "--num-extra-tokens", "3",
                    "--max-num-samples-per-class", "3", "-o", tmp_path / "o")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("--num-extra-tokens 3 not used: the outputs of backbone.layer4 are feature maps") == 1
    assert manifest(tmp_path / "o")["params"]["num_extra_tokens"] is None


def test_api_records_the_same(held_out):
    import visctl
    from visctl.session import RunOptions

    with pytest.warns(InputWarning) as said:
        res = visctl.tsne(str(DEMO_CFG), class_idx=[0], max_num_samples_per_class=3, n_components=5,
                          options=RunOptions(cfg_options=(_data(held_out),)))
    assert sum("so PCA embedded them" in str(w.message) for w in said) == 1
    assert sum("n_components=5 lowered to 2" in str(w.message) for w in said) == 1
    assert res.params["method"] == "pca" and res.params["method_requested"] == "tsne"
    assert res.params["n_components"] == 2 and res.params["n_components_requested"] == 5
    assert res.layers[0].coords.shape == (3, 2)
    with pytest.raises(VisctlError, match="method=pca does not use perplexity=5"):
        visctl.tsne(str(DEMO_CFG), method="pca", perplexity=5)


def test_embed_never_pads_zero_columns():
    x = np.random.default_rng(0).random((6, 8), dtype=np.float32)
    with pytest.raises(VisctlError, match="span at most 5 dimensions"):
        embedding.embed(x, EmbedMethod.pca, n_components=7)
    assert embedding.embed(x, EmbedMethod.pca, n_components=5)[0].shape == (6, 5)
    assert embedding.max_components(40, 64) == 39 and embedding.max_components(100, 16) == 16
