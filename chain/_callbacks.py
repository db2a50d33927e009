"""Keras callbacks for training a Chain with `fit`."""

from __future__ import annotations

from typing import Any

import keras


class WindowedStates(keras.callbacks.Callback):
    """Windowed training with `fit`: resets a stateful chain's states at each sample's first window.

    A dataset of windows (`datagen.load(..., window=W)`) yields each batch of samples as
    `windows` consecutive elements, batch slot `b` holding the same sample in each. A chain
    built with `stateful=True` carries its states from one window to the next (truncated
    backpropagation through time); this callback sets them to zeros before the first window of
    every batch of samples (each epoch holds whole batches of samples, as such a dataset does),
    so a sample never starts from the state of the sample before it.

    Validation data (`validation_data`, or `evaluate` with this callback) is scored on whole
    sequences with the states set aside: the chain runs as if `stateful=False`, and in one call
    the state crosses every window edge, which is what windows with the state carried compute.

    >>> import chain
    >>> resets = chain.WindowedStates(windows=3)  # T = 16 in windows of 6: datagen.windows_per_sample(16, 6)

    Args:
        windows: the windows of each batch of samples, `ceil(T / W)`
            (`datagen.windows_per_sample(T, W)`).

    Raises:
        ValueError: `windows` is not a positive int; when `fit` starts, the model is not a
            stateful chain, `steps_per_execution` does not divide `windows`, or `steps_per_epoch`
            is not a multiple of it.
    """

    def __init__(self, windows: int) -> None:
        super().__init__()
        if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
            raise ValueError(f"`windows` must be a positive int, the windows per batch of samples; received {windows!r}")
        self.windows = windows
        self._stateful = True

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not getattr(self.model, "stateful", False):
            raise ValueError(
                "WindowedStates resets the states that a stateful chain carries from window to window; "
                f"received a {type(self.model).__name__} with stateful=False: build the Chain with stateful=True"
            )
        per_execution = getattr(self.model, "steps_per_execution", 1) or 1
        if self.windows % per_execution:
            raise ValueError(
                f"WindowedStates resets the states every {self.windows} batches, which needs whole groups of "
                f"`steps_per_execution` batches: it must divide {self.windows}; received steps_per_execution="
                f"{per_execution}"
            )
        steps = (self.params or {}).get("steps")
        if steps and steps % self.windows:
            raise ValueError(
                f"WindowedStates needs whole batches of samples in every epoch, {self.windows} windows each: "
                f"`steps_per_epoch` must be a multiple of {self.windows}; received {steps}"
            )

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if batch % self.windows == 0:
            self.model.reset_states()

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._stateful, self.model.stateful = getattr(self.model, "stateful", False), False

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self.model.stateful = self._stateful
