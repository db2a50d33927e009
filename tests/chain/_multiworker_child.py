"""Child of test_distribute's multi-worker test: one worker of a MultiWorkerMirroredStrategy.

Usage: `python _multiworker_child.py RESULT_JSON`, with TF_CONFIG for a worker or without it
for the single-process reference. Keras 3.15's `fit` cannot start under this strategy (its
symbolic build reduces a one-replica batch across workers), so this is the custom loop of
docs/training.md: padded targets, `experimental_distribute_dataset`, `strategy.run(net.train_step)`.
"""

from __future__ import annotations

import json
import os
import sys

import keras
import tensorflow as tf

import chain
from _distribute_data import STEPS, dataset  # the child's folder is on sys.path


def main(path: str) -> None:
    if "TF_CONFIG" in os.environ:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    with strategy.scope():
        keras.utils.set_random_seed(0)
        net = chain.Chain(keras.layers.GRU(6, return_sequences=True), keras.layers.GRUCell(5),
                          output_size=2, strategy="packed")  # fmt: skip
        net.build((None, None, 4))
        net.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = iter(strategy.experimental_distribute_dataset(
        chain.pad_targets(dataset(8)).with_options(options)))  # fmt: skip

    @tf.function
    def step(batch):
        strategy.run(net.train_step, args=(batch,))

    losses = []
    for _ in range(STEPS):
        net.loss_tracker.reset_state()
        step(next(batches))
        losses.append(float(net.loss_tracker.result()))
    result = {"losses": losses, "weights": [w.tolist() for w in net.get_weights()],
              "replicas": strategy.num_replicas_in_sync}  # fmt: skip
    with open(path, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main(sys.argv[1])
