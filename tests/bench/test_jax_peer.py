"""The JAX peer computes a Chain's outputs, loss and every gradient from the same weights."""

import dataclasses
import sys

import numpy as np
import pytest

from bench._workloads import CELLS, Case, Sizes, make_workload

jax = pytest.importorskip("jax", reason="the JAX peer needs the `peers` extra (jax)")
optax = pytest.importorskip("optax", reason="the JAX peer needs the `peers` extra (optax)")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import _jax_generate, _jax_peer  # noqa: E402
from bench._tf_framework import build_chain  # noqa: E402
from .conftest import assert_draws_follow_the_cut_softmax  # noqa: E402

SIZES = Sizes(batch=3, timesteps=4, input_size=2, hidden=5, output_size=2)
TOKEN_SIZES = dataclasses.replace(SIZES, output_size=6)  # V = 6 tokens
TOL = {"rtol": 1e-5, "atol": 1e-6}


@pytest.fixture(scope="module")
def work():
    """L = 3; sample 1 has no inner step at all, and some (b, t) of the others none either."""
    work = make_workload(SIZES, 3, "uniform", seed=1)
    work["steps"][1] = 0
    rng = np.random.default_rng(2)
    work["y_values"] = rng.standard_normal((int(work["steps"].sum()), SIZES.output_size)).astype(np.float32)
    assert (work["steps"][[0, 2]] == 0).any()
    return work


def _cells(model_b):
    if isinstance(model_b, keras.layers.StackedRNNCells):
        return list(model_b.cells)
    if isinstance(model_b, keras.Model):  # the functional model around one SimpleRNNCell
        return [layer for layer in model_b.layers if isinstance(layer, keras.layers.SimpleRNNCell)]
    return [model_b]


def _variables(net):
    """The Chain's variables in the structure of `_jax_peer.init_params` (a token chain's too)."""
    layer = lambda cell: {"kernel": cell.kernel, "recurrent": cell.recurrent_kernel, "bias": cell.bias}  # noqa: E731
    variables = {
        "a": layer(net.model_a.cell),
        "b": tuple(layer(cell) for cell in _cells(net.model_b)),
        "head": {"kernel": net.head.kernel, "bias": net.head.bias},
    }
    if net.vocab_size is not None:
        variables["embedding"] = net.token_embedding.embeddings
    return variables


def _chain(cell, state, work, phase="train", sizes=SIZES):
    net = build_chain(Case("auto", state, phase, 3, "uniform", "cpu", cell, sizes.hidden), sizes, 0,
                      strategy="auto", compiled=False)  # fmt: skip
    net.build(work["x"].shape)
    variables = _variables(net)
    # every weight is compared (a token chain's feedback_start serves real-valued feedback only)
    assert len(tf.nest.flatten(variables)) == len([v for v in net.trainable_variables if "feedback_start" not in v.path])
    params = jax.tree.map(lambda v: jax.numpy.asarray(v.numpy()), variables)
    return net, variables, params


def _chain_step(net, variables, work):
    with tf.GradientTape() as tape:
        out = net(work["x"], work["steps"], training=True).flat_values
        loss = tf.reduce_mean(tf.square(out - work["y_values"]))
    return out.numpy(), float(loss), tape.gradient(loss, variables)


def _assert_trees_close(got, want):
    paths = jax.tree_util.tree_flatten_with_path(got)[0]
    for (path, g), w in zip(paths, jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), **TOL, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("state", ["carry", "reset"])
def test_peer_matches_the_chain_in_outputs_loss_and_gradients(work, cell, state):
    net, variables, params = _chain(cell, state, work)
    want_values, want_loss, want_grads = _chain_step(net, variables, work)
    carry = state == "carry"
    grad = _jax_peer.grad_program(cell, carry)
    bound = _jax_peer.scan_bound(work["steps"], carry)
    (loss, values), grads = grad(params, work["x"], work["steps"], work["y_values"], bound=bound)
    assert values.shape == (int(work["steps"].sum()), SIZES.output_size)
    np.testing.assert_allclose(np.asarray(values), want_values, **TOL)
    np.testing.assert_allclose(float(loss), want_loss, **TOL)
    want_grads = jax.tree.map(lambda g: g.numpy(), want_grads)
    _assert_trees_close(grads, want_grads)
    assert all(np.abs(g).max() > 0 for g in jax.tree.leaves(want_grads))  # every weight is reached


@pytest.mark.parametrize("state", ["carry", "reset"])
def test_forward_program_returns_the_chain_values_and_their_sum(work, state):
    net, _, params = _chain("gru", state, work)
    carry = state == "carry"
    count, bound = int(work["steps"].sum()), _jax_peer.scan_bound(work["steps"], carry)
    values, total = _jax_peer.forward_program("gru", carry)(params, work["x"], work["steps"], count=count, bound=bound)
    want = net(work["x"], work["steps"]).flat_values.numpy()
    np.testing.assert_allclose(np.asarray(values), want, **TOL)
    np.testing.assert_allclose(float(total), want.sum(), rtol=1e-5, atol=1e-5)


def test_train_step_is_one_adam_step_on_the_gradients(work):
    """Adam's first step moves a weight by about the learning rate whatever its gradient's size, so
    the gradients are the peer's own (checked against the Chain's above)."""
    _, _, params = _chain("lstm", "carry", work)
    args = (work["x"], work["steps"], work["y_values"])
    bound = _jax_peer.scan_bound(work["steps"], True)
    (want_loss, _), grads = _jax_peer.grad_program("lstm", True)(params, *args, bound=bound)
    optimizer = optax.adam(_jax_peer.LEARNING_RATE)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    want = optax.apply_updates(params, updates)
    train = _jax_peer.train_program("lstm", True, optimizer)
    new, _, loss = train(params, optimizer.init(params), *args, bound=bound)  # params are donated
    np.testing.assert_allclose(float(loss), float(want_loss), **TOL)
    _assert_trees_close(new, want)
    assert np.abs(np.asarray(updates["b"][0]["recurrent"])).min() > 0  # a real step


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("state", ["carry", "reset"])
def test_peer_generates_the_chains_greedy_tokens(work, cell, state):
    net, _, params = _chain(cell, state, work, phase="generate-greedy", sizes=TOKEN_SIZES)
    want = net.generate(work["x"], work["steps"]).flat_values.numpy()
    carry = state == "carry"
    generate = _jax_generate.generate_program(cell, carry, "generate-greedy")
    tokens, total = generate(params, work["x"], work["steps"], jax.random.key(0), count=len(want),
                             bound=_jax_peer.scan_bound(work["steps"], carry))  # fmt: skip
    assert len(set(want.tolist())) > 1  # the tokens fed back vary, so feeding the wrong one would show
    np.testing.assert_array_equal(np.asarray(tokens), want)
    assert int(total) == want.sum()


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 0.9), (2.0, 0.6)])
def test_nucleus_sampling_draws_from_the_cut_softmax(temperature, top_p):
    logits = np.array([1.0, 0.0, -1.0, 2.0, 0.5, -3.0], "float32")
    n = 100_000
    drawn = _jax_generate.nucleus_sample(np.tile(logits, (n, 1)), jax.random.key(5), temperature, top_p)
    assert_draws_follow_the_cut_softmax(np.asarray(drawn), logits, temperature, top_p)


def test_sampling_draws_again_at_each_step_and_alike_from_one_key(work):
    params = _jax_peer.init_params(0, "gru", TOKEN_SIZES, tokens=True)
    generate = _jax_generate.generate_program("gru", True, "generate-sampling")
    shapes = {"count": int(work["steps"].sum()), "bound": _jax_peer.scan_bound(work["steps"], True)}
    first, again, other = (np.asarray(generate(params, work["x"], work["steps"], jax.random.key(k), **shapes)[0])
                           for k in (0, 0, 1))  # fmt: skip
    np.testing.assert_array_equal(first, again)
    assert (first != other).any() and len(set(first.tolist())) > 2


def test_scan_bound_is_the_longest_run_or_the_longest_sample_rounded_up():
    steps = np.array([[3, 0, 2], [1, 1, 0]])
    assert _jax_peer.scan_bound(steps, carry=False) == 3
    assert _jax_peer.scan_bound(steps, carry=True) == 8  # 5 real steps, padded to a multiple of 8
    assert _jax_peer.scan_bound(np.full((2, 3), 3), carry=True) == 16  # 9 real steps
    assert _jax_peer.scan_bound(np.zeros((0, 3), int), carry=True) == 0


@pytest.mark.parametrize("state", ["carry", "reset"])
def test_framework_builds_a_train_step_that_learns(state):
    sizes = Sizes(batch=2, timesteps=3, input_size=2, hidden=4, output_size=2)
    case = Case("jax", state, "train", 2, "uniform", "cpu", "rnn", 4)
    framework = _jax_peer.JaxFramework(threads=2)
    assert framework.skip_reason("cpu") is None
    run = framework.build(case, sizes, make_workload(sizes, 2, "uniform", 0), seed=0)
    losses = [run() for _ in range(30)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert set(framework.versions()) >= {"jax_version", "optax_version", "tensorflow_version"}


@pytest.mark.parametrize("state", ["carry", "reset"])
def test_the_peer_run_by_tensorflow_computes_what_jax_computes_step_by_step(state):
    sizes = Sizes(batch=2, timesteps=3, input_size=2, hidden=4, output_size=2)
    work = make_workload(sizes, 2, "uniform", 0)
    framework = _jax_peer.JaxFramework(threads=2)
    for phase, calls in (("forward", 2), ("train", 4)):
        runs = {s: framework.build(Case(s, state, phase, 2, "uniform", "cpu", "stacked", 4), sizes, work, seed=0)
                for s in ("jax", "jax-tf")}  # fmt: skip
        got = {s: [run() for _ in range(calls)] for s, run in runs.items()}
        np.testing.assert_allclose(got["jax-tf"], got["jax"], **TOL)
    assert got["jax-tf"][3] < got["jax-tf"][0]  # the train steps update TensorFlow's variables as JAX's params


def test_the_peer_run_by_tensorflow_has_no_generation_phase():
    case = Case("jax-tf", "reset", "generate-greedy", 2, "uniform", "cpu", "gru", 4)
    with pytest.raises(ValueError, match="phase.*generate-greedy"):
        _jax_peer.JaxFramework(threads=2).build(case, SIZES, make_workload(SIZES, 2, "uniform", 0), seed=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_keeps_freed_blocks_in_the_heap():
    assert _jax_peer.keep_heap_memory()


def test_missing_jax_or_optax_is_a_skip_reason_naming_the_extra(monkeypatch):
    assert _jax_peer.jax_import_error() is None
    monkeypatch.setitem(sys.modules, "optax", None)  # `import optax` now raises ImportError
    reason = _jax_peer.jax_import_error()
    assert reason.startswith("optax cannot be imported (ModuleNotFoundError") and "install the `peers` extra" in reason
    assert _jax_peer.JaxFramework(threads=2).skip_reason("cpu") == reason


def test_framework_names_a_missing_gpu():
    if jax.devices()[0].platform == "gpu":
        pytest.skip("JAX sees a GPU here")
    assert _jax_peer.JaxFramework(threads=2).skip_reason("gpu").startswith("JAX sees no GPU")


class _Device:
    def __init__(self):
        self.stats = {"bytes_in_use": 100, "peak_bytes_in_use": 500}

    def memory_stats(self):
        return dict(self.stats)


def test_device_memory_reports_a_peak_only_above_the_earlier_one():
    device = _Device()
    memory = _jax_peer.JaxDeviceMemory(device)
    memory.reset()
    device.stats["peak_bytes_in_use"] = 400 + 500  # the window rose to 900, 800 above the start
    assert memory.peak_bytes() == 800
    memory.reset()
    device.stats["bytes_in_use"] = 300  # the window stayed under the earlier peak: unknown
    assert memory.peak_bytes() is None


# The default tier generates with every cell kind once, the state modes in turn, and runs JAX's
# program on TensorFlow in reset mode; `-m slow` adds the other pairs.
DEFAULT_TIER = {
    "test_the_peer_run_by_tensorflow_computes_what_jax_computes_step_by_step": lambda p: p["state"] == "reset",
    "test_peer_generates_the_chains_greedy_tokens": lambda p: (p["cell"], p["state"]) in {
        ("gru", "carry"), ("lstm", "reset"), ("rnn", "carry"), ("stacked", "reset"), ("functional", "carry")},
}
