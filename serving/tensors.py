"""TensorProto <-> numpy conversion and the checks of request tensors against a signature.

Requests fail with `StatusError`, which carries the gRPC status code TF Serving returns for the
same mistake (INVALID_ARGUMENT for missing, extra or mistyped inputs) and a message naming the
signature, the tensor and what was expected.

The common dtypes convert with numpy alone; the others (bfloat16, complex, quantized, ...) go
through `tf.make_ndarray` / `tf.make_tensor_proto`. Outputs are written to the typed value fields
(`float_val`, `string_val`, ...) as TF Serving does, so clients that read those fields directly
work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class StatusError(Exception):
    """A request failed: `code` is the gRPC status returned to the client, `message` says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def status_code(number: int) -> grpc.StatusCode:
    """The gRPC status code with canonical number `number` (TF's error codes use the same)."""
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def invalid_argument(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


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
_DTYPES_BY_NUMPY = {
    codec.numpy_dtype: dtype for dtype, codec in _CODECS.items() if codec.field != "int_val"
}
_DTYPES_BY_NUMPY.update(
    {
        np.dtype(np.int32): types_pb2.DT_INT32,
        np.dtype(np.int16): types_pb2.DT_INT16,
        np.dtype(np.int8): types_pb2.DT_INT8,
        np.dtype(np.uint8): types_pb2.DT_UINT8,
        np.dtype(np.uint16): types_pb2.DT_UINT16,
    }
)


def dtype_name(dtype: int) -> str:
    """`types_pb2.DT_FLOAT` -> "DT_FLOAT"."""
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return f"DataType({dtype})"


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype that holds values of DataType `dtype` (object for DT_STRING).

    Raises:
      StatusError: INVALID_ARGUMENT, `dtype` has no numpy equivalent here.
    """
    codec = _CODECS.get(dtype)
    if codec is None:
        raise invalid_argument(f"{dtype_name(dtype)} tensors cannot be converted from JSON")
    return codec.numpy_dtype


@dataclass(frozen=True)
class TensorSpec:
    """The dtype and shape a signature declares for one input or output.

    Attributes:
      dtype: a `types_pb2.DataType` number, e.g. `DT_STRING`.
      shape: one entry per dimension, None where any size is allowed (the batch dimension);
        None for an unknown rank.
    """

    dtype: int
    shape: tuple[int | None, ...] | None

    def describe(self) -> str:
        """E.g. "DT_STRING [-1, 10]", with -1 for a free dimension as SignatureDefs print it."""
        if self.shape is None:
            return f"{dtype_name(self.dtype)} [unknown rank]"
        dims = ", ".join("-1" if dim is None else str(dim) for dim in self.shape)
        return f"{dtype_name(self.dtype)} [{dims}]"

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        if self.shape is None:
            return True
        if len(shape) != len(self.shape):
            return False
        return all(want is None or want == got for want, got in zip(self.shape, shape, strict=True))

    @property
    def has_free_batch_dim(self) -> bool:
        """True when the 0th dimension is free, so the batch size limit applies."""
        return self.shape is None or (len(self.shape) > 0 and self.shape[0] is None)


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Converts a TensorProto to a numpy array; DT_STRING becomes an object array of bytes.

    As in TensorFlow, fewer values than the shape holds are padded with the last value (a single
    value fills the tensor) and no values give zeros.

    Raises:
      StatusError: INVALID_ARGUMENT, the proto is malformed (unknown rank, negative dimension,
        more values than its shape holds, or tensor_content of the wrong length).
    """
    dims = proto.tensor_shape.dim
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument("tensor parsing error: the shape has unknown rank")
    shape = tuple(dim.size for dim in dims)
    if any(size < 0 for size in shape):
        raise invalid_argument(f"tensor parsing error: shape {list(shape)} has a negative size")
    codec = _CODECS.get(proto.dtype)
    if codec is None:
        return _to_ndarray_with_tensorflow(proto)
    size = int(np.prod(shape, dtype=np.int64))
    if proto.tensor_content and codec.field != "string_val":
        wire = codec.numpy_dtype.newbyteorder("<")
        if len(proto.tensor_content) != size * wire.itemsize:
            raise invalid_argument(
                f"tensor parsing error: tensor_content holds {len(proto.tensor_content)} bytes, "
                f"shape {list(shape)} of {dtype_name(proto.dtype)} needs {size * wire.itemsize}"
            )
        flat = np.frombuffer(proto.tensor_content, dtype=wire).astype(codec.numpy_dtype)
        return flat.reshape(shape)
    values = getattr(proto, codec.field)
    if len(values) > size:
        raise invalid_argument(
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


def to_tensor_proto(array: np.ndarray, dtype: int | None = None) -> tensor_pb2.TensorProto:
    """Converts a numpy array (or anything `np.asarray` takes) to a TensorProto.

    Args:
      array: the values; str and bytes elements make DT_STRING (str is UTF-8 encoded).
      dtype: the DataType to write; inferred from `array.dtype` when None.

    Raises:
      StatusError: INVALID_ARGUMENT, the values cannot be written as `dtype`.
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


def check_input_names(signature_name: str, expected: Iterable[str], given: Iterable[str]) -> None:
    """Checks that a request sends exactly the inputs a signature takes.

    Raises:
      StatusError: INVALID_ARGUMENT, naming the extra and the missing inputs.
    """
    expected, given = set(expected), set(given)
    if expected == given:
        return
    raise invalid_argument(
        f"input size does not match signature {signature_name!r}: {len(given)}!={len(expected)} "
        f"len({_braces(given)}) != len({_braces(expected)}). Sent extra: {_braces(given - expected)}"
        f". Missing but required: {_braces(expected - given)}."
    )


def check_input(
    signature_name: str, name: str, spec: TensorSpec, array: np.ndarray, max_batch_size: int
) -> None:
    """Checks one input array's shape against its spec and the server's batch size limit.

    Raises:
      StatusError: INVALID_ARGUMENT, the shape does not match or the batch is too large.
    """
    if not spec.accepts_shape(array.shape):
        raise invalid_argument(
            f"input {name!r} of signature {signature_name!r} has shape {list(array.shape)}, "
            f"expected {spec.describe()} (-1: any size)"
        )
    if spec.has_free_batch_dim and array.ndim > 0 and array.shape[0] > max_batch_size:
        raise invalid_argument(
            f"input {name!r} has batch size {array.shape[0]}, over this server's max_batch_size "
            f"of {max_batch_size}; send at most {max_batch_size} rows per request"
        )


def decode_inputs(
    signature_name: str,
    specs: Mapping[str, TensorSpec],
    protos: Mapping[str, tensor_pb2.TensorProto],
    max_batch_size: int,
) -> dict[str, np.ndarray]:
    """Checks a request's input TensorProtos against a signature and converts them to arrays.

    Raises:
      StatusError: INVALID_ARGUMENT for missing or extra inputs, a dtype other than the
        signature's, a shape it does not accept, a batch over `max_batch_size`, or a malformed
        proto.
    """
    check_input_names(signature_name, specs, protos)
    arrays = {}
    for name, proto in protos.items():
        spec = specs[name]
        if proto.dtype != spec.dtype:
            raise invalid_argument(
                f"input {name!r} of signature {signature_name!r} has dtype "
                f"{dtype_name(proto.dtype)}, expected {dtype_name(spec.dtype)}"
            )
        try:
            array = to_ndarray(proto)
        except StatusError as error:
            raise invalid_argument(f"input {name!r}: {error.message}") from None
        check_input(signature_name, name, spec, array, max_batch_size)
        arrays[name] = array
    return arrays


def check_output_filter(
    signature_name: str, outputs: Iterable[str], output_filter: Sequence[str]
) -> tuple[str, ...]:
    """Returns the outputs to send: `output_filter`, or all outputs when it is empty.

    Raises:
      StatusError: INVALID_ARGUMENT, the filter names an output the signature lacks, or one twice.
    """
    outputs = sorted(outputs)
    if not output_filter:
        return tuple(outputs)
    seen: set[str] = set()
    for name in output_filter:
        if name not in outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature {signature_name!r}: {name}. "
                f"Outputs expected to be in the set {_braces(outputs)}."
            )
        if name in seen:
            raise invalid_argument(f"duplicate output tensor alias in output_filter: {name}")
        seen.add(name)
    return tuple(output_filter)


def _braces(names: Iterable[str]) -> str:
    return "{" + ",".join(sorted(names)) + "}"


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise invalid_argument(f"DT_STRING values must be bytes or str, got {type(value).__name__}")


def _infer_dtype(array: np.ndarray) -> int:
    if array.dtype == object or array.dtype.kind in "SU":
        return types_pb2.DT_STRING
    dtype = _DTYPES_BY_NUMPY.get(array.dtype)
    if dtype is None:
        raise invalid_argument(f"no TensorProto dtype for numpy dtype {array.dtype}")
    return dtype


def _to_ndarray_with_tensorflow(proto: tensor_pb2.TensorProto) -> np.ndarray:
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError) as error:
        raise invalid_argument(f"tensor parsing error: {error}") from None


def _to_tensor_proto_with_tensorflow(array: np.ndarray, dtype: int) -> tensor_pb2.TensorProto:
    import tensorflow as tf

    try:
        return tf.make_tensor_proto(array, dtype=tf.dtypes.as_dtype(dtype))
    except (TypeError, ValueError) as error:
        raise invalid_argument(f"cannot write {dtype_name(dtype)} tensor: {error}") from None
