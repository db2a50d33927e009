"""Property-based tests of `datagen make`, `datagen inspect` and manifests, with random inputs.

Properties: a valid input works and reads back what was asked; an invalid option exits 2 with one
error line and writes nothing; a damaged manifest is refused (exit 1, one line). The number of
examples comes from the hypothesis profile in tests/conftest.py (`HYPOTHESIS_PROFILE=slow` for
more).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

import hypothesis
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import datagen  # noqa: E402
from datagen.cli import main  # noqa: E402


def run(*args) -> object:
    return CliRunner().invoke(main, [str(arg) for arg in args])


def assert_one_error_line(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if "Error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@st.composite
def valid_options(draw) -> dict:
    task = draw(st.sampled_from(datagen.TASKS))
    input_size = draw(st.integers(1, 3))
    return {
        "task": task,
        "samples": draw(st.integers(1, 60)),
        "timesteps": draw(st.integers(1, 6)),
        "input-size": input_size,
        "output-size": input_size if task == "echo" else draw(st.integers(1, 3)),
        "longest-step": draw(st.integers(1, 6)),
        "lengths": draw(st.sampled_from(datagen.LENGTHS)),
        "zero-fraction": draw(st.floats(0.0, 1.0)),
        "noise": draw(st.one_of(st.just(0.0), st.floats(1e-6, 10.0))),
        "seed": draw(st.integers(0, 2**63 - 1)),
        "teacher-hidden": draw(st.integers(1, 4)),
        "vocab-size": draw(st.integers(2, 5)),
        "format": draw(st.sampled_from(datagen.FORMATS)),
        "shard-size": draw(st.integers(1, 70)),
        "workers": draw(st.integers(1, 2)),
    }


def as_args(options: dict) -> list[str]:
    return [part for key, value in options.items()
            for part in (f"--{key}", repr(value) if isinstance(value, float) else str(value))]  # fmt: skip


def generation_kwargs(options: dict) -> dict:
    names = ("task", "timesteps", "input-size", "output-size", "longest-step", "lengths", "zero-fraction", "noise",
             "seed", "teacher-hidden", "vocab-size")  # fmt: skip
    return {name.replace("-", "_"): options[name] for name in names}


@given(options=valid_options())
def test_a_valid_make_writes_and_inspect_reports_what_was_asked(options):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "d"
        result = run("make", "--out", out, *as_args(options))
        assert result.exit_code == 0, result.output
        data = datagen.read(out, verify=True)
        params = data["manifest"]["params"]
        asked = {**generation_kwargs(options), "n_samples": options["samples"], "shard_size": options["shard-size"],
                 "format": options["format"]}  # fmt: skip
        tokens = options["task"] in datagen.TOKEN_TASKS
        if not tokens:  # only token manifests record the vocabulary
            del asked["vocab_size"]
        assert params == asked
        expected = datagen.generate(options["samples"], **generation_kwargs(options))
        for key in ("x", "steps", "y_values", "y_clean_values"):
            np.testing.assert_array_equal(data[key], expected[key])
        assert data["manifest"]["noise_floor"] == (None if tokens else options["noise"] ** 2)
        report = run("inspect", out)
        assert report.exit_code == 0, report.output
        assert f"samples      {options['samples']} x T={options['timesteps']}" in report.output
        assert f"real steps   {int(expected['steps'].sum())} " in report.output


_INT_OPTIONS = {
    "samples": (1, None), "timesteps": (1, None), "input-size": (1, None), "output-size": (1, None),
    "longest-step": (1, 2**31 - 1), "teacher-hidden": (1, None), "shard-size": (1, None), "workers": (1, None),
    "num-shards": (1, None), "seed": (0, 2**63 - 1), "vocab-size": (2, 256),
}  # fmt: skip


@st.composite
def one_bad_option(draw) -> tuple[str, str]:
    """An option and a value outside what it accepts."""
    kind = draw(st.sampled_from(["int_low", "int_high", "not_int", "fraction", "noise", "choice"]))
    if kind in ("int_low", "int_high", "not_int"):
        name = draw(st.sampled_from(sorted(_INT_OPTIONS)))
        low, high = _INT_OPTIONS[name]
        if kind == "int_low" or (kind == "int_high" and high is None):
            return name, str(draw(st.integers(-(2**70), low - 1)))
        if kind == "int_high":
            return name, str(draw(st.integers(high + 1, 2**70)))
        return name, draw(st.sampled_from(["", "x", "1.5", "1e3", "nan", "0x10", "--"]))
    if kind == "fraction":
        value = draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0 <= v <= 1),
                               st.sampled_from(["a", ""])))  # fmt: skip
        return "zero-fraction", repr(value) if isinstance(value, float) else value
    if kind == "noise":
        value = draw(st.one_of(st.floats(allow_nan=True, allow_infinity=True).filter(lambda v: not 0 <= v <= 1e18),
                               st.sampled_from(["b", ""])))  # fmt: skip
        return "noise", repr(value) if isinstance(value, float) else value
    name = draw(st.sampled_from(["task", "lengths", "format"]))
    choices = {"task": datagen.TASKS, "lengths": datagen.LENGTHS, "format": datagen.FORMATS}[name]
    text = st.text(min_size=0, max_size=8).filter(lambda text: text not in choices and not text.startswith("-"))
    return name, draw(text)


@given(options=valid_options(), bad=one_bad_option())
def test_an_invalid_make_option_exits_2_in_one_line_and_writes_nothing(options, bad):
    name, value = bad
    options = {key: val for key, val in options.items() if key != name}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "new" / "d"
        result = run("make", "--out", out, *as_args(options), f"--{name}", value)
        line = assert_one_error_line(result, 2)
        assert f"'--{name}'" in line or f"--{name}/" in line or f"/--{name}'" in line, line
        assert not (Path(tmp) / "new").exists()


@given(timesteps=st.integers(10**8, 10**15), extra=st.sampled_from([[], ["--workers", "2"], ["--task", "echo"]]))
def test_sizes_that_cannot_fit_exit_2_in_one_line_and_write_nothing(timesteps, extra):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "d"
        line = assert_one_error_line(run("make", "--out", out, "--timesteps", timesteps, "--samples", "5", *extra), 2)
        assert "the sizes need about" in line and "GiB of memory" in line
        assert not out.exists()


@st.composite
def bad_plot(draw, directory: Path) -> tuple[list[str], str]:
    kind = draw(st.sampled_from(["suffix", "missing_dir", "sample"]))
    if kind == "suffix":
        suffix = draw(st.sampled_from([".txt", ".jpg", ".pdf", "", ".png.bak", ".PNG~"]))
        return ["--plot", str(directory / f"p{suffix}")], "'--plot'"
    if kind == "missing_dir":
        return ["--plot", str(directory / draw(st.sampled_from(["no", "a/b"])) / "p.png")], "'--plot'"
    sample = draw(st.one_of(st.integers(-(2**40), -1), st.integers(300, 2**40)))
    return ["--plot", str(directory / "p.png"), "--sample", str(sample)], "'--sample'"


@given(data=st.data())
def test_invalid_inspect_options_exit_2_in_one_line_and_write_nothing(small_npz, data):
    with tempfile.TemporaryDirectory() as tmp:
        args, option = data.draw(bad_plot(Path(tmp)))
        line = assert_one_error_line(run("inspect", small_npz, *args), 2)
        assert option in line
        assert list(Path(tmp).iterdir()) == []


# Damaged manifests. Each mutation changes a field that a valid manifest determines, so the
# changed manifest must be refused; fields whose other values are valid (the seed, the law's
# words, a truth parameter's value) only get values of the wrong type.

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)  # fmt: skip
_REQUIRED = ["format_version", "generator", "params", "law", "counts", "noise_floor", "truth", "slice", "shards"]
_EXACT = [("format_version",), ("generator", "name"), ("noise_floor",), ("law", "task"), ("counts", "samples"),
          ("counts", "timesteps"), ("counts", "real_steps"), ("counts", "shards"), ("slice", "index"),
          ("slice", "count"), ("slice", "shards"), ("slice", "total_shards"), ("slice", "total_samples"),
          ("params", "n_samples"), ("params", "shard_size"), ("params", "timesteps"), ("params", "format"),
          ("params", "input_size"), ("params", "output_size"), ("params", "noise"), ("params", "task"),
          ("shards", 0, "start"), ("shards", 1, "stop"), ("shards", 2, "real_steps"), ("shards", 1, "file"),
          ("shards", 0, "sha256"), ("truth", "files"), ("truth", "parameters"), ("truth", "parameters", "tau")]
_TYPED = [(("generator", "version"), str), (("law", "law"), str), (("params", "seed"), int),
          (("params", "zero_fraction"), float)]  # fmt: skip


def get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def put(tree, path, value):
    get(tree, path[:-1])[path[-1]] = value


def differs(old, new) -> bool:
    if isinstance(old, float) and isinstance(new, float) and not isinstance(new, bool):
        return not math.isclose(old, new, rel_tol=1e-6)
    return json.dumps(old, sort_keys=True) != json.dumps(new, sort_keys=True)


@st.composite
def damaged(draw, manifest: dict) -> dict:
    manifest = copy.deepcopy(manifest)
    kind = draw(st.sampled_from(["drop", "exact", "typed", "duplicate", "drop_shard"]))
    if kind == "drop":
        manifest.pop(draw(st.sampled_from(_REQUIRED)))
    elif kind == "exact":
        path = draw(st.sampled_from(_EXACT))
        old = get(manifest, path)
        put(manifest, path, draw(_JSON.filter(lambda new: differs(old, new))))
    elif kind == "typed":
        path, kind_of = draw(st.sampled_from(_TYPED))
        if kind_of is float:  # an integer zero_fraction is a valid number
            wrong = _JSON.filter(lambda new: not isinstance(new, (int, float)) or isinstance(new, bool))
        else:
            wrong = _JSON.filter(lambda new: not isinstance(new, kind_of) or isinstance(new, bool))
        put(manifest, path, draw(wrong))
    elif kind == "duplicate":
        manifest["shards"].insert(draw(st.integers(0, 3)), copy.deepcopy(manifest["shards"][draw(st.integers(0, 2))]))
    else:
        manifest["shards"].pop(draw(st.integers(0, 2)))
    return manifest


@pytest.fixture(scope="module")
def running_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("running") / "d"
    datagen.make(out, n_samples=30, shard_size=10, task="running", timesteps=4)
    return out


@given(data=st.data())
def test_a_damaged_manifest_is_refused_in_one_line(running_dataset, data):
    original = json.loads((running_dataset / "manifest.json").read_text())
    manifest = data.draw(damaged(original))
    with tempfile.TemporaryDirectory() as tmp:
        copy_of = Path(tmp) / "d"
        shutil.copytree(running_dataset, copy_of)
        (copy_of / "manifest.json").write_text(json.dumps(manifest))
        assert_one_error_line(run("inspect", copy_of, "--verify"), 1)
        with pytest.raises(datagen.DatasetError):
            datagen.read(copy_of, verify=True)
