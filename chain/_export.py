"""The serving export: a SavedModel with one endpoint, `serve(x, steps)`."""

from __future__ import annotations

import os
from typing import Callable

import tensorflow as tf

from ragged_common.atomic import write_directory

from . import _validate


def export_serving(run: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], input_size: int, max_steps: int | None,
                   weights: list, path: str) -> None:  # fmt: skip
    """Writes the SavedModel of `Chain.export_serving` (see there).

    Args:
        run: the flat output `(sum(steps), output_size)` of validated `(x, steps)`.
        input_size, max_steps: the chain's.
        weights: the chain's variables, kept alive by the SavedModel.
        path: the directory to write.

    Raises:
        ValueError: `path` is a file.
    """
    if os.path.isfile(path):
        raise ValueError(f"`path` must be a directory to write the SavedModel into; received {path!r}, a file")

    def serve(x: tf.Tensor, steps: tf.Tensor) -> dict[str, tf.Tensor]:
        x, steps = _validate.check_inputs(x, steps, input_size, max_steps)
        return {"flat_values": run(x, steps), "row_lengths": steps}

    signature = [
        tf.TensorSpec([None, None, input_size], tf.float32, name="x"),
        tf.TensorSpec([None, None], tf.int32, name="steps"),
    ]
    module = tf.Module()
    module.weights = [v.value for v in weights]
    module.serve = tf.function(serve, input_signature=signature)
    write_directory(path, lambda into: tf.saved_model.save(module, into, signatures={"serving_default": module.serve}))

