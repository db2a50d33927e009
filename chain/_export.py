"""The serving export: a SavedModel with one endpoint, `serve(x, steps)`."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable

import tensorflow as tf

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


def write_directory(path: str, write: Callable[[str], None]) -> None:
    """Runs `write(directory)` on a fresh directory beside `path`, then puts that one at `path`.

    A failure removes the new directory and leaves `path` as it was. A remote path
    (`scheme://...`) is written in place: renaming a directory there is not atomic.
    """
    path = os.fspath(path)
    if "://" in path:
        write(path)
        return
    target = os.path.abspath(path)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    fresh = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(fresh, 0o777 & ~umask)  # as a plain mkdir would make it, not mkdtemp's 0o700
    try:
        write(fresh)
        if os.path.isdir(target):
            old = fresh + ".old"
            os.rename(target, old)
            os.rename(fresh, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(fresh, target)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
