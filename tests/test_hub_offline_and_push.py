"""Hub ids without a network: keywords reach huggingface_hub, offline mode fails fast without
opening a socket, and push_to_hub uploads what save_pretrained writes (huggingface_hub stubbed)."""

from __future__ import annotations

import socket
import time
import types
from pathlib import Path

import pytest
import torch

from maskformer.configuration import MaskFormerConfig
from maskformer.engine.loading import ModelLoadError, load_model
from maskformer.modeling.maskformer import MaskFormerForInstanceSegmentation
from maskformer.presets import get_preset
from maskformer.utils.hub import HUB_TIMEOUT_S, PushToHubMixin

REPO = "someone/maskformer-test"


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """``hf_hub_download`` served from ``remote/`` (what the repository holds); calls recorded."""
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError

    remote = tmp_path / "remote"
    calls: list[dict] = []

    def download(repo_id, filename, **kwargs):
        calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
        path = remote / (kwargs.get("subfolder") or "") / filename
        if not path.is_file():
            raise EntryNotFoundError(f"404: {filename} is not in {repo_id}")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return types.SimpleNamespace(remote=remote, calls=calls)


@pytest.fixture
def no_sockets(monkeypatch):
    """Every attempt to connect a socket is recorded and fails."""
    attempts: list = []

    def connect(self, address):
        attempts.append(address)
        raise OSError(f"test: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(
        socket, "create_connection", lambda address, *a, **k: connect(None, address)
    )
    return attempts


def tiny_model(num_labels: int = 3) -> MaskFormerForInstanceSegmentation:
    return MaskFormerForInstanceSegmentation(get_preset("tiny-resnet", num_labels=num_labels))


def test_config_hub_keywords_reach_huggingface_hub(fake_hub, tmp_path):
    MaskFormerConfig(num_labels=7).save_pretrained(fake_hub.remote / "sub")
    config = MaskFormerConfig.from_pretrained(
        REPO, revision="v1.0", cache_dir=tmp_path / "cache", token="tok", subfolder="sub",
        force_download=True,
    )  # fmt: skip
    assert config.num_labels == 7
    (call,) = fake_hub.calls
    assert call["repo_id"] == REPO and call["filename"] == "config.json"
    assert call["revision"] == "v1.0" and call["token"] == "tok" and call["subfolder"] == "sub"
    assert call["cache_dir"] == tmp_path / "cache" and call["force_download"] is True
    assert call["etag_timeout"] == HUB_TIMEOUT_S
    MaskFormerConfig.from_pretrained(REPO, use_auth_token="old-style", subfolder="sub")
    assert fake_hub.calls[-1]["token"] == "old-style"
    assert "revision" not in fake_hub.calls[-1]  # the hub's default ("main")


def test_model_hub_keywords_variant_and_missing_weights(fake_hub):
    model = tiny_model()
    model.save_pretrained(fake_hub.remote / "sub", variant="fp16")
    loaded = MaskFormerForInstanceSegmentation.from_pretrained(
        REPO, subfolder="sub", variant="fp16", revision="abc123", token="tok"
    )
    assert torch.equal(loaded.class_predictor.weight, model.class_predictor.weight)
    assert [c["filename"] for c in fake_hub.calls] == ["config.json", "model.fp16.safetensors"]
    for call in fake_hub.calls:
        assert (call["revision"], call["token"], call["subfolder"]) == ("abc123", "tok", "sub")
    with pytest.raises(FileNotFoundError, match=rf"{REPO} \(subfolder 'sub'\).*model.int8.safe"):
        MaskFormerForInstanceSegmentation.from_pretrained(REPO, subfolder="sub", variant="int8")
    model.save_pretrained(fake_hub.remote / "sub")  # now there are weights without a variant
    with pytest.raises(FileNotFoundError, match="pass variant=None"):
        MaskFormerForInstanceSegmentation.from_pretrained(REPO, subfolder="sub", variant="int8")


def check_fails_fast(load, attempts, *match, error=OSError):
    start = time.perf_counter()
    with pytest.raises(error) as info:
        load()
    elapsed = time.perf_counter() - start
    for text in match:
        assert text in str(info.value)
    assert "\n" not in str(info.value)
    assert attempts == []  # no connection was even tried
    assert elapsed < 3.0  # a cache lookup, not a network timeout (HUB_TIMEOUT_S is 10 s)


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_offline_mode_fails_fast_without_a_socket(tmp_path, monkeypatch, no_sockets, variable):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv(variable, "1")
    cache = tmp_path / "empty-cache"
    check_fails_fast(
        lambda: MaskFormerConfig.from_pretrained(REPO, cache_dir=cache), no_sockets, REPO, "offline"
    )
    check_fails_fast(
        lambda: MaskFormerForInstanceSegmentation.from_pretrained(REPO, cache_dir=cache),
        no_sockets,
        REPO,
        "offline",
    )
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    check_fails_fast(lambda: load_model(REPO), no_sockets, REPO, "offline", error=ModelLoadError)
    check_fails_fast(lambda: MaskFormerConfig().push_to_hub(REPO), no_sockets, REPO, "offline")
    check_fails_fast(
        lambda: tiny_model().save_pretrained(tmp_path / "m", push_to_hub=True, repo_id=REPO),
        no_sockets,
        REPO,
        "offline",
    )


def test_local_files_only_keyword_is_offline_too(tmp_path, monkeypatch, no_sockets):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    check_fails_fast(
        lambda: MaskFormerForInstanceSegmentation.from_pretrained(
            REPO, cache_dir=tmp_path, local_files_only=True
        ),
        no_sockets,
        REPO,
    )


def test_load_model_names_the_id_when_the_hub_fails(fake_hub):
    with pytest.raises(ModelLoadError, match=rf"^'{REPO}' is not a local path.*config.json"):
        load_model(REPO)


# ---------------------------------------------------------------------- push_to_hub


@pytest.fixture
def recorded_push(monkeypatch):
    """HfApi.create_repo / upload_folder stubs recording the arguments and the uploaded files."""
    import huggingface_hub

    calls: dict = {}

    def create_repo(self, repo_id, private=None, exist_ok=False, **kwargs):
        calls["create"] = {"repo_id": repo_id, "private": private, "token": self.token}
        return types.SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
        folder = Path(folder_path)
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")}
        calls["upload"] = {
            "repo_id": repo_id,
            "files": files,
            "commit_message": commit_message,
            "token": self.token,
            **kwargs,
        }
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return calls


def test_config_push_to_hub_uploads_config_json(recorded_push):
    config = MaskFormerConfig(num_labels=4, mask_weight=3.0)
    url = config.push_to_hub(REPO, commit_message="add config", private=True, token="tok")
    assert url == f"https://huggingface.co/{REPO}/commit/0"
    assert recorded_push["create"] == {"repo_id": REPO, "private": True, "token": "tok"}
    upload = recorded_push["upload"]
    assert upload["commit_message"] == "add config" and upload["token"] == "tok"
    assert upload["files"] == {"config.json": config.to_json_string().encode()}


def test_config_save_pretrained_push_to_hub(recorded_push, tmp_path):
    config = MaskFormerConfig(num_labels=2)
    config.save_pretrained(tmp_path / "my-config", push_to_hub=True, token="t2")
    assert (tmp_path / "my-config" / "config.json").is_file()
    upload = recorded_push["upload"]
    assert upload["repo_id"] == "my-config" and upload["token"] == "t2"
    assert upload["commit_message"] == "Upload MaskFormerConfig"
    assert list(upload["files"]) == ["config.json"]


def test_model_save_pretrained_push_to_hub_uploads_config_and_weights(recorded_push, tmp_path):
    from safetensors.torch import load

    model = tiny_model()
    model.save_pretrained(
        tmp_path / "m", push_to_hub=True, repo_id=REPO, commit_message="weights", private=False
    )
    upload = recorded_push["upload"]
    assert sorted(upload["files"]) == ["config.json", "model.safetensors"]
    assert upload["commit_message"] == "weights" and recorded_push["create"]["private"] is False
    weights = load(upload["files"]["model.safetensors"])
    assert torch.equal(weights["class_predictor.weight"], model.class_predictor.weight)


def test_push_to_hub_mixin_on_any_class(recorded_push):
    class Tiny(PushToHubMixin):
        def save_pretrained(self, folder, **kwargs):
            (Path(folder) / "tiny.json").write_text(repr(sorted(kwargs.items())))

    Tiny().push_to_hub(REPO, revision="dev", create_pr=True, flavour="x", use_auth_token="old")
    upload = recorded_push["upload"]
    assert upload["files"] == {"tiny.json": b"[('flavour', 'x')]"}  # save keywords passed on
    assert upload["revision"] == "dev" and upload["create_pr"] is True
    assert upload["commit_message"] == "Upload Tiny" and upload["token"] == "old"


def test_push_failure_is_one_oserror_naming_the_repo(recorded_push, monkeypatch):
    import huggingface_hub

    def refuse(self, **kwargs):
        raise PermissionError("403 Forbidden\nmore detail")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)
    with pytest.raises(OSError, match=rf"^'{REPO}'.*403 Forbidden") as info:
        MaskFormerConfig().push_to_hub(REPO)
    assert "\n" not in str(info.value)


def test_model_push_to_hub_uploads_what_save_pretrained_writes(recorded_push):
    model = tiny_model()
    model.push_to_hub(REPO, commit_message="model", private=True, token="tok")
    upload = recorded_push["upload"]
    assert sorted(upload["files"]) == ["config.json", "model.safetensors"]
    assert upload["commit_message"] == "model" and upload["token"] == "tok"
    assert recorded_push["create"] == {"repo_id": REPO, "private": True, "token": "tok"}
