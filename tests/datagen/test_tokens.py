"""The token tasks: the law, sampled and decoded, against references written here sample by sample."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats

import datagen
from datagen.cli import main

TINY = {"timesteps": 5, "longest_step": 4, "input_size": 2, "seed": 4}


def softmax(logits):
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def law_row(truth, x, source):
    """P(next token | source, x), written from the documented law; source None: the start distribution."""
    x = np.asarray(x, np.float64)
    if source is None:
        return softmax(truth["start_bias"] + x @ truth["start_kernel"])
    return softmax(truth["transition_bias"][source] + x @ truth["transition_kernel"][:, source, :])


def runs_of(data, carry):
    """Yields (b, t, rows, source) for every run with a step: ``source`` is the token its first step
    follows, None at the sample's first run (carry) or at every run (reset)."""
    row = 0
    for b, lengths in enumerate(data["steps"]):
        last = None
        for t, n in enumerate(lengths):
            if n == 0:
                continue
            yield b, t, range(row, row + n), last if carry else None
            last = int(data["y_values"][row + n - 1])
            row += n


def sequence_probability(truth, x, source, sequence):
    probability, previous = 1.0, source
    for token in sequence:
        probability *= law_row(truth, x, previous)[token]
        previous = token
    return probability


def greedy_walk(truth, x, source, length):
    walk, previous = [], source
    for _ in range(length):
        previous = int(np.argmax(law_row(truth, x, previous)))
        walk.append(previous)
    return walk


@pytest.fixture(scope="module", params=datagen.TOKEN_TASKS)
def dataset(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens") / "d"
    datagen.make(out, task=request.param, n_samples=120, shard_size=50, **TINY)
    return out


def test_tokens_are_ints_with_the_distribution_they_were_drawn_from():
    data = datagen.generate(30, task="tokens", vocab_size=5, **TINY)
    rows = int(data["steps"].sum())
    assert data["y_values"].shape == (rows,) and data["y_values"].dtype == np.int32
    assert data["y_best_values"].shape == (rows,) and data["y_best_values"].dtype == np.int32
    assert data["y_clean_values"].shape == (rows, 5) and data["y_clean_values"].dtype == np.float32
    assert 0 <= data["y_values"].min() and data["y_values"].max() < 5 and len(np.unique(data["y_values"])) == 5
    np.testing.assert_allclose(data["y_clean_values"].sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("task", datagen.TOKEN_TASKS)
def test_each_step_is_drawn_from_the_law_given_the_token_it_follows(task):
    """Within a run a token follows the one before; a run's first token follows the previous run's
    last token (tokens, across empty outer steps too) or the start distribution (tokens-reset)."""
    data = datagen.generate(40, task=task, return_truth=True, zero_fraction=0.3, **TINY)
    crossed = 0
    for b, t, rows, source in runs_of(data, task == "tokens"):
        previous = source
        for row in rows:
            expected = law_row(data["truth"], data["x"][b, t], previous)
            np.testing.assert_allclose(data["y_clean_values"][row], expected, rtol=1e-5, atol=1e-7)
            previous = int(data["y_values"][row])
        crossed += source is not None
    assert (crossed > 0) == (task == "tokens")


def test_sampled_transition_frequencies_match_the_law():
    """Counts of each (source, token) pair against the sum of the law's probabilities over the
    steps with that source: a chi-square test, at a level that a correct sampler fails once in 10^6."""
    data = datagen.generate(1500, task="tokens", timesteps=8, vocab_size=6, seed=8)
    steps = data["steps"].reshape(len(data["steps"]), -1)
    first_of_sample = np.concatenate([[0], np.cumsum(steps.sum(axis=1))[:-1]])
    source = np.concatenate([[6], data["y_values"][:-1]])
    source[first_of_sample[first_of_sample < len(source)]] = 6  # the start distribution
    observed = np.zeros((7, 6))
    np.add.at(observed, (source, data["y_values"]), 1)
    expected = np.zeros((7, 6))
    np.add.at(expected, source, data["y_clean_values"].astype(np.float64))
    keep = expected > 5
    statistic = ((observed - expected)[keep] ** 2 / expected[keep]).sum()
    assert keep.sum() >= 30
    assert statistic < stats.chi2.ppf(1 - 1e-6, keep.sum() - 7)
    assert statistic > stats.chi2.ppf(1e-6, keep.sum() - 7)  # not suspiciously close either


def test_the_same_seed_gives_the_same_tokens_and_a_range_equals_a_slice():
    whole = datagen.generate(1100, task="tokens", seed=3)
    part = datagen.generate(100, task="tokens", seed=3, start=1000)
    offset = int(whole["steps"][:1000].sum())
    for key in ("y_values", "y_clean_values", "y_best_values"):
        np.testing.assert_array_equal(part[key], whole[key][offset:], err_msg=key)
    other = datagen.generate(100, task="tokens", seed=4)
    assert not np.array_equal(other["steps"], part["steps"])


@pytest.mark.parametrize("task", datagen.TOKEN_TASKS)
def test_shards_workers_formats_and_slices_hold_the_same_samples(tmp_path, task):
    options = {"task": task, "n_samples": 60, **TINY}
    datagen.make(tmp_path / "one", **options, shard_size=60)
    datagen.make(tmp_path / "many", **options, shard_size=7, workers=2, format="tfrecord")
    for index in range(3):
        datagen.make(tmp_path / "sliced", **options, shard_size=7, num_shards=3, shard_index=index)
    merged = datagen.merge(tmp_path / "sliced")
    one, many, sliced = (datagen.read(tmp_path / name, verify=True) for name in ("one", "many", "sliced"))
    expected = datagen.generate(60, task=task, **TINY)
    for key in ("x", "steps", "y_values", "y_clean_values", "y_best_values"):
        for data in (one, many, sliced):
            np.testing.assert_array_equal(data[key], expected[key], err_msg=key)
    assert merged["law"]["runs"] == one["manifest"]["law"]["runs"]
    assert merged["law"]["greedy_miss_rate"] == one["manifest"]["law"]["greedy_miss_rate"]
    for split, floor in one["manifest"]["law"]["cross_entropy_floor"].items():
        assert merged["law"]["cross_entropy_floor"][split] == pytest.approx(floor, rel=1e-12)


@pytest.mark.parametrize("task", datagen.TOKEN_TASKS)
def test_the_most_likely_sequence_is_the_best_of_all_sequences(task):
    """Brute force over all 3^n sequences of each run (n <= 4), from the run's realised source."""
    data = datagen.generate(12, task=task, vocab_size=3, return_truth=True, **TINY)
    lengths, followed = set(), 0
    for b, t, rows, source in runs_of(data, task == "tokens"):
        followed += source is not None
        x = data["x"][b, t]
        scores = {sequence: sequence_probability(data["truth"], x, source, sequence)
                  for sequence in itertools.product(range(3), repeat=len(rows))}  # fmt: skip
        best = max(scores, key=scores.get)
        assert tuple(data["y_best_values"][rows]) == best, (b, t, scores)
        lengths.add(len(rows))
    assert lengths == {1, 2, 3, 4}
    assert (followed > 0) == (task == "tokens")  # runs that start from the previous run's last token


def test_the_floor_is_the_law_s_mean_negative_log_likelihood_per_split(dataset):
    data = datagen.read(dataset)
    manifest = data["manifest"]
    truth, carry = data["truth"], manifest["params"]["task"] == "tokens"
    cut = 120 - math.ceil(0.1 * 120)
    losses = {"train": [], "heldout": []}
    for b, t, rows, source in runs_of(data, carry):
        previous = source
        for row in rows:
            token = int(data["y_values"][row])
            probability = law_row(truth, data["x"][b, t], previous)[token]
            losses["train" if b < cut else "heldout"].append(-math.log(probability))
            previous = token
    floor = manifest["law"]["cross_entropy_floor"]
    assert manifest["law"]["heldout_fraction"] == 0.1
    assert floor["train"] == pytest.approx(np.mean(losses["train"]), rel=1e-9)
    assert floor["heldout"] == pytest.approx(np.mean(losses["heldout"]), rel=1e-9)
    assert floor["all"] == pytest.approx(np.mean(losses["train"] + losses["heldout"]), rel=1e-9)
    assert 0 < floor["all"] < math.log(12)


def test_the_greedy_miss_rate_is_a_recount_of_the_stored_runs(dataset):
    data = datagen.read(dataset)
    manifest = data["manifest"]
    truth, carry = data["truth"], manifest["params"]["task"] == "tokens"
    cut = 120 - math.ceil(0.1 * 120)
    misses, runs = {"train": 0, "heldout": 0}, {"train": 0, "heldout": 0}
    for b, t, rows, source in runs_of(data, carry):
        if len(rows) < 2:
            continue
        split = "train" if b < cut else "heldout"
        runs[split] += 1
        misses[split] += greedy_walk(truth, data["x"][b, t], source, len(rows)) != list(data["y_best_values"][rows])
    law = manifest["law"]
    assert law["runs"] == {"all": runs["train"] + runs["heldout"], **runs}
    assert law["greedy_miss_rate"]["heldout"] == misses["heldout"] / runs["heldout"]
    assert law["greedy_miss_rate"]["train"] == misses["train"] / runs["train"]


@pytest.mark.parametrize("task", datagen.TOKEN_TASKS)
def test_greedy_often_misses_the_most_likely_sequence_at_the_defaults(tmp_path, task):
    law = datagen.make(tmp_path / "d", task=task, n_samples=300)["law"]
    assert 0.2 <= law["greedy_miss_rate"]["all"] <= 0.5
    assert law["runs"]["all"] > 3000


def test_load_yields_ragged_int32_tokens_whose_rows_are_the_steps(dataset):
    data = datagen.read(dataset)
    (x, steps), y = next(iter(datagen.load(dataset, batch_size=120)))
    assert y.dtype.name == "int32" and y.shape.as_list() == [120, 5, None] and y.ragged_rank == 2
    np.testing.assert_array_equal(y.row_lengths(axis=2).numpy(), steps.numpy())
    np.testing.assert_array_equal(y.flat_values.numpy(), data["y_values"])
    windows = list(datagen.load(dataset, batch_size=40, window=2, split="heldout", heldout_fraction=0.5))
    assert [steps.shape.as_list() for (_, steps), _ in windows[:3]] == [[40, 2], [40, 2], [40, 1]]
    for (_, steps), y in windows:
        assert y.dtype.name == "int32"
        np.testing.assert_array_equal(y.row_lengths(axis=2).numpy(), steps.numpy())


def test_tfrecord_tokens_parse_with_tf_io(tmp_path):
    import tensorflow as tf

    datagen.make(tmp_path / "d", task="tokens", n_samples=10, format="tfrecord", vocab_size=7, **TINY)
    data = datagen.read(tmp_path / "d")
    spec = datagen._tfrecord.feature_spec(5, 2, 4, vocab_size=7)
    offset = 0
    for i, record in enumerate(tf.data.TFRecordDataset(str(tmp_path / "d" / "shard-00000.tfrecord"))):
        example = tf.io.parse_single_example(record, spec)
        rows = slice(offset, offset + int(data["steps"][i].sum()))
        np.testing.assert_array_equal(example["y_values"].row_lengths().numpy(), data["steps"][i])
        np.testing.assert_array_equal(example["y_values"].flat_values.numpy(), data["y_values"][rows])
        np.testing.assert_array_equal(example["y_best_values"].flat_values.numpy(), data["y_best_values"][rows])
        np.testing.assert_array_equal(example["y_clean_values"].flat_values.numpy(), data["y_clean_values"][rows])
        offset = rows.stop
    assert offset == len(data["y_values"])


def test_the_law_is_stored_in_a_truth_file_and_info_names_the_vocabulary(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert [record["name"] for record in manifest["truth"]["files"]] == ["tokens.npz"]
    assert manifest["truth"]["parameters"] == {} and manifest["noise_floor"] is None
    assert manifest["params"]["vocab_size"] == 12 and manifest["law"]["vocab_size"] == 12
    truth = datagen.read(dataset)["truth"]
    expected = datagen.generate(1, task=manifest["params"]["task"], return_truth=True, **TINY)["truth"]
    assert sorted(truth) == ["start_bias", "start_kernel", "transition_bias", "transition_kernel"]
    for key, value in expected.items():
        np.testing.assert_array_equal(truth[key], value)
    facts = datagen.info(dataset)
    assert facts["vocab_size"] == 12 and facts["noise_floor"] is None


def test_resume_keeps_the_figures_of_the_shards_it_keeps(dataset, tmp_path):
    import shutil

    shutil.copytree(dataset, tmp_path / "copy")
    (tmp_path / "copy" / "shard-00001.npz").unlink()
    manifest = json.loads((dataset / "manifest.json").read_text())
    params = {key: manifest["params"][key] for key in ("task", "n_samples", "shard_size")}
    resumed = datagen.make(tmp_path / "copy", **params, **TINY, resume=True)
    assert resumed == manifest


def test_a_manifest_whose_figures_differ_from_its_shards_is_refused(dataset, tmp_path):
    import shutil

    for change, match in [
        (lambda m: m["law"]["greedy_miss_rate"].update(heldout=0.0), r"`law.greedy_miss_rate` is"),
        (lambda m: m["shards"][0]["law_stats"]["train"].update(tokens=1), r"`law_stats` counts 1 tokens"),
        (lambda m: m["shards"][1]["law_stats"].pop("heldout"), r"`law_stats` must hold train and heldout figures"),
        (lambda m: m.update(noise_floor=0.0025), r"`noise_floor` must be null for task"),
    ]:  # fmt: skip
        copy = tmp_path / "copy"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(dataset, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        change(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(datagen.DatasetError, match=match):
            datagen.read(copy)


def test_a_shard_with_tokens_outside_the_vocabulary_is_refused(dataset, tmp_path):
    import shutil

    shutil.copytree(dataset, tmp_path / "copy")
    shard = tmp_path / "copy" / "shard-00000.npz"
    arrays = dict(np.load(shard))
    arrays["y_best_values"] = arrays["y_best_values"] + 12
    shard.write_bytes(datagen._storage.encode_npz(arrays))
    with pytest.raises(datagen.DatasetError, match=r"shard-00000.npz: `y_best_values` holds tokens outside \[0, 12\)"):
        datagen.read(tmp_path / "copy")


def test_inspect_reports_the_floor_and_the_miss_rate_and_plots_tokens(dataset, tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(dataset), "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    law = datagen.info(dataset)["manifest"]["law"]
    assert f"law floor    {law['cross_entropy_floor']['all']:.6g} nats per token" in result.output
    miss, runs = law["greedy_miss_rate"]["heldout"], law["runs"]["heldout"]
    assert f"greedy miss  {miss:.1%} of {runs} held-out runs of 2+ tokens" in result.output
    assert "vocab_size 12" in result.output and (tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.parametrize("value,match", [
    (1, r"`vocab_size` must be an integer in \[2, 256\]; received 1"),
    (257, r"`vocab_size` must be an integer in \[2, 256\]; received 257"),
    (2.5, r"`vocab_size` must be an integer in \[2, 256\]; received 2.5"),
    (True, r"`vocab_size` must be an integer in \[2, 256\]; received True"),
])  # fmt: skip
def test_a_bad_vocab_size_is_a_value_error_naming_it(tmp_path, value, match):
    with pytest.raises(ValueError, match=match):
        datagen.generate(2, task="tokens", vocab_size=value)
    with pytest.raises(ValueError, match=match):
        datagen.make(tmp_path / "d", task="tokens", n_samples=2, vocab_size=value)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("value,message", [
    ("1", "Invalid value for '--vocab-size': must be an integer in [2, 256]; received 1"),
    ("5000", "Invalid value for '--vocab-size': must be an integer in [2, 256]; received 5000"),
    ("x", "Invalid value for '--vocab-size': 'x' is not a valid integer"),
])  # fmt: skip
def test_a_bad_vocab_size_exits_2_in_one_line_and_writes_nothing(tmp_path, value, message):
    result = CliRunner().invoke(main, ["make", "--task", "tokens", "--out", str(tmp_path / "d"), "--samples", "5",
                                       "--vocab-size", value])  # fmt: skip
    assert result.exit_code == 2
    assert message in result.output and len([line for line in result.output.splitlines() if "Error" in line]) == 1
    assert not (tmp_path / "d").exists()


def test_the_command_line_makes_a_token_dataset(tmp_path):
    sizes = [f"--{key.replace('_', '-')}={value}" for key, value in TINY.items()]
    result = CliRunner().invoke(main, ["make", "--task", "tokens-reset", "--vocab-size", "5", "--samples", "20",
                                       "--out", str(tmp_path / "d"), *sizes])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = datagen.read(tmp_path / "d", verify=True)
    expected = datagen.generate(20, task="tokens-reset", vocab_size=5, **TINY)
    np.testing.assert_array_equal(data["y_values"], expected["y_values"])
    assert data["manifest"]["params"]["vocab_size"] == 5 and data["manifest"]["law"]["state"] == "reset"
