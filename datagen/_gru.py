"""A plain numpy GRU with Keras's ``reset_after=True`` conventions.

Weights follow ``keras.layers.GRU`` / ``keras.layers.GRUCell``: ``kernel (in, 3H)``,
``recurrent_kernel (H, 3H)`` and ``bias (2, 3H)`` (row 0 input bias, row 1 recurrent bias), with
gates ordered ``z, r, h``. One step is::

    z  = sigmoid(x W_z + b_z + h U_z + c_z)
    r  = sigmoid(x W_r + b_r + h U_r + c_r)
    hh = tanh(x W_h + b_h + r * (h U_h + c_h))
    h' = z * h + (1 - z) * hh
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_HALF = np.float32(0.5)
_ONE = np.float32(1.0)

_BLAS_SERIAL_SIZE = 200_000
"""Products smaller than this (rows * in * out) run on one BLAS thread (OpenBLAS's threshold is
262,144); threads only slow these thin products down, badly so on a busy machine."""


def matmul(inputs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``inputs @ weights`` for inputs (..., in), in row chunks small enough to stay single-threaded.

    Args:
        inputs: (..., in).
        weights: (in, out).

    Returns:
        (..., out).
    """
    flat = inputs.reshape(-1, inputs.shape[-1])
    rows = max(1, _BLAS_SERIAL_SIZE // max(weights.shape[0] * weights.shape[1], 1))
    out = np.empty((flat.shape[0], weights.shape[1]), np.result_type(inputs, weights))
    for first in range(0, flat.shape[0], rows):
        np.matmul(flat[first : first + rows], weights, out=out[first : first + rows])
    return out.reshape(*inputs.shape[:-1], weights.shape[1])


class Recurrence(NamedTuple):
    """The recurrent weights of a GRU step, laid out for :func:`gru_step`."""

    kernel: np.ndarray
    """(3H, H): ``recurrent_kernel`` transposed and halved."""
    bias: np.ndarray
    """(3H, 1): ``bias[1]`` as a column, halved."""


def recurrence(recurrent_kernel: np.ndarray, recurrent_bias: np.ndarray) -> Recurrence:
    """Prepares ``recurrent_kernel (H, 3H)`` and ``recurrent_bias (3H,)`` for :func:`gru_step`."""
    return Recurrence(np.ascontiguousarray(recurrent_kernel.T) * _HALF, recurrent_bias[:, None] * _HALF)


def project(inputs: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A GRU's input projection ``inputs @ kernel + bias`` in feature-major layout, gates halved.

    Args:
        inputs: (..., in, batch).
        kernel: (in, 3H).
        bias: (3H,), the input bias ``bias[0]``.

    Returns:
        (..., 3H, batch), with the update and reset rows halved.
    """
    projected = np.matmul(np.ascontiguousarray(kernel.T), inputs)
    projected += _spelled_out(bias[:, None], projected.shape[-1])
    hidden = projected.shape[-2] // 3
    projected[..., : 2 * hidden, :] *= _HALF
    return projected


def _spelled_out(column: np.ndarray, batch: int) -> np.ndarray:
    """A (rows, 1) column repeated into a C-contiguous (rows, batch) array.

    Adding it is about 2.5 times faster than letting numpy broadcast the column.
    """
    return np.ascontiguousarray(np.broadcast_to(column, (column.shape[0], batch)))


def full_bias(weights: Recurrence, batch: int) -> np.ndarray:
    """The halved recurrent bias spelled out as a (3H, batch) array, for :func:`gru_step`."""
    return _spelled_out(weights.bias, batch)


def gru_step(
    projected: np.ndarray, bias: np.ndarray, state: np.ndarray, kernel: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """One GRU step for a batch, in feature-major layout (the batch is the last axis).

    Feature-major keeps every gate a contiguous block of rows, so each array operation runs over
    long contiguous rows instead of many short ones: about twice as fast for small ``H``.

    The sigmoid is ``(1 + tanh(v / 2)) / 2``, which cannot overflow. The halving is folded into
    the weights (:func:`recurrence`) and the inputs (:func:`project`); scaling by a power of two
    is exact, so the result is bit for bit that of the unscaled formula.

    Operands are best C-contiguous: numpy runs 2-D operations on column slices of wider arrays
    about 1.5 times slower.

    Args:
        projected: (3H, batch) from :func:`project`.
        bias: (3H, batch) from :func:`full_bias`.
        state: (H, batch), the previous state.
        kernel: (3H, H), :attr:`Recurrence.kernel`.
        out: (H, batch), where to write the new state; must not overlap ``state``.

    Returns:
        (H, batch), the new state (which is also the cell's output).
    """
    hidden = state.shape[0]
    recurrent = kernel @ state
    recurrent += bias  # halved: v / 2 for z and r, (h U_h + c_h) / 2 for the candidate
    gates = np.add(projected[: 2 * hidden], recurrent[: 2 * hidden])
    np.tanh(gates, out=gates)
    gates += _ONE  # 2 z and 2 r
    candidate = gates[hidden:] * recurrent[2 * hidden :]  # r * (h U_h + c_h)
    candidate += projected[2 * hidden :]
    np.tanh(candidate, out=candidate)
    new = np.subtract(state, candidate, out=out)
    new *= gates[:hidden]
    new *= _HALF  # z * (h - hh)
    new += candidate
    return new


def gru_states(inputs: np.ndarray, kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """:func:`gru_sequence` in feature-major layout: inputs (T, in, batch) to states (T, H, batch)."""
    timesteps, _, batch = inputs.shape
    weights = recurrence(recurrent_kernel, bias[1])
    projected = project(inputs, kernel, bias[0])
    recurrent_bias = full_bias(weights, batch)
    states = np.empty((timesteps, recurrent_kernel.shape[0], batch), projected.dtype)
    state = np.zeros(states.shape[1:], projected.dtype)
    for t in range(timesteps):
        state = gru_step(projected[t], recurrent_bias, state, weights.kernel, out=states[t])
    return states


def gru_sequence(
    inputs: np.ndarray, kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """``keras.layers.GRU(H, return_sequences=True)`` from a zero state.

    Args:
        inputs: (batch, T, in).
        kernel: (in, 3H).
        recurrent_kernel: (H, 3H).
        bias: (2, 3H).

    Returns:
        (batch, T, H), the state after every step.
    """
    states = gru_states(np.ascontiguousarray(inputs.transpose(1, 2, 0)), kernel, recurrent_kernel, bias)
    return states.transpose(2, 0, 1)
