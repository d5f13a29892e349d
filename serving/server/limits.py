"""Request tensors against the server's limits, checked before anything is allocated.

A TensorProto declares its shape independently of the values it carries: one `string_val` with
`tensor_shape {dim {size: 50000000}}` is a 40-byte message that decodes (TensorFlow pads with the
last value) into fifty million elements. Every untrusted tensor therefore passes
`check_tensor_proto` before `serving.codec.to_ndarray` runs; gRPC and REST requests both reach it
through `serving.server.requests.decode_inputs` (REST bodies are converted to TensorProtos and
answered by the same `ServingApi.predict`), and JSON arrays pass `check_shape` as well.

The limits (`TensorLimits`, from `ServingConfig.tensor_limits`) bound:
  rank: dimensions per tensor;
  batch: dimension 0 of inputs whose signature leaves it free (max_batch_size);
  every other dimension (max_dim_size);
  elements (product of the dimensions) and decoded bytes (elements times the item size; DT_STRING
  counts one pointer per element plus the string bytes the message carries).
"""

from __future__ import annotations

import math

from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.server.config import TensorLimits
from serving.server.errors import invalid_argument

# Decoded bytes per element by DataType; numpy's item sizes, object pointers for DT_STRING.
_ITEM_BYTES = {
    types_pb2.DT_FLOAT: 4,
    types_pb2.DT_DOUBLE: 8,
    types_pb2.DT_INT32: 4,
    types_pb2.DT_INT16: 2,
    types_pb2.DT_INT8: 1,
    types_pb2.DT_UINT8: 1,
    types_pb2.DT_UINT16: 2,
    types_pb2.DT_INT64: 8,
    types_pb2.DT_UINT32: 4,
    types_pb2.DT_UINT64: 8,
    types_pb2.DT_BOOL: 1,
    types_pb2.DT_HALF: 2,
    types_pb2.DT_BFLOAT16: 2,
    types_pb2.DT_COMPLEX64: 8,
    types_pb2.DT_COMPLEX128: 16,
    types_pb2.DT_STRING: 8,
}
_DEFAULT_ITEM_BYTES = 16


def check_shape(
    name: str,
    shape: tuple[int, ...],
    limits: TensorLimits,
    batched: bool,
    item_bytes: int = 8,
    extra_bytes: int = 0,
) -> None:
    """Checks a declared shape against `limits`; nothing is allocated.

    Args:
      name: the input's key, for the message.
      shape: the declared dimensions (may be negative or absurdly large: that is what is checked).
      limits: the server's limits.
      batched: dimension 0 is the batch (the signature leaves it free): it is held to
        `limits.max_batch_size` instead of `limits.max_dim_size`.
      item_bytes: decoded bytes per element.
      extra_bytes: decoded bytes beyond the elements (DT_STRING's string data).

    Raises:
      StatusError: INVALID_ARGUMENT naming the input, the limit, its value and the flag that
        sets it.
    """
    if len(shape) > limits.max_rank:
        raise invalid_argument(
            f"input {name!r} has {len(shape)} dimensions, over this server's limit of "
            f"{limits.max_rank}"
        )
    for axis, size in enumerate(shape):
        if size < 0:
            raise invalid_argument(
                f"input {name!r}: tensor parsing error: shape {list(shape)} has a negative size"
            )
        if axis == 0 and batched:
            if size > limits.max_batch_size:
                raise invalid_argument(
                    f"input {name!r} has batch size {size}, over this server's max_batch_size "
                    f"of {limits.max_batch_size} (--max-batch-size); send at most "
                    f"{limits.max_batch_size} rows per request"
                )
        elif size > limits.max_dim_size:
            raise invalid_argument(
                f"input {name!r} has size {size} in dimension {axis} of shape {list(shape)}, "
                f"over this server's max_dim_size of {limits.max_dim_size} (--max-dim-size)"
            )
    elements = math.prod(shape)
    if elements > limits.max_tensor_elements:
        raise invalid_argument(
            f"input {name!r} of shape {list(shape)} has {elements} elements, over this server's "
            f"max_tensor_elements of {limits.max_tensor_elements} (--max-tensor-elements)"
        )
    decoded = elements * item_bytes + extra_bytes
    if decoded > limits.max_tensor_bytes:
        raise invalid_argument(
            f"input {name!r} of shape {list(shape)} decodes to {decoded} bytes, over this "
            f"server's max_tensor_bytes of {limits.max_tensor_bytes} (--max-tensor-bytes)"
        )


def check_tensor_proto(
    name: str, proto: tensor_pb2.TensorProto, limits: TensorLimits, batched: bool
) -> None:
    """Checks a request TensorProto's declared shape and size against `limits` before decoding.

    Raises:
      StatusError: INVALID_ARGUMENT for an unknown rank, a negative dimension, or a shape or
        decoded size over a limit (see `check_shape`).
    """
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument(f"input {name!r}: tensor parsing error: the shape has unknown rank")
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    extra = 0
    if proto.dtype == types_pb2.DT_STRING:
        extra = len(proto.tensor_content) + sum(len(value) for value in proto.string_val)
    check_shape(
        name,
        shape,
        limits,
        batched,
        item_bytes=_ITEM_BYTES.get(proto.dtype, _DEFAULT_ITEM_BYTES),
        extra_bytes=extra,
    )
