"""`chain generate`: a run's chain generating on a dataset's inputs, against references built here."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

import chain
import datagen
from chain_app import generate
from chain_app.runs import load_run

from .conftest import QUICK, run

V = 5


def _heldout(directory):
    held = datagen.read(directory, split="heldout")
    cells = tf.RaggedTensor.from_row_lengths(held["y_values"], held["row_lengths"])
    return held, tf.RaggedTensor.from_uniform_row_length(cells, held["steps"].shape[1])


def _log_softmax(logits):
    logits = logits - logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def _with_run(y, t, tokens):
    """The targets `y` with every sample's run `t` replaced by `tokens[b][t]`."""
    runs = y.to_list()
    for b, sample in enumerate(runs):
        sample[t] = tokens[b][t]
    return tf.ragged.constant(runs, dtype=tf.int32, ragged_rank=2)


@pytest.fixture(scope="module")
def greedy(token_data, token_fitted, tmp_path_factory):
    """`generate_run` of the token run on its held-out split, greedy, with the dataset's tokens before each run."""
    out = tmp_path_factory.mktemp("greedy") / "greedy.json"
    return generate.generate_run(token_fitted[0], out=out), out


def test_greedy_generation_after_the_datasets_tokens_is_the_teacher_forced_argmax(token_data, token_fitted, greedy):
    document, out = greedy
    assert json.loads(out.read_text()) == document
    net, _ = load_run(token_fitted[0])
    held, y = _heldout(token_data["a"])
    tokens = [sample["outputs"][0]["tokens"] for sample in document["samples"]]
    scores = [sample["outputs"][0]["log_probs"] for sample in document["samples"]]
    for t in range(held["steps"].shape[1]):  # run t, fed the dataset's tokens before it and its own within
        logits = net(held["x"], held["steps"], targets=_with_run(y, t, tokens)).to_list()
        for b, sample in enumerate(logits):
            run_logits = np.array(sample[t], dtype=np.float64).reshape(-1, V)
            assert tokens[b][t] == np.argmax(run_logits, axis=1).tolist()
            np.testing.assert_allclose(scores[b][t], _log_softmax(run_logits)[np.arange(len(run_logits)), tokens[b][t]],
                                       rtol=1e-4, atol=1e-5)  # fmt: skip
    assert document["context"] == "data" and document["decoder"] == {"name": "Greedy"}


def test_the_summary_counts_the_runs_equal_to_the_laws_most_likely_sequence(token_data, greedy):
    document, _ = greedy
    held, _ = _heldout(token_data["a"])
    steps = held["steps"]
    offsets = np.concatenate([[0], np.cumsum(steps.reshape(-1))])
    hits = long_hits = 0
    for b, sample in enumerate(document["samples"]):
        assert sample["index"] == 48 - len(steps) + b and sample["steps"] == steps[b].tolist()
        for t in range(steps.shape[1]):
            cell = b * steps.shape[1] + t
            best = held["y_best_values"][offsets[cell] : offsets[cell + 1]].tolist()
            assert sample["best"][t] == best
            assert sample["targets"][t] == held["y_values"][offsets[cell] : offsets[cell + 1]].tolist()
            equal = sample["outputs"][0]["tokens"][t] == best
            assert sample["matches_best"][t] == equal
            hits += equal and steps[b, t] > 0
            long_hits += equal and steps[b, t] > 1
    summary = document["summary"]
    assert summary["runs"] == int((steps > 0).sum()) and summary["long_runs"] == int((steps > 1).sum())
    assert summary["runs_matching_best"] == hits and summary["best_match_rate"] == hits / summary["runs"]
    assert summary["long_best_match_rate"] == long_hits / summary["long_runs"]
    assert summary["tokens"] == int(steps.sum())
    total = sum(sum(map(sum, sample["outputs"][0]["log_probs"])) for sample in document["samples"])
    assert summary["log_prob"] == pytest.approx(total) and summary["mean_log_prob"] == pytest.approx(total / steps.sum())
    miss = datagen.info(token_data["a"])["manifest"]["law"]["greedy_miss_rate"]["heldout"]
    assert summary["law_greedy_long_match_rate"] == pytest.approx(1 - miss)


def test_free_generation_is_the_librarys_and_is_not_compared_with_the_law(token_data, token_fitted, greedy, tmp_path):
    document = generate.generate_run(token_fitted[0], out=tmp_path / "free.json", free=True)
    net, _ = load_run(token_fitted[0])
    held, _ = _heldout(token_data["a"])
    tokens, scores = net.generate(held["x"], held["steps"], return_scores=True)
    assert [sample["outputs"][0]["tokens"] for sample in document["samples"]] == tokens.to_list()
    np.testing.assert_allclose([s["outputs"][0]["log_prob"] for s in document["samples"]],
                               tf.reduce_sum(scores, axis=[1, 2]).numpy(), rtol=1e-5)  # fmt: skip
    assert document["context"] == "free" and "runs" not in document["summary"]
    assert "not compared" in document["summary"]["best_match_omitted"]
    in_context = [sample["outputs"][0]["tokens"] for sample in greedy[0]["samples"]]
    assert in_context != tokens.to_list()  # the dataset's tokens, not its own, lead into each run


def test_sampling_is_seeded_and_top_k_1_is_greedy(token_fitted, greedy, tmp_path):
    first = run("generate", token_fitted[0], "--temperature", "2", "--seed", "7", "--out", tmp_path / "a.json")
    other = run("generate", token_fitted[0], "--temperature", "2", "--seed", "8", "--out", tmp_path / "c.json")
    assert first.exit_code == other.exit_code == 0, first.output
    a, c = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "c.json"))
    assert a["decoder"] == {"name": "Sampler", "temperature": 2.0, "top_k": None, "top_p": None, "seed": 7}
    again = generate.generate_run(token_fitted[0], decoder=chain.Sampler(temperature=2.0, seed=7),
                                  out=tmp_path / "b.json")  # fmt: skip
    assert a["samples"] == again["samples"] and a["samples"] != c["samples"]
    result = run("generate", token_fitted[0], "--top-k", "1", "--out", tmp_path / "k.json")
    assert result.exit_code == 0, result.output
    top1 = json.loads((tmp_path / "k.json").read_text())
    assert [s["outputs"] for s in top1["samples"]] == [s["outputs"] for s in greedy[0]["samples"]]


def test_the_command_prints_the_summary_and_writes_the_file_and_the_plot(token_fitted, tmp_path):
    plot = tmp_path / "tokens.png"
    result = run("generate", token_fitted[0], "--samples", "2", "--plot", plot)
    assert result.exit_code == 0, result.output
    written = token_fitted[0] / "generated.json"
    document = json.loads(written.read_text())
    assert json.loads(result.stdout) == document["summary"] and document["summary"]["samples"] == 2
    assert "chain generate: 2/2 samples" in result.stderr  # progress, in lines where stderr is no terminal
    assert len(document["samples"]) == 2 and document["first_sample"] == 43
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert not [p for p in (*tmp_path.iterdir(), *token_fitted[0].iterdir()) if p.name.startswith(".")]


def test_a_real_valued_run_generates_free_running_outputs(datasets, finished, tmp_path):
    document = generate.generate_run(finished, split="all", samples=6, out=tmp_path / "real.json",
                                     plot=tmp_path / "real.png")  # fmt: skip
    net, _ = load_run(finished)
    data = datagen.read(datasets["a"])
    out = net(data["x"][:6], data["steps"][:6])
    assert [sample["outputs"][0]["values"] for sample in document["samples"]] == out.to_list()
    rows = int(data["steps"][:6].sum())
    mse = float(np.mean(np.square(out.flat_values.numpy() - data["y_values"][:rows])))
    summary = document["summary"]
    assert summary["mse"] == pytest.approx(mse, rel=1e-5) and summary["real_steps"] == rows
    assert summary["mse_over_noise_floor"] == pytest.approx(mse / summary["noise_floor"], rel=1e-5)
    assert document["decoder"] is None and document["vocab_size"] is None
    assert (tmp_path / "real.png").stat().st_size > 0


@pytest.mark.usefixtures("stand_in_training")
def test_predicted_lengths_are_the_length_heads(token_data, tmp_path):
    fitted = tmp_path / "run"
    result = run("fit", token_data["a"], "--out", fitted, *QUICK, "--epochs", "1", "--feedback", "--predict-lengths")
    assert result.exit_code == 0, result.output
    result = run("generate", fitted, "--predict-lengths", "--out", tmp_path / "g.json", "--plot", tmp_path / "g.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g.png").stat().st_size > 0
    document = json.loads((tmp_path / "g.json").read_text())
    net, _ = load_run(fitted)
    held, _ = _heldout(token_data["a"])
    lengths = net.generate(held["x"]).row_lengths(axis=2).numpy().reshape(held["steps"].shape)
    made = [[len(r) for r in sample["outputs"][0]["tokens"]] for sample in document["samples"]]
    assert document["lengths"] == "predicted" and made == lengths.tolist()
    assert document["context"] == "free" and "not compared" in document["summary"]["best_match_omitted"]


def test_a_beam_search_writes_its_outputs_best_first(token_data, token_fitted, greedy, tmp_path):
    result = run("generate", token_fitted[0], "--beam", "3", "--length-penalty", "0.5", "--out", tmp_path / "b.json")
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "b.json").read_text())
    assert document["decoder"] == {"name": "Beam", "width": 3, "length_penalty": 0.5}
    net, _ = load_run(token_fitted[0])
    held, y = _heldout(token_data["a"])
    tokens, scores = chain.decode_runs(net, held["x"], held["steps"], y, decoder=chain.Beam(3, 0.5),
                                       return_scores=True)  # fmt: skip
    assert [[o["tokens"] for o in sample["outputs"]] for sample in document["samples"]] == tokens.to_list()
    totals = tf.reduce_sum(tf.reduce_sum(scores, axis=-1), axis=-1).numpy()
    for sample, expected in zip(document["samples"], totals):
        made = [output["log_prob"] for output in sample["outputs"]]
        np.testing.assert_allclose(made, expected, rtol=1e-5)
        assert made == sorted(made, reverse=True)
    assert json.loads(result.stdout) == document["summary"]
    one = generate.generate_run(token_fitted[0], decoder=chain.Beam(1), out=tmp_path / "one.json")
    assert [s["outputs"][0]["tokens"] for s in one["samples"]] == [
        s["outputs"][0]["tokens"] for s in greedy[0]["samples"]]  # a beam of 1 is greedy


@pytest.mark.slow  # a second beam search; the one above checks the command's beam output
def test_a_beam_over_whole_samples_and_its_padding_beams_left_out(token_data, token_fitted, tmp_path):
    net, _ = load_run(token_fitted[0])
    held, _ = _heldout(token_data["a"])
    free = generate.generate_run(token_fitted[0], decoder=chain.Beam(2), free=True, out=tmp_path / "f.json")
    expected = net.generate(held["x"], held["steps"], decoder=chain.Beam(2)).to_list()
    assert [[o["tokens"] for o in sample["outputs"]] for sample in free["samples"]] == expected
    wide = generate.generate_run(token_fitted[0], decoder=chain.Beam(V + 1), out=tmp_path / "w.json")
    for sample in wide["samples"]:  # a run of one token has V outputs: the beams past them are padding
        assert len(sample["outputs"]) == (V if 1 in sample["steps"] else V + 1)
    assert any(1 in sample["steps"] for sample in wide["samples"])
    json.loads((tmp_path / "w.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in the file"))


# ----------------------------------------------------------------------------- bad input


def _unwritten(path):
    assert not (path / "generated.json").exists()


@pytest.mark.parametrize("args, line", [
    (["--temperature", "0"], "Invalid value for '--temperature': must be a finite number > 0; received 0.0"),
    (["--temperature", "nan"], "Invalid value for '--temperature': must be a finite number > 0; received nan"),
    (["--temperature", "inf"], "Invalid value for '--temperature': must be a finite number > 0; received inf"),
    (["--top-k", "0"], "Invalid value for '--top-k': must be an integer in [1, 2147483647]; received 0"),
    (["--top-k", "6"], "Invalid value for '--top-k': must be an integer in [1, 5] (the run's vocabulary size); "
                       "received 6"),
    (["--top-p", "0"], "Invalid value for '--top-p': must be a number in (0, 1]; received 0.0"),
    (["--top-p", "1.5"], "Invalid value for '--top-p': must be a number in (0, 1]; received 1.5"),
    (["--seed", "-1"], "Invalid value for '--seed': must be an integer in [0, 2147483647]; received -1"),
    (["--beam", "0"], "Invalid value for '--beam': must be an integer in [1, 2147483647]; received 0"),
    (["--beam", "2", "--length-penalty", "-1"],
     "Invalid value for '--length-penalty': must be a finite number >= 0; received -1.0"),
    (["--beam", "2", "--length-penalty", "nan"],
     "Invalid value for '--length-penalty': must be a finite number >= 0; received nan"),
    (["--beam", "2", "--temperature", "0.5"],
     "--beam 2 searches the most likely outputs and draws nothing; received --temperature 0.5 too"),
    (["--top-p", "0.5", "--beam", "4"],
     "--beam 4 searches the most likely outputs and draws nothing; received --top-p 0.5 too"),
    (["--length-penalty", "0.5"],
     "--length-penalty ranks a beam search's hypotheses: it needs --beam; received --length-penalty 0.5 alone"),
    (["--samples", "0"], "Invalid value for '--samples': must be an integer in [1, 2147483647]; received 0"),
    (["--samples", "6"], "Invalid value for '--samples': must be at most the 5 samples of {data}'s heldout split; "
                         "received 6"),
    (["--batch-size", "0"], "Invalid value for '--batch-size': must be an integer in [1, 2147483647]; received 0"),
    (["--split", "test"], "Invalid value for '--split': must be one of heldout, train, all; received 'test'"),
    (["--out", "{tmp}/g.txt"], "Invalid value for '--out': must be a path ending in .json; received '{tmp}/g.txt'"),
    (["--plot", "{tmp}/missing/p.png"], "Invalid value for '--plot': must be in an existing directory; received "
                                        "'{tmp}/missing/p.png', and '{tmp}/missing' is not one"),
    (["--predict-lengths"], "Invalid value for '--predict-lengths': {run} holds a run without a lengths part (fit "
                            "it with --predict-lengths or --stop-token)"),
])  # fmt: skip
def test_bad_options_exit_2_in_one_line_before_anything_is_written(token_data, token_fitted, tmp_path, args, line):
    names = {"tmp": tmp_path, "run": token_fitted[0], "data": token_data["a"]}
    (token_fitted[0] / "generated.json").unlink(missing_ok=True)
    result = run("generate", token_fitted[0], *(arg.format(**names) for arg in args))
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == f"Error: {line.format(**names)}"
    _unwritten(token_fitted[0])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, value", [("--temperature", "0.5"), ("--top-k", "2"), ("--top-p", "0.9"),
                                           ("--seed", "3"), ("--beam", "2")])  # fmt: skip
def test_decoding_options_on_a_real_valued_run_exit_2(finished, option, value):
    result = run("generate", finished, option, value)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: Invalid value for '{option}': {finished} holds a real-valued run, which picks no tokens; "
        f"received {value if option in ('--top-k', '--seed', '--beam') else float(value)}")
    _unwritten(finished)


def test_a_missing_run_or_checkpoint_or_another_law_exits_2(token_fitted, datasets, tmp_path):
    result = run("generate", tmp_path / "none")
    assert result.exit_code == 2 and "Invalid value for 'RUN_DIR'" in result.output and "does not exist" in result.output
    result = run("generate", tmp_path)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (f"Error: Invalid value for 'RUN_DIR': {tmp_path} holds no "
                                                      "checkpoint (model.keras)")  # fmt: skip
    result = run("generate", token_fitted[0], "--data", datasets["a"])
    assert result.exit_code == 2 and "was made by another law" in result.output
    _unwritten(token_fitted[0])


def test_generate_run_refuses_what_the_run_cannot_do(token_fitted, finished, tmp_path):
    with pytest.raises(ValueError, match=r"`decoder` picks tokens, and the run's chain is real-valued; "
                                         r"received decoder=Greedy\(\)"):  # fmt: skip
        generate.generate_run(finished, decoder=chain.Greedy(), out=tmp_path / "g.json")
    with pytest.raises(ValueError, match=r"`predict_lengths` needs a run with a lengths part .*received predict_l"):
        generate.generate_run(token_fitted[0], predict_lengths=True, out=tmp_path / "g.json")
    with pytest.raises(ValueError, match=r"`split` must be one of heldout, train, all; received 'test'"):
        generate.generate_run(token_fitted[0], split="test", out=tmp_path / "g.json")
    with pytest.raises(ValueError, match=r"`samples` must be at most the 43 samples of .*'s train split; received 44"):
        generate.generate_run(token_fitted[0], split="train", samples=44, out=tmp_path / "g.json")
    assert list(tmp_path.iterdir()) == []
