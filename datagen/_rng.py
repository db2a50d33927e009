"""Random streams: one root seed, independent streams per block of samples and per purpose.

Samples are grouped in fixed blocks of :data:`BLOCK` consecutive indices. Each block draws its
inputs, lengths, zeroed steps and noise from its own stream, so a block's content does not depend
on which shard, worker or slice produces it, and changing one purpose's parameters (``noise``,
``zero_fraction``) leaves the other purposes' draws untouched.
"""

from __future__ import annotations

import enum

import numpy as np

BLOCK = 1024
"""Samples per random block; part of the generator's definition, never tied to shard size."""


class Purpose(enum.IntEnum):
    """What a stream is for; its value is part of the stream's spawn key."""

    X = 0
    LENGTHS = 1
    ZEROS = 2
    NOISE = 3
    TRUTH = 4
    TOKENS = 5


def block_stream(seed: int, purpose: Purpose, block: int) -> np.random.Generator:
    """The generator for one purpose of one block of samples.

    Args:
        seed: the dataset's root seed.
        purpose: what the draws are for.
        block: the block index; samples ``[block * BLOCK, (block + 1) * BLOCK)``.

    Returns:
        A fresh ``np.random.Generator`` (PCG64) keyed by ``(seed, purpose, block)``.
    """
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(int(purpose), block))
    return np.random.Generator(np.random.PCG64(sequence))


def truth_stream(seed: int) -> np.random.Generator:
    """The generator for a dataset's ground truth (the teacher's weights)."""
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(int(Purpose.TRUTH),))
    return np.random.Generator(np.random.PCG64(sequence))
