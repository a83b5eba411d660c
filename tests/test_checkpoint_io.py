"""Checkpoint loading/saving: reference files in and out, safety, key reporting, overrides."""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import zipfile

import pytest
import torch
from conftest import SHARED_REFERENCE, requires_shared_reference

from maskformer import checkpoint
from maskformer.configuration import MaskFormerConfig
from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation, MaskFormerModel

pytestmark = requires_shared_reference


def small_config_dict() -> dict:
    return json.loads((SHARED_REFERENCE / "hf_config_small.json").read_text())


@pytest.fixture(scope="module")
def reference_model(hf):
    torch.manual_seed(0)
    config = hf.MaskFormerConfig.from_dict(small_config_dict())
    model = hf.MaskFormerForInstanceSegmentation(config).eval()
    with torch.no_grad():  # non-trivial norms and bias tables
        generator = torch.Generator().manual_seed(3)
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
    return model


@pytest.fixture(scope="module")
def pixel_values():
    return torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(5))


def logits(model, pixel_values):
    with torch.no_grad():
        output = model(pixel_values)
    return output.class_queries_logits, output.masks_queries_logits


def assert_same_logits(a, b, tolerance=1e-4):
    for x, y in zip(a, b):
        assert x.shape == y.shape
        assert (x - y).abs().max().item() < tolerance


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_reference_checkpoint_loads_without_missing_keys(
    reference_model, pixel_values, tmp_path, safe, caplog
):
    reference_model.save_pretrained(tmp_path, safe_serialization=safe)
    expected_file = "model.safetensors" if safe else "pytorch_model.bin"
    assert (tmp_path / expected_file).is_file()
    with caplog.at_level(logging.WARNING, logger="maskformer"):
        ours = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)
    assert caplog.records == []  # no missing or unexpected keys
    assert not ours.training
    assert_same_logits(logits(reference_model, pixel_values), logits(ours, pixel_values))


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "bin"])
def test_our_checkpoint_loads_into_reference(hf, reference_model, pixel_values, tmp_path, safe):
    ours = MaskFormerForInstanceSegmentation(MaskFormerConfig.from_dict(small_config_dict()))
    ours.load_state_dict(reference_model.state_dict())
    ours.save_pretrained(tmp_path, safe_serialization=safe)
    names = sorted(os.listdir(tmp_path))
    assert names == sorted(["config.json", "model.safetensors" if safe else "pytorch_model.bin"])
    loaded, info = hf.MaskFormerForInstanceSegmentation.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert_same_logits(logits(reference_model, pixel_values), logits(loaded.eval(), pixel_values))


def test_sharded_reference_checkpoints_load(reference_model, pixel_values, tmp_path):
    for safe in (True, False):
        directory = tmp_path / str(safe)
        reference_model.save_pretrained(directory, safe_serialization=safe, max_shard_size="2MB")
        assert any(name.endswith(".index.json") for name in os.listdir(directory))
        ours = MaskFormerForInstanceSegmentation.from_pretrained(directory)
        assert_same_logits(logits(reference_model, pixel_values), logits(ours, pixel_values))


def test_saving_over_other_format_leaves_one_weights_file(reference_model, tmp_path):
    ours = MaskFormerForInstanceSegmentation(MaskFormerConfig.from_dict(small_config_dict()))
    ours.save_pretrained(tmp_path, safe_serialization=True)
    ours.save_pretrained(tmp_path, safe_serialization=False)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "pytorch_model.bin"]
    ours.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


def test_base_and_head_prefixes(reference_model, pixel_values, tmp_path):
    reference_model.save_pretrained(tmp_path / "head")
    base = MaskFormerModel.from_pretrained(tmp_path / "head")
    with torch.no_grad():
        expected = reference_model.model(pixel_values).transformer_decoder_last_hidden_state
        assert (
            base(pixel_values).transformer_decoder_last_hidden_state - expected
        ).abs().max() < 1e-5
    base.save_pretrained(tmp_path / "base")
    head = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path / "base")
    assert torch.equal(
        head.model.transformer_module.queries_embedder.weight,
        reference_model.model.transformer_module.queries_embedder.weight,
    )


def test_missing_final_swin_layernorm_is_silent_but_other_missing_keys_warn(
    reference_model, tmp_path, caplog
):
    from safetensors.torch import save_file

    state_dict = {k: v.contiguous() for k, v in reference_model.state_dict().items()}
    state_dict.pop("model.pixel_level_module.encoder.model.layernorm.weight")
    state_dict.pop("model.pixel_level_module.encoder.model.layernorm.bias")
    reference_model.config.save_pretrained(tmp_path)
    save_file(state_dict, tmp_path / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="maskformer"):
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)
    assert caplog.records == []

    state_dict.pop("class_predictor.bias")
    state_dict["something.unexpected"] = torch.zeros(2)
    save_file(state_dict, tmp_path / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="maskformer"):
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)
    text = caplog.text
    assert "class_predictor.bias" in text and "something.unexpected" in text
    assert "layernorm" not in text


def test_mismatched_sizes_raise_or_reinitialise(reference_model, tmp_path, caplog):
    reference_model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="class_predictor.weight.*ignore_mismatched_sizes"):
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, num_labels=3)
    with caplog.at_level(logging.WARNING, logger="maskformer"):
        model = MaskFormerForInstanceSegmentation.from_pretrained(
            tmp_path, num_labels=3, ignore_mismatched_sizes=True
        )
    assert "re-initialised" in caplog.text and "class_predictor.weight" in caplog.text
    assert model.class_predictor.weight.shape == (4, 64)
    assert model.criterion.empty_weight.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.1])
    assert model.config.num_labels == 3
    # everything else still comes from the checkpoint
    reference_state = reference_model.state_dict()
    assert torch.equal(
        model.mask_embedder[0][0].weight, reference_state["mask_embedder.0.0.weight"]
    )


def test_label_overrides_and_config_argument(reference_model, tmp_path):
    reference_model.save_pretrained(tmp_path)
    id2label = {i: f"class {i}" for i in range(10)}
    model = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, id2label=id2label)
    assert model.config.id2label == id2label and model.config.label2id["class 3"] == 3
    config = MaskFormerConfig.from_dict(small_config_dict())
    before = config.to_dict()
    model = MaskFormerForInstanceSegmentation.from_pretrained(
        tmp_path, config=config, output_hidden_states=True
    )
    assert model.config.output_hidden_states is True
    assert config.to_dict() == before  # the caller's config object is untouched
    with pytest.raises(TypeError, match="not_a_field"):
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, not_a_field=1)


def test_torch_dtype(reference_model, pixel_values, tmp_path):
    reference_model.save_pretrained(tmp_path)
    model = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    with torch.no_grad():
        output = model(pixel_values)
    assert output.masks_queries_logits.dtype == torch.bfloat16
    auto = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, torch_dtype="auto")
    assert auto.dtype == torch.float32
    with pytest.raises(ValueError, match="torch_dtype"):
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, torch_dtype="float77")


class _Payload:
    """Pickles to a call of os.system: loading it unsafely would create ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_in_bin_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    config = MaskFormerConfig.from_dict(small_config_dict())
    config.save_pretrained(tmp_path)
    torch.save(
        {"weight": torch.zeros(1), "payload": _Payload(str(marker))}, tmp_path / "pytorch_model.bin"
    )
    # sanity: the file really does carry the payload (unpickling it unsafely would run it)
    with zipfile.ZipFile(tmp_path / "pytorch_model.bin") as archive:
        data = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        assert b"system" in archive.read(data)
    with pytest.raises(ValueError, match="refusing to load"):
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    MaskFormerConfig.from_dict(small_config_dict()).save_pretrained(tmp_path)
    with open(tmp_path / "pytorch_model.bin", "wb") as handle:
        pickle.dump(_Payload(str(marker)), handle)
    with pytest.raises(ValueError, match="refusing to load"):
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)
    assert not marker.exists()


def test_save_is_atomic(tmp_path, monkeypatch):
    model = MaskFormerForInstanceSegmentation(MaskFormerConfig.from_dict(small_config_dict()))
    model.save_pretrained(tmp_path)
    original = (tmp_path / "model.safetensors").read_bytes()

    real_replace = os.replace

    def failing_replace(source, destination):  # the new file is complete, the rename fails
        if str(destination).endswith("model.safetensors"):
            raise OSError(28, "No space left on device")
        return real_replace(source, destination)

    monkeypatch.setattr(os, "replace", failing_replace)
    with torch.no_grad():
        model.class_predictor.bias.add_(1.0)
    with pytest.raises(OSError, match="model.safetensors.*No space left"):
        model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


def test_missing_directory_and_offline_hub_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MaskFormerForInstanceSegmentation.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="no weights"):
        MaskFormerConfig.from_dict(small_config_dict()).save_pretrained(tmp_path)
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)

    import huggingface_hub

    def offline(*args, **kwargs):
        raise ConnectionError("offline mode is enabled\nsecond line")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(
        OSError, match=r"swin-base-ade.*could not be fetched.*cannot be reached"
    ) as info:
        MaskFormerForInstanceSegmentation.from_pretrained("facebook/maskformer-swin-base-ade")
    assert "\n" not in str(info.value)


def test_load_state_dict_strict_round_trip_keeps_cached_attention_bias_fresh(tmp_path):
    """Loading new weights after a forward pass must change the outputs (no stale caches)."""
    config = MaskFormerConfig.from_dict(small_config_dict())
    model = MaskFormerForInstanceSegmentation(config).eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    first = logits(model, pixel_values)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in other.named_parameters():
            if "relative_position_bias_table" in name:
                parameter.normal_()
    model.load_state_dict(other.state_dict())
    second = logits(model, pixel_values)
    assert_same_logits(second, logits(other, pixel_values), tolerance=1e-6)
    assert (first[1] - second[1]).abs().max() > 1e-4


def test_checkpoint_helpers_reject_non_state_dicts(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.bin")
    with pytest.raises(ValueError, match="state dict"):
        checkpoint.load_state_dict(tmp_path / "list.bin")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors"):
        checkpoint.load_state_dict(tmp_path / "bad.safetensors")
