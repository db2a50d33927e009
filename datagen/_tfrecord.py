"""TFRecord files of ``tf.train.Example`` protos, written and read without TensorFlow.

One record per sample, with features:

* ``x``: float_list of ``T * input_size`` values, row-major (T, input_size);
* ``steps``: int64_list of ``T`` values, the row lengths of the targets;
* ``y_values`` and ``y_clean_values``: float_list of ``sum(steps) * output_size`` values.

A token task's record holds ``y_values`` and ``y_best_values`` as int64_list of ``sum(steps)``
tokens and ``y_clean_values`` as float_list of ``sum(steps) * vocab_size`` probabilities.

TensorFlow parses a record with :func:`feature_spec`'s features, e.g. ``y_values`` as
``tf.io.RaggedFeature(tf.float32, "y_values", partitions=[RowLengths("steps"),
UniformRowLength(output_size)])``, giving a ragged (T, None, output_size) tensor.

Framing: ``uint64 length, uint32 masked_crc32c(length), data, uint32 masked_crc32c(data)``, all
little-endian, with the CRC-32C (Castagnoli) checksum masked as TensorFlow does.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from ._errors import DatasetError

_POLY = 0x82F63B78
_MASK_DELTA = 0xA282EAD8


def _crc_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _crc_table()


def crc32c_many(messages: list[bytes]) -> np.ndarray:
    """CRC-32C of many byte strings at once, one byte position per step across all of them.

    Args:
        messages: byte strings of any lengths.

    Returns:
        uint32 array (len(messages),).
    """
    lengths = np.array([len(message) for message in messages], dtype=np.int64)
    width = int(lengths.max(initial=0))
    grid = np.zeros((len(messages), width), dtype=np.uint8)
    for row, message in enumerate(messages):
        grid[row, : len(message)] = np.frombuffer(message, dtype=np.uint8)
    crc = np.full(len(messages), 0xFFFFFFFF, dtype=np.uint32)
    order = np.argsort(-lengths, kind="stable")
    grid, sorted_lengths = grid[order], lengths[order]
    live = len(messages) - np.searchsorted(sorted_lengths[::-1], np.arange(width), side="right")
    state = crc.copy()
    for column in range(width):
        n = int(live[column])
        head = state[:n]
        state[:n] = _TABLE[(head ^ grid[:n, column]) & 0xFF] ^ (head >> 8)
    crc[order] = state
    return crc ^ np.uint32(0xFFFFFFFF)


def masked(crc: np.ndarray) -> np.ndarray:
    """TensorFlow's CRC mask: rotate right by 15 bits and add a constant, modulo 2**32."""
    crc = crc.astype(np.uint64)
    rotated = ((crc >> np.uint64(15)) | (crc << np.uint64(17))) & np.uint64(0xFFFFFFFF)
    return ((rotated + np.uint64(_MASK_DELTA)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _float_feature(values: np.ndarray) -> bytes:
    raw = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return _field(2, _field(1, raw) if raw else b"")


def _int_feature(values: np.ndarray) -> bytes:
    packed = b"".join(_varint(int(value)) for value in values)
    return _field(3, _field(1, packed) if packed else b"")


def encode_example(sample: dict[str, np.ndarray]) -> bytes:
    """Serialises one sample as a ``tf.train.Example``, its features in name order.

    Args:
        sample: ``x`` (T, input_size), ``steps`` (T,) and the targets, e.g. ``y_values`` and
            ``y_clean_values`` (steps.sum(), output_size). Float arrays become float_lists, the
            others (int, or objects holding Python ints) int64_lists.

    Returns:
        The serialised proto.
    """
    features = [
        (key, _float_feature(value.reshape(-1)) if value.dtype.kind == "f" else _int_feature(value.reshape(-1)))
        for key, value in sorted(sample.items())
    ]  # fmt: skip
    entries = b"".join(_field(1, _field(1, key.encode()) + _field(2, value)) for key, value in features)
    return _field(1, entries)


def frame(records: list[bytes]) -> bytes:
    """TFRecord framing of serialised records, with masked CRC-32C checksums."""
    headers = [struct.pack("<Q", len(record)) for record in records]
    header_crc = masked(crc32c_many(headers))
    data_crc = masked(crc32c_many(records))
    parts = []
    for header, record, crc_a, crc_b in zip(headers, records, header_crc, data_crc):
        parts += [header, struct.pack("<I", int(crc_a)), record, struct.pack("<I", int(crc_b))]
    return b"".join(parts)


def unframe(data: bytes, name: str) -> list[bytes]:
    """Splits a TFRecord file into records, checking every checksum.

    Raises:
        DatasetError: the framing is truncated or a checksum does not match.
    """
    records, headers, crcs, offset = [], [], [], 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise DatasetError(f"{name}: truncated TFRecord header at byte {offset}")
        header = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        end = offset + 12 + length + 4
        if end > len(data):
            raise DatasetError(f"{name}: truncated TFRecord record at byte {offset}")
        records.append(data[offset + 12 : end - 4])
        headers.append(header)
        crcs.append(struct.unpack("<II", data[offset + 8 : offset + 12] + data[end - 4 : end]))
        offset = end
    expected = np.array(crcs, dtype=np.uint32).reshape(-1, 2)
    if records and not (
        np.array_equal(masked(crc32c_many(headers)), expected[:, 0])
        and np.array_equal(masked(crc32c_many(records)), expected[:, 1])
    ):
        raise DatasetError(f"{name}: TFRecord checksum mismatch (corrupt file)")
    return records


def _read_varint(data: bytes, offset: int, name: str) -> tuple[int, int]:
    """An unsigned varint of at most 64 bits (protobuf's limit) and the offset after it."""
    value, shift = 0, 0
    while offset < len(data) and shift < 64:
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset += 1
        if not byte & 0x80:
            if value >> 64:
                raise DatasetError(f"{name}: protobuf varint overflows 64 bits")
            return value, offset
        shift += 7
    raise DatasetError(f"{name}: malformed protobuf varint")


def _fields(data: bytes, name: str) -> list[tuple[int, bytes]]:
    """The length-delimited fields of a message; anything else is rejected."""
    fields, offset = [], 0
    while offset < len(data):
        tag, offset = _read_varint(data, offset, name)
        if tag & 7 != 2:
            raise DatasetError(f"{name}: unexpected protobuf wire type {tag & 7}")
        length, offset = _read_varint(data, offset, name)
        if offset + length > len(data):
            raise DatasetError(f"{name}: truncated protobuf field")
        fields.append((tag >> 3, data[offset : offset + length]))
        offset += length
    return fields


def _decode_feature(payload: bytes, name: str) -> np.ndarray:
    kinds = _fields(payload, name)
    if len(kinds) != 1 or kinds[0][0] not in (2, 3):
        raise DatasetError(f"{name}: a feature is not a float_list or int64_list")
    kind, body = kinds[0]
    packed = b"".join(value for number, value in _fields(body, name) if number == 1)
    if kind == 2:
        if len(packed) % 4:
            raise DatasetError(f"{name}: float_list of {len(packed)} bytes")
        return np.frombuffer(packed, dtype="<f4").astype(np.float32)
    values, offset = [], 0
    while offset < len(packed):
        value, offset = _read_varint(packed, offset, name)
        values.append(value - (1 << 64) if value >> 63 else value)  # int64 is two's complement on the wire
    return np.array(values, dtype=np.int64)


def decode_example(record: bytes, name: str) -> dict[str, Any]:
    """Parses a serialised ``tf.train.Example`` into flat numpy arrays, keyed by feature name."""
    features: dict[str, Any] = {}
    for _, block in (field for field in _fields(record, name) if field[0] == 1):
        for number, entry in _fields(block, name):
            parts = dict(_fields(entry, name)) if number == 1 else {}
            if 1 not in parts or 2 not in parts:
                raise DatasetError(f"{name}: malformed feature map entry")
            features[parts[1].decode("utf-8", "replace")] = _decode_feature(parts[2], name)
    return features


def feature_spec(timesteps: int, input_size: int, output_size: int, vocab_size: int | None = None) -> dict[str, Any]:
    """The ``tf.io.parse_single_example`` features of a record (imports TensorFlow).

    Args:
        timesteps, input_size, output_size: the sizes from the manifest.
        vocab_size: ``V`` of a token task, None for the others.

    Returns:
        ``x``: dense (T, input_size) float32; ``steps``: (T,) int64 (a 1-D RaggedFeature, since it
        also partitions the targets; ``.to_tensor()`` makes it dense); ``y_values`` and
        ``y_clean_values``: ragged (T, None, output_size) float32 whose row lengths are ``steps``.
        For a token task ``y_values`` and ``y_best_values`` are ragged (T, None) int64 and
        ``y_clean_values`` ragged (T, None, V) float32.
    """
    import tensorflow as tf

    def ragged(key: str, dtype: Any = tf.float32, width: int | None = None) -> Any:
        partitions = [tf.io.RaggedFeature.RowLengths("steps")]
        partitions += [tf.io.RaggedFeature.UniformRowLength(width)] if width is not None else []
        return tf.io.RaggedFeature(dtype, value_key=key, partitions=partitions, row_splits_dtype=tf.int64)

    features = {
        "x": tf.io.FixedLenFeature([timesteps, input_size], tf.float32),
        "steps": tf.io.RaggedFeature(tf.int64, value_key="steps", row_splits_dtype=tf.int64),
    }
    if vocab_size is None:
        return {**features, "y_values": ragged("y_values", width=output_size),
                "y_clean_values": ragged("y_clean_values", width=output_size)}  # fmt: skip
    return {**features, "y_values": ragged("y_values", tf.int64), "y_best_values": ragged("y_best_values", tf.int64),
            "y_clean_values": ragged("y_clean_values", width=vocab_size)}  # fmt: skip
