"""AdamW parameter groups and the warm-up + poly learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from maskformer import MaskFormerForInstanceSegmentation
from maskformer.engine.distributed import freeze_unused_parameters
from maskformer.engine.train import (
    TrainingArguments,
    build_optimizer,
    build_scheduler,
    lr_factor,
    parameter_groups,
)
from maskformer.presets import get_preset


def _groups(name: str) -> dict[str, dict]:
    model = MaskFormerForInstanceSegmentation(get_preset(name, num_labels=4))
    freeze_unused_parameters(model)
    groups = parameter_groups(model, 1e-3, 0.05, 0.1)
    return {group["name"]: group for group in groups}, model


def test_swin_groups_split_backbone_and_decay():
    groups, model = _groups("tiny-swin")
    assert set(groups) == {"head_decay", "head_no_decay", "backbone_decay", "backbone_no_decay"}
    assert groups["backbone_decay"]["lr"] == pytest.approx(1e-4)
    assert groups["head_decay"]["lr"] == pytest.approx(1e-3)
    assert (
        groups["head_no_decay"]["weight_decay"] == groups["backbone_no_decay"]["weight_decay"] == 0
    )
    assert groups["head_decay"]["weight_decay"] == 0.05
    names = {key: set(group["parameter_names"]) for key, group in groups.items()}
    backbone = "model.pixel_level_module.encoder."
    assert all(n.startswith(backbone) for n in names["backbone_decay"] | names["backbone_no_decay"])
    assert not any(n.startswith(backbone) for n in names["head_decay"] | names["head_no_decay"])
    no_decay = names["head_no_decay"] | names["backbone_no_decay"]
    # Norms (weights and biases), the query embeddings and relative-position tables: no decay.
    assert "model.transformer_module.queries_embedder.weight" in no_decay
    assert "model.pixel_level_module.decoder.fpn.stem.1.weight" in no_decay  # GroupNorm
    assert "model.pixel_level_module.decoder.fpn.stem.1.bias" in no_decay
    assert "model.transformer_module.decoder.layernorm.bias" in no_decay
    tables = [n for n in no_decay if n.endswith("relative_position_bias_table")]
    assert len(tables) == 4
    # Linear weights and (non-norm) biases keep weight decay, as in the recipe.
    decay = names["head_decay"] | names["backbone_decay"]
    assert {"class_predictor.weight", "class_predictor.bias"} <= decay
    # Every trainable parameter is in exactly one group; the unused Swin layernorm in none.
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert sum(len(v) for v in names.values()) == len(trainable)
    assert set().union(*names.values()) == trainable
    assert not any("encoder.model.layernorm" in n for n in trainable)


def test_resnet_batchnorm_is_not_decayed():
    groups, _ = _groups("tiny-resnet")
    no_decay = set(groups["backbone_no_decay"]["parameter_names"])
    assert "model.pixel_level_module.encoder.embedder.embedder.normalization.weight" in no_decay
    decay = set(groups["backbone_decay"]["parameter_names"])
    assert "model.pixel_level_module.encoder.embedder.embedder.convolution.weight" in decay


def test_lr_factor_warmup_then_poly():
    assert lr_factor(0, 100, 10, 0.001, 0.9) == pytest.approx(0.001)
    warm = 0.001 + 0.999 * 5 / 10
    assert lr_factor(5, 100, 10, 0.001, 0.9) == pytest.approx(warm * (1 - 0.05) ** 0.9)
    assert lr_factor(10, 100, 10, 0.001, 0.9) == pytest.approx(0.9**0.9)
    assert lr_factor(50, 100, 0, 0.001, 0.9) == pytest.approx(0.5**0.9)
    assert lr_factor(100, 100, 0, 0.001, 0.9) == 0.0
    assert lr_factor(150, 100, 0, 0.001, 0.9) == 0.0


def test_scheduler_follows_lr_factor_in_every_group(tmp_path):
    args = TrainingArguments(
        output_dir=str(tmp_path),
        learning_rate=2e-3,
        backbone_lr_multiplier=0.5,
        warmup_steps=3,
        warmup_factor=0.1,
        max_steps=8,
        poly_power=0.9,
    )
    model = MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", num_labels=2))
    optimizer = build_optimizer(model, args)
    scheduler = build_scheduler(optimizer, args)
    for step in range(8):
        factor = lr_factor(step, 8, 3, 0.1, 0.9)
        for group in optimizer.param_groups:
            base = 2e-3 * (0.5 if group["name"].startswith("backbone") else 1.0)
            assert math.isclose(group["lr"], base * factor, rel_tol=1e-9), (step, group["name"])
        optimizer.step()
        scheduler.step()


def test_invalid_arguments_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="amp must be one of"):
        TrainingArguments(output_dir=str(tmp_path), amp="fp8")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainingArguments(output_dir=str(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match="data_format must be one of"):
        TrainingArguments(output_dir=str(tmp_path), data_format="voc")
    with pytest.raises(ValueError, match="num_labels=3 disagrees with id2label"):
        TrainingArguments(output_dir=str(tmp_path), num_labels=3, id2label={0: "a"})


def test_optimizer_skips_frozen_parameters():
    model = MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", num_labels=2))
    model.class_predictor.weight.requires_grad_(False)
    optimizer = build_optimizer(model, TrainingArguments())
    ids = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(model.class_predictor.weight) not in ids
    assert id(model.class_predictor.bias) in ids
    assert torch.is_tensor(model.class_predictor.weight)
