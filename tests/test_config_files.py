"""Config files and methods: label maps, checks that name the file and field, the reference's
config methods (update, update_from_string, get_config_dict, return_unused_kwargs, subfolder)."""

from __future__ import annotations

import json

import pytest

from maskformer.configuration import MaskFormerConfig, SwinConfig


def write_config(folder, payload) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = payload if isinstance(payload, str) else json.dumps(payload)
    (folder / "config.json").write_text(text)


def test_label2id_is_kept_as_given(hf):
    # transformers' own config tests pass these common kwargs and read them back unchanged
    kwargs = {"id2label": {0: "label"}, "label2id": {"label": "0"}}
    ours = MaskFormerConfig(**kwargs)
    assert ours.label2id == {"label": "0"} == hf.MaskFormerConfig(**kwargs).label2id
    assert ours.id2label == {0: "label"}
    reloaded = MaskFormerConfig.from_dict(json.loads(ours.to_json_string()))
    assert reloaded.label2id == {"label": "0"}


@pytest.mark.parametrize(
    ("id2label", "shown"),
    [({"1": "a", "2": "b"}, r"unexpected ids \[2\], missing ids \[0\]"), ({"x": "a"}, "'x'")],
)
def test_id2label_ids_must_be_zero_to_n_minus_one(tmp_path, id2label, shown):
    with pytest.raises(ValueError, match=shown):
        MaskFormerConfig(id2label=id2label)
    write_config(tmp_path, {"model_type": "maskformer", "id2label": id2label})
    with pytest.raises(ValueError, match=rf"{tmp_path / 'config.json'}: id2label.*{shown}"):
        MaskFormerConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="id2label"):
        MaskFormerConfig.from_dict({}, id2label=id2label)
    # an unordered but complete map is fine, and comes back in class order
    assert list(MaskFormerConfig(id2label={"1": "b", "0": "a"}).id2label) == [0, 1]


def test_malformed_json_names_the_file_and_line(tmp_path):
    write_config(tmp_path, '{\n  "fpn_feature_size": 64,\n  "mask_feature_size": \n}')
    path = tmp_path / "config.json"
    for load in (MaskFormerConfig.from_pretrained, MaskFormerConfig.from_json_file):
        target = tmp_path if load is MaskFormerConfig.from_pretrained else path
        with pytest.raises(ValueError, match=rf"^{path}: not valid JSON \(line 4, column 1: "):
            load(target)
    write_config(tmp_path, "[1, 2]")
    with pytest.raises(ValueError, match=rf"{path}: expected a JSON object, got list"):
        MaskFormerConfig.from_pretrained(tmp_path)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(ValueError, match=rf"{path}: not UTF-8"):
        MaskFormerConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"fpn_feature_size": "64"}, "'fpn_feature_size' of MaskFormerConfig must be int, got str"),
        ({"mask_weight": True}, "'mask_weight' of MaskFormerConfig must be float or int, got bool"),
        (
            {"decoder_config": {"model_type": "detr", "num_queries": 2.5}},
            "'num_queries' of DetrConfig must be int, got float",
        ),
        (
            {"backbone_config": {"model_type": "swin", "depths": 4}},
            "'depths' of SwinConfig must be list or tuple, got int",
        ),
        ({"backbone_config": 7}, "backbone_config must be a dict or a config object"),
    ],
)
def test_wrong_field_types_name_the_file_and_field(tmp_path, payload, message):
    write_config(tmp_path, payload)
    with pytest.raises(TypeError, match=rf"^{tmp_path / 'config.json'}: .*{message}"):
        MaskFormerConfig.from_pretrained(tmp_path)


def test_lenient_where_the_reference_files_are():
    # ints for floats, None where the argument allows it, unknown keys kept
    config = MaskFormerConfig.from_dict(
        {"mask_weight": 20, "output_auxiliary_logits": None, "brand_new_key": [1]}
    )
    assert config.mask_weight == 20 and config.brand_new_key == [1]


def test_from_pretrained_subfolder_json_file_and_unused_kwargs(tmp_path):
    MaskFormerConfig(num_labels=4, mask_weight=3.0).save_pretrained(tmp_path / "sub")
    config = MaskFormerConfig.from_pretrained(tmp_path, subfolder="sub")
    assert config.num_labels == 4 and config.mask_weight == 3.0
    same = MaskFormerConfig.from_pretrained(tmp_path / "sub" / "config.json")
    assert same == config
    config, unused = MaskFormerConfig.from_pretrained(
        tmp_path / "sub", dice_weight=2.0, not_a_field=1, return_unused_kwargs=True
    )
    assert config.dice_weight == 2.0 and unused == {"not_a_field": 1}
    config_dict, rest = MaskFormerConfig.get_config_dict(tmp_path, subfolder="sub", foo=1)
    assert config_dict["mask_weight"] == 3.0 and rest == {"foo": 1}
    with pytest.raises(FileNotFoundError, match="sub2"):
        MaskFormerConfig.from_pretrained(tmp_path, subfolder="sub2")
    with pytest.raises(ValueError, match="num_labels=3 disagrees"):
        MaskFormerConfig.from_pretrained(tmp_path / "sub", num_labels=3, id2label={0: "a"})


def test_update_methods_and_nested_override():
    config = MaskFormerConfig()
    config.update({"mask_weight": 5.0, "hidden_size": 128})
    assert config.mask_weight == 5.0 and config.mask_feature_size == 128
    config.update_from_string("dice_weight=2.5,use_auxiliary_loss=true,fpn_feature_size=64")
    assert config.dice_weight == 2.5 and config.use_auxiliary_loss is True
    assert config.fpn_feature_size == 64
    with pytest.raises(ValueError, match="not_there"):
        config.update_from_string("not_there=1")
    with pytest.raises(ValueError, match="use_auxiliary_loss='maybe'"):
        config.update_from_string("use_auxiliary_loss=maybe")
    overridden = MaskFormerConfig.from_dict({}, backbone_config={"embed_dim": 32})
    assert isinstance(overridden.backbone_config, SwinConfig)
    assert overridden.backbone_config.embed_dim == 32


def test_num_labels_setter_and_use_return_dict_follow_the_reference(hf):
    for config in (
        MaskFormerConfig(id2label={0: "a", 1: "b", 2: "c"}),
        hf.MaskFormerConfig(id2label={0: "a", 1: "b", 2: "c"}),
    ):
        config.num_labels = 3  # same count: the names stay (reference semantics)
        assert config.id2label[2] == "c"
        config.num_labels = 4
        assert config.id2label == {i: f"LABEL_{i}" for i in range(4)}
        assert config.label2id == {f"LABEL_{i}": i for i in range(4)}
        config.torchscript = True
        assert config.use_return_dict is False


def test_to_json_file_is_atomic_and_save_rejects_unknown_keywords(tmp_path, monkeypatch):
    import os

    config = MaskFormerConfig(num_labels=3)
    config.to_json_file(tmp_path / "c.json", use_diff=False)
    assert MaskFormerConfig.from_json_file(tmp_path / "c.json") == config
    before = (tmp_path / "c.json").read_text()

    def failing_replace(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="c.json"):
        MaskFormerConfig(num_labels=5).to_json_file(tmp_path / "c.json")
    monkeypatch.undo()
    assert (tmp_path / "c.json").read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["c.json"]
    with pytest.raises(TypeError, match="max_shard_size"):
        config.save_pretrained(tmp_path / "x", max_shard_size="1GB")
