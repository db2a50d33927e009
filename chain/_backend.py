"""Refuses, at `import chain`, a Keras backend other than TensorFlow."""

from __future__ import annotations

import keras


def check_backend(backend: str | None = None) -> None:
    """Raises a ValueError unless Keras runs on TensorFlow.

    Args:
        backend: the backend's name; None reads `keras.backend.backend()`.

    Raises:
        ValueError: another backend (`KERAS_BACKEND` set to jax, torch or numpy).

    >>> check_backend("tensorflow")
    """
    backend = keras.backend.backend() if backend is None else backend
    if backend != "tensorflow":
        raise ValueError(
            "chain needs Keras' TensorFlow backend (its strategies are TensorFlow graphs and "
            f"ragged tensors); received the {backend!r} backend. Set KERAS_BACKEND=tensorflow, "
            "or unset it, before Python starts"
        )
