"""Every way a shard, record or manifest can be malformed gets a DatasetError naming the file."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import datagen
from datagen import _manifest, _storage, _tfrecord


def framed(payload: bytes) -> bytes:
    return _tfrecord.frame([payload])


@pytest.mark.parametrize(
    "payload,match",
    [
        (b"\x0a\xff", r"f.tfrecord: malformed protobuf varint"),
        (b"\x08\x01", r"f.tfrecord: unexpected protobuf wire type 0"),
        (b"\x0a\x05ab", r"f.tfrecord: truncated protobuf field"),
        (_tfrecord._field(1, _tfrecord._field(1, _tfrecord._field(1, b"x"))), r"malformed feature map entry"),
        (_tfrecord._field(1, _tfrecord._field(1, _tfrecord._field(1, b"x") + _tfrecord._field(2, b""))),
         r"a feature is not a float_list or int64_list"),
        (_tfrecord._field(1, _tfrecord._field(1, _tfrecord._field(1, b"x")
                                              + _tfrecord._field(2, _tfrecord._field(2, _tfrecord._field(1, b"abc"))))),
         r"float_list of 3 bytes"),
    ],
)  # fmt: skip
def test_malformed_examples_are_rejected(payload, match):
    with pytest.raises(datagen.DatasetError, match=match):
        _storage.decode_shard(framed(payload), "tfrecord", "f.tfrecord", (2, 1, 1))


def test_records_with_the_wrong_sizes_are_rejected():
    sample = {"x": np.zeros((3, 2), np.float32), "steps": np.array([1, 0, 2]), "y_values": np.zeros((3, 1)),
              "y_clean_values": np.zeros((3, 1))}  # fmt: skip
    data = framed(_tfrecord.encode_example(sample))
    assert _storage.decode_shard(data, "tfrecord", "f", (3, 2, 1))["steps"].tolist() == [[1, 0, 2]]
    with pytest.raises(datagen.DatasetError, match=r"f.tfrecord: records do not match the manifest's sizes"):
        _storage.decode_shard(data, "tfrecord", "f.tfrecord", (4, 2, 1))


def test_truncated_tfrecord_header_is_rejected():
    with pytest.raises(datagen.DatasetError, match=r"f.tfrecord: truncated TFRecord header at byte 0"):
        _tfrecord.unframe(struct.pack("<Q", 5), "f.tfrecord")


def test_large_step_counts_round_trip_through_varints():
    sample = {"x": np.zeros((1, 1), np.float32), "steps": np.array([300]), "y_values": np.ones((300, 1)),
              "y_clean_values": np.ones((300, 1))}  # fmt: skip
    decoded = _storage.decode_shard(framed(_tfrecord.encode_example(sample)), "tfrecord", "f", (1, 1, 1))
    assert decoded["steps"].tolist() == [[300]] and decoded["y_values"].shape == (300, 1)


def test_npz_without_the_shard_arrays_is_rejected():
    data = _storage.encode_npz({"x": np.zeros(2)})
    with pytest.raises(datagen.DatasetError, match=r"f.npz: missing arrays \['row_lengths', 'steps'"):
        _storage.decode_shard(data, "npz", "f.npz", (1, 1, 1))


def rewrite_shard(path, **changes):
    arrays = dict(np.load(path))
    arrays.update(changes)
    path.write_bytes(_storage.encode_npz(arrays))


def test_steps_out_of_range_or_row_lengths_that_disagree_are_rejected(tmp_path):
    datagen.make(tmp_path / "d", n_samples=10, longest_step=3)
    shard = tmp_path / "d" / "shard-00000.npz"
    original = dict(np.load(shard))
    steps = original["steps"].copy()
    steps[0, 0], steps[0, 1] = 9, steps[0, 1] + steps[0, 0] - 9  # same total, one value above longest_step
    rewrite_shard(shard, steps=steps)
    with pytest.raises(datagen.DatasetError, match=r"shard-00000.npz: `steps` outside \[0, 3\]"):
        datagen.read(tmp_path / "d")
    lengths = original["row_lengths"].copy()
    lengths[[0, 1]] = lengths[[1, 0]] + np.array([1, -1]) if lengths[0] != lengths[1] + 1 else lengths[[0, 1]] + [1, -1]
    rewrite_shard(shard, steps=original["steps"], row_lengths=lengths)
    with pytest.raises(datagen.DatasetError, match=r"shard-00000.npz: `row_lengths` differs from `steps`"):
        datagen.read(tmp_path / "d")


def edit_manifest(directory, edit):
    manifest = json.loads((directory / "manifest.json").read_text())
    edit(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m.update(slice=None), r"`slice` must be an object"),
        (lambda m: m["truth"]["files"][0].pop("sha256"), r"truth file without a sha256"),
        (lambda m: m["shards"].__setitem__(0, "shard-00000.npz"), r"a shard entry is not an object"),
        (lambda m: m["shards"][0].update(stop=0), r"a shard has an empty sample range"),
        (lambda m: m.update(params=[]), r"`params` must be an object"),
        (lambda m: m.update(truth={"files": "teacher.npz"}), r"`truth.files` must be a list"),
    ],
)
def test_more_malformed_manifests(tmp_path, edit, match):
    datagen.make(tmp_path / "d", n_samples=10)
    edit_manifest(tmp_path / "d", edit)
    with pytest.raises(datagen.DatasetError, match=match):
        datagen.read(tmp_path / "d")


def test_oversized_or_unreadable_manifests(tmp_path, monkeypatch):
    datagen.make(tmp_path / "d", n_samples=10)
    monkeypatch.setattr(_manifest, "_MAX_MANIFEST_BYTES", 100)
    with pytest.raises(datagen.DatasetError, match=r"manifest.json: manifest larger than 100 bytes"):
        datagen.read(tmp_path / "d")
    monkeypatch.undo()
    (tmp_path / "s" / "manifest.slice-00000-of-00002.json").mkdir(parents=True)
    with pytest.raises(datagen.DatasetError, match=r"manifest.slice-00000-of-00002.json: cannot read manifest"):
        datagen.merge(tmp_path / "s")


def test_the_same_slice_with_different_shards_is_refused(tmp_path):
    datagen.make(tmp_path / "a", n_samples=40, shard_size=10, num_shards=2, shard_index=0)
    datagen.make(tmp_path / "b", n_samples=40, shard_size=10, num_shards=2, shard_index=0, seed=1)
    with pytest.raises(datagen.DatasetError, match=r"slice 0 also found in"):
        datagen.merge(tmp_path / "a", tmp_path / "b", out=tmp_path / "c")
