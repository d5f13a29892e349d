"""TensorProto <-> numpy: the one codec the gRPC client and the embedded server share.

The common dtypes convert with numpy alone; the others (bfloat16, complex, quantized, ...) go
through `tf.make_ndarray` / `tf.make_tensor_proto`, imported only for them. Protos are written to
the typed value fields (`float_val`, `string_val`, ...) as TF Serving does, so readers of those
fields work unchanged; both those fields and `tensor_content` (TensorFlow's own encoding) are read.
DT_STRING in `tensor_content` is TensorFlow's string list encoding (`Tensor::AsProtoTensorContent`,
`port::EncodeStringList`): one varint32 length per element, then the elements' bytes back to back.

Decoding allocates what the proto's shape declares; callers that read untrusted protos check the
shape against their limits first (`serving.server.limits`).

DT_STRING tensors are object arrays of `bytes` both ways; `str` elements are UTF-8 encoded when
written. A proto or an array that cannot be converted raises `TensorCodecError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from export.specs import dtype_name


class TensorCodecError(ValueError):
    """A TensorProto is malformed, or values cannot be written as the requested DataType."""


@dataclass(frozen=True)
class _Codec:
    """How one DataType maps to numpy and to a TensorProto value field."""

    numpy_dtype: np.dtype
    field: str


_CODECS: dict[int, _Codec] = {
    types_pb2.DT_FLOAT: _Codec(np.dtype(np.float32), "float_val"),
    types_pb2.DT_DOUBLE: _Codec(np.dtype(np.float64), "double_val"),
    types_pb2.DT_INT32: _Codec(np.dtype(np.int32), "int_val"),
    types_pb2.DT_INT16: _Codec(np.dtype(np.int16), "int_val"),
    types_pb2.DT_INT8: _Codec(np.dtype(np.int8), "int_val"),
    types_pb2.DT_UINT8: _Codec(np.dtype(np.uint8), "int_val"),
    types_pb2.DT_UINT16: _Codec(np.dtype(np.uint16), "int_val"),
    types_pb2.DT_INT64: _Codec(np.dtype(np.int64), "int64_val"),
    types_pb2.DT_UINT32: _Codec(np.dtype(np.uint32), "uint32_val"),
    types_pb2.DT_UINT64: _Codec(np.dtype(np.uint64), "uint64_val"),
    types_pb2.DT_BOOL: _Codec(np.dtype(np.bool_), "bool_val"),
    # half_val holds the IEEE half bit patterns as integers.
    types_pb2.DT_HALF: _Codec(np.dtype(np.float16), "half_val"),
    types_pb2.DT_STRING: _Codec(np.dtype(object), "string_val"),
}
_DTYPES_BY_NUMPY = {codec.numpy_dtype: dtype for dtype, codec in _CODECS.items()}


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype that holds values of DataType `dtype` (object for DT_STRING).

    Raises:
      TensorCodecError: `dtype` is not one of the dtypes converted without TensorFlow.
    """
    codec = _CODECS.get(dtype)
    if codec is None:
        raise TensorCodecError(f"{dtype_name(dtype)} has no numpy dtype here")
    return codec.numpy_dtype


def string_array(values: Sequence[str | bytes] | np.ndarray) -> np.ndarray:
    """UTF-8 encodes strings into a same-shaped object array of bytes, DT_STRING's layout."""
    array = np.asarray(values, dtype=object)
    encode = np.vectorize(lambda v: v.encode() if isinstance(v, str) else v, otypes=[object])
    return encode(array) if array.size else array


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Converts a TensorProto to a numpy array; DT_STRING becomes an object array of bytes.

    As in TensorFlow, fewer values than the shape holds are padded with the last value (a single
    value fills the tensor) and no values give zeros.

    Returns:
      An array of the proto's shape and the numpy twin of its dtype (`numpy_dtype`).

    Raises:
      TensorCodecError: the proto is malformed (unknown rank, negative dimension, more values
        than its shape holds, or tensor_content of the wrong length); the message starts with
        "tensor parsing error".
    """
    dims = proto.tensor_shape.dim
    if proto.tensor_shape.unknown_rank:
        raise TensorCodecError("tensor parsing error: the shape has unknown rank")
    shape = tuple(dim.size for dim in dims)
    if any(size < 0 for size in shape):
        raise TensorCodecError(f"tensor parsing error: shape {list(shape)} has a negative size")
    codec = _CODECS.get(proto.dtype)
    if codec is None:
        return _to_ndarray_with_tensorflow(proto)
    size = math.prod(shape)  # a Python int: no int64 overflow for absurd shapes
    if proto.tensor_content and codec.field == "string_val":
        flat = np.empty(size, dtype=object)
        flat[:] = decode_string_list(proto.tensor_content, size)
        return flat.reshape(shape)
    if proto.tensor_content:
        wire = codec.numpy_dtype.newbyteorder("<")
        if len(proto.tensor_content) != size * wire.itemsize:
            raise TensorCodecError(
                f"tensor parsing error: tensor_content holds {len(proto.tensor_content)} bytes, "
                f"shape {list(shape)} of {dtype_name(proto.dtype)} needs {size * wire.itemsize}"
            )
        flat = np.frombuffer(proto.tensor_content, dtype=wire).astype(codec.numpy_dtype)
        return flat.reshape(shape)
    values = getattr(proto, codec.field)
    if len(values) > size:
        raise TensorCodecError(
            f"tensor parsing error: {len(values)} values do not fit shape {list(shape)}"
        )
    if codec.field == "half_val":
        flat = np.array(values, dtype=np.uint16).view(np.float16)
    elif codec.field == "string_val":
        flat = np.empty(len(values), dtype=object)
        flat[:] = list(values)
    else:
        flat = np.array(values, dtype=codec.numpy_dtype)
    if len(flat) < size:
        fill = flat[-1] if len(flat) else (b"" if codec.field == "string_val" else 0)
        flat = np.concatenate([flat, np.full(size - len(flat), fill, dtype=codec.numpy_dtype)])
    return flat.reshape(shape)


def decode_string_list(content: bytes, count: int) -> list[bytes]:
    """Decodes `count` strings from TensorFlow's string list encoding (DT_STRING tensor_content).

    The encoding is `count` varint32 lengths followed by the strings' bytes, concatenated; as in
    TensorFlow's `DecodeStringList`, the content must hold exactly that, nothing more or less.

    Raises:
      TensorCodecError: the content is truncated, has a malformed varint, or bytes left over
        ("tensor parsing error: ...").
    """
    if count > len(content):  # every length takes at least one byte; checked before allocating
        raise TensorCodecError(
            f"tensor parsing error: DT_STRING tensor_content of {len(content)} bytes cannot hold "
            f"{count} strings"
        )
    lengths = []
    position = 0
    for _ in range(count):
        value, shift = 0, 0
        while True:
            if position >= len(content) or shift > 28:
                raise TensorCodecError(
                    "tensor parsing error: DT_STRING tensor_content has a truncated or malformed "
                    "varint32 length; encode it as TensorFlow's EncodeStringList does"
                )
            byte = content[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        lengths.append(value)
    if position + sum(lengths) != len(content):
        raise TensorCodecError(
            f"tensor parsing error: DT_STRING tensor_content holds {len(content) - position} "
            f"bytes of string data, its {count} lengths add up to {sum(lengths)}"
        )
    strings = []
    for length in lengths:
        strings.append(bytes(content[position : position + length]))
        position += length
    return strings


def to_tensor_proto(array: np.ndarray, dtype: int | None = None) -> tensor_pb2.TensorProto:
    """Converts a numpy array (or anything `np.asarray` takes) to a TensorProto.

    Args:
      array: the values, any shape; str and bytes elements make DT_STRING (str is UTF-8 encoded).
      dtype: the DataType to write; inferred from `array.dtype` when None (object, bytes and
        str arrays are DT_STRING, float64 is DT_DOUBLE, int64 is DT_INT64, ...).

    Raises:
      TensorCodecError: no DataType for the array's dtype, or values that cannot be written as
        `dtype`.
    """
    array = np.asarray(array)
    if dtype is None:
        dtype = _infer_dtype(array)
    codec = _CODECS.get(dtype)
    if codec is None:
        return _to_tensor_proto_with_tensorflow(array, dtype)
    proto = tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in array.shape]
        ),
    )
    flat = array.reshape(-1)
    if codec.field == "string_val":
        proto.string_val.extend(_as_bytes(value) for value in flat)
    elif codec.field == "half_val":
        proto.half_val.extend(flat.astype(np.float16).view(np.uint16).tolist())
    else:
        getattr(proto, codec.field).extend(flat.astype(codec.numpy_dtype).tolist())
    return proto


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TensorCodecError(f"DT_STRING values must be bytes or str, got {type(value).__name__}")


def _infer_dtype(array: np.ndarray) -> int:
    if array.dtype == object or array.dtype.kind in "SU":
        return types_pb2.DT_STRING
    dtype = _DTYPES_BY_NUMPY.get(array.dtype)
    if dtype is None:
        raise TensorCodecError(f"no TensorProto dtype for numpy dtype {array.dtype}")
    return dtype


def _to_ndarray_with_tensorflow(proto: tensor_pb2.TensorProto) -> np.ndarray:
    import tensorflow as tf  # only for the dtypes numpy has no twin of

    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError) as error:
        raise TensorCodecError(f"tensor parsing error: {error}") from error


def _to_tensor_proto_with_tensorflow(array: np.ndarray, dtype: int) -> tensor_pb2.TensorProto:
    import tensorflow as tf  # only for the dtypes numpy has no twin of

    try:
        return tf.make_tensor_proto(array, dtype=tf.dtypes.as_dtype(dtype))
    except (TypeError, ValueError) as error:
        raise TensorCodecError(f"cannot write {dtype_name(dtype)} tensor: {error}") from error
