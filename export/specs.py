"""What a signature declares for each tensor: one type for servers, clients, model cards and tools.

A `TensorSpec` is read from either form a signature takes: a loaded SavedModel's concrete function
(`signature_specs`), or the `TensorInfo` protos of a SignatureDef, as GetModelMetadata returns
them (`spec_from_tensor_info`). Both give the same value, so the embedded server, the gRPC client,
the model card and the benchmarks describe a signature identically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tensorflow.core.framework import types_pb2


def dtype_name(dtype: int) -> str:
    """`types_pb2.DT_FLOAT` -> "DT_FLOAT"."""
    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return f"DataType({dtype})"


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

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    def describe(self) -> str:
        """E.g. "DT_STRING [-1, 10]", with -1 for a free dimension as SignatureDefs print it."""
        if self.shape is None:
            return f"{self.dtype_name} [unknown rank]"
        dims = ", ".join("-1" if dim is None else str(dim) for dim in self.shape)
        return f"{self.dtype_name} [{dims}]"

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

    def to_json(self) -> dict[str, Any]:
        """`{"dtype": "DT_STRING", "shape": [-1, 10]}` (shape null for an unknown rank)."""
        shape = None if self.shape is None else [-1 if d is None else d for d in self.shape]
        return {"dtype": self.dtype_name, "shape": shape}


@dataclass(frozen=True)
class SignatureSpecs:
    """The inputs and outputs of one signature, by signature key."""

    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": {key: spec.to_json() for key, spec in self.inputs.items()},
            "outputs": {key: spec.to_json() for key, spec in self.outputs.items()},
        }


def spec_from_tf(tf_spec: Any) -> TensorSpec:
    """A `tf.TensorSpec` (or anything with `.dtype` and `.shape` like it) as a `TensorSpec`."""
    shape = None if tf_spec.shape.rank is None else tuple(tf_spec.shape.as_list())
    return TensorSpec(dtype=tf_spec.dtype.as_datatype_enum, shape=shape)


def spec_from_tensor_info(info: Any) -> TensorSpec:
    """A SignatureDef's `TensorInfo` proto as a `TensorSpec`."""
    shape_proto = info.tensor_shape
    shape = (
        None
        if shape_proto.unknown_rank
        else tuple(d.size if d.size >= 0 else None for d in shape_proto.dim)
    )
    return TensorSpec(dtype=info.dtype, shape=shape)


def signature_specs(function: Any) -> SignatureSpecs:
    """The specs of a loaded SavedModel signature (a concrete function called with keywords)."""
    args, kwargs = function.structured_input_signature
    inputs = kwargs or (args[0] if args else {})
    return SignatureSpecs(
        inputs={key: spec_from_tf(spec) for key, spec in inputs.items()},
        outputs={key: spec_from_tf(spec) for key, spec in function.structured_outputs.items()},
    )


def signature_def_specs(signature_def: Any) -> SignatureSpecs:
    """The specs of a `SignatureDef` proto, as a MetaGraph or GetModelMetadata holds it."""
    return SignatureSpecs(
        inputs={key: spec_from_tensor_info(info) for key, info in signature_def.inputs.items()},
        outputs={key: spec_from_tensor_info(info) for key, info in signature_def.outputs.items()},
    )
