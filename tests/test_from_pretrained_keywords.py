"""``from_pretrained`` keywords of transformers 4.34.1 on local folders: subfolder, variant,
use_safetensors, state_dict=, device_map, output_loading_info (against the reference), and NaN /
inf weights (a warning from the library, an error on the command line)."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch

from maskformer.checkpoint import MismatchedSizesError, NonFiniteWeightsWarning
from maskformer.configuration import MaskFormerConfig
from maskformer.engine.loading import load_model
from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation, MaskFormerModel
from maskformer.presets import get_preset


def tiny_model(num_labels: int = 3, seed: int = 0) -> MaskFormerForInstanceSegmentation:
    torch.manual_seed(seed)
    return MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", num_labels=num_labels))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k].to(sa[k].device)) for k in sa)


def test_subfolder_variant_and_use_safetensors(tmp_path):
    plain, fp16_named, bin_only = tiny_model(seed=0), tiny_model(seed=1), tiny_model(seed=2)
    plain.save_pretrained(tmp_path / "sub")
    fp16_named.save_pretrained(tmp_path / "sub", variant="fp16")
    bin_only.save_pretrained(tmp_path / "sub", variant="old", safe_serialization=False)
    names = sorted(os.listdir(tmp_path / "sub"))
    assert names == [
        "config.json",
        "model.fp16.safetensors",
        "model.safetensors",
        "pytorch_model.old.bin",
    ]
    load = MaskFormerForInstanceSegmentation.from_pretrained
    assert same_weights(load(tmp_path, subfolder="sub"), plain)
    assert same_weights(load(tmp_path / "sub", variant="fp16"), fp16_named)
    assert same_weights(load(tmp_path / "sub", variant="old"), bin_only)
    with pytest.raises(FileNotFoundError, match="model.old.safetensors"):
        load(tmp_path / "sub", variant="old", use_safetensors=True)
    # use_safetensors=False skips model.safetensors: without a .bin there is nothing to load
    with pytest.raises(FileNotFoundError, match=r"expected one of pytorch_model.bin, "):
        load(tmp_path / "sub", use_safetensors=False)
    with pytest.raises(FileNotFoundError, match="sub2"):
        load(tmp_path, subfolder="sub2")


def test_variant_matches_the_reference_file_names(hf, tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ours", variant="fp16")
    reference, info = hf.MaskFormerForInstanceSegmentation.from_pretrained(
        tmp_path / "ours", variant="fp16", output_loading_info=True
    )
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    reference.save_pretrained(tmp_path / "ref", variant="fp16", safe_serialization=False)
    assert "pytorch_model.fp16.bin" in os.listdir(tmp_path / "ref")
    loaded = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path / "ref", variant="fp16")
    assert same_weights(loaded, model)


def test_state_dict_keyword(tmp_path):
    source, other = tiny_model(seed=0), tiny_model(seed=1)
    source.save_pretrained(tmp_path)
    loaded = MaskFormerForInstanceSegmentation.from_pretrained(
        tmp_path, state_dict=other.state_dict()
    )
    assert same_weights(loaded, other)  # the dict wins over the folder's weights
    no_folder = MaskFormerForInstanceSegmentation.from_pretrained(
        None, config=other.config, state_dict=other.state_dict()
    )
    assert same_weights(no_folder, other)
    other.config.save_pretrained(tmp_path / "config-only")
    from_paths = MaskFormerForInstanceSegmentation.from_pretrained(
        tmp_path, config=str(tmp_path / "config-only"), state_dict=other.state_dict()
    )
    assert same_weights(from_paths, other)
    with pytest.raises(ValueError, match="needs config= and state_dict="):
        MaskFormerForInstanceSegmentation.from_pretrained(None, config=other.config)
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, state_dict=[1, 2])


def test_device_map(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    load = MaskFormerForInstanceSegmentation.from_pretrained
    for device_map in ("cpu", torch.device("cpu"), {"": "cpu"}):
        model = load(tmp_path, device_map=device_map)
        assert {p.device.type for p in model.parameters()} == {"cpu"}
    for device_map in ("auto", "balanced", {"model": 0, "class_predictor": "cpu"}, -1, 1.5):
        with pytest.raises(ValueError, match=r"device_map=.*not supported.*'cpu', 'cuda'"):
            load(tmp_path, device_map=device_map)
    with pytest.raises(ValueError, match="not a device"):
        load(tmp_path, device_map="gpu7")
    if not torch.cuda.is_available():
        for device_map in ("cuda", 0, "cuda:1"):
            with pytest.raises(ValueError, match="CUDA is not available"):
                load(tmp_path, device_map=device_map)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_map_cuda(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    for device_map in ("cuda", 0, torch.device("cuda:0")):
        model = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, device_map=device_map)
        assert {p.device.type for p in model.parameters()} == {"cuda"}
        assert same_weights(model, tiny_model())


def loading_info_sets(info: dict) -> dict:
    return {
        "missing_keys": set(info["missing_keys"]),
        "unexpected_keys": set(info["unexpected_keys"]),
        "mismatched_keys": {(k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"]},
        "error_msgs": list(info["error_msgs"]),
    }


CASES = {
    # (class that saved the checkpoint, class that loads it, loading keywords)
    "same": ("head", "head", {}),
    "base-into-head": ("base", "head", {}),
    "head-into-base": ("head", "base", {}),
    "new-labels": ("head", "head", {"num_labels": 5, "ignore_mismatched_sizes": True}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_output_loading_info_matches_the_reference(hf, tmp_path, case):
    saved_by, loaded_by, keywords = CASES[case]
    model = tiny_model()
    if saved_by == "base":
        model.model.save_pretrained(tmp_path)
    else:
        model.save_pretrained(tmp_path)
    if case == "same":  # also an entry the model does not have, and one it lacks
        from safetensors.torch import load_file, save_file

        weights = load_file(tmp_path / "model.safetensors")
        weights["extra.weight"] = torch.zeros(2)
        del weights["class_predictor.bias"]
        save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ours_class = MaskFormerModel if loaded_by == "base" else MaskFormerForInstanceSegmentation
    ref_class = hf.MaskFormerModel if loaded_by == "base" else hf.MaskFormerForInstanceSegmentation
    ours, ours_info = ours_class.from_pretrained(tmp_path, output_loading_info=True, **keywords)
    reference, ref_info = ref_class.from_pretrained(tmp_path, output_loading_info=True, **keywords)
    assert set(ours_info) == {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}
    assert loading_info_sets(ours_info) == loading_info_sets(ref_info)
    assert any(loading_info_sets(ours_info).values())  # every case reports some keys
    assert isinstance(ours, ours_class)


def test_output_loading_info_names(tmp_path):
    model = tiny_model()
    model.model.save_pretrained(tmp_path)
    _, info = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, output_loading_info=True)
    assert "class_predictor.weight" in info["missing_keys"]
    _, info = MaskFormerModel.from_pretrained(tmp_path, output_loading_info=True)
    assert info == {
        "missing_keys": [],
        "unexpected_keys": [],
        "mismatched_keys": [],
        "error_msgs": [],
    }


def test_mismatch_without_ignore_is_a_runtime_error_like_the_reference(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="class_predictor.weight.*ignore_mismatched_sizes"):
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, num_labels=5)
    assert issubclass(MismatchedSizesError, ValueError)  # and still the ValueError it was


def poisoned_checkpoint(folder) -> None:
    model = tiny_model()
    with torch.no_grad():
        model.class_predictor.weight[0, 0] = float("nan")
        model.mask_embedder[0][0].bias[1] = float("inf")
    model.save_pretrained(folder)


def test_non_finite_weights_warn_from_the_library(tmp_path):
    poisoned_checkpoint(tmp_path)
    with pytest.warns(NonFiniteWeightsWarning) as caught:
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path)
    (warning,) = caught
    message = str(warning.message)
    assert "class_predictor.weight" in message and "mask_embedder.0.0.bias" in message
    assert str(tmp_path / "model.safetensors") in message
    assert warning.filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean checkpoint warns about nothing
        tiny_model().save_pretrained(tmp_path / "clean")
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path / "clean")


def test_non_finite_weights_are_an_error_on_the_command_line(tmp_path, capsys):
    from maskformer.cli import main

    poisoned_checkpoint(tmp_path / "model")
    with pytest.raises(ValueError, match=r"NaN or inf values \(class_predictor.weight, mask_emb"):
        load_model(tmp_path / "model")
    from PIL import Image

    Image.new("RGB", (40, 32)).save(tmp_path / "photo.png")
    argv = ["predict", "--model", str(tmp_path / "model"), str(tmp_path / "photo.png")]
    code = main([*argv, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "class_predictor.weight" in err and "NaN or inf" in err
    assert "Warning" not in err  # one line: the library warning is not repeated


def test_other_reference_keywords(tmp_path, caplog):
    tiny_model().save_pretrained(tmp_path)
    model = MaskFormerForInstanceSegmentation.from_pretrained(
        tmp_path, low_cpu_mem_usage=True, trust_remote_code=True
    )
    assert "trust_remote_code has no effect" in caplog.text
    assert model.config.name_or_path == str(tmp_path)
    with pytest.raises(ValueError, match="from_tf=True"):
        MaskFormerForInstanceSegmentation.from_pretrained(tmp_path, from_tf=True)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["MaskFormerForInstanceSegmentation"]


def test_save_keywords(tmp_path, caplog):
    model = tiny_model()
    model.save_pretrained(tmp_path / "worker", is_main_process=False)
    assert not (tmp_path / "worker").exists()
    model.save_pretrained(tmp_path / "small", max_shard_size="1KB")
    assert "written as one file" in caplog.text
    assert sorted(os.listdir(tmp_path / "small")) == ["config.json", "model.safetensors"]
    with pytest.raises(TypeError, match="bogus"):
        model.save_pretrained(tmp_path / "x", bogus=1)
    loaded = MaskFormerForInstanceSegmentation.from_pretrained(tmp_path / "small")
    assert same_weights(loaded, model) and isinstance(loaded.config, MaskFormerConfig)
