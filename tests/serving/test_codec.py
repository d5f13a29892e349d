"""Tests of serving/codec.py, the TensorProto <-> numpy codec of the client and the server:
round trips of every common dtype, agreement with TensorFlow's own conversion, malformed protos."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.codec import TensorCodecError, numpy_dtype, string_array, to_ndarray, to_tensor_proto

MALFORMED = [
    (
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, float_val=[1, 2, 3], tensor_shape={"dim": [{"size": 2}]}
        ),
        "3 values do not fit shape [2]",
    ),
    (
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT,
            tensor_content=b"\x00" * 5,
            tensor_shape={"dim": [{"size": 2}]},
        ),
        "tensor_content holds 5 bytes",
    ),
    (
        tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape={"unknown_rank": True}),
        "unknown rank",
    ),
]
MALFORMED_IDS = ["too-many-values", "short-content", "unknown-rank"]

ARRAYS = [
    np.array([[1.5, -2.0], [0.25, 3.0]], dtype=np.float32),
    np.array([1.0, 1e300], dtype=np.float64),
    np.array([[1, -2, 3]], dtype=np.int32),
    np.array([2**40, -1], dtype=np.int64),
    np.array([0, 255], dtype=np.uint8),
    np.array([True, False, True]),
    np.array([0.5, -1.0], dtype=np.float16),
    np.array([[b"a", b""], [b"\xff\x00", "é".encode()]], dtype=object),
    np.zeros((0, 3), dtype=np.float32),
    np.array(3.5, dtype=np.float32),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_tensor_protos_round_trip_and_interoperate_with_tensorflow(array):
    ours = to_tensor_proto(array)

    np.testing.assert_array_equal(to_ndarray(ours), array)
    np.testing.assert_array_equal(tf.make_ndarray(ours), array)
    # TF writes numbers to tensor_content; that path must read back the same.
    np.testing.assert_array_equal(to_ndarray(tf.make_tensor_proto(array)), array)
    assert to_ndarray(ours).dtype == array.dtype


def test_one_value_fills_the_shape_and_missing_values_repeat_the_last():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[7.0])
    proto.tensor_shape.dim.add(size=3)
    padded = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[1, 2])
    padded.tensor_shape.dim.add(size=4)

    np.testing.assert_array_equal(to_ndarray(proto), [7.0, 7.0, 7.0])
    np.testing.assert_array_equal(to_ndarray(padded), [1, 2, 2, 2])  # as TensorFlow does


def test_dtypes_without_a_numpy_twin_go_through_tensorflow():
    array = tf.constant([1.5, 2.0], dtype=tf.bfloat16)

    proto = to_tensor_proto(array.numpy(), types_pb2.DT_BFLOAT16)

    assert proto.dtype == types_pb2.DT_BFLOAT16
    np.testing.assert_array_equal(to_ndarray(proto).astype(np.float32), [1.5, 2.0])


@pytest.mark.parametrize(("proto", "message"), MALFORMED, ids=MALFORMED_IDS)
def test_malformed_protos_are_tensor_parsing_errors(proto, message):
    with pytest.raises(TensorCodecError, match="tensor parsing error") as caught:
        to_ndarray(proto)

    assert message in str(caught.value)


def test_strings_are_written_utf8_and_read_back_as_bytes():
    proto = to_tensor_proto(np.array([["é", b"\xff"]], dtype=object))

    assert proto.dtype == types_pb2.DT_STRING
    assert list(proto.string_val) == ["é".encode(), b"\xff"]
    assert to_ndarray(proto).tolist() == [["é".encode(), b"\xff"]]
    assert string_array([["a", b"b"]]).tolist() == [[b"a", b"b"]]


def test_python_numbers_take_numpy_default_dtypes():
    assert to_tensor_proto(np.asarray([1.5])).dtype == types_pb2.DT_DOUBLE
    assert to_tensor_proto(np.asarray([1, 2])).dtype == types_pb2.DT_INT64
    assert to_tensor_proto(np.asarray([True])).dtype == types_pb2.DT_BOOL


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: to_tensor_proto(np.array([None], dtype=object)), "must be bytes or str"),
        (lambda: to_tensor_proto(np.array([1 + 2j])), "no TensorProto dtype"),
        (lambda: numpy_dtype(types_pb2.DT_BFLOAT16), "DT_BFLOAT16 has no numpy dtype"),
    ],
)
def test_values_without_a_tensor_proto_form_are_codec_errors(make, message):
    with pytest.raises(TensorCodecError, match=message):
        make()


def _string_list(values: list[bytes]) -> bytes:
    """TensorFlow's EncodeStringList: varint32 lengths, then the bytes."""
    lengths = b""
    for value in values:
        size = len(value)
        while size >= 0x80:
            lengths += bytes([size & 0x7F | 0x80])
            size >>= 7
        lengths += bytes([size])
    return lengths + b"".join(values)


def test_strings_in_tensor_content_decode_as_tensorflow_decodes_them():
    values = [b"ab", b"", b"x" * 300, "é".encode()]
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape={"dim": [{"size": 2}, {"size": 2}]},
        tensor_content=_string_list(values),
    )

    ours = to_ndarray(proto)

    theirs = tf.io.parse_tensor(proto.SerializeToString(), tf.string).numpy()
    assert ours.tolist() == theirs.tolist() == [[b"ab", b""], [b"x" * 300, "é".encode()]]


@pytest.mark.parametrize(
    "content",
    [b"\x05ab", _string_list([b"a"]) + b"z", b"\xff" * 6, b""],
    ids=["truncated", "left-over", "bad-varint", "empty"],
)
def test_strings_in_tensor_content_that_tensorflow_refuses_are_refused(content):
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING, tensor_shape={"dim": [{"size": 1}]}, tensor_content=content
    )
    if content:  # TF itself refuses it (empty content is read as string_val: one empty value)
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.io.parse_tensor(proto.SerializeToString(), tf.string)
        with pytest.raises(TensorCodecError, match="tensor parsing error"):
            to_ndarray(proto)
    else:
        assert to_ndarray(proto).tolist() == [b""]


def test_absurd_shapes_do_not_overflow_the_size_arithmetic():
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape={"dim": [{"size": 2**32}, {"size": 2**32}]},
        tensor_content=b"\x00" * 4,
    )

    with pytest.raises(TensorCodecError, match="needs 73786976294838206464"):
        to_ndarray(proto)
