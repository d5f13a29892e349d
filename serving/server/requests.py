"""How the embedded server fails a request, and the checks of request tensors against a signature.

Requests fail with `StatusError`, which carries the gRPC status code TF Serving returns for the
same mistake (INVALID_ARGUMENT for missing, extra or mistyped inputs) and a message naming the
signature, the tensor and what was expected. Each request tensor's declared shape is checked
against the server's limits (`serving.server.limits`) before it is decoded with the shared codec
(`serving.codec`), whose errors become INVALID_ARGUMENT here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from tensorflow.core.framework import tensor_pb2

from export.specs import TensorSpec, dtype_name
from serving.codec import TensorCodecError, to_ndarray, to_tensor_proto
from serving.server.config import TensorLimits
from serving.server.errors import StatusError, invalid_argument
from serving.server.limits import check_tensor_proto

__all__ = [
    "StatusError",
    "check_input",
    "check_input_names",
    "check_output_filter",
    "decode_inputs",
    "decode_tensor",
    "encode_tensor",
    "invalid_argument",
]


def decode_tensor(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """`serving.codec.to_ndarray`, failing the request instead.

    Raises:
      StatusError: INVALID_ARGUMENT, the proto is malformed ("tensor parsing error: ...").
    """
    try:
        return to_ndarray(proto)
    except TensorCodecError as error:
        raise invalid_argument(str(error)) from error


def encode_tensor(array: np.ndarray, dtype: int) -> tensor_pb2.TensorProto:
    """`serving.codec.to_tensor_proto` of `array` as DataType `dtype`, failing the request instead.

    Raises:
      StatusError: INVALID_ARGUMENT, the values cannot be written as `dtype`.
    """
    try:
        return to_tensor_proto(array, dtype)
    except TensorCodecError as error:
        raise invalid_argument(str(error)) from error


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
    limits: TensorLimits | int,
) -> dict[str, np.ndarray]:
    """Checks a request's input TensorProtos against a signature and converts them to arrays.

    Args:
      limits: the server's tensor limits, or just its max_batch_size (other limits default).

    Returns:
      One array per input key, of the declared dtype and a shape the spec accepts.

    Raises:
      StatusError: INVALID_ARGUMENT for missing or extra inputs, a dtype other than the
        signature's, a shape it does not accept, a shape or size over `limits` (checked before
        decoding), or a malformed proto.
    """
    if isinstance(limits, int):
        limits = TensorLimits(max_batch_size=limits)
    check_input_names(signature_name, specs, protos)
    arrays = {}
    for name, proto in protos.items():
        spec = specs[name]
        if proto.dtype != spec.dtype:
            raise invalid_argument(
                f"input {name!r} of signature {signature_name!r} has dtype "
                f"{dtype_name(proto.dtype)}, expected {dtype_name(spec.dtype)}"
            )
        check_tensor_proto(name, proto, limits, spec.has_free_batch_dim)
        try:
            array = to_ndarray(proto)
        except TensorCodecError as error:
            raise invalid_argument(f"input {name!r}: {error}") from error
        check_input(signature_name, name, spec, array, limits.max_batch_size)
        arrays[name] = array
    return arrays


def check_output_filter(
    signature_name: str, outputs: Iterable[str], output_filter: Sequence[str]
) -> tuple[str, ...]:
    """Returns the outputs to send: `output_filter`, or all outputs (sorted) when it is empty.

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
