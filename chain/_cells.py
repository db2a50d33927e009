"""Adapters that give every kind of model B one step interface, and the choice of fast path.

Every strategy drives model B through two calls:

- ``project(ir)`` maps IR rows ``(n, ir_size)`` to per-run inputs ``(n, P)``. It runs once per
  ``(b, t)``, outside the inner loop.
- ``step(xp, states, training)`` runs one inner step on projected inputs ``(n, P)`` and a flat list
  of state tensors ``[(n, s_0), (n, s_1), ...]``, returning ``(output (n, H), new_states)``.

The generic adapters project with the identity and call model B as it is. A :class:`FastAdapter`
runs a standard cell's kernel (``chain._kernels``): B's input is ``IR[b, t]`` repeated, so its
projection is the same at every inner step and only the recurrent part runs inside the loop, and
the packed strategy differentiates it with the kernel's hand-written backward step.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

import keras
import numpy as np
import tensorflow as tf

from ._kernels import forward_step, kernel_for

StateList = list[tf.Tensor]


class StepAdapter:
    """Base adapter: identity projection, model B called as it is."""

    kernel: Any = None
    output_size: int | None = None
    # Whether model B keeps its states finite whatever its inputs and steps (its kernel says so):
    # `padded` then runs the steps past a run's end without masking them.
    bounded: bool = False

    def __init__(self, model_b: Any) -> None:
        self.model_b = model_b

    @property
    def state_sizes(self) -> list[int]:
        """Sizes of the flat state tensors, in order."""
        raise NotImplementedError

    def project(self, ir: tf.Tensor) -> tf.Tensor:
        """Maps IR rows `(n, ir_size)` to step inputs `(n, P)`."""
        return ir

    def project_fed(self, ir: tf.Tensor, rows: tf.Tensor, prev: tf.Tensor) -> tf.Tensor:
        """Step inputs `(m, P)` of B fed `[ir[rows], prev]`, `prev` `(m, D)` (teacher forcing)."""
        return self.project(tf.concat([tf.gather(ir, rows), prev], 1))

    def project_ir(self, ir: tf.Tensor) -> tf.Tensor:
        """IR's part `(n, Q)` of the step input of B fed `[ir, prev]`, made once per run; see `add_fed`."""
        return ir

    def add_fed(self, pir: tf.Tensor, prev: tf.Tensor) -> tf.Tensor:
        """The step input `(n, P)` of B fed `[ir, prev]`, from `pir = project_ir(ir)` and `prev` `(n, D)`."""
        return self.project(tf.concat([pir, prev], 1))

    def step(self, xp: tf.Tensor, states: StateList, training: bool) -> tuple[tf.Tensor, StateList]:
        """One inner step. Returns `(output (n, H), new_states)`."""
        raise NotImplementedError

    def step_blocks(self, blocks: list[tf.Tensor], states: StateList, training: bool) -> tuple[tf.Tensor, StateList]:
        """`step` on inputs held as column blocks `[(n, P / k)] * k`."""
        return self.step(blocks[0] if len(blocks) == 1 else tf.concat(blocks, -1), states, training)

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
        result = self.model_b(xp, packed, training=training)
        if not isinstance(result, (list, tuple)) or len(result) != 2:
            # caught where the chain builds model B, which names the contract
            raise TypeError(f"a cell must return `(output, new_states)`; received {type(result).__name__}")
        out, new = result
        new = new if isinstance(new, (list, tuple)) else [new]
        return out, tf.nest.flatten(new)


class ModelAdapter(StepAdapter):
    """A Keras model called as ``model_b([inputs, *states]) -> [outputs, *new_states]``."""

    @property
    def state_sizes(self) -> list[int]:
        return [int(t.shape[-1]) for t in self.model_b.inputs[1:]]

    def step(self, xp, states, training):
        return call_model(self.model_b, xp, list(states), training)


def call_model(model_b: Any, x: Any, states: list, training: bool = False) -> tuple[Any, list]:
    """`(output, new_states)` of a model B called on `x` and its flat `states`.

    The states go in packed as the model declares its inputs (`[x, [h, c]]` as well as
    `[x, h, c]`), and the new states come out flat, as Keras flattens a cell's states
    (`tf.nest.flatten`): `[out, [h]]` and `[out, [h, c]]`, what a cell's call gives, are read as
    `[out, h]` and `[out, h, c]`.

    Raises:
        TypeError: the model does not return `[outputs, *new_states]` with one output tensor
            first; where the chain builds model B, that becomes a ValueError naming the contract.
    """
    declared = getattr(model_b, "input", None) if isinstance(model_b, keras.Model) else None
    inputs = [x, *states]
    if isinstance(declared, (list, tuple)) and len(tf.nest.flatten(declared)) == len(inputs):
        inputs = tf.nest.pack_sequence_as(declared, inputs)
    return split_outputs(model_b(inputs, training=training))


def split_outputs(outs: Any) -> tuple[Any, list]:
    """`(output, flat new states)` from a model B's `[outputs, *new_states]`, states nested or not.

    Raises:
        TypeError: `outs` is one tensor, a dict, or has no single tensor first.
    """
    if not isinstance(outs, (list, tuple)):
        raise TypeError(f"it returned a {type(outs).__name__}, not a list")
    if not outs or isinstance(outs[0], (list, tuple, dict)):
        raise TypeError(f"its first output must be one tensor; received {_structure(outs)}")
    return outs[0], tf.nest.flatten(list(outs[1:]))


def _structure(value: Any) -> str:
    """`value`'s nesting with each tensor written as its shape, e.g. `[(2, 3), [(2, 4)]]`."""
    shape = lambda t: str(tuple(t.shape)) if hasattr(t, "shape") else type(t).__name__  # noqa: E731
    return str(tf.nest.map_structure(shape, value)).replace("'", "")


class FastAdapter(StepAdapter):
    """A standard cell's kernel: projection outside the loop, hand-written backward step."""

    def __init__(self, model_b: Any, kernel: Any) -> None:
        super().__init__(model_b)
        self.kernel = kernel
        self.output_size = kernel.width
        self.bounded = bool(getattr(kernel, "bounded", False))

    @property
    def state_sizes(self) -> list[int]:
        return list(self.kernel.state_sizes)

    def project(self, ir):
        return self.kernel.project(ir)

    def project_fed(self, ir, rows, prev):
        return self.kernel.project_fed(ir, rows, prev)

    def _splits(self) -> bool:
        # The built-in kernels project `[ir, prev]` as the sum of two parts; a kernel of one's own
        # that does not say how (`project_ir`, `project_prev`) is projected whole at every step.
        return hasattr(self.kernel, "project_ir") and hasattr(self.kernel, "project_prev")

    def project_ir(self, ir):
        return self.kernel.project_ir(ir) if self._splits() else ir

    def add_fed(self, pir, prev):
        return pir + self.kernel.project_prev(prev) if self._splits() else self.project(tf.concat([pir, prev], 1))

    def step(self, xp, states, training):
        out, new, _ = self.kernel.forward(xp, list(states), self.kernel.params(xp.dtype))
        return out, new

    def step_blocks(self, blocks, states, training):
        out, new, _ = forward_step(self.kernel, blocks, list(states), self.kernel.params(blocks[0].dtype))
        return out, new


class FastPath(NamedTuple):
    """Which path the packed strategy runs for a model B, and why.

    Attributes:
        fused: whether the fast path (a kernel with a hand-written backward step) runs.
        reason: the cell that runs fast, or why model B has no fast path.
    """

    fused: bool
    reason: str


def _cells_of(model_b: Any) -> Sequence[Any]:
    return list(getattr(model_b, "cells", [])) + [model_b]


def wrapped_cell(model_b: Any) -> Any:
    """The one cell a functional model B wraps, `Model([x, *states], [out, *new_states])`, or None.

    Only the structure is read here; :func:`check_wrapper` confirms the model computes the cell.
    """
    if not isinstance(model_b, keras.Model) or hasattr(model_b, "state_size"):
        return None
    layers = [layer for layer in model_b.layers if not isinstance(layer, keras.layers.InputLayer)]
    if len(layers) != 1 or not hasattr(layers[0], "state_size"):
        return None
    cell = layers[0]
    n_states = len(tf.nest.flatten(cell.state_size))
    if len(model_b.inputs) != 1 + n_states or len(model_b.outputs) != 1 + n_states:
        return None
    return cell


def check_wrapper(model_b: keras.Model, cell: Any, rows: int) -> bool:
    """Whether `model_b([x, *s])` equals `cell(x, s)` on random inputs of `rows` rows."""
    rng = np.random.default_rng(0)
    width = int(model_b.inputs[0].shape[-1])
    sizes = [int(t.shape[-1]) for t in model_b.inputs[1:]]
    x = tf.constant(rng.normal(size=(rows, width)), model_b.inputs[0].dtype)
    states = [tf.constant(rng.normal(size=(rows, s)), x.dtype) for s in sizes]
    out, new_states = call_model(model_b, x, states)
    got = [out, *new_states]
    structure = cell.state_size if isinstance(cell.state_size, (list, tuple)) else [cell.state_size]
    out, new = cell(x, tf.nest.pack_sequence_as(structure, states))
    want = [out, *tf.nest.flatten(new)]
    return len(got) == len(want) and all(
        g.shape == w.shape and np.allclose(g.numpy(), w.numpy(), atol=1e-6) for g, w in zip(got, want)
    )


def describe(model_b: Any) -> str:
    """`model_b` in messages: its class and name, e.g. `GRUCell 'gru_cell'`."""
    return f"{type(model_b).__name__} {getattr(model_b, 'name', '')!r}"


def keras_reason(error: Exception, limit: int = 300) -> str:
    """The gist of a Keras error on one line: without its call arguments and terminal colours."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split("Arguments received by")[0]
    text = text.split("Error encountered:")[-1]  # after Keras' "could not infer the output shape"
    text = " ".join(text.split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def declared_input_size(model_b: Any) -> int | None:
    """The input size that `model_b` is built for: a model's declared input, or a built cell's
    kernel (the first cell's, for stacked cells); None where it is not fixed yet."""
    inputs = getattr(model_b, "inputs", None) if isinstance(model_b, keras.Model) else None
    if inputs:
        return inputs[0].shape[-1]
    first = (getattr(model_b, "cells", None) or [model_b])[0]
    kernel = getattr(first, "kernel", None) if getattr(first, "built", False) else None
    return int(kernel.shape[0]) if kernel is not None and len(kernel.shape) == 2 else None


def check_model_b(model_b: Any) -> None:
    """Rejects a model B that the strategies cannot drive.

    Raises:
        ValueError: `model_b` is a recurrent layer instead of its cell, neither an RNN cell (with
            `state_size`) nor a Keras model with inputs `[inputs, *states]`, or one of its cells
            uses dropout.
    """
    if isinstance(model_b, keras.layers.RNN):
        cell = type(getattr(model_b, "cell", None)).__name__
        raise ValueError(
            f"`model_b` must be a Keras RNN cell, which runs one inner step per call, or a model of one step; "
            f"received the recurrent layer {describe(model_b)}, which runs whole sequences. Pass its cell, "
            f"e.g. `keras.layers.{cell}(units)`, or the layer's `.cell`"
        )
    if not hasattr(model_b, "state_size"):
        inputs = getattr(model_b, "inputs", None)
        if not isinstance(model_b, keras.Model) or not inputs or len(inputs) < 2:
            raise ValueError(
                "`model_b` must be a Keras RNN cell (with `state_size`) or a Keras model called "
                "as `model_b([inputs, *states])`; received "
                f"{type(model_b).__name__}"
            )
        outputs = getattr(model_b, "outputs", None)
        if outputs is not None and len(outputs) != len(inputs):
            raise ValueError(
                "a model B must return `[outputs, *new_states]`, one new state per state input: "
                f"received a model with {len(inputs)} inputs and {len(outputs)} output(s). Return "
                "the new states too, e.g. `keras.Model([x, h], [out, new_h])`"
            )
        if outputs is not None:
            _check_output_structure(model_b.output)
    for cell in _cells_of(model_b):
        for name in ("dropout", "recurrent_dropout"):
            rate = getattr(cell, name, 0.0) or 0.0
            if rate > 0:
                raise ValueError(
                    f"`model_b` cells must not use dropout: received {type(cell).__name__} with "
                    f"{name}={rate}. Apply dropout to IR inside `model_a` instead."
                )


def _check_output_structure(output: Any) -> None:
    try:
        split_outputs(output)
    except TypeError as error:
        raise ValueError(
            "a model B must return `[outputs, *new_states]` (the (output, new_states) contract of a "
            f"cell, states nested or flat): {error}. E.g. `keras.Model([x, h], [out, new_h])` or "
            "`keras.Model([x, h], [out, [new_h]])`"
        ) from None


def generic_adapter(model_b: Any, bounded: bool = False) -> StepAdapter:
    """The adapter that calls `model_b` as it is; `bounded` as its fast path's kernel says."""
    adapter = CellAdapter(model_b) if hasattr(model_b, "state_size") else ModelAdapter(model_b)
    adapter.bounded = bounded
    return adapter


def fast_adapter(model_b: Any, fused: Any) -> tuple[StepAdapter, FastPath]:
    """The adapter the packed strategy runs for `model_b` under `fused`, and why.

    Args:
        model_b: a Keras RNN cell or a Keras model `[inputs, *states] -> [outputs, *states]`.
        fused: `"auto"` (the fast path where there is one), True (the fast path or a ValueError),
            or False (model B called as it is).

    Raises:
        ValueError: `fused=True` and `model_b` has no fast path; the message names the cell.
    """
    if fused is False:
        return generic_adapter(model_b), FastPath(False, "fused=False: model B is called as it is")
    cell = model_b if hasattr(model_b, "state_size") else wrapped_cell(model_b)
    kernel, reason = (None, f"{type(model_b).__name__} is not a cell or a model around one cell")
    if cell is not None:
        kernel, reason = kernel_for(cell)
        if kernel is not None and cell is not model_b:
            rows = model_b.inputs[0].shape[0] or 2
            if check_wrapper(model_b, cell, rows):
                reason = f"a functional model around one {reason}"
            else:
                kernel = None
                reason = f"the functional model around one {type(cell).__name__} computes more than the cell"
    if kernel is None:
        if fused is True:
            raise ValueError(f"fused=True, but model B has no fast path: {reason}")
        return generic_adapter(model_b), FastPath(False, f"generic path: {reason}")
    return FastAdapter(model_b, kernel), FastPath(True, f"fast path: {reason}")


def fast_path_under(fast_path: FastPath, strategy: str, feedback: bool) -> FastPath:
    """What `Chain.fast_path` reports: `fast_path` under the resolved `strategy` and `feedback`."""
    if strategy not in ("packed", "padded"):
        return FastPath(False, f"strategy {strategy!r} calls model B as it is")
    if feedback and fast_path.fused:
        return fast_path._replace(
            reason=fast_path.reason + " (teacher-forced; with its own outputs fed back, "
            "model B runs step by step on the kernel's forward step)"
        )
    return fast_path
