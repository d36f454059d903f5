"""The OpenMMLab internals visctl reads or patches, each checked against the installed packages.

visctl uses their public APIs where they have one; where only a private name carries what a picture needs (a data
preprocessor's normalisation switch, a head's detached score selection, a scheduler's step counter), this file
fails loudly when that name changes, instead of a map or a schedule going quietly wrong. Each test names the
visctl code that relies on it.
"""

from __future__ import annotations

import inspect

import pytest
from mmstack import need, need_mmcv_ops

# the packages' own import-time notices (mmcv's moved MultiScaleDeformableAttention, mmengine's "scheduler.step()
# before optimizer.step()") are theirs, not what these tests look at
pytestmark = [pytest.mark.filterwarnings("ignore::ImportWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]


def test_mmengine_registry_falls_back_to_get_object_from_string():
    """visctl.building._registry_locates_models_only and visctl.schedules patch
    ``mmengine.registry.registry.get_object_from_string``: ``Registry.get`` must still call it for a dotted name
    its tree does not hold."""
    need("mmengine")
    from mmengine.registry import MODELS
    from mmengine.registry import registry as registry_module

    seen = []
    original = registry_module.get_object_from_string

    def spy(name):
        seen.append(name)
        return original(name)

    registry_module.get_object_from_string = spy
    try:
        MODELS.get("torch.nn.Identity")
    finally:
        registry_module.get_object_from_string = original
    assert seen == ["torch.nn.Identity"]


def test_mmengine_param_scheduler_step_counter():
    """visctl.schedules skips a scheduler's idle steps by advancing ``_global_step`` and ``_last_value`` as
    ``_ParamScheduler.step`` does."""
    need("mmengine")
    import torch
    from mmengine.optim.scheduler import LinearParamScheduler
    from mmengine.optim.scheduler.param_scheduler import _ParamScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = LinearParamScheduler(opt, "lr", start_factor=0.5, begin=2, end=6)
    assert isinstance(sched._global_step, int) and isinstance(sched._last_value, list)
    before = sched._global_step
    sched.step()
    assert sched._global_step == before + 1
    assert "_global_step" in inspect.getsource(_ParamScheduler.step)


@pytest.mark.parametrize(("module", "cls"), [("mmdet.models.data_preprocessors", "DetDataPreprocessor"),
                                             ("mmyolo.models.data_preprocessors", "YOLOv5DetDataPreprocessor")])
def test_detection_data_preprocessor_switches(module, cls):
    """visctl.mmdet_adapter reads whether the preprocessor normalises (``_enable_normalize``) and converts BGR to
    RGB (``_channel_conversion``), and its ``pad_size_divisor`` / ``pad_value``: a rename would feed the model
    an unnormalised or channel-swapped image."""
    need(module.split(".")[0])
    import importlib

    pre = getattr(importlib.import_module(module), cls)(mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0], bgr_to_rgb=True,
                                                         pad_size_divisor=32, pad_value=7)
    assert pre._enable_normalize is True and pre._channel_conversion is True
    assert pre.pad_size_divisor == 32 and pre.pad_value == 7
    plain = getattr(importlib.import_module(module), cls)()
    assert plain._enable_normalize is False and plain._channel_conversion is False


def test_mmdet_dense_heads_select_detached_scores_through_misc():
    """visctl.mmdet_adapter keeps the box scores' graph by replacing ``select_single_mlvl`` (whose ``detach``
    defaults to True) in the modules of mmdet's dense heads that imported it."""
    need("mmdet")
    from mmdet.models.dense_heads import base_dense_head
    from mmdet.models.utils import misc

    params = inspect.signature(misc.select_single_mlvl).parameters
    assert list(params)[:3] == ["mlvl_tensors", "batch_id", "detach"] and params["detach"].default is True
    assert base_dense_head.select_single_mlvl is misc.select_single_mlvl
    assert "select_single_mlvl(" in inspect.getsource(base_dense_head.BaseDenseHead.predict_by_feat)


def test_dataset_metainfo_loader():
    """visctl.mmdet_adapter.dataset_meta reads a config's class names as mmdet's dataset does, through the
    dataset class's ``_load_metainfo`` (which honours the config's ``metainfo``)."""
    need("mmdet")
    from mmdet.datasets import CocoDataset

    meta = CocoDataset._load_metainfo(dict(classes=("a", "b")))
    assert tuple(meta["classes"]) == ("a", "b")
    assert len(CocoDataset._load_metainfo(None)["classes"]) == 80


def test_mmpretrain_mask_sources_and_heads():
    """visctl.openmmlab_mim draws masks with the models' own code and reads their settings: MAEViT's
    ``random_masking``, MAEHiViT's ``masking_id``, MAEPretrainHead's ``norm_pix`` and ``patch_size``, the mask
    generators' ``token_count`` / ``mask_count`` / ``mask_ratio`` / ``num_masking_patches``, HOGGenerator's
    ``nbins`` / ``pool``, the patch embedding's ``init_input_size``."""
    need("mmpretrain")
    from mmpretrain.datasets.transforms import BEiTMaskGenerator, SimMIMMaskGenerator
    from mmpretrain.models.heads import MAEPretrainHead
    from mmpretrain.models.selfsup.mae import MAEHiViT, MAEViT
    from mmpretrain.models.selfsup.maskfeat import HOGGenerator

    assert "mask_ratio" in inspect.signature(MAEViT.random_masking).parameters
    assert list(inspect.signature(MAEHiViT.masking_id).parameters)[1:] == ["batch_size", "mask_ratio"]
    from mmengine.registry import init_default_scope

    init_default_scope("mmpretrain")  # its loss is built from mmpretrain's registry (another test may leave mmseg's)
    head = MAEPretrainHead(loss=dict(type="PixelReconstructionLoss", criterion="L2"), norm_pix=True, patch_size=16)
    assert head.norm_pix is True and head.patch_size == 16
    gen = SimMIMMaskGenerator(input_size=192, mask_patch_size=32, model_patch_size=4, mask_ratio=0.6)
    assert (gen.token_count, gen.mask_count, gen.mask_ratio) == (36, 22, 0.6)
    assert BEiTMaskGenerator(input_size=14, num_masking_patches=75).num_masking_patches == 75
    hog = HOGGenerator(nbins=9, pool=8)
    assert (hog.nbins, hog.pool) == (9, 8)
    vit = MAEViT(arch=dict(embed_dims=8, num_layers=1, num_heads=1, feedforward_channels=8), img_size=32,
                 patch_size=16)
    assert tuple(vit.patch_embed.init_input_size) == (32, 32)


def test_mmseg_inference_internals():
    """visctl.segmentation predicts as mmseg's EncoderDecoder does: its ``test_cfg`` mode and ``whole_inference``,
    the data preprocessor's ``test_cfg`` (size_divisor) and ``pad_val``, and the ``img_padding_size`` meta key
    that ``postprocess_result`` crops the padding by."""
    need("mmseg")
    need_mmcv_ops()  # mmseg 1.2.2's models import mmcv._ext
    from mmseg.models.data_preprocessor import SegDataPreProcessor
    from mmseg.models.segmentors import EncoderDecoder
    from mmseg.models.segmentors.base import BaseSegmentor

    assert callable(EncoderDecoder.whole_inference) and callable(EncoderDecoder.slide_inference)
    pre = SegDataPreProcessor(size=None, pad_val=3, test_cfg=dict(size_divisor=32))
    assert pre.pad_val == 3 and pre.test_cfg == dict(size_divisor=32)
    assert "img_padding_size" in inspect.getsource(BaseSegmentor.postprocess_result)
