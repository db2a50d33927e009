"""The PyTorch peer computes the chained model's semantics, in (sample, t, k) order, per cell."""

import numpy as np
import pytest

from bench._workloads import CELLS, Sizes, make_workload

torch = pytest.importorskip("torch", reason="the PyTorch peer needs the `peers` extra")

from bench._peers import _torch_model, carry_values, reset_values, torch_model_b  # noqa: E402

SIZES = Sizes(batch=3, timesteps=4, input_size=2, hidden=5, output_size=2)


@pytest.fixture
def inputs():
    work = make_workload(SIZES, 3, "uniform", seed=1)
    work["steps"][1] = 0  # a sample with no inner step at all
    return torch.from_numpy(work["x"]), torch.from_numpy(work["steps"]).long()


def _by_hand(model, x, steps, carry):
    """One B step at a time, sample by sample: the semantics contract, literally."""
    ir, _ = model["a"](x)
    outs = []
    for b in range(x.shape[0]):
        h = None  # torch's zero state, whatever its structure (LSTM: (h, c); stack: 2 layers)
        for t in range(x.shape[1]):
            if not carry:
                h = None
            for _ in range(int(steps[b, t])):
                out, h = model["b"](ir[b, t][None, None], h)
                outs.append(model["head"](out[0, 0]))
    return torch.stack(outs)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("carry", [True, False])
def test_peer_matches_a_step_by_step_loop(inputs, packed, carry, cell):
    x, steps = inputs
    model = _torch_model(SIZES, seed=0, cell=cell)
    values_fn = carry_values if carry else reset_values
    with torch.no_grad():
        got = values_fn(model, x, steps, packed)
        want = _by_hand(model, x, steps, carry)
    assert got.shape == (int(steps.sum()), SIZES.output_size)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_peer_uses_the_same_cell_type():
    kinds = {cell: torch_model_b(cell, 4) for cell in CELLS}
    assert isinstance(kinds["gru"], torch.nn.GRU) and kinds["gru"].num_layers == 1
    assert isinstance(kinds["lstm"], torch.nn.LSTM)
    assert isinstance(kinds["rnn"], torch.nn.RNN) and kinds["rnn"].nonlinearity == "tanh"
    assert isinstance(kinds["stacked"], torch.nn.GRU) and kinds["stacked"].num_layers == 2
    assert isinstance(kinds["functional"], torch.nn.RNN)
    with pytest.raises(ValueError, match="`cell` must be one of .*received 'cnn'"):
        torch_model_b("cnn", 4)


def test_carry_and_reset_differ_when_state_flows(inputs):
    x, steps = inputs
    model = _torch_model(SIZES, seed=0)
    with torch.no_grad():
        assert not torch.allclose(carry_values(model, x, steps, True), reset_values(model, x, steps, True))
