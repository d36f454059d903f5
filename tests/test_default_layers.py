# ruff: noqa: E501  (the architecture table reads best one model a line)
"""One default-layer logic for cam, featmap and tsne, checked over a table of architectures (random weights,
small inputs). docs/architectures.md shows the same table; keep them together."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visctl import building, cams, featmaps
from visctl.choices import Method
from visctl.layers import default_layers, find_layer, probe

ATTENTION_INTERNALS = ("attn", "qkv", "q_norm", "k_norm", "attn_drop", "proj_drop")

# (model type, kwargs, input size, cam default, featmap/tsne default, tsne --all-stages)
TABLE = [
    ("resnet18", {'num_classes': 5}, 64, "layer4", "layer4", ['layer1', 'layer2', 'layer3', 'layer4']),
    pytest.param("vgg11", {'num_classes': 5}, 64, "features.20", "features.20", ['features.1', 'features.4', 'features.9', 'features.14', 'features.19', 'features.20'], marks=pytest.mark.slow),
    ("mobilenet_v2", {'num_classes': 5}, 64, "features.18", "features.18", ['features.1', 'features.3', 'features.6', 'features.13', 'features.18']),
    ("mobilenet_v3_small", {'num_classes': 5}, 64, "features.12", "features.12", ['features.1', 'features.3', 'features.8', 'features.12']),
    ("efficientnet_b0", {'num_classes': 5}, 64, "features.8", "features.8", ['features.1', 'features.2', 'features.3', 'features.5', 'features.8']),
    ("convnext_tiny", {'num_classes': 5}, 64, "features.7", "features.7", ['features.1', 'features.3', 'features.5', 'features.7']),
    ("densenet121", {'num_classes': 5}, 64, "features.denseblock4", "features.denseblock4", ['features.denseblock1', 'features.denseblock2', 'features.denseblock3', 'features.denseblock4']),
    ("regnet_y_400mf", {'num_classes': 5}, 64, "trunk_output.block4", "trunk_output.block4", ['trunk_output.block1', 'trunk_output.block2', 'trunk_output.block3', 'trunk_output.block4']),
    ("shufflenet_v2_x0_5", {'num_classes': 5}, 64, "conv5", "conv5", ['stage2', 'stage3', 'conv5']),
    ("squeezenet1_0", {'num_classes': 5}, 64, "features.12", "features.12", ['features.5', 'features.10', 'features.12']),
    pytest.param("vit_b_16", {'num_classes': 5, 'image_size': 64}, 64, "encoder.layers.encoder_layer_11.ln_1", "encoder.layers.encoder_layer_11", ['encoder.layers.encoder_layer_0', 'encoder.layers.encoder_layer_1', 'encoder.layers.encoder_layer_2', 'encoder.layers.encoder_layer_3', 'encoder.layers.encoder_layer_4', 'encoder.layers.encoder_layer_5', 'encoder.layers.encoder_layer_6', 'encoder.layers.encoder_layer_7', 'encoder.layers.encoder_layer_8', 'encoder.layers.encoder_layer_9', 'encoder.layers.encoder_layer_10', 'encoder.layers.encoder_layer_11'], marks=pytest.mark.slow),
    ("swin_t", {'num_classes': 5}, 64, "features.7.1.norm1", "features.7", ['features.1', 'features.3', 'features.5', 'features.7']),
    ("timm.resnet18", {'num_classes': 5}, 64, "layer4", "layer4", ['layer1', 'layer2', 'layer3', 'layer4']),
    ("timm.vit_tiny_patch16_224", {'num_classes': 5, 'img_size': 64}, 64, "blocks.11.norm1", "blocks.11", ['blocks.0', 'blocks.1', 'blocks.2', 'blocks.3', 'blocks.4', 'blocks.5', 'blocks.6', 'blocks.7', 'blocks.8', 'blocks.9', 'blocks.10', 'blocks.11']),
    ("timm.deit_tiny_patch16_224", {'num_classes': 5, 'img_size': 64}, 64, "blocks.11.norm1", "blocks.11", ['blocks.0', 'blocks.1', 'blocks.2', 'blocks.3', 'blocks.4', 'blocks.5', 'blocks.6', 'blocks.7', 'blocks.8', 'blocks.9', 'blocks.10', 'blocks.11']),
    ("timm.deit_tiny_distilled_patch16_224", {'num_classes': 5, 'img_size': 64}, 64, "blocks.11.norm1", "blocks.11", ['blocks.0', 'blocks.1', 'blocks.2', 'blocks.3', 'blocks.4', 'blocks.5', 'blocks.6', 'blocks.7', 'blocks.8', 'blocks.9', 'blocks.10', 'blocks.11']),
    ("timm.swin_tiny_patch4_window7_224", {'num_classes': 5, 'img_size': 64}, 64, "layers.3.blocks.1.norm1", "layers.3", ['layers.0', 'layers.1', 'layers.2', 'layers.3']),
    ("timm.convnext_atto", {'num_classes': 5}, 64, "stages.3", "stages.3", ['stages.0', 'stages.1', 'stages.2', 'stages.3']),
    ("timm.levit_128s", {'num_classes': 5, 'img_size': 128}, 128, "stages.2.blocks.3", "stages.2", ['stages.0', 'stages.1', 'stages.2']),
    ("timm.efficientnet_lite0", {'num_classes': 5}, 64, "bn2", "bn2", ['blocks.0', 'blocks.1', 'blocks.2', 'blocks.4', 'bn2']),
    ("timm.pvt_v2_b0", {'num_classes': 5}, 64, "stages.3.blocks.1.norm1", "stages.3.blocks.1", ['stages.3.blocks.0', 'stages.3.blocks.1']),
    ("timm.mobilevit_xxs", {'num_classes': 5}, 64, "final_conv", "final_conv", ['stages.0', 'stages.1', 'stages.2', 'stages.3', 'final_conv']),
    ("timm.regnetx_002", {'num_classes': 5}, 64, "s4", "s4", ['s1', 's2', 's3', 's4']),
    ("timm.mobilenetv3_small_050", {'num_classes': 5}, 64, "blocks.5", "blocks.5", ['blocks.0', 'blocks.1', 'blocks.2', 'blocks.3', 'blocks.4', 'blocks.5']),
    ("timm.vit_small_patch14_reg4_dinov2", {'num_classes': 5, 'img_size': 56}, 56, "blocks.11.norm1", "blocks.11", ['blocks.0', 'blocks.1', 'blocks.2', 'blocks.3', 'blocks.4', 'blocks.5', 'blocks.6', 'blocks.7', 'blocks.8', 'blocks.9', 'blocks.10', 'blocks.11']),
    ("timm.densenet121", {'num_classes': 5}, 64, "features.norm5", "features.norm5", ['features.denseblock1', 'features.denseblock2', 'features.denseblock3', 'features.norm5']),
    ("tiny_models:LiteEffNet", {}, 64, "_blocks.3", "_blocks.3", ['_blocks.0', '_blocks.1', '_blocks.2', '_blocks.3']),
    ("visctl.demo_models:shapes_classifier", {}, 64, "backbone.layer4", "backbone.layer4", ['backbone.layer1', 'backbone.layer2', 'backbone.layer3', 'backbone.layer4']),]


def _build(arch: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = building.build_model(dict(type=arch, **kwargs)).eval()
    for m in model.modules():  # torchvision's ViT starts with an all-zero head: no gradient, no map
        if isinstance(m, torch.nn.Linear) and not m.weight.any():
            torch.nn.init.normal_(m.weight, std=0.02)
    return model


@pytest.mark.parametrize("arch, kwargs, size, cam_layer, feature_layer, stages", TABLE,
                         ids=[(r.values if hasattr(r, "values") else r)[0] for r in TABLE])
def test_default_layers_of_every_architecture(arch, kwargs, size, cam_layer, feature_layer, stages):
    model = _build(arch, kwargs)
    x = torch.randn(1, 3, size, size)
    pr = probe(model, x)
    chosen = default_layers(model, pr, (size, size))
    assert (chosen.cam, chosen.features, chosen.stages) == (cam_layer, feature_layer, stages)
    for name in {chosen.cam, chosen.features, *chosen.stages}:  # never attention internals, dropouts or the stem
        parts = set(name.split("."))
        assert not parts & set(ATTENTION_INTERNALS) and "drop" not in name and "patch_embed" not in parts
    # cam plans it (its layout is understood) and Grad-CAM draws a map from it
    setup = cams.plan(model, x, None, None, None)
    assert setup.layers == [cam_layer]
    maps, _ = cams.CamEngine(model, Method.gradcam, setup.layers, setup.layouts)(x, [cams.RankTarget(0)])
    assert maps.shape == (1, size, size) and np.isfinite(maps).all()
    # featmap and tsne capture the feature layer and every stage as maps of the image
    layers = {n: find_layer(model, n)[1] for n in dict.fromkeys([feature_layer, *stages])}
    for label, t in featmaps.capture(model, layers, x).items():
        f = featmaps.to_nchw(t, (size, size), label)
        assert f.ndim == 4 and f.shape[2] * f.shape[3] > 1, label


def test_transformers_vit_default_layers():
    transformers = pytest.importorskip("transformers", reason="transformers is not installed here")
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, num_labels=3)
    model = transformers.ViTForImageClassification(cfg).eval()
    pr = probe(model, torch.randn(1, 3, 32, 32))
    chosen = default_layers(model, pr, (32, 32))
    assert chosen.features == "vit.encoder.layer.1"
    assert chosen.cam == "vit.encoder.layer.1.layernorm_before"


def test_pre_activation_batchnorm_is_never_the_default():
    """EfficientNet-PyTorch's head: `_swish(_bn1(_conv_head(x)))` with a shared `_swish`: `_bn1` is before the
    activation (ScoreCAM is all zeros there on real photos), so the last block is taken."""
    from tiny_models import LiteEffNet

    model = LiteEffNet().eval()
    pr = probe(model, torch.randn(1, 3, 64, 64))
    chosen = default_layers(model, pr, (64, 64))
    assert chosen.cam == chosen.features == "_blocks.3"
    # a unique activation module after the norm is taken instead of the block
    from torch import nn

    class WithAct(LiteEffNet):
        def __init__(self):
            super().__init__()
            self._head_act = nn.ReLU6()

        def forward(self, x):
            x = self._swish(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            x = self._head_act(self._bn1(self._conv_head(x)))
            return self._fc(self._avg_pooling(x).flatten(1))

    model = WithAct().eval()
    assert default_layers(model, probe(model, torch.randn(1, 3, 64, 64)), (64, 64)).cam == "_head_act"


def test_featmap_on_a_vit_defaults_to_the_last_block(invoke, image_file, tmp_path):
    result = invoke("featmap", image_file, "timm.deit_tiny_patch16_224", "-o", tmp_path, "--cfg-options",
                    "model.img_size=64", "model.num_classes=3", "visctl.input_size=64")
    assert result.exit_code == 0, result.output
    assert "default layers: blocks.11 " in result.stderr
