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

import numpy as np


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


def gru_step(
    projected: np.ndarray,
    state: np.ndarray,
    recurrent_kernel_t: np.ndarray,
    recurrent_bias: np.ndarray,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """One GRU step for a batch, in feature-major layout (the batch is the last axis).

    Feature-major keeps every gate a contiguous block of rows, so each array operation runs over
    long contiguous rows instead of many short ones: about twice as fast for small ``H``.

    Args:
        projected: (3H, batch), the input times ``kernel`` plus ``bias[0]``, transposed.
        state: (H, batch), the previous state.
        recurrent_kernel_t: (3H, H), ``recurrent_kernel`` transposed.
        recurrent_bias: (3H, 1), ``bias[1]`` as a column.
        out: (H, batch), where to write the new state; must not overlap ``state``.

    Returns:
        (H, batch), the new state (which is also the cell's output).
    """
    hidden = state.shape[0]
    recurrent = recurrent_kernel_t @ state
    recurrent += recurrent_bias
    gates = projected[: 2 * hidden] + recurrent[: 2 * hidden]
    gates *= 0.5
    np.tanh(gates, out=gates)
    gates += 1.0
    gates *= 0.5  # sigmoid(v) = (1 + tanh(v / 2)) / 2, which cannot overflow
    candidate = gates[hidden:] * recurrent[2 * hidden :]
    candidate += projected[2 * hidden :]
    np.tanh(candidate, out=candidate)
    new = np.subtract(state, candidate, out=out)
    new *= gates[:hidden]
    new += candidate
    return new


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
    batch, timesteps, _ = inputs.shape
    hidden = recurrent_kernel.shape[0]
    projected = (matmul(inputs, kernel) + bias[0]).transpose(1, 2, 0).copy()  # (T, 3H, batch)
    recurrent_t = np.ascontiguousarray(recurrent_kernel.T)
    recurrent_bias = bias[1][:, None]
    states = np.empty((timesteps, hidden, batch), projected.dtype)
    state = np.zeros((hidden, batch), projected.dtype)
    for t in range(timesteps):
        state = gru_step(projected[t], state, recurrent_t, recurrent_bias)
        states[t] = state
    return states.transpose(2, 0, 1)
