"""A plain per-sample reference: model B called one step at a time, one sample at a time.

It shares no code with chain's strategies; only the sublayers of a built `Chain` are reused so
that both compute with the same weights.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _zero_states(model_b, dtype):
    if hasattr(model_b, "state_size"):
        size = model_b.state_size
        structure = size if isinstance(size, (list, tuple)) else [size]
        return tf.nest.map_structure(lambda s: tf.zeros([1, s], dtype), structure)
    return [tf.zeros([1, t.shape[-1]], dtype) for t in model_b.inputs[1:]]


def _b_step(model_b, inp, states):
    if hasattr(model_b, "state_size"):
        out, new = model_b(inp, states)
        return out, (new if isinstance(new, (list, tuple)) else [new])
    outs = model_b([inp, *states])
    return outs[0], list(outs[1:])


def _init_states(net, ir_bt, like):
    flat = [layer(ir_bt) for layer in net.init_layers]
    return tf.nest.pack_sequence_as(like, flat)


def reference_flat(net, x, steps) -> tf.Tensor:
    """Flat outputs `(sum(steps), D)` in `(b, t, k)` order, computed the slow, obvious way.

    Args:
        net: a built `Chain`.
        x: `(batch, T, input_size)`.
        steps: `(batch, T)` or `(T,)` integers.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    steps = np.broadcast_to(np.asarray(steps), x.shape[:2])
    ir = net.model_a(x)
    rows = []
    for b in range(x.shape[0]):
        states = _zero_states(net.model_b, ir.dtype)
        for t in range(x.shape[1]):
            inp = ir[b : b + 1, t]
            if net.state == "reset":
                states = _zero_states(net.model_b, ir.dtype)
            elif net.state == "init":
                states = _init_states(net, inp, _zero_states(net.model_b, ir.dtype))
            for _ in range(int(steps[b, t])):
                out, states = _b_step(net.model_b, inp, states)
                rows.append(net.head(out) if net.head is not None else out)
    if not rows:
        width = net.output_size or net.step_adapter().output_size
        return tf.zeros([0, width])
    return tf.concat(rows, 0)


def reference_feedback_flat(net, x, steps, targets=None) -> tf.Tensor:
    """Flat outputs of a `feedback=True` chain, feeding `prev` by hand, one sample at a time.

    `prev` is the target before (teacher forcing, `targets` `(sum(steps), D)` flat in `(b, t, k)`
    order) or the model's own output before (free-running, `targets` None); the learned start
    vector where there is none: at every run start in reset and init modes, at each sample's
    first real step in carry mode.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    steps = np.broadcast_to(np.asarray(steps), x.shape[:2])
    ir = net.model_a(x)
    start = tf.convert_to_tensor(net.feedback_start)[None, :]
    rows, p = [], 0
    for b in range(x.shape[0]):
        states = _zero_states(net.model_b, ir.dtype)
        prev = start
        for t in range(x.shape[1]):
            ir_bt = ir[b : b + 1, t]
            if net.state != "carry":
                prev = start
                states = _zero_states(net.model_b, ir.dtype)
                if net.state == "init":
                    states = _init_states(net, ir_bt, states)
            for _ in range(int(steps[b, t])):
                out, states = _b_step(net.model_b, tf.concat([ir_bt, prev], 1), states)
                y = net.head(out) if net.head is not None else out
                rows.append(y)
                prev = y if targets is None else tf.convert_to_tensor(targets)[p : p + 1]
                p += 1
    if not rows:
        return tf.zeros([0, net.feedback_size])
    return tf.concat(rows, 0)
