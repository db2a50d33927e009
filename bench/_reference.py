"""The reference answer's algorithm, op by op in eager mode: what chain is measured against.

The question's code runs an outer Python loop over ``t`` and, at each ``t``, an inner loop of
``max_b steps[b, t]`` steps: the longest run *at that t*, never the longest of the whole batch.
Here it is generalised, as chain's strategies are, to per-sample lengths (a sample whose run at
``t`` has ended keeps its state) and to every state mode. It uses a `chain.Chain`'s own layers
(model A, model B, the head and, in ``init`` mode, the init layers), so its result is the
Chain's and its gradients are with respect to the Chain's weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

if TYPE_CHECKING:
    from chain import Chain


def state_sizes(model_b: Any) -> list[int]:
    """Sizes of model B's flat state tensors: a cell's ``state_size``, or a model's state inputs."""
    if isinstance(model_b, keras.Model):
        return [int(t.shape[-1]) for t in model_b.inputs[1:]]
    return [int(s) for s in tf.nest.flatten(model_b.state_size)]


def b_step(model_b: Any, inputs: tf.Tensor, states: list[tf.Tensor], training: bool) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """One call of model B on ``inputs`` (rows, ir_size) and flat ``states`` [(rows, s), ...].

    Returns:
        ``(output (rows, H), new flat states)``.
    """
    if isinstance(model_b, keras.Model):  # called as model_b([inputs, *states]) -> [out, *new]
        outs = model_b([inputs, *states], training=training)
        return outs[0], list(outs[1:])
    structure = model_b.state_size if isinstance(model_b.state_size, (list, tuple)) else [model_b.state_size]
    out, new = model_b(inputs, tf.nest.pack_sequence_as(structure, list(states)), training=training)
    return out, tf.nest.flatten(new if isinstance(new, (list, tuple)) else [new])


def _start_states(net: "Chain", ir_t: tf.Tensor, batch: int) -> list[tf.Tensor]:
    if net.state == "init":
        return [layer(ir_t) for layer in net.init_layers]
    return [tf.zeros([batch, size], ir_t.dtype) for size in state_sizes(net.model_b)]


def _outer_step(net: "Chain", ir_t: tf.Tensor, steps_t: tf.Tensor, states: list[tf.Tensor], training: bool) -> tuple[tf.RaggedTensor, list[tf.Tensor]]:
    """The inner loop at one ``t``: ``max_b steps[b, t]`` calls of model B.

    Returns:
        B's outputs at this ``t``, RaggedTensor (batch, None, H) with row lengths ``steps_t``,
        and the states after it.
    """
    outputs = []
    longest_at_t = int(tf.reduce_max(tf.concat([steps_t, [0]], 0)))
    for k in range(longest_at_t):
        out, new = b_step(net.model_b, ir_t, states, training)
        valid = (k < steps_t)[:, None]
        states = [tf.where(valid, n, s) for n, s in zip(new, states)]
        outputs.append(out)
    if not outputs:  # no run at this t
        empty = tf.zeros([0, output_width(net.model_b)], ir_t.dtype)
        return tf.RaggedTensor.from_row_lengths(empty, tf.cast(steps_t, tf.int64)), states
    dense = tf.stack(outputs, axis=1)  # (batch, longest at t, H)
    return tf.RaggedTensor.from_tensor(dense, lengths=tf.cast(steps_t, tf.int64)), states


def output_width(model_b: Any) -> int:
    """Features of model B's output: a model's first output, or a cell's ``output_size``."""
    if isinstance(model_b, keras.Model):
        return int(model_b.outputs[0].shape[-1])
    return int(model_b.output_size)


def reference_values(net: "Chain", x: tf.Tensor, steps: tf.Tensor, training: bool = False) -> tf.Tensor:
    """The Chain's output, computed with the question's nested loops in eager mode.

    Args:
        net: A `chain.Chain` (built here on first use).
        x: float32 (batch, T, input_size).
        steps: int32 (batch, T).
        training: passed to model A and model B.

    Returns:
        float32 (sum(steps), output_size): the flat values in (sample, t, k) order.
    """
    if not net.built:
        net.build(tuple(x.shape))
    ir = net.model_a(x, training=training)
    batch, big_t = int(x.shape[0]), int(x.shape[1])
    carry = net.state == "carry"
    states = _start_states(net, ir[:, 0], batch) if carry else []
    per_t = []
    for t in range(big_t):
        if not carry:
            states = _start_states(net, ir[:, t], batch)
        ragged, states = _outer_step(net, ir[:, t], steps[:, t], states, training)
        per_t.append(ragged)
    flat = tf.stack(per_t, axis=1).flat_values  # (batch, T, None, H) in (b, t, k) order
    return flat if net.head is None else net.head(flat)
