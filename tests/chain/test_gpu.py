"""On a GPU, every strategy gives the CPU's outputs and gradients. Skipped without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from chain import STRATEGIES

from .conftest import batch, make_chain

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not tf.config.list_physical_devices("GPU"), reason="TensorFlow sees no GPU"
    ),
]


def _run(net, x, steps, device):
    with tf.device(device):
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            flat = net(x, steps, training=True).flat_values
            loss = tf.reduce_sum(flat**2)
        grads = tape.gradient(loss, [x, *net.trainable_weights])
    return [flat.numpy()] + [tf.convert_to_tensor(g).numpy() for g in grads]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("state", ["carry", "reset", "init"])
def test_gpu_matches_cpu(strategy, state):
    x, steps = batch(seed=7, batch_size=4, big_t=6, longest=5)
    net = make_chain("gru", state, strategy=strategy)
    for got, want in zip(_run(net, x, steps, "/GPU:0"), _run(net, x, steps, "/CPU:0")):
        np.testing.assert_allclose(got, want, atol=1e-4)
