"""Processor configs: hub keywords, push_to_hub, JSON files, the deprecation helper."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import numpy as np
import pytest
import torch

from maskformer.processing import MaskFormerFeatureExtractor, MaskFormerImageProcessor
from maskformer.processing.deprecation import MISSING, deprecated


@pytest.fixture
def online(monkeypatch):
    """The hub treated as reachable (the fakes below stand in for it)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def test_from_pretrained_passes_the_hub_keywords(tmp_path, monkeypatch, online):
    MaskFormerImageProcessor(size_divisor=16, ignore_index=255).save_pretrained(tmp_path)
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        return str(tmp_path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    processor = MaskFormerImageProcessor.from_pretrained(
        "owner/model",
        revision="v2",
        cache_dir=str(tmp_path / "cache"),
        use_auth_token="secret",
        subfolder="processor",
        local_files_only=True,
        force_download=True,
        do_resize=False,  # not a hub keyword: overrides the stored value
    )
    ((repo_id, filename, kwargs),) = calls
    assert (repo_id, filename) == ("owner/model", "preprocessor_config.json")
    expected = {
        "revision": "v2",
        "cache_dir": str(tmp_path / "cache"),
        "token": "secret",
        "subfolder": "processor",
        "local_files_only": True,
        "force_download": True,
    }
    assert {key: kwargs[key] for key in expected} == expected
    assert "use_auth_token" not in kwargs and "do_resize" not in kwargs
    assert processor.size_divisor == 16 and processor.ignore_index == 255
    assert processor.do_resize is False

    calls.clear()
    MaskFormerImageProcessor.from_pretrained("owner/model", token="other")
    assert calls[0][2]["token"] == "other"


def test_from_pretrained_hub_failure_is_one_oserror_naming_the_id(monkeypatch, online):
    def unreachable(repo_id, filename, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(OSError, match="owner/model"):
        MaskFormerImageProcessor.from_pretrained("owner/model")


def test_local_subfolder_and_json_file(tmp_path):
    original = MaskFormerImageProcessor(do_reduce_labels=True, ignore_index=255, num_labels=150)
    original.save_pretrained(tmp_path / "processor")
    loaded = MaskFormerImageProcessor.from_pretrained(tmp_path, subfolder="processor")
    assert loaded.to_dict() == original.to_dict() and loaded.num_labels == 150
    json_file = tmp_path / "config.json"
    original.to_json_file(json_file)
    assert json.loads(json_file.read_text()) == json.loads(original.to_json_string())
    assert MaskFormerImageProcessor.from_json_file(json_file).to_dict() == original.to_dict()
    assert MaskFormerImageProcessor.from_pretrained(json_file).to_dict() == original.to_dict()
    assert repr(original).startswith("MaskFormerImageProcessor {")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        MaskFormerImageProcessor.from_json_file(tmp_path / "broken.json")


def test_to_dict_matches_the_reference(hf):
    ours = MaskFormerImageProcessor(size=512, size_divisor=0, image_mean=[0.5] * 3).to_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hf.MaskFormerImageProcessor(
            size=512, size_divisor=0, image_mean=[0.5] * 3
        ).to_dict()
    theirs.pop("_processor_class", None)
    assert json.loads(json.dumps(ours)) == json.loads(json.dumps(theirs, default=int))


def test_save_pretrained_pushes_to_the_hub(tmp_path, monkeypatch, online):
    uploads = []

    class FakeApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            return type("Repo", (), {"repo_id": repo_id})()

        def upload_folder(self, repo_id, folder_path, commit_message, revision, create_pr):
            files = {p.name: p.read_text() for p in Path(folder_path).iterdir()}
            uploads.append((repo_id, self.token, commit_message, files))
            return "https://hub/commit"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    processor = MaskFormerImageProcessor(ignore_index=255)
    written = processor.save_pretrained(
        tmp_path / "my-processor", push_to_hub=True, token="secret", commit_message="add"
    )
    assert written == [str(tmp_path / "my-processor" / "preprocessor_config.json")]
    ((repo_id, token, message, files),) = uploads
    assert (repo_id, token, message) == ("my-processor", "secret", "add")
    assert json.loads(files["preprocessor_config.json"]) == processor.to_dict()
    processor.save_pretrained(tmp_path / "other", push_to_hub=True, repo_id="owner/name")
    assert uploads[-1][0] == "owner/name"
    with pytest.raises(TypeError, match="save_pretrained"):
        processor.save_pretrained(tmp_path, push_to_hbu=True)
    file_in_the_way = tmp_path / "file"
    file_in_the_way.write_text("")
    with pytest.raises(ValueError, match="save_directory"):
        processor.save_pretrained(file_in_the_way)


def test_deprecation_helper():
    kwargs = {"old": 3, "kept": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert deprecated("absent", "use `new`", kwargs) is MISSING
    with pytest.warns(FutureWarning, match=r"`old` is deprecated; use `new`") as record:
        assert deprecated("old", "use `new`", kwargs, stacklevel=2) == 3
    assert kwargs == {"kept": 1}
    assert record[0].filename == __file__  # stacklevel 2: this caller
    with pytest.warns(FutureWarning, match="`thing` is deprecated; do this"):
        assert deprecated("thing", "do this") is None


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: MaskFormerImageProcessor(size_divisibility=16), "size_divisibility"),
        (lambda: MaskFormerImageProcessor(max_size=1000), "max_size"),
        (lambda: MaskFormerImageProcessor(reduce_labels=True), "reduce_labels"),
        (lambda: MaskFormerFeatureExtractor(), "MaskFormerFeatureExtractor"),
    ],
)
def test_deprecated_constructor_keywords_warn_at_the_caller(call, name):
    with pytest.warns(FutureWarning, match=f"`{name}` is deprecated") as record:
        call()
    assert any(w.filename == __file__ for w in record)


def test_deprecated_keywords_still_work():
    image = np.zeros((20, 30, 3), np.uint8)
    label_map = np.array([[0, 1, 2]] * 20, np.uint8).repeat(10, axis=1)
    with pytest.warns(FutureWarning, match="size_divisibility"):
        assert MaskFormerImageProcessor(size_divisibility=7).size_divisor == 7
    with pytest.warns(FutureWarning, match="max_size"):
        assert MaskFormerImageProcessor(size=40, max_size=50).size["longest_edge"] == 50
    processor = MaskFormerImageProcessor(size={"shortest_edge": 20, "longest_edge": 60})
    with pytest.warns(FutureWarning, match="pad_and_return_pixel_mask"):
        processor(image, pad_and_return_pixel_mask=True)
    with pytest.warns(FutureWarning, match="size_divisibility"):
        out = processor(image, size_divisibility=16, return_tensors="np")
    assert out["pixel_values"].shape[-2:] == (32, 32)
    with pytest.warns(FutureWarning, match="max_size"):
        out = processor(image, size=10, max_size=12, size_divisor=0, return_tensors="np")
    # 20 x 30 with shortest edge 10 would be 10 x 15; the longest edge 12 makes it 8 x 12.
    assert out["pixel_values"].shape[-2:] == (8, 12)
    with pytest.warns(FutureWarning, match="reduce_labels"):
        out = processor(image, label_map, reduce_labels=True, ignore_index=255)
    assert out["class_labels"][0].tolist() == [0, 1]
    with pytest.warns(FutureWarning, match="max_size"):
        assert processor.resize(image, size=10, max_size=12, size_divisor=0).shape == (8, 12, 3)
    outputs = SimpleNamespace(
        class_queries_logits=torch.zeros(1, 2, 4), masks_queries_logits=torch.zeros(1, 2, 5, 6)
    )
    with pytest.warns(FutureWarning, match="post_process_segmentation"):
        assert processor.post_process_segmentation(outputs).shape == (1, 3, 5, 6)
