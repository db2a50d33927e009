"""Property tests of the Chain call: drawn valid inputs give the reference result, drawn invalid
ones raise a ValueError that names `steps` or `x` (hypothesis; see tests/conftest.py's profiles)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain import STRATEGIES

from .conftest import INPUT_SIZE, make_chain
from .reference import reference_flat

MAX_STEPS = 3
_NETS = {}


def _net(strategy, state):
    key = (strategy, state)
    if key not in _NETS:
        _NETS[key] = make_chain("lstm", state, strategy=strategy, max_steps=MAX_STEPS)
    return _NETS[key]


@st.composite
def valid_calls(draw):
    batch = draw(st.integers(0, 3))
    big_t = draw(st.integers(0, 4))
    dtype = draw(st.sampled_from(["int32", "int64", "uint8", "int16"]))
    shared = draw(st.booleans())
    shape = (big_t,) if shared else (batch, big_t)
    values = draw(st.lists(st.integers(0, MAX_STEPS), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    steps = np.array(values, dtype=dtype).reshape(shape)
    if draw(st.booleans()):
        steps[...] = 0  # all-zero steps are a case of their own
    x = np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=(batch, big_t, INPUT_SIZE)).astype("float32")
    return x, steps


@pytest.mark.parametrize("state", ["carry", "reset"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@given(call=valid_calls())
def test_a_valid_call_gives_the_reference_result(strategy, state, call):
    x, steps = call
    net = _net(strategy, state)
    out = net(x, steps)
    want_steps = np.broadcast_to(steps, x.shape[:2])
    assert out.shape.as_list()[:2] == list(x.shape[:2])
    np.testing.assert_array_equal(out.row_lengths(axis=2).numpy().reshape(x.shape[:2]), want_steps)
    # with no sample or no outer step there is nothing to run (model A itself refuses T = 0)
    want = reference_flat(net, x, want_steps).numpy() if x.size else np.zeros((0, 2), "float32")
    np.testing.assert_allclose(out.flat_values.numpy(), want, atol=1e-5)


@st.composite
def invalid_calls(draw):
    kind = draw(st.sampled_from(["negative", "too-big", "int64-extreme", "float", "shape", "rank", "x-rank"]))
    x = np.zeros((2, 3, INPUT_SIZE), "float32")
    steps = np.ones((2, 3), "int64")
    if kind == "negative":
        steps[draw(st.integers(0, 1)), draw(st.integers(0, 2))] = draw(st.integers(-(2**63), -1))
        match = r"`steps` must be >= 0; received a value of -\d+"
    elif kind == "too-big":
        steps[draw(st.integers(0, 1)), draw(st.integers(0, 2))] = draw(st.integers(MAX_STEPS + 1, 2**63 - 1))
        match = rf"`steps` must be in \[0, {MAX_STEPS}\] \(max_steps\); received a value of \d+"
    elif kind == "int64-extreme":
        steps[1, 2] = draw(st.sampled_from([2**31, 2**32, 2**32 + 1, 2**63 - 1]))
        match = rf"`steps` must be in \[0, {MAX_STEPS}\] \(max_steps\); received a value of {steps[1, 2]}"
    elif kind == "float":
        steps = steps.astype(draw(st.sampled_from(["float32", "float64"])))
        match = r"`steps` must hold integers; received dtype float"
    elif kind == "shape":
        steps = np.ones((draw(st.integers(3, 5)), 3), "int32")
        match = r"`x` and `steps` must agree on \(batch, T\)"
    elif kind == "rank":
        steps = np.ones((2, 3, 1), "int32")
        match = r"`steps` must have rank 2 \(batch, T\) or 1 \(T,\); received shape \(2, 3, 1\)"
    else:
        x = np.zeros((2, 3), "float32")
        match = r"`x` must have rank 3 \(batch, T, input_size\); received shape \(2, 3\)"
    return x, steps, match


@given(call=invalid_calls())
def test_an_invalid_call_raises_a_value_error_naming_the_argument(call):
    x, steps, match = call
    with pytest.raises(ValueError, match=match):
        _net("packed", "carry")(x, steps)
