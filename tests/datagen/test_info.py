"""`datagen.info`: the manifest's facts, equal to what `read` finds, without decoding a shard."""

from __future__ import annotations

import json
import shutil

import pytest

import datagen
from datagen import _storage


@pytest.fixture
def no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a shard was decoded")

    monkeypatch.setattr(_storage, "decode_shard", refuse)


@pytest.mark.parametrize("fixture", ["small_npz", "small_tfrecord"])
def test_info_agrees_with_read(request, fixture):
    directory = request.getfixturevalue(fixture)
    data = datagen.read(directory)
    facts = datagen.info(directory)
    params = data["manifest"]["params"]
    assert facts["task"] == params["task"] and facts["format"] == params["format"]
    assert (facts["timesteps"], facts["input_size"]) == data["x"].shape[1:]
    assert facts["output_size"] == data["y_values"].shape[1]
    assert facts["longest_step"] == params["longest_step"]
    assert facts["noise_floor"] == pytest.approx(params["noise"] ** 2)
    assert facts["counts"] == {"samples": len(data["x"]), "timesteps": data["steps"].shape[1],
                               "real_steps": int(data["steps"].sum()), "shards": 3}  # fmt: skip
    assert facts["samples"] == len(data["x"]) and facts["split"] is None
    assert facts["manifest"] == data["manifest"]


@pytest.mark.parametrize("split", ["train", "heldout"])
@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_split_sizes_match_read(small_npz, split, fraction):
    facts = datagen.info(small_npz, split=split, heldout_fraction=fraction)
    assert facts["samples"] == len(datagen.read(small_npz, split=split, heldout_fraction=fraction)["x"])
    assert facts["splits"]["train"] + facts["splits"]["heldout"] == 300
    assert facts["splits"][split] == facts["samples"]


def test_info_decodes_no_shard(small_npz, small_tfrecord, no_decoding):
    assert datagen.info(small_npz)["counts"]["shards"] == 3
    assert datagen.info(small_tfrecord, split="train")["samples"] == 270
    with pytest.raises(AssertionError, match="a shard was decoded"):
        datagen.read(small_npz)  # the patch does catch decoding


def test_a_missing_directory(tmp_path):
    with pytest.raises(datagen.DatasetError, match="nowhere: no such dataset directory"):
        datagen.info(tmp_path / "nowhere")


def test_a_bad_split_is_refused_before_reading(tmp_path):
    with pytest.raises(ValueError, match="`split` must be one of None, train, heldout; received 'test'"):
        datagen.info(tmp_path / "nowhere", split="test")
    with pytest.raises(ValueError, match=r"`heldout_fraction` must be a number in \(0, 1\); received 1.5"):
        datagen.info(tmp_path / "nowhere", heldout_fraction=1.5)


@pytest.mark.parametrize("value", [None, "0.1", -1.0, float("inf"), True])
def test_a_bad_noise_floor_names_the_field(small_npz, tmp_path, value):
    copy = tmp_path / "copy"
    shutil.copytree(small_npz, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    if value is None:
        del manifest["noise_floor"]
    else:
        manifest["noise_floor"] = value
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(datagen.DatasetError, match="`noise_floor` must be"):
        datagen.info(copy)


def test_a_noise_free_dataset_has_a_zero_floor(tmp_path):
    datagen.make(tmp_path / "d", n_samples=10, timesteps=2, noise=0.0)
    assert datagen.info(tmp_path / "d")["noise_floor"] == 0.0
