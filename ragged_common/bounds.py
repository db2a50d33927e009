"""Numeric bounds that the packages share, each written once.

Examples:
    >>> from ragged_common.bounds import INT32_MAX
    >>> INT32_MAX
    2147483647
"""

from __future__ import annotations

INT32_MAX = 2**31 - 1
"""The largest int32: `steps`, sizes and counts reach TensorFlow as int32."""

INT64_MAX = 2**63 - 1
"""The largest int64: seeds of numpy generators and of stateless TensorFlow draws."""

UINT32_MAX = 2**32 - 1
"""The largest uint32: `keras.utils.set_random_seed` seeds numpy's legacy generator, which takes no more."""

FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite float32: a number beyond it (a learning rate, a loss) is infinite in float32."""
