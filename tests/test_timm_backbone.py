"""timm backbones: config round trip, FPN wiring, ViT pyramid, train step, save / load.

Most tests use a small stand-in ``timm`` module (injected into ``sys.modules``) with timm's
interface: ``create_model(name, features_only=True, out_indices=..., pretrained=...,
in_chans=...)`` returning a module with ``feature_info.channels()`` / ``.reduction()`` and
``output_fmt``. The last tests use the real timm where it imports (it needs a torchvision built
for the installed torch) and skip with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from maskformer import MaskFormerConfig, MaskFormerForInstanceSegmentation
from maskformer.configuration import TimmBackboneConfig
from maskformer.modeling.timm_backbone import TimmBackbone, backbone_config_from_spec
from maskformer.presets import get_preset


# ------------------------------------------------------------------------------- stand-in timm
class _FeatureInfo:
    def __init__(self, channels: list[int], reductions: list[int]) -> None:
        self._channels, self._reductions = channels, reductions

    def channels(self) -> list[int]:
        return list(self._channels)

    def reduction(self) -> list[int]:
        return list(self._reductions)


class _FakeFeatures(nn.Module):
    """Levels of stride-2 convolutions (conv net, channels-last "swin") or one patchify
    convolution repeated at a single stride ("vit")."""

    # name -> (channels per level, stride per level, output format)
    FAMILIES = {
        "fake_convnet": ([8, 16, 24, 32, 40], [2, 4, 8, 16, 32], "NCHW"),
        "fake_swin": ([8, 16, 32, 64], [4, 8, 16, 32], "NHWC"),
        "fake_vit": ([32, 32, 32], [16, 16, 16], "NCHW"),
    }

    def __init__(self, name: str, out_indices, in_chans: int) -> None:
        super().__init__()
        channels, strides, self.output_fmt = self.FAMILIES[name]
        indices = list(range(len(channels))) if out_indices is None else list(out_indices)
        self.indices = indices
        self.feature_info = _FeatureInfo(
            [channels[i] for i in indices], [strides[i] for i in indices]
        )
        if name == "fake_vit":
            self.patchify = nn.Conv2d(in_chans, channels[0], kernel_size=16, stride=16)
            self.blocks = nn.ModuleList(nn.Conv2d(32, 32, 3, padding=1) for _ in channels)
        else:
            widths = [in_chans, *channels]
            first = 2 if name == "fake_convnet" else 4
            self.blocks = nn.ModuleList(
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=first if i == 0 else 2, padding=1)
                for i in range(len(channels))
            )
            self.patchify = None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        if self.patchify is not None:
            x = self.patchify(x)
        for block in self.blocks:
            x = torch.relu(block(x))
            outputs.append(x)
        outputs = [outputs[i] for i in self.indices]
        if self.output_fmt == "NHWC":
            outputs = [o.permute(0, 2, 3, 1) for o in outputs]
        return outputs


@pytest.fixture
def fake_timm(monkeypatch):
    module = types.ModuleType("timm")
    module.calls = []

    def create_model(name, pretrained=False, features_only=False, out_indices=None, in_chans=3):
        module.calls.append({"name": name, "pretrained": pretrained, "out_indices": out_indices})
        assert features_only is True
        if name not in _FakeFeatures.FAMILIES:
            raise RuntimeError(f"Unknown model ({name})")
        return _FakeFeatures(name, out_indices, in_chans)

    module.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", module)
    return module


def _tiny_config(backbone: TimmBackboneConfig) -> MaskFormerConfig:
    # FPN width 32: the smallest GroupNorm(32) allows.
    return get_preset(
        "tiny-resnet",
        backbone_config=backbone,
        id2label={0: "a", 1: "b", 2: "c"},
        fpn_feature_size=32,
        mask_feature_size=32,
    )


def _targets(batch: int, height: int, width: int):
    generator = torch.Generator().manual_seed(1)
    masks = [
        (torch.rand(2, height, width, generator=generator) > 0.5).float() for _ in range(batch)
    ]
    classes = [torch.tensor([0, 2]) for _ in range(batch)]
    return masks, classes


def _train_step_and_round_trip(config: MaskFormerConfig, folder: Path, size=(64, 96)) -> None:
    """One optimiser step changes the backbone; save / load gives identical outputs."""
    torch.manual_seed(0)
    model = MaskFormerForInstanceSegmentation(config)
    pixel_values = torch.randn(2, 3, *size)
    masks, classes = _targets(2, *size)
    backbone = model.model.pixel_level_module.encoder
    before = [p.detach().clone() for p in backbone.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    outputs = model(pixel_values=pixel_values, mask_labels=masks, class_labels=classes)
    assert torch.isfinite(outputs.loss)
    outputs.loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, backbone.parameters()))
    # mask logits at the finest level's resolution (stride 4 for every family here)
    assert outputs.masks_queries_logits.shape[-2:] == (size[0] // 4, size[1] // 4)

    model.eval()
    model.save_pretrained(folder)
    written = json.loads((folder / "config.json").read_text())["backbone_config"]
    assert written["model_type"] == "timm" and written["name"] == config.backbone_config.name
    loaded = MaskFormerForInstanceSegmentation.from_pretrained(folder).eval()
    with torch.no_grad():
        ours, theirs = model(pixel_values=pixel_values), loaded(pixel_values=pixel_values)
    # Same weights, same kernels, same process: the outputs are bit-identical.
    assert torch.equal(ours.class_queries_logits, theirs.class_queries_logits)
    assert torch.equal(ours.masks_queries_logits, theirs.masks_queries_logits)


# ------------------------------------------------------------------------------------- config
def test_config_round_trips_through_json(tmp_path: Path) -> None:
    backbone = TimmBackboneConfig(
        name="convnext_tiny", out_indices=[0, 1, 2, 3], model_kwargs={"drop_path_rate": 0.1}
    )
    config = _tiny_config(backbone)
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())["backbone_config"]
    assert written["model_type"] == "timm" and written["out_indices"] == [0, 1, 2, 3]
    loaded = MaskFormerConfig.from_pretrained(tmp_path)
    assert isinstance(loaded.backbone_config, TimmBackboneConfig)
    assert loaded.backbone_config.to_dict() == backbone.to_dict()
    assert loaded.backbone_config.model_kwargs == {"drop_path_rate": 0.1}
    assert loaded.backbone_config.pretrained is False and loaded.backbone_config.features_only
    from_dict = MaskFormerConfig(backbone_config={"model_type": "timm", "name": "resnet18"})
    assert from_dict.backbone_config.name == "resnet18"


def test_spec_and_bad_configs() -> None:
    config = backbone_config_from_spec("timm:convnext_tiny", pretrained=True)
    assert (config.name, config.pretrained) == ("convnext_tiny", True)
    for spec in ("convnext_tiny", "timm:", "resnet:50"):
        with pytest.raises(ValueError, match="timm:NAME"):
            backbone_config_from_spec(spec)
    with pytest.raises(ValueError, match="features_only must be true"):
        TimmBackboneConfig(name="resnet18", features_only=False)
    with pytest.raises(ValueError, match=r"must not set \['out_indices'\]"):
        TimmBackboneConfig(name="resnet18", model_kwargs={"out_indices": [1]})
    with pytest.raises(ValueError, match="out_indices must be a list of integers"):
        TimmBackboneConfig(name="resnet18", out_indices="1,2")


# ------------------------------------------------------------------------ with the stand-in
def test_convnet_levels_feed_the_fpn(fake_timm) -> None:
    model = MaskFormerForInstanceSegmentation(_tiny_config(TimmBackboneConfig(name="fake_convnet")))
    encoder = model.model.pixel_level_module.encoder
    assert isinstance(encoder, TimmBackbone)
    assert encoder.strides == [4, 8, 16, 32]  # the stride-2 level is left out by default
    assert encoder.channels == [16, 24, 32, 40]
    fpn = model.model.pixel_level_module.decoder.fpn
    assert fpn.stem[0].in_channels == 40
    assert [layer.proj[0].in_channels for layer in fpn.layers] == [32, 24, 16]
    assert model.model.transformer_module.input_projection.in_channels == 40


def test_explicit_out_indices_are_kept(fake_timm) -> None:
    backbone = TimmBackbone(TimmBackboneConfig(name="fake_convnet", out_indices=[2, 3, 4]))
    assert backbone.strides == [8, 16, 32] and backbone.channels == [24, 32, 40]
    assert fake_timm.calls[-1]["out_indices"] == (2, 3, 4)
    single = TimmBackbone(TimmBackboneConfig(name="fake_convnet", out_indices=[4]))
    assert single.strides == [8, 16, 32, 64]  # one level: a simple pyramid around it


def test_channels_last_outputs_become_nchw(fake_timm) -> None:
    backbone = TimmBackbone(TimmBackboneConfig(name="fake_swin"))
    maps = backbone(torch.randn(1, 3, 64, 96)).feature_maps
    assert [tuple(m.shape) for m in maps] == [
        (1, 8, 16, 24),
        (1, 16, 8, 12),
        (1, 32, 4, 6),
        (1, 64, 2, 3),
    ]


def test_vit_single_stride_becomes_a_pyramid(fake_timm) -> None:
    backbone = TimmBackbone(TimmBackboneConfig(name="fake_vit"))
    assert backbone.strides == [4, 8, 16, 32] and backbone.channels == [8, 16, 32, 32]
    maps = backbone(torch.randn(1, 3, 64, 96)).feature_maps
    assert [tuple(m.shape) for m in maps] == [
        (1, 8, 16, 24),
        (1, 16, 8, 12),
        (1, 32, 4, 6),
        (1, 32, 2, 3),
    ]


@pytest.mark.parametrize("name", ["fake_convnet", "fake_swin", "fake_vit"])
def test_train_step_and_save_load(fake_timm, tmp_path: Path, name: str) -> None:
    _train_step_and_round_trip(_tiny_config(TimmBackboneConfig(name=name)), tmp_path)


def test_pretrained_weights_only_when_building_fresh(fake_timm, tmp_path: Path) -> None:
    config = _tiny_config(TimmBackboneConfig(name="fake_convnet", pretrained=True))
    MaskFormerForInstanceSegmentation(config).save_pretrained(tmp_path)
    assert fake_timm.calls[-1]["pretrained"] is True
    MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)
    assert fake_timm.calls[-1]["pretrained"] is False  # the checkpoint's weights win


def test_unknown_model_name(fake_timm) -> None:
    with pytest.raises(ValueError, match="timm cannot build backbone 'nope'"):
        TimmBackbone(TimmBackboneConfig(name="nope"))


def test_missing_timm_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ImportError, match=r"pip install 'maskformer\[timm\]'"):
        TimmBackbone(TimmBackboneConfig(name="resnet18"))


def test_broken_timm_install_is_one_line(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "timm").mkdir()
    (tmp_path / "timm" / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    monkeypatch.delitem(sys.modules, "timm", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="torchvision::nms does not exist.*torchvision built"):
        TimmBackbone(TimmBackboneConfig(name="resnet18"))


# ----------------------------------------------------------------------------- the real timm
def _real_timm():
    try:
        import timm
    except Exception as error:  # not installed, or its torchvision does not fit this torch
        reason = f"real timm unavailable: {type(error).__name__}: {str(error)[:120]}"
        if os.environ.get("MASKFORMER_REQUIRE_TIMM") == "1":  # `make test-timm` must run them
            pytest.fail(reason)
        pytest.skip(reason)
    return timm


REAL_FAMILIES = {
    # convolutional nets (ResNet's stride-2 level is left out by default)
    "resnet18": {},
    "convnext_atto": {},
    # a hierarchical transformer, shrunk; channels-last outputs, any input size
    "swin_tiny_patch4_window7_224": {
        "embed_dim": 24,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 2, 2],
        "strict_img_size": False,
    },
    # a plain ViT, shrunk to two blocks, on images of any size
    "vit_tiny_patch16_224": {"depth": 2, "dynamic_img_size": True},
}


@pytest.mark.parametrize("name", sorted(REAL_FAMILIES))
def test_real_timm_families(name: str, tmp_path: Path) -> None:
    _real_timm()
    out_indices = [0, 1] if name.startswith("vit") else None
    backbone = TimmBackboneConfig(
        name=name, out_indices=out_indices, model_kwargs=REAL_FAMILIES[name]
    )
    _train_step_and_round_trip(_tiny_config(backbone), tmp_path)
