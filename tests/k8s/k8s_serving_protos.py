"""TF Serving's config messages, for parsing the text protos in k8s/base/config/.

`ModelServerConfig` comes from the `tensorflow-serving-api` package. That package does not ship
`session_bundle_config_pb2` (BatchingParameters) nor `monitoring_config_pb2`
(MonitoringConfig), so when they cannot be imported the two messages are built here from their
definitions in TF Serving 2.20 (tensorflow_serving/servables/tensorflow/session_bundle_config.proto
and tensorflow_serving/config/monitoring_config.proto), with the same full names, field names,
numbers and types. BatchingParameters keeps its fields 1-7, the ones documented for
--batching_parameters_file; a field the config sets that is not among them fails to parse, which
is what we want from a typo too.
"""

from __future__ import annotations

import functools

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

_F = descriptor_pb2.FieldDescriptorProto


def model_server_config_class():
    from tensorflow_serving.config import model_server_config_pb2

    return model_server_config_pb2.ModelServerConfig


def batching_parameters_class():
    try:
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2
    except ImportError:
        return _vendored("BatchingParameters")
    return session_bundle_config_pb2.BatchingParameters


def monitoring_config_class():
    try:
        from tensorflow_serving.config import monitoring_config_pb2
    except ImportError:
        return _vendored("MonitoringConfig")
    return monitoring_config_pb2.MonitoringConfig


def _field(name: str, number: int, kind: int, type_name: str | None = None, repeated: bool = False):
    field = _F(
        name=name,
        number=number,
        type=kind,
        label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
    )
    if type_name is not None:
        field.type_name = type_name
    return field


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    int64 = ".google.protobuf.Int64Value"
    message = _F.TYPE_MESSAGE
    batching = descriptor_pb2.DescriptorProto(
        name="BatchingParameters",
        field=[
            _field("max_batch_size", 1, message, int64),
            _field("batch_timeout_micros", 2, message, int64),
            _field("max_enqueued_batches", 3, message, int64),
            _field("num_batch_threads", 4, message, int64),
            _field("thread_pool_name", 5, message, ".google.protobuf.StringValue"),
            _field("allowed_batch_sizes", 6, _F.TYPE_INT64, repeated=True),
            _field("pad_variable_length_inputs", 7, _F.TYPE_BOOL),
        ],
    )
    prometheus = descriptor_pb2.DescriptorProto(
        name="PrometheusConfig",
        field=[_field("enable", 1, _F.TYPE_BOOL), _field("path", 2, _F.TYPE_STRING)],
    )
    monitoring = descriptor_pb2.DescriptorProto(
        name="MonitoringConfig",
        field=[_field("prometheus_config", 1, message, ".tensorflow.serving.PrometheusConfig")],
    )
    pool.Add(
        descriptor_pb2.FileDescriptorProto(
            name="twotower_tests/tf_serving_config_subset.proto",
            package="tensorflow.serving",
            syntax="proto3",
            dependency=["google/protobuf/wrappers.proto"],
            message_type=[batching, prometheus, monitoring],
        )
    )
    return pool


def _vendored(name: str):
    return message_factory.GetMessageClass(
        _pool().FindMessageTypeByName(f"tensorflow.serving.{name}")
    )
