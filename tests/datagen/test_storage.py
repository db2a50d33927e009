"""make / read / merge: content, determinism, checksums, safety against corrupt and hostile files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import datagen
from datagen import _storage
from datagen.cli import main

from .conftest import SMALL

ARRAYS = ("x", "steps", "y_values", "y_clean_values")


def assert_same(left, right):
    for key in ARRAYS:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


def sha_of_shards(manifest):
    return [record["sha256"] for record in manifest["shards"]]


def test_read_returns_what_generate_makes(small_npz):
    data = datagen.read(small_npz, verify=True)
    assert_same(data, datagen.generate(SMALL["n_samples"], **{k: v for k, v in SMALL.items() if k != "n_samples"}))
    np.testing.assert_array_equal(data["row_lengths"], data["steps"].reshape(-1))
    assert set(data["truth"]) == set(datagen._tasks.TEACHER_KEYS)


def test_manifest_records_everything(small_npz):
    manifest = json.loads((small_npz / "manifest.json").read_text())
    for key in ("task", "timesteps", "input_size", "output_size", "longest_step", "lengths", "zero_fraction",
                "noise", "seed", "teacher_hidden", "n_samples", "shard_size", "format"):  # fmt: skip
        assert key in manifest["params"]
    assert manifest["generator"] == {"name": "datagen", "version": datagen.GENERATOR_VERSION}
    assert manifest["noise_floor"] == pytest.approx(0.05**2)
    assert manifest["law"]["state"] == "carry" and "GRU" in manifest["law"]["law"]
    data = datagen.read(small_npz)
    assert manifest["counts"] == {"samples": 300, "timesteps": 6, "real_steps": int(data["steps"].sum()), "shards": 3}
    assert [(r["file"], r["start"], r["stop"]) for r in manifest["shards"]] == [
        ("shard-00000.npz", 0, 128), ("shard-00001.npz", 128, 256), ("shard-00002.npz", 256, 300)]
    for record in manifest["shards"] + [{"file": "teacher.npz", **manifest["truth"]["files"][0]}]:
        assert _storage.sha256((small_npz / record["file"]).read_bytes()) == record["sha256"]
    assert manifest["lengths"]["name"] == "uniform" and manifest["lengths"]["clip"] == 5


def test_npz_and_tfrecord_hold_the_same_content(small_npz, small_tfrecord):
    npz, tfrecord = datagen.read(small_npz), datagen.read(small_tfrecord, verify=True)
    assert_same(npz, tfrecord)
    np.testing.assert_array_equal(npz["row_lengths"], tfrecord["row_lengths"])


@pytest.mark.parametrize("layout", [{"shard_size": 64}, {"shard_size": 1000}, {"workers": 2, "shard_size": 50}])
def test_content_is_the_same_for_any_shard_size_and_workers(tmp_path, small_npz, layout):
    datagen.make(tmp_path / "d", **SMALL, **layout)
    assert_same(datagen.read(tmp_path / "d", verify=True), datagen.read(small_npz))


def test_shards_are_byte_identical_across_runs(tmp_path, small_npz):
    manifest = datagen.make(tmp_path / "again", **SMALL, shard_size=128, workers=2)
    assert sha_of_shards(manifest) == sha_of_shards(json.loads((small_npz / "manifest.json").read_text()))


def test_running_and_law_parameters_are_in_the_truth(tmp_path):
    datagen.make(tmp_path / "r", task="running", n_samples=10)
    truth = datagen.read(tmp_path / "r")["truth"]
    np.testing.assert_allclose(truth["rho"], 4 * truth["tau"])
    assert not (tmp_path / "r" / "teacher.npz").exists()


def test_slices_in_one_directory_merge_to_the_whole(tmp_path, small_npz):
    out = tmp_path / "sliced"
    for index in (2, 0, 1):
        manifest = datagen.make(out, **SMALL, shard_size=40, num_shards=3, shard_index=index)
        expected = [[0, 2], [2, 5], [5, 8]][index]
        assert manifest["slice"] == {"index": index, "count": 3, "shards": expected, "total_shards": 8,
                                     "total_samples": 300}  # fmt: skip
        assert manifest["shards"][0]["start"] == expected[0] * 40
    with pytest.raises(datagen.DatasetError, match=r"manifest.json: missing; the directory holds 3 slice"):
        datagen.read(out)
    merged = datagen.merge(out)
    assert merged["counts"]["samples"] == 300 and merged["counts"]["shards"] == 8
    assert_same(datagen.read(out, verify=True), datagen.read(small_npz))


def test_slices_in_separate_directories_merge_into_out(tmp_path, small_npz):
    parts = [tmp_path / f"job{index}" for index in range(2)]
    for index, part in enumerate(parts):
        datagen.make(part, **SMALL, num_shards=2, shard_index=index, shard_size=128)
    with pytest.raises(datagen.DatasetError, match=r"slices \[1\] of 2 are missing"):
        datagen.merge(parts[0], out=tmp_path / "partial")
    with pytest.raises(ValueError, match=r"`out` is required when merging 2 directories"):
        datagen.merge(*parts)
    with pytest.raises(ValueError, match=r"`merge` needs at least one directory"):
        datagen.merge()
    datagen.merge(*parts, out=tmp_path / "whole")
    assert_same(datagen.read(tmp_path / "whole", verify=True), datagen.read(small_npz))


def test_merge_refuses_slices_of_different_datasets(tmp_path):
    datagen.make(tmp_path / "a", **SMALL, num_shards=2, shard_index=0, shard_size=100)
    datagen.make(tmp_path / "b", **{**SMALL, "seed": 4}, num_shards=2, shard_index=1, shard_size=100)
    with pytest.raises(datagen.DatasetError, match="parameters differ"):
        datagen.merge(tmp_path / "a", tmp_path / "b", out=tmp_path / "c")
    assert not (tmp_path / "c").exists()
    (tmp_path / "c").mkdir()
    with pytest.raises(datagen.DatasetError, match="no slice manifests"):
        datagen.merge(tmp_path / "c")


def test_merge_detects_a_corrupt_slice_shard(tmp_path):
    datagen.make(tmp_path / "a", **SMALL, num_shards=2, shard_index=0, shard_size=100)
    datagen.make(tmp_path / "a", **SMALL, num_shards=2, shard_index=1, shard_size=100)
    shard = tmp_path / "a" / "shard-00000.npz"
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(datagen.DatasetError, match=r"shard-00000.npz: sha256 does not match"):
        datagen.merge(tmp_path / "a", out=tmp_path / "m")
    with pytest.raises(datagen.DatasetError, match="not a directory"):
        datagen.merge(tmp_path / "nowhere", out=tmp_path / "m")


def test_num_shards_and_shard_index_are_validated(tmp_path):
    with pytest.raises(ValueError, match=r"`shard_index` must be an integer in \[0, 1\]; received 2"):
        datagen.make(tmp_path / "x", n_samples=10, shard_size=5, num_shards=2, shard_index=2)
    with pytest.raises(ValueError, match=r"`num_shards` must be <= 2, the number of shards"):
        datagen.make(tmp_path / "x", n_samples=10, shard_size=5, num_shards=3)
    with pytest.raises(ValueError, match=r"`format` must be one of npz, tfrecord; received 'csv'"):
        datagen.make(tmp_path / "x", n_samples=10, format="csv")
    with pytest.raises(ValueError, match=r"`workers` must be an integer >= 1; received 0"):
        datagen.make(tmp_path / "x", n_samples=10, workers=0)
    assert not (tmp_path / "x").exists()


def test_existing_dataset_is_refused_unless_overwrite(tmp_path):
    datagen.make(tmp_path / "d", n_samples=20, shard_size=5)
    before = (tmp_path / "d" / "manifest.json").read_bytes()
    message = (rf"^`out` already holds a dataset \({re.escape(repr(str(tmp_path / 'd' / 'manifest.json')))}\); "
               r"pass overwrite=True to replace it or resume=True to finish it$")  # arguments only, no options
    with pytest.raises(ValueError, match=message):
        datagen.make(tmp_path / "d", n_samples=20, seed=1)
    assert (tmp_path / "d" / "manifest.json").read_bytes() == before
    with pytest.raises(ValueError, match="`resume` and `overwrite` exclude each other"):
        datagen.make(tmp_path / "d", n_samples=20, overwrite=True, resume=True)
    datagen.make(tmp_path / "d", n_samples=8, shard_size=5, seed=1, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "d").glob("shard-*")) == ["shard-00000.npz", "shard-00001.npz"]
    assert datagen.read(tmp_path / "d")["x"].shape[0] == 8


def test_unwritable_or_file_out_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"`out` must be a directory; received .*file', an existing file"):
        datagen.make(blocker, n_samples=4)
    with pytest.raises(ValueError, match=r"`out` is not writable; received .*file/sub"):
        datagen.make(blocker / "sub", n_samples=4)


def test_resume_remakes_only_missing_and_corrupt_shards(tmp_path):
    out = tmp_path / "d"
    manifest = datagen.make(out, n_samples=50, shard_size=10)
    (out / "manifest.json").rename(out / "manifest.pending.json")  # as if the run had crashed
    (out / "shard-00001.npz").unlink()
    (out / "shard-00003.npz").write_bytes(b"garbage")
    (out / ".shard-00004.npz.123-abcd.tmp").write_bytes(b"half")
    untouched = (out / "shard-00000.npz").stat().st_mtime_ns
    os.utime(out / "shard-00000.npz", ns=(1, 1))
    resumed = datagen.make(out, n_samples=50, shard_size=10, resume=True)
    assert resumed["shards"] == manifest["shards"]
    assert (out / "shard-00000.npz").stat().st_mtime_ns == 1, "a good shard was kept"
    assert not (out / "manifest.pending.json").exists() and not list(out.glob(".*.tmp"))
    datagen.read(out, verify=True)
    assert untouched > 1


def test_resume_with_other_parameters_is_refused(tmp_path):
    datagen.make(tmp_path / "d", n_samples=20, shard_size=10)
    with pytest.raises(ValueError, match="`resume` needs the same parameters"):
        datagen.make(tmp_path / "d", n_samples=20, shard_size=10, seed=5, resume=True)


def set_version(manifest_path: Path, version: str) -> None:
    manifest = json.loads(manifest_path.read_text())
    manifest["generator"]["version"] = version
    manifest_path.write_text(json.dumps(manifest))


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.mark.parametrize("manifest", ["manifest.json", "manifest.pending.json"])
def test_resume_of_a_run_by_another_generator_version_is_refused_writing_nothing(tmp_path, manifest):
    out = tmp_path / "d"
    datagen.make(out, n_samples=40, shard_size=10)
    (out / "manifest.json").rename(out / manifest)
    (out / "shard-00003.npz").unlink()
    (out / ".shard-00003.npz.123-abcd.tmp").write_bytes(b"half")
    set_version(out / manifest, "0.9.0")
    before = files_of(out)
    message = (rf"^`resume` needs the generator version that wrote '{out / manifest}': it was written by version "
               rf"'0.9.0', this is version '{datagen.GENERATOR_VERSION}'$")  # fmt: skip
    with pytest.raises(ValueError, match=message):
        datagen.make(out, n_samples=40, shard_size=10, resume=True)
    result = CliRunner().invoke(main, ["make", "--out", str(out), "--samples", "40", "--shard-size", "10", "--resume"])
    assert result.exit_code == 2 and result.output.splitlines()[-1] == f"Error: Invalid value for '--resume': " + (
        f"`resume` needs the generator version that wrote '{out / manifest}': it was written by version '0.9.0', "
        f"this is version '{datagen.GENERATOR_VERSION}'"
    ), result.output
    assert files_of(out) == before


def test_merge_of_slices_by_another_generator_version_is_refused_writing_nothing(tmp_path):
    for index in range(2):
        datagen.make(tmp_path / "s", **SMALL, num_shards=2, shard_index=index, shard_size=100)
    slice_one = tmp_path / "s" / "manifest.slice-00001-of-00002.json"
    set_version(slice_one, "0.9.0")
    before = files_of(tmp_path / "s")
    message = (rf"^{slice_one}: made by generator version '0.9.0', this is version "
               rf"'{datagen.GENERATOR_VERSION}'; merge with the version that made the slices$")  # fmt: skip
    with pytest.raises(ValueError, match=message):
        datagen.merge(tmp_path / "s")
    result = CliRunner().invoke(main, ["merge", str(tmp_path / "s"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == f"Error: Invalid value for 'DIRS': {slice_one}: made by generator " + (
        f"version '0.9.0', this is version '{datagen.GENERATOR_VERSION}'; merge with the version that made the slices"
    )
    assert files_of(tmp_path / "s") == before and not (tmp_path / "m").exists()


def test_corrupt_shard_is_detected_naming_the_file(tmp_path):
    datagen.make(tmp_path / "d", n_samples=40, shard_size=20)
    shard = tmp_path / "d" / "shard-00001.npz"
    data = bytearray(shard.read_bytes())
    data[-200] ^= 0xFF  # inside the last array's values: still a valid zip
    shard.write_bytes(bytes(data))
    with pytest.raises(datagen.DatasetError, match=r"shard-00001.npz: sha256 does not match"):
        datagen.read(tmp_path / "d", verify=True)
    shard.write_bytes(bytes(data[:1000]))
    with pytest.raises(datagen.DatasetError, match=r"shard-00001.npz: not a readable npz shard"):
        datagen.read(tmp_path / "d")
    shard.unlink()
    with pytest.raises(datagen.DatasetError, match=r"shard-00001.npz: cannot read"):
        datagen.read(tmp_path / "d")


def test_corrupt_tfrecord_is_detected_without_verify(tmp_path):
    datagen.make(tmp_path / "d", n_samples=20, format="tfrecord")
    shard = tmp_path / "d" / "shard-00000.tfrecord"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(datagen.DatasetError, match=r"shard-00000.tfrecord: TFRecord checksum mismatch"):
        datagen.read(tmp_path / "d")
    shard.write_bytes(bytes(data[:50]))
    with pytest.raises(datagen.DatasetError, match=r"shard-00000.tfrecord: truncated TFRecord record"):
        datagen.read(tmp_path / "d")


def test_a_shard_that_disagrees_with_the_manifest_is_rejected(tmp_path):
    datagen.make(tmp_path / "a", n_samples=20, shard_size=10)
    datagen.make(tmp_path / "b", n_samples=20, shard_size=10, timesteps=5)
    os.replace(tmp_path / "b" / "shard-00000.npz", tmp_path / "a" / "shard-00000.npz")
    with pytest.raises(datagen.DatasetError, match=r"shard-00000.npz: `x` is float32\(10, 5, 4\), the manifest expects"):
        datagen.read(tmp_path / "a")


def _hostile(tmp_path: Path, edit) -> Path:
    out = tmp_path / "d"
    if not out.exists():
        datagen.make(out, n_samples=10)
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda m: m["shards"][0].update(file="/etc/passwd"), r"file name '/etc/passwd' is not a plain name"),
        (lambda m: m["shards"][0].update(file="../d/shard-00000.npz"), r"'../d/shard-00000.npz' is not a plain name"),
        (lambda m: m["shards"][0].update(file=".."), r"'..' is not a plain name"),
        (lambda m: m["shards"][0].update(file=["x"]), r"\['x'\] is not a plain name"),
        (lambda m: m["truth"]["files"][0].update(name="../../x.npz"), r"'../../x.npz' is not a plain name"),
        (lambda m: m["shards"][0].update(sha256="abc"), r"a shard has no valid sha256"),
        (lambda m: m["shards"][0].update(stop="__import__('os')"), r"shard `stop` must be an integer"),
        (lambda m: m["shards"].append(dict(m["shards"][0])), r"not contiguous"),
        (lambda m: m["params"].update(timesteps=-4), r"invalid manifest: `timesteps` must be an integer >= 1; received -4"),
        (lambda m: m["params"].pop("seed"), r"`params` is incomplete"),
        (lambda m: m.update(format_version=99), r"format_version must be 1"),
        (lambda m: m.update(generator="evil"), r"not made by datagen"),
        (lambda m: m.update(shards=[]), r"`shards` must be a non-empty list"),
    ],
)
def test_hostile_manifests_are_rejected(tmp_path, edit, match):
    out = _hostile(tmp_path, edit)
    with pytest.raises(datagen.DatasetError, match=match) as caught:
        datagen.read(out)
    assert "manifest.json" in str(caught.value)


def test_symlink_escaping_the_directory_is_rejected(tmp_path):
    outside = tmp_path / "outside.npz"
    datagen.make(tmp_path / "d", n_samples=10)
    os.replace(tmp_path / "d" / "shard-00000.npz", outside)
    (tmp_path / "d" / "shard-00000.npz").symlink_to(outside)
    with pytest.raises(datagen.DatasetError, match=r"'shard-00000.npz' resolves outside the dataset directory"):
        datagen.read(tmp_path / "d")


@pytest.mark.parametrize("content,match", [(b"{not json", "not valid JSON"), (b"[1, 2]", "not a JSON object"),
                                           (b"[" * 100000, "not valid JSON")])  # fmt: skip
def test_garbage_manifest_is_rejected(tmp_path, content, match):
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(datagen.DatasetError, match=match):
        datagen.read(tmp_path)


def test_missing_dataset_is_reported(tmp_path):
    with pytest.raises(datagen.DatasetError, match="no such dataset directory"):
        datagen.read(tmp_path / "nothing")
    with pytest.raises(datagen.DatasetError, match="manifest.json: missing; not a datagen dataset"):
        datagen.read(tmp_path)


def test_pickled_arrays_are_never_loaded(tmp_path):
    datagen.make(tmp_path / "d", n_samples=10)
    shard = tmp_path / "d" / "shard-00000.npz"
    arrays = dict(np.load(shard))
    arrays["x"] = np.array([object()], dtype=object)
    np.savez(shard, **arrays)
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = _storage.sha256(shard.read_bytes())
    (tmp_path / "d" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(datagen.DatasetError, match=r"shard-00000.npz: not a readable npz shard \(ValueError: .*pickle"):
        datagen.read(tmp_path / "d", verify=True)


def test_truth_file_is_checked(tmp_path):
    datagen.make(tmp_path / "d", n_samples=10)
    (tmp_path / "d" / "teacher.npz").write_bytes(b"PK not really")
    with pytest.raises(datagen.DatasetError, match=r"teacher.npz: sha256 does not match"):
        datagen.read(tmp_path / "d")
    with pytest.raises(datagen.DatasetError, match=r"teacher.npz: sha256 does not match"):
        datagen.teacher_weights(tmp_path / "d")


def test_truth_file_that_is_not_npz_is_rejected(tmp_path):
    datagen.make(tmp_path / "d", n_samples=10)
    (tmp_path / "d" / "teacher.npz").write_bytes(b"not a zip")
    _hostile(tmp_path, lambda m: m["truth"]["files"][0].update(sha256=_storage.sha256(b"not a zip")))
    with pytest.raises(datagen.DatasetError, match=r"teacher.npz: not a readable npz truth file"):
        datagen.read(tmp_path / "d")


def test_split_is_the_last_fraction_by_index(small_npz):
    whole = datagen.read(small_npz)
    train = datagen.read(small_npz, split="train", heldout_fraction=0.1)
    heldout = datagen.read(small_npz, split="heldout", heldout_fraction=0.1)
    assert len(heldout["x"]) == 30 and len(train["x"]) == 270
    np.testing.assert_array_equal(heldout["x"], whole["x"][270:])
    np.testing.assert_array_equal(np.concatenate([train["y_values"], heldout["y_values"]]), whole["y_values"])
    np.testing.assert_array_equal(heldout["row_lengths"], whole["steps"][270:].reshape(-1))
    assert datagen.split_range(10, "heldout", 0.25) == (7, 10)


PATH = r"must be a non-empty path \(str or os.PathLike\); received "


@pytest.mark.parametrize("call,match", [
    (lambda d: datagen.read(None), rf"^`directory` {PATH}None$"),
    (lambda d: datagen.read(""), rf"^`directory` {PATH}''$"),
    (lambda d: datagen.read(b"data"), rf"^`directory` {PATH}b'data'$"),
    (lambda d: datagen.read(d, verify="no"), r"^`verify` must be True or False; received 'no'$"),
    (lambda d: datagen.read(d, None), r"^`verify` must be True or False; received None$"),
    (lambda d: datagen.info(None), rf"^`directory` {PATH}None$"),
    (lambda d: datagen.info(3), rf"^`directory` {PATH}3$"),
    (lambda d: datagen.teacher_weights(None), rf"^`source` {PATH}None$"),
    (lambda d: datagen.merge(None), rf"^`directories` {PATH}None$"),
    (lambda d: datagen.merge(d, out=""), rf"^`out` {PATH}''$"),
    (lambda d: datagen.generate(4, return_truth="no"), r"^`return_truth` must be True or False; received 'no'$"),
])  # fmt: skip
def test_path_and_flag_arguments_of_the_wrong_kind_are_named(small_npz, call, match):
    with pytest.raises(ValueError, match=match):
        call(small_npz)


@pytest.mark.parametrize("kwargs,match", [
    ({"out": None}, rf"^`out` {PATH}None$"),
    ({"out": ""}, rf"^`out` {PATH}''$"),
    ({"overwrite": "no"}, r"^`overwrite` must be True or False; received 'no'$"),
    ({"resume": 1}, r"^`resume` must be True or False; received 1$"),
    ({"progress": None}, r"^`progress` must be True or False; received None$"),
])  # fmt: skip
def test_make_names_a_path_or_flag_of_the_wrong_kind_writing_nothing(tmp_path, monkeypatch, kwargs, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=match):
        datagen.make(**{"out": tmp_path / "d", "n_samples": 20, **kwargs})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("split,fraction,match", [
    ("test", 0.1, r"`split` must be one of None, train, heldout; received 'test'"),
    ("train", 1.5, r"`heldout_fraction` must be a number in \(0, 1\); received 1.5"),
    ("train", 0.99999, r"`heldout_fraction` 0.99999 leaves no training samples out of 300"),
])  # fmt: skip
def test_bad_splits_are_refused(small_npz, split, fraction, match):
    with pytest.raises(ValueError, match=match):
        datagen.read(small_npz, split=split, heldout_fraction=fraction)
