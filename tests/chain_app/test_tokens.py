"""`chain fit` and `chain evaluate` on token data: the cross-entropy against the law's floor."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import tensorflow as tf

import datagen
from chain_app import data, laws
from chain_app.runs import load_run

from .conftest import run


def _cross_entropy(net, directory, split):
    """Mean cross-entropy over real tokens of the teacher-forced logits, computed here by hand."""
    held = datagen.read(directory, split=split)
    cells = tf.RaggedTensor.from_row_lengths(held["y_values"], held["row_lengths"])
    y = tf.RaggedTensor.from_uniform_row_length(cells, held["steps"].shape[1])
    logits = net(held["x"], held["steps"], targets=y).flat_values.numpy().astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(logits)), held["y_values"]].mean())


def test_fit_on_token_data_reports_the_cross_entropy_against_the_laws_floor(token_data, token_fitted):
    out, output = token_fitted
    report = json.loads((out / "report.json").read_text())
    law = datagen.info(token_data["a"])["manifest"]["law"]
    net, state = load_run(out)
    assert net.vocab_size == 5 and net.feedback and state["train_info"]["vocab_size"] == 5
    assert report["cross_entropy_floor"] == law["cross_entropy_floor"]["heldout"]
    assert report["heldout_cross_entropy"] == pytest.approx(_cross_entropy(net, token_data["a"], "heldout"), rel=1e-5)
    assert report["heldout_cross_entropy_over_floor"] == pytest.approx(
        report["heldout_cross_entropy"] / report["cross_entropy_floor"])
    assert report["heldout_perplexity"] == pytest.approx(math.exp(report["heldout_cross_entropy"]), rel=1e-5)
    assert report["perplexity_floor"] == pytest.approx(math.exp(report["cross_entropy_floor"]))
    assert 0 <= report["heldout_token_accuracy"] <= 1
    assert not [key for key in report if "mse" in key or "noise" in key]
    summary = json.loads(output[output.index("{"):])
    assert summary["heldout_cross_entropy_over_floor"] == report["heldout_cross_entropy_over_floor"]
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert float(rows[-1]["val_cross_entropy"]) == pytest.approx(report["heldout_cross_entropy"], rel=1e-5)
    assert float(rows[-1]["cross_entropy_over_floor"]) == pytest.approx(
        float(rows[-1]["cross_entropy"]) / law["cross_entropy_floor"]["train"])
    assert (out / "loss.png").stat().st_size > 0


def test_evaluate_scores_a_token_run_on_other_samples_of_its_law(token_data, token_fitted):
    result = run("evaluate", token_fitted[0], token_data["same"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    law = datagen.info(token_data["same"])["manifest"]["law"]
    assert scores["samples"] == 40 and scores["cross_entropy_floor"] == law["cross_entropy_floor"]["all"]
    net, _ = load_run(token_fitted[0])
    assert scores["cross_entropy"] == pytest.approx(_cross_entropy(net, token_data["same"], None), rel=1e-5)
    assert scores["cross_entropy_over_floor"] == pytest.approx(scores["cross_entropy"] / scores["cross_entropy_floor"])


def test_a_token_laws_digest_leaves_out_the_figures_of_its_samples(token_data, datasets):
    manifests = {name: datagen.info(path)["manifest"] for name, path in token_data.items()}
    assert manifests["a"]["law"]["cross_entropy_floor"] != manifests["same"]["law"]["cross_entropy_floor"]
    assert laws.law_digest(manifests["a"]) == laws.law_digest(manifests["same"])
    other = json.loads(json.dumps(manifests["a"]))
    other["law"]["vocab_size"] = 6
    assert laws.law_digest(other) != laws.law_digest(manifests["a"])
    teacher = datagen.info(datasets["a"])["manifest"]  # a real-valued law's digest is as it was
    import hashlib

    text = json.dumps({"law": teacher["law"], "truth": teacher["truth"]}, sort_keys=True)
    assert laws.law_digest(teacher) == hashlib.sha256(text.encode()).hexdigest()


def test_the_floor_of_a_split_at_another_fraction_comes_from_its_samples(token_data):
    law = datagen.info(token_data["a"])["manifest"]["law"]
    at_manifest = datagen.read(token_data["a"], split="heldout", heldout_fraction=0.1)
    assert data.law_cross_entropy(at_manifest) == pytest.approx(law["cross_entropy_floor"]["heldout"], rel=1e-6)
    described = data.describe(token_data["a"], "heldout", 0.25)
    quarter = datagen.read(token_data["a"], split="heldout", heldout_fraction=0.25)
    assert described["cross_entropy_floor"] == pytest.approx(data.law_cross_entropy(quarter))
    assert described["cross_entropy_floor"] != pytest.approx(law["cross_entropy_floor"]["heldout"])
    assert data.law_cross_entropy({**quarter, "y_values": quarter["y_values"][:0]}) is None


def test_a_token_run_and_real_valued_data_do_not_mix(token_data, token_fitted, datasets, finished):
    result = run("evaluate", token_fitted[0], datasets["a"], "--allow-other-law")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {datasets['a']}: the dataset's vocab_size is None (real-valued targets) but the model's "
        "vocab_size is 5")
    result = run("evaluate", finished, token_data["a"], "--allow-other-law")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {token_data['a']}: the dataset's vocab_size is 5 but the model's vocab_size is None "
        "(real-valued targets)")


@pytest.mark.usefixtures("stand_in_training")
@pytest.mark.parametrize("args", [
    ["--stop-token", "--window", "2", "--batch-size", "8"],
    pytest.param(["--predict-lengths", "--state", "reset", "--feedback-sampling", "0.5"], marks=pytest.mark.slow),
])
def test_the_fitting_options_work_on_token_data(token_data, tmp_path, args):
    result = run("fit", token_data["a"], "--out", tmp_path / "run", "--epochs", "1", "--hidden", "8", "--feedback",
                 *args)  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    net, _ = load_run(tmp_path / "run")
    assert net.vocab_size == 5 and net.lengths is not None and 0 <= report["length_accuracy"] <= 1
    assert report["heldout_cross_entropy_over_floor"] > 0
