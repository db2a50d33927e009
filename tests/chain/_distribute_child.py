"""Child process of test_distribute: one device vs MirroredStrategy on 2 logical CPUs.

Logical devices must be configured before TensorFlow initialises its devices, hence a fresh
process. Prints one JSON line: the per-step losses and final weights of both runs.
"""

from __future__ import annotations

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402

from chain import Chain  # noqa: E402
from _distribute_data import STEPS, dataset  # noqa: E402  # the child's folder is on sys.path


def make(state: str) -> Chain:
    keras.utils.set_random_seed(0)
    net = Chain(keras.layers.GRU(6, return_sequences=True), keras.layers.GRUCell(5),
                output_size=2, state=state, strategy="packed")  # fmt: skip
    net.build((None, None, 4))
    net.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    return net


def train(state: str, strategy: tf.distribute.Strategy | None) -> dict:
    if strategy is None:
        net = make(state)
    else:
        with strategy.scope():
            net = make(state)
    # One step per epoch: epoch logs are read across replicas, so each is that step's loss.
    history = net.fit(dataset(8), epochs=STEPS, steps_per_epoch=1, verbose=0).history
    return {"losses": history["loss"], "weights": [w.tolist() for w in net.get_weights()]}


if __name__ == "__main__":
    state = sys.argv[1]
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"one": train(state, None), "two": train(state, mirrored),
              "replicas": mirrored.num_replicas_in_sync}  # fmt: skip
    print(json.dumps(result))
