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


def sigmoid(values: np.ndarray) -> np.ndarray:
    """Logistic function, computed through tanh so it never overflows."""
    return 0.5 * (np.tanh(0.5 * values) + 1.0)


def gru_step(
    projected: np.ndarray, state: np.ndarray, recurrent_kernel: np.ndarray, recurrent_bias: np.ndarray
) -> np.ndarray:
    """One GRU step for a batch.

    Args:
        projected: (batch, 3H), the input already multiplied by ``kernel`` plus ``bias[0]``.
        state: (batch, H), the previous state.
        recurrent_kernel: (H, 3H).
        recurrent_bias: (3H,), ``bias[1]``.

    Returns:
        (batch, H), the new state (which is also the cell's output).
    """
    hidden = state.shape[-1]
    recurrent = state @ recurrent_kernel + recurrent_bias
    gates = sigmoid(projected[:, : 2 * hidden] + recurrent[:, : 2 * hidden])
    update, reset = gates[:, :hidden], gates[:, hidden:]
    candidate = np.tanh(projected[:, 2 * hidden :] + reset * recurrent[:, 2 * hidden :])
    return candidate + update * (state - candidate)


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
    projected = (inputs.reshape(batch * timesteps, -1) @ kernel).reshape(batch, timesteps, -1) + bias[0]
    states = np.empty((batch, timesteps, hidden), projected.dtype)
    state = np.zeros((batch, hidden), projected.dtype)
    for t in range(timesteps):
        state = gru_step(projected[:, t], state, recurrent_kernel, bias[1])
        states[:, t] = state
    return states
