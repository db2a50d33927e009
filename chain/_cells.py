"""Adapters that give every kind of model B one step interface.

Every strategy drives model B through two calls:

- ``project(ir)`` maps IR rows ``(n, ir_size)`` to per-run inputs ``(n, P)``. It runs once per
  ``(b, t)``, outside the inner loop.
- ``step(xp, states, training)`` runs one inner step on projected inputs ``(n, P)`` and a flat list
  of state tensors ``[(n, s_0), (n, s_1), ...]``, returning ``(output (n, H), new_states)``.

The generic adapters project with the identity and call model B as it is. The fused adapters for
``GRUCell``, ``LSTMCell`` and ``SimpleRNNCell`` move the input matmul into ``project``: B's input
is ``IR[b, t]`` repeated, so its projection is the same at every inner step and only the
recurrent part needs to run inside the loop.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf

from . import _scan

StateList = list[tf.Tensor]


class StepAdapter:
    """Base adapter: identity projection, model B called as it is."""

    def __init__(self, model_b: Any) -> None:
        self.model_b = model_b

    @property
    def state_sizes(self) -> list[int]:
        """Sizes of the flat state tensors, in order."""
        raise NotImplementedError

    def project(self, ir: tf.Tensor) -> tf.Tensor:
        """Maps IR rows `(n, ir_size)` to step inputs `(n, P)`."""
        return ir

    def step(self, xp: tf.Tensor, states: StateList, training: bool) -> tuple[tf.Tensor, StateList]:
        """One inner step. Returns `(output (n, H), new_states)`."""
        raise NotImplementedError

    def zero_states(self, n: tf.Tensor, dtype: tf.DType) -> StateList:
        """Zero states for `n` rows."""
        return [tf.zeros(tf.stack([n, s]), dtype) for s in self.state_sizes]


class CellAdapter(StepAdapter):
    """Any Keras RNN cell: ``cell(inputs, states, training=...) -> (output, new_states)``."""

    def __init__(self, cell: keras.layers.Layer) -> None:
        super().__init__(cell)
        size = cell.state_size
        self._structure = size if isinstance(size, (list, tuple)) else [size]

    @property
    def state_sizes(self) -> list[int]:
        return [int(s) for s in tf.nest.flatten(self._structure)]

    def step(self, xp, states, training):
        packed = tf.nest.pack_sequence_as(self._structure, list(states))
        out, new = self.model_b(xp, packed, training=training)
        new = new if isinstance(new, (list, tuple)) else [new]
        return out, tf.nest.flatten(new)


class ModelAdapter(StepAdapter):
    """A Keras model called as ``model_b([inputs, *states]) -> [outputs, *new_states]``."""

    @property
    def state_sizes(self) -> list[int]:
        return [int(t.shape[-1]) for t in self.model_b.inputs[1:]]

    def step(self, xp, states, training):
        outs = self.model_b([xp, *states], training=training)
        return outs[0], list(outs[1:])


class _FusedAdapter(StepAdapter):
    """Shared part of the fused adapters: ``project`` is ``ir @ kernel + input_bias``."""

    def _input_bias(self) -> tf.Tensor | None:
        return self.model_b.bias if self.model_b.use_bias else None

    def project(self, ir):
        xp = tf.matmul(ir, self.model_b.kernel)
        bias = self._input_bias()
        return xp if bias is None else xp + bias


class FusedGRU(_FusedAdapter):
    """``keras.layers.GRUCell``, either ``reset_after`` convention."""

    def __init__(self, cell: keras.layers.GRUCell) -> None:
        super().__init__(cell)
        if not (cell.reset_after and _default_activations(cell)):
            self.packed_scan = None

    def packed_scan(self, inputs: _scan.Inputs, active: tf.Tensor, states: StateList, training: bool,
                    emit=None) -> tf.Tensor:  # fmt: skip
        """B's outputs over a step-major packed layout (`emit` of them in inference); see `chain._scan`.

        Training keeps the gates for a hand-written backward pass; inference keeps states only.
        """
        cell = self.model_b
        bias = cell.bias[1] if cell.use_bias else tf.zeros([3 * cell.units], inputs.sources[0].dtype)
        kernel, bias = tf.convert_to_tensor(cell.recurrent_kernel), tf.convert_to_tensor(bias)
        if training:
            return _scan.gru_scan(inputs, active, states[0], kernel, bias)
        return _scan.gru_states(inputs, active, states[0], kernel, bias, emit)

    @property
    def state_sizes(self) -> list[int]:
        return [self.model_b.units]

    def _input_bias(self):
        cell = self.model_b
        if not cell.use_bias:
            return None
        return cell.bias[0] if cell.reset_after else cell.bias

    def step(self, xp, states, training):
        cell, (h,) = self.model_b, states
        units = cell.units
        x_z, x_r, x_h = tf.split(xp, 3, axis=-1)
        if cell.reset_after:
            inner = tf.matmul(h, cell.recurrent_kernel)
            if cell.use_bias:
                inner = inner + cell.bias[1]
            r_z, r_r, r_h = tf.split(inner, 3, axis=-1)
        else:
            r_z, r_r = tf.split(tf.matmul(h, cell.recurrent_kernel[:, : 2 * units]), 2, axis=-1)
        z = cell.recurrent_activation(x_z + r_z)
        r = cell.recurrent_activation(x_r + r_r)
        if cell.reset_after:
            r_h = r * r_h
        else:
            r_h = tf.matmul(r * h, cell.recurrent_kernel[:, 2 * units :])
        hh = cell.activation(x_h + r_h)
        h = z * h + (1.0 - z) * hh
        return h, [h]


class FusedLSTM(_FusedAdapter):
    """``keras.layers.LSTMCell``: gates in the order i, f, c, o."""

    @property
    def state_sizes(self) -> list[int]:
        return [self.model_b.units, self.model_b.units]

    def step(self, xp, states, training):
        cell, (h, c) = self.model_b, states
        z = xp + tf.matmul(h, cell.recurrent_kernel)
        z_i, z_f, z_c, z_o = tf.split(z, 4, axis=-1)
        i = cell.recurrent_activation(z_i)
        f = cell.recurrent_activation(z_f)
        c = f * c + i * cell.activation(z_c)
        o = cell.recurrent_activation(z_o)
        h = o * cell.activation(c)
        return h, [h, c]


class FusedSimpleRNN(_FusedAdapter):
    """``keras.layers.SimpleRNNCell``."""

    @property
    def state_sizes(self) -> list[int]:
        return [self.model_b.units]

    def step(self, xp, states, training):
        cell, (h,) = self.model_b, states
        out = xp + tf.matmul(h, cell.recurrent_kernel)
        if cell.activation is not None:
            out = cell.activation(out)
        return out, [out]


def _default_activations(cell: keras.layers.Layer) -> bool:
    """Whether `cell` uses tanh and (where it has one) a sigmoid recurrent activation."""
    tanh = keras.activations.get("tanh")
    sigmoid = keras.activations.get("sigmoid")
    recurrent = getattr(cell, "recurrent_activation", sigmoid)
    return cell.activation is tanh and recurrent is sigmoid


_FUSED = {
    keras.layers.GRUCell: FusedGRU,
    keras.layers.LSTMCell: FusedLSTM,
    keras.layers.SimpleRNNCell: FusedSimpleRNN,
}


def _cells_of(model_b: Any) -> Sequence[Any]:
    return list(getattr(model_b, "cells", [])) + [model_b]


def check_model_b(model_b: Any) -> None:
    """Rejects a model B that the strategies cannot drive.

    Raises:
        ValueError: `model_b` is neither an RNN cell (with `state_size`) nor a Keras model with
            inputs `[inputs, *states]`, or one of its cells uses dropout.
    """
    if not hasattr(model_b, "state_size"):
        inputs = getattr(model_b, "inputs", None)
        if not isinstance(model_b, keras.Model) or not inputs or len(inputs) < 2:
            raise ValueError(
                "`model_b` must be a Keras RNN cell (with `state_size`) or a Keras model called "
                "as `model_b([inputs, *states])`; received "
                f"{type(model_b).__name__}"
            )
    for cell in _cells_of(model_b):
        for name in ("dropout", "recurrent_dropout"):
            rate = getattr(cell, name, 0.0) or 0.0
            if rate > 0:
                raise ValueError(
                    f"`model_b` cells must not use dropout: received {type(cell).__name__} with "
                    f"{name}={rate}. Apply dropout to IR inside `model_a` instead."
                )


def make_adapter(model_b: Any, fused: bool = False) -> StepAdapter:
    """Returns the step adapter for `model_b`.

    Args:
        model_b: a Keras RNN cell or a Keras model `[inputs, *states] -> [outputs, *states]`.
        fused: use the fused adapter when `model_b` is exactly a standard Keras cell.
    """
    if fused and type(model_b) in _FUSED:
        return _FUSED[type(model_b)](model_b)
    if hasattr(model_b, "state_size"):
        return CellAdapter(model_b)
    return ModelAdapter(model_b)
