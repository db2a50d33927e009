"""Properties of `chain fit` and `chain evaluate` options, drawn by hypothesis.

Valid options reach `fit_run` / `evaluate_run` exactly as given. Invalid ones exit 2 with one line
naming the option and write nothing; they never reach the TensorFlow side of the application:
while they run, `chain_app.fit` and `chain_app.report` cannot be imported at all.

Training itself is covered by test_cli.py; here the two entry points are replaced by recorders,
so each example costs milliseconds.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import chain_app.fit
import chain_app.report
from chain_app.cli import main
from chain_app.options import FLOAT32_MAX, INT32_MAX, MAX_HIDDEN, STATES, STRATEGIES, FitOptions

INTEGERS = {"--epochs": (1, INT32_MAX), "--batch-size": (1, INT32_MAX), "--hidden": (1, MAX_HIDDEN),
            "--seed": (0, INT32_MAX)}  # fmt: skip
FIELDS = {"--epochs": "epochs", "--batch-size": "batch_size", "--hidden": "hidden", "--seed": "seed", "--lr": "lr",
          "--state": "state", "--strategy": "strategy"}  # fmt: skip


@st.composite
def valid_fit_options(draw):
    """`(argv, expected FitOptions fields)` for a random valid `chain fit` command line."""
    args, fields = [], {}
    for option, (low, high) in INTEGERS.items():
        if draw(st.booleans()):
            value = draw(st.integers(low, high))
            args += [option, str(value)]
            fields[FIELDS[option]] = value
    if draw(st.booleans()):
        lr = draw(st.floats(min_value=0, max_value=FLOAT32_MAX, exclude_min=True, allow_nan=False))
        args += ["--lr", repr(lr)]
        fields["lr"] = lr
    for option, choices in (("--state", STATES), ("--strategy", STRATEGIES)):
        if draw(st.booleans()):
            fields[FIELDS[option]] = draw(st.sampled_from(choices))
            args += [option, fields[FIELDS[option]]]
    head = draw(st.sampled_from([None, "predict_lengths", "stop_token"]))
    if head:
        args.append("--" + head.replace("_", "-"))
        fields[head] = True
    return args, fields


def _not_an_int(low, high):
    return st.one_of(
        st.integers(max_value=low - 1).map(str),
        st.integers(min_value=high + 1).map(str),
        st.sampled_from(["1.5", "1e3", "x", "", "nan"]),
    )


_BAD_LR = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "0", "-0.0", "1e39", "x", ""]),
    st.floats(max_value=0, allow_nan=False).map(repr),
    st.floats(min_value=FLOAT32_MAX, exclude_min=True).map(repr),
)


@st.composite
def invalid_fit_option(draw):
    """`(argv, option named in the error)`: one bad value among otherwise valid options."""
    args, _ = draw(valid_fit_options())
    option = draw(st.sampled_from([*INTEGERS, "--lr", "--state", "--strategy", "both heads", "both modes"]))
    if option == "both heads":
        return [*args, "--predict-lengths", "--stop-token"], "--predict-lengths"
    if option == "both modes":
        return [*args, "--resume", "--overwrite"], "--resume"
    if option in INTEGERS:
        bad = draw(_not_an_int(*INTEGERS[option]))
    elif option == "--lr":
        bad = draw(_BAD_LR)
    else:
        choices = STATES if option == "--state" else STRATEGIES
        bad = draw(st.text(min_size=1, max_size=8).filter(lambda text: text not in choices))
    return [*args, option, bad], option


class Recorder:
    def __init__(self, result):
        self.calls, self.result = [], result

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.result


def _invoke(argv):
    return CliRunner().invoke(main, argv)


@settings(deadline=None)
@given(valid_fit_options())
def test_valid_fit_options_reach_fit_run_as_given(drawn):
    args, fields = drawn
    recorder = Recorder({"heldout_mse": 1.0, "epochs": 1})
    with tempfile.TemporaryDirectory() as root, pytest.MonkeyPatch.context() as patch:
        patch.setattr(chain_app.fit, "fit_run", recorder)
        result = _invoke(["fit", str(Path(root) / "data"), "--out", str(Path(root) / "run"), *args])
    assert result.exit_code == 0, result.output
    assert len(recorder.calls) == 1
    (data_dir, run_dir, options), kwargs = recorder.calls[0]
    assert options == FitOptions(**fields)
    assert run_dir == Path(root) / "run" and kwargs["resume"] is False and kwargs["overwrite"] is False


@settings(deadline=None)
@given(invalid_fit_option())
def test_invalid_fit_options_exit_2_naming_the_option_and_write_nothing(drawn):
    args, option = drawn
    with tempfile.TemporaryDirectory() as root, pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "chain_app.fit", None)  # any import of it fails: no TF work reached
        result = _invoke(["fit", str(Path(root) / "data"), "--out", str(Path(root) / "run"), *args])
        written = list(Path(root).iterdir())
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and result.output.rstrip().endswith(error[0])
    assert option in error[0] or option.lstrip("-") in error[0]
    assert written == []


@settings(deadline=None)
@given(st.integers(1, INT32_MAX))
def test_valid_evaluate_batch_sizes_reach_evaluate_run(batch_size):
    recorder = Recorder({"mse": 1.0})
    with tempfile.TemporaryDirectory() as root, pytest.MonkeyPatch.context() as patch:
        patch.setattr(chain_app.report, "evaluate_run", recorder)
        (Path(root) / "model.keras").write_bytes(b"")
        result = _invoke(["evaluate", root, str(Path(root) / "data"), "--batch-size", str(batch_size)])
    assert result.exit_code == 0, result.output
    assert recorder.calls == [((Path(root), Path(root) / "data"), {"batch_size": batch_size, "allow_other_law": False,
                                                                        "split": "all"})]


@settings(deadline=None)
@given(_not_an_int(1, INT32_MAX), st.booleans())
def test_invalid_evaluate_input_exits_2_before_any_tf_work(batch_size, with_checkpoint):
    with tempfile.TemporaryDirectory() as root, pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "chain_app.report", None)
        if with_checkpoint:
            (Path(root) / "model.keras").write_bytes(b"")
            args = ["--batch-size", batch_size]
        else:
            args = []  # a run directory without a checkpoint
        result = _invoke(["evaluate", root, str(Path(root) / "data"), *args])
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1
    assert ("'--batch-size'" if with_checkpoint else "holds no checkpoint") in error[0]


def test_the_largest_learning_rate_is_float32s_largest():
    assert FLOAT32_MAX == float(np.finfo(np.float32).max)
    assert FitOptions(lr=FLOAT32_MAX).lr == FLOAT32_MAX
    with pytest.raises(ValueError, match="`lr` must be a finite number > 0"):
        FitOptions(lr=math.nextafter(FLOAT32_MAX, math.inf))
