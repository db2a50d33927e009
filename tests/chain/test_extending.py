"""The extension points, used through the public names of `chain` alone: a kernel of one's own
for a cell of one's own, and a length part of one's own."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import chain

# ----------------------------------------------------------------------------- a kernel


@keras.saving.register_keras_serializable(package="tests")
class TanhCell(keras.layers.Layer):
    """h' = tanh(x W + b + h U): a cell of the user's own."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units
        self.output_size = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.u = self.add_weight(shape=(self.units, self.units), name="u", initializer="orthogonal")
        self.b = self.add_weight(shape=(self.units,), name="b", initializer="random_normal")

    def call(self, inputs, states):
        h = tf.tanh(inputs @ self.w + self.b + states[0] @ self.u)
        return h, [h]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class TanhKernel:
    """The fast path of `TanhCell`: its projection, step and hand-written backward step."""

    name = "TanhCell (a kernel of the user's own)"
    out_is_state = True
    record_widths: list = []

    def __init__(self, cell):
        self.cell = cell
        self.width = cell.units
        self.state_sizes = [cell.units]

    def project(self, ir):
        return ir @ tf.cast(self.cell.w, ir.dtype) + tf.cast(self.cell.b, ir.dtype)

    def project_fed(self, ir, rows, prev):
        w = tf.cast(self.cell.w, ir.dtype)
        width = ir.shape[-1]
        return tf.gather(ir @ w[:width] + tf.cast(self.cell.b, ir.dtype), rows) + prev @ w[width:]

    def params(self, dtype):
        return [tf.cast(self.cell.u, dtype)]

    def forward(self, x, states, params):
        new = tf.tanh(x + states[0] @ params[0])
        return new, [new], []

    def backward(self, step, d_out, d_new):
        d_pre = d_new[0] * (1.0 - step.out * step.out)
        d_prev = tf.matmul(d_pre, step.params[0], transpose_b=True)
        return d_pre, [d_prev], [tf.matmul(step.states[0], d_pre, transpose_a=True)]


chain.register_kernel(TanhCell, TanhKernel)


def _pair(state, feedback=False):
    """The same chain twice, with the user's kernel, called through its graph functions, and with
    autodiff of the cell itself, the reference, called eagerly (a fraction of the time of tracing it).
    Model A is a Dense layer: the kernel sees IR alone, and a GRU's graph made most of each trace."""
    nets = []
    for fused in (True, False):
        keras.utils.set_random_seed(3)
        nets.append(chain.Chain(keras.layers.Dense(5), TanhCell(6), output_size=2, state=state, fused=fused,
                                feedback=feedback, compiled=fused))  # fmt: skip
    return nets


def _values_and_gradients(net, x, steps, targets=None):
    with tf.GradientTape() as tape:
        out = net(x, steps, training=True, targets=targets)
        loss = tf.reduce_sum(tf.square(out.flat_values)) + tf.reduce_sum(out.flat_values)
    return out.flat_values, tape.gradient(loss, net.trainable_variables)


@pytest.mark.parametrize("state", ["carry", "reset", "init"])
def test_a_registered_kernel_runs_the_users_cell_and_matches_autodiff(state):
    fast, generic = _pair(state)
    assert fast.fast_path == (True, "fast path: TanhCell (a kernel of the user's own)")
    assert not generic.fast_path.fused
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    steps = rng.integers(0, 4, size=(3, 5))
    got, got_grads = _values_and_gradients(fast, x, steps)
    generic(x, steps)
    generic.set_weights(fast.get_weights())
    want, want_grads = _values_and_gradients(generic, x, steps)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert len(got_grads) == len(want_grads) == len(fast.trainable_variables)
    for g, w, v in zip(got_grads, want_grads, fast.trainable_variables):
        np.testing.assert_allclose(g, w, atol=1e-5, err_msg=v.path)


def test_a_registered_kernel_takes_teacher_forced_feedback():
    fast, generic = _pair("carry", feedback=True)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 4, 4)).astype("float32")
    steps = rng.integers(0, 4, size=(2, 4))
    targets = tf.RaggedTensor.from_uniform_row_length(tf.RaggedTensor.from_row_lengths(
        rng.normal(size=(int(steps.sum()), 2)).astype("float32"), steps.reshape(-1)), 4)  # fmt: skip
    got, got_grads = _values_and_gradients(fast, x, steps, targets)
    generic(x, steps)
    generic.set_weights(fast.get_weights())
    want, want_grads = _values_and_gradients(generic, x, steps, targets)
    np.testing.assert_allclose(got, want, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_a_kernel_that_refuses_a_cell_gives_its_reason():
    class PickyCell(TanhCell):
        pass

    def make(cell):
        raise ValueError("PickyCell: only 6 units have a fast path")

    chain.register_kernel(PickyCell, make)
    net = chain.Chain(keras.layers.GRU(4, return_sequences=True), PickyCell(4))
    assert net.fast_path == (False, "generic path: PickyCell: only 6 units have a fast path")
    with pytest.raises(ValueError, match="fused=True, but model B has no fast path: PickyCell: only 6 units"):
        chain.Chain(keras.layers.GRU(4, return_sequences=True), PickyCell(4), fused=True)


def test_a_subclass_of_a_registered_cell_is_not_taken_for_it():
    class MyGRU(keras.layers.GRUCell):
        pass

    net = chain.Chain(keras.layers.GRU(4, return_sequences=True), MyGRU(4))
    assert net.fast_path.reason.startswith("generic path: MyGRU has no registered kernel (registered: GRUCell")


@pytest.mark.parametrize(
    "args, message",
    [
        (("TanhCell", TanhKernel), r"`cell_type` must be a cell class; received 'TanhCell'"),
        ((TanhCell, 3), r"`make` must be a callable cell -> Kernel; received 3"),
    ],
)
def test_bad_registrations_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        chain.register_kernel(*args)


class WideTanhCell(TanhCell):
    """TanhCell, registered with a kernel whose projection is two blocks wide."""


class BlockKernel(TanhKernel):
    """TanhCell's kernel with its projection held as two blocks, `[x W + b, x W + b]`, of which
    the step reads the first, and `forward_blocks`: the padded loop hands it the blocks apart."""

    seen: list = []  # the blocks each traced `forward_blocks` was given

    def project(self, ir):
        p = super().project(ir)
        return tf.concat([p, p], -1)

    def project_fed(self, ir, rows, prev):
        p = super().project_fed(ir, rows, prev)
        return tf.concat([p, p], -1)

    def forward(self, x, states, params):
        return super().forward(tf.split(x, 2, axis=-1)[0], states, params)

    def forward_blocks(self, xs, states, params):
        BlockKernel.seen.append([tuple(b.shape) for b in xs])
        return super().forward(xs[0], states, params)

    def backward(self, step, d_out, d_new):
        d_pre, d_prev, d_params = super().backward(step, d_out, d_new)
        return tf.concat([d_pre, tf.zeros_like(d_pre)], -1), d_prev, d_params


chain.register_kernel(WideTanhCell, BlockKernel)


def test_a_kernel_with_forward_blocks_gets_the_padded_loops_blocks_apart():
    # in carry mode each step reads its own rows from the loop's buffers (in reset mode every
    # step reads the same rows, given whole to `forward`)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    steps = rng.integers(0, 4, size=(3, 5))
    nets = []
    for cell, strategy in ((WideTanhCell(6), "padded"), (TanhCell(6), "packed")):
        keras.utils.set_random_seed(3)
        nets.append(chain.Chain(keras.layers.Dense(5), cell, output_size=2, state="carry", strategy=strategy))
    BlockKernel.seen.clear()
    got, got_grads = _values_and_gradients(nets[0], x, steps)
    assert BlockKernel.seen and all(len(shapes) == 2 and all(s[-1] == 6 for s in shapes)
                                    for shapes in BlockKernel.seen), BlockKernel.seen  # fmt: skip
    nets[1](x, steps)
    nets[1].set_weights(nets[0].get_weights())
    want, want_grads = _values_and_gradients(nets[1], x, steps)
    np.testing.assert_allclose(got, want, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_the_built_in_kernels_meet_the_public_protocol():
    net = chain.Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.LSTMCell(4))
    net(np.zeros((1, 2, 3), "float32"), np.ones((1, 2), "int32"))
    assert isinstance(net.step_adapter().kernel, chain.Kernel)
    assert isinstance(TanhKernel(TanhCell(2)), chain.Kernel)


# ----------------------------------------------------------------------------- a length part


@keras.saving.register_keras_serializable(package="tests")
class RoundedLength(chain.Lengths):
    """Regresses `steps` from IR with one Dense unit and squared error; generates at its rounding."""

    metric = "rounded_accuracy"
    tracker = "rounded_tracker"

    def __init__(self, scale=1.0):
        self.scale = scale

    def layers(self, max_steps, ir_size, b_size):
        head = keras.layers.Dense(1, name="rounded_head")
        head.build((None, None, ir_size))
        self.cap = max_steps
        return {"rounded_head": head}

    def logits(self, layers, ir, b_flat):
        return {"length_estimate": layers["rounded_head"](ir)[..., 0] * self.scale}

    def loss(self, parts, steps, outer, inner):
        error = tf.square(parts["length_estimate"] - tf.cast(steps, tf.float32))
        return chain.replica_mean(error, outer)

    def hits(self, parts, steps):
        return tf.cast(tf.equal(self._rounded(parts["length_estimate"]), steps), tf.float32)

    def generate(self, generation):
        estimate = generation.layers["rounded_head"](generation.ir)[..., 0] * self.scale
        return generation.run_at(self._rounded(estimate, generation.max_steps))

    def _rounded(self, estimate, cap=None):
        cap = self.cap if cap is None else cap
        return tf.cast(tf.clip_by_value(tf.round(estimate), 0, cap), tf.int32)

    def get_config(self):
        return {"scale": self.scale}


def _length_data(n=64, big_t=4, seed=0):
    """Steps that follow x[..., 0]: 0 to 3 inner steps, targets of zeros."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, big_t, 2)).astype("float32")
    steps = np.clip(np.round(1.5 + x[..., 0]), 0, 3).astype("int32")
    y = tf.RaggedTensor.from_uniform_row_length(tf.RaggedTensor.from_row_lengths(
        np.zeros((int(steps.sum()), 2), "float32"), steps.reshape(-1)), big_t)  # fmt: skip
    return x, steps, y


def test_a_length_part_of_ones_own_trains_scores_generates_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    net = chain.Chain(keras.layers.GRU(8, return_sequences=True), keras.layers.GRUCell(4), output_size=2,
                      max_steps=3, lengths=RoundedLength(scale=2.0))  # fmt: skip
    x, steps, y = _length_data()
    net.compile(keras.optimizers.Adam(0.03))
    before = net.evaluate((x, steps), y, verbose=0, return_dict=True)
    batches = tf.data.Dataset.from_tensor_slices(((x, steps), y)).batch(16)
    history = net.fit(batches, epochs=25, verbose=0)
    assert "rounded_accuracy" in history.history
    after = net.evaluate((x, steps), y, verbose=0, return_dict=True)
    assert after["rounded_accuracy"] > max(before["rounded_accuracy"], 0.8)
    out = net.generate(x)
    generated = out.row_lengths(axis=2).flat_values.numpy().reshape(steps.shape)
    assert np.mean(generated == steps) == pytest.approx(after["rounded_accuracy"], abs=1e-6)
    path = tmp_path / "own.keras"
    net.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.lengths, RoundedLength) and loaded.lengths.scale == 2.0
    np.testing.assert_array_equal(loaded.generate(x).row_lengths(axis=2).flat_values, generated.ravel())
    np.testing.assert_allclose(loaded.generate(x).flat_values, out.flat_values, atol=1e-6)


def test_a_length_part_may_not_take_a_name_the_chain_uses():
    class Clash(RoundedLength):
        def layers(self, max_steps, ir_size, b_size):
            return {"head": keras.layers.Dense(1)}

    net = chain.Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4), max_steps=3,
                      lengths=Clash())  # fmt: skip
    with pytest.raises(ValueError, match=r"a length part's layers need names of their own; received 'head'"):
        net(np.zeros((1, 2, 2), "float32"), np.ones((1, 2), "int32"))


def test_chain_evaluate_and_report_score_the_lengths_of_a_part_of_ones_own():
    from chain_app.report import score  # what `chain evaluate` and a run's report.json report

    keras.utils.set_random_seed(0)
    net = chain.Chain(keras.layers.GRU(8, return_sequences=True), keras.layers.GRUCell(4), output_size=2,
                      max_steps=3, lengths=RoundedLength())  # fmt: skip
    x, steps, y = _length_data(n=16)
    batches = tf.data.Dataset.from_tensor_slices(((x, steps), y)).batch(8)
    net.compile("adam")
    scores = score(net, batches, {"noise_floor": 0.5, "samples": 16})
    generated = net.generate(x).row_lengths(axis=2).flat_values.numpy().reshape(steps.shape)
    assert scores["length_accuracy"] == pytest.approx(np.mean(generated == steps))
    assert scores["mse_over_noise_floor"] == pytest.approx(scores["mse"] / 0.5)
