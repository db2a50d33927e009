"""Property tests of `bench run` and `bench report` options: every invalid value exits 2 with one
line naming the option and writes nothing; every valid one parses (checked with ``--dry-run``,
so no case runs).

``BENCH_PROPERTY_EXAMPLES`` raises the number of examples (the default tier keeps it small).
"""

import json
import math
import os
import tempfile
from pathlib import Path

import chain  # noqa: F401  (TensorFlow, imported before hypothesis watches the recursion limit)
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench._workloads import CELLS, PHASES
from bench.cli import main

EXAMPLES = int(os.environ.get("BENCH_PROPERTY_EXAMPLES", "30"))
INT32_MAX = 2**31 - 1
BASE = ["--strategies", "packed", "--no-peers", "--states", "carry", "--phases", "forward", "--longest-steps", "1"]

# The contract of each numeric option, written from the documentation, not from the code.
INTS = {
    "--rounds": (1, INT32_MAX), "--warmup-rounds": (1, INT32_MAX), "--threads": (1, INT32_MAX),
    "--batch": (1, INT32_MAX), "--timesteps": (1, INT32_MAX), "--reference-max-step": (0, INT32_MAX),
    "--seed": (0, 2**32 - 1),
}
INT_LISTS = {"--longest-steps": (1, INT32_MAX), "--hidden": (1, INT32_MAX)}
CHOICE_LISTS = {"--cells": CELLS, "--phases": PHASES, "--states": ("carry", "reset", "init")}


def _as_int(text):
    try:
        return int(text)
    except ValueError:
        return None


def _valid(option, value):
    if option in INTS:
        low, high = INTS[option]
        number = _as_int(value)
        return number is not None and low <= number <= high
    if option in INT_LISTS:
        low, high = INT_LISTS[option]
        items = [item.strip() for item in value.split(",") if item.strip()]
        numbers = [_as_int(item) for item in items]
        return bool(items) and all(n is not None and low <= n <= high for n in numbers)
    if option in CHOICE_LISTS:
        items = [item.strip() for item in value.split(",") if item.strip()]
        return bool(items) and all(item in CHOICE_LISTS[option] for item in items)
    if option == "--timeout":
        try:
            seconds = float(value)
        except ValueError:
            return False
        return math.isfinite(seconds) and seconds > 0
    raise AssertionError(option)


_int_text = st.one_of(
    st.integers(-(2**34), 2**34).map(str),
    st.sampled_from(["0", "1", "-1", str(INT32_MAX), str(INT32_MAX + 1), str(2**32 - 1), str(2**32), "1e3", "", "x"]),
)
_list_text = st.lists(_int_text, min_size=0, max_size=3).map(",".join)
_choice_text = st.lists(st.sampled_from([*CELLS, *PHASES, "carry", "reset", "init", "x", ""]), max_size=3).map(",".join)
_float_text = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "0", "-0.0", "1e-300", "300", "x", ""]),
)
OPTION_VALUES = st.one_of(
    st.tuples(st.sampled_from(sorted(INTS)), _int_text),
    st.tuples(st.sampled_from(sorted(INT_LISTS)), _list_text),
    st.tuples(st.sampled_from(sorted(CHOICE_LISTS)), _choice_text),
    st.tuples(st.just("--timeout"), _float_text),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPTION_VALUES)
def test_run_options_exit_2_when_invalid_and_parse_when_valid(option_value):
    option, value = option_value
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        args = ["run", "--dry-run", *BASE, f"{option}={value}", "--out", str(root / "o"), "--storage", str(root / "s")]
        result = CliRunner().invoke(main, args)
        assert "Traceback" not in result.output
        assert list(root.iterdir()) == []  # nothing written, valid or not
        if _valid(option, value):
            assert result.exit_code == 0, (args, result.output)
            assert "nothing run or written (--dry-run)" in result.output
        else:
            assert result.exit_code == 2, (args, result.output)
            errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1 and option in errors[0], result.output


_params = st.fixed_dictionaries({"strategy": st.sampled_from(["packed", "loop"]), "longest_step": st.integers(1, 4)})
_good = st.one_of(
    st.builds(lambda p: {"params": p, "status": "error", "message": "boom", "benchmark": None}, _params),
    st.builds(lambda p: {"params": p, "status": "skipped", "message": "no GPU", "benchmark": None}, _params),
    st.builds(lambda p: {"params": p, "status": "ok", "message": None,
                         "benchmark": {"stats": {"median": 0.01}, "extra_info": {"real_steps_per_s": 10.0}}}, _params),
)
_bad = st.one_of(
    st.builds(lambda p: {"params": p}, _params),  # no status
    st.builds(lambda p, s: {"params": p, "status": s}, _params, st.sampled_from(["", "passed", None, 1])),
    st.builds(lambda s: {"params": None, "status": s}, st.sampled_from(["ok", "error"])),
    st.builds(lambda p: {"params": p, "status": "ok", "benchmark": None}, _params),
    st.just("not a record"),
)


@settings(max_examples=max(EXAMPLES // 3, 5), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.data()), min_size=1, max_size=3), st.data())
def test_report_exits_2_on_a_damaged_record_and_renders_valid_ones(flags, data):
    records = [data.draw(_good if ok else _bad) for ok, _ in flags]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        run_dir.mkdir()
        (run_dir / "results.json").write_text(json.dumps({"run_id": "0001_p", "records": records}))
        result = CliRunner().invoke(main, ["report", str(run_dir)])
        assert "Traceback" not in result.output
        if all(ok for ok, _ in flags):
            assert result.exit_code == 0, (records, result.output)
            assert (run_dir / "results.csv").exists() and (run_dir / "plot.png").exists()
        else:
            assert result.exit_code == 2, (records, result.output)
            errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
            assert len(errors) == 1 and "'RUN'" in errors[0], result.output
            assert [p.name for p in run_dir.iterdir()] == ["results.json"]
