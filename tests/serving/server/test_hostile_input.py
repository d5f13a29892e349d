"""The probes of the hostile-input issue (D1-D8), as tests on loopback.

Most run against one `twotower serve --embedded` subprocess, so memory is the server process's
own peak RSS (VmHWM) and a crash or a hang shows as such; the drain tests run in-process or in a
subprocess of their own. No assertion is on wall-clock time; waits are bounded only so a
regression fails instead of hanging.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections import Counter

import grpc
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.server.rest_server import SERVER_NAME
from serving.server.server import EmbeddedServer

pytestmark = pytest.mark.integration

TIMEOUT = 30
MAX_MESSAGE_BYTES = 1_000_000
# Far below what any probe would allocate unchecked (400 MB and more), far above noise.
RSS_SLACK = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, tiny_model_cache, tiny):
    base = tmp_path_factory.mktemp("hostile-base")
    shutil.copytree(tiny_model_cache(1), base / "1")
    server = tiny.ServerProcess(
        base,
        "--max-message-bytes", str(MAX_MESSAGE_BYTES),
        "--rest-read-timeout", "5",
        "--drain-grace", "5",
    )  # fmt: skip
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    server.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    yield server
    channel.close()
    server.stop()


def _predict(signature: str, inputs: dict[str, tensor_pb2.TensorProto]):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.model_spec.signature_name = signature
    for key, proto in inputs.items():
        request.inputs[key].CopyFrom(proto)
    return request


def _proto(dtype: int, shape: list[int], **values) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(
        dtype=dtype, tensor_shape={"dim": [{"size": size} for size in shape]}, **values
    )


AMPLIFIED = [
    # D1: a 40-byte message declaring fifty million strings (padded from one value).
    ("", "user_id", _proto(types_pb2.DT_STRING, [50_000_000], string_val=[b"u"]), "batch size"),
    # D1: an inner dimension with no limit before.
    ("affine", "x", _proto(types_pb2.DT_FLOAT, [1, 100_000_000], float_val=[1.0]), "dimension 1"),
    # Every dimension within its limit, the product not.
    ("affine", "x", _proto(types_pb2.DT_FLOAT, [1000, 60_000], float_val=[1.0]), "elements"),
    # D6: shapes that overflowed int64 arithmetic or numpy (INTERNAL before).
    ("affine", "x", _proto(types_pb2.DT_FLOAT, [2**32, 2**32], float_val=[1.0]), "batch size"),
    ("", "user_id", _proto(types_pb2.DT_STRING, [10**12], string_val=[b"u"]), "batch size"),
    ("affine", "x", _proto(types_pb2.DT_FLOAT, [1] * 40, float_val=[1.0]), "40 dimensions"),
]


def test_declared_shapes_are_checked_against_the_limits_before_anything_is_allocated(hostile):
    before = hostile.peak_rss_bytes()

    for signature, key, proto, message in AMPLIFIED:
        with pytest.raises(grpc.RpcError) as caught:
            hostile.stub.Predict(_predict(signature, {key: proto}), timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert message in caught.value.details()

    assert hostile.peak_rss_bytes() - before < RSS_SLACK
    ok = _predict("", {"user_id": _proto(types_pb2.DT_STRING, [1], string_val=[b"u"])})
    assert hostile.stub.Predict(ok, timeout=TIMEOUT).outputs["item_ids"].string_val[0] == b"u/0"


def _string_list(values: list[bytes]) -> bytes:
    """TensorFlow's DT_STRING tensor_content: varint32 lengths, then the bytes."""
    lengths = b""
    for value in values:
        size = len(value)
        while size >= 0x80:
            lengths += bytes([size & 0x7F | 0x80])
            size >>= 7
        lengths += bytes([size])
    return lengths + b"".join(values)


def test_strings_in_tensor_content_are_decoded_as_tensorflow_does(shared_stubs):
    users = [b"alice", b"b" * 200]
    as_values = _predict("", {"user_id": _proto(types_pb2.DT_STRING, [2], string_val=users)})
    as_content = _predict(
        "", {"user_id": _proto(types_pb2.DT_STRING, [2], tensor_content=_string_list(users))}
    )

    expected = shared_stubs.prediction.Predict(as_values, timeout=TIMEOUT)
    answer = shared_stubs.prediction.Predict(as_content, timeout=TIMEOUT)

    assert answer.outputs["item_ids"].string_val == expected.outputs["item_ids"].string_val
    assert answer.outputs["item_ids"].string_val[0] == b"alice/0"


@pytest.mark.parametrize(
    "content", [b"garbage!", _string_list([b"a", b"b"]) + b"x", b"\xff" * 6], ids=str
)
def test_strings_in_tensor_content_that_do_not_decode_are_refused(shared_stubs, content):
    request = _predict("", {"user_id": _proto(types_pb2.DT_STRING, [2], tensor_content=content)})

    with pytest.raises(grpc.RpcError) as caught:
        shared_stubs.prediction.Predict(request, timeout=TIMEOUT)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor parsing error" in caught.value.details()


def _raw_http(port: int, head: bytes, body_chunks=(), read: bool = True) -> bytes:
    """Sends a raw request on a fresh connection; returns everything answered until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as connection:
        connection.sendall(head)
        try:
            for chunk in body_chunks:
                connection.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all: what we want
        if not read:
            return b""
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
                if b"\r\n\r\n" in answer and _complete(answer):
                    break
        except ConnectionResetError:
            pass
        return answer


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


PREDICT = b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: -1\r\n",
        b"Content-Length: abc\r\n",
        b"Transfer-Encoding: chunked\r\n",
    ],
    ids=["negative-length", "non-numeric-length", "chunked-over-the-limit"],
)
def test_rest_bodies_are_bounded_while_reading(hostile, headers):
    before = hostile.peak_rss_bytes()
    megabyte = b"x" * (1 << 20)
    if b"chunked" in headers:
        chunks = [b"%x\r\n%s\r\n" % (len(megabyte), megabyte)] * 16
    else:
        chunks = [megabyte] * 16  # held open: the server must answer without the end

    answer = _raw_http(hostile.rest_port, PREDICT + headers + b"\r\n", chunks)

    status = answer.split(b" ", 2)[1]
    assert status == b"400", answer[:300]
    assert b'"error"' in answer
    assert hostile.peak_rss_bytes() - before < RSS_SLACK


def _post(port: int, path: str, body: bytes) -> tuple[int, dict, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/models/tiny:predict", b'{"instances": ' + b"[" * 80 + b"]" * 80 + b"}", "nested"),
        (
            "/v1/models/tiny:predict",
            b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "nested too deeply",
        ),
        (
            "/v1/models/tiny/versions/18446744073709551616:predict",
            b'{"instances": ["a"]}',
            "int64",
        ),
    ],
    ids=["nested-80", "nested-100000", "version-over-int64"],
)
def test_rest_caller_errors_are_400_with_a_clear_message(hostile, path, body, message):
    status, headers, document = _post(hostile.rest_port, path, body)

    assert status == 400
    assert message in document["error"]
    assert headers["Server"] == SERVER_NAME


def test_rest_answers_32_concurrent_clients_without_dropping_connections(hostile):
    body = json.dumps({"instances": ["alice"]}).encode()
    outcomes: Counter = Counter()

    def client() -> None:
        for _ in range(15):  # a fresh connection per request, as the probe did
            try:
                status, _, _ = _post(hostile.rest_port, "/v1/models/tiny:predict", body)
                outcomes[status] += 1
            except OSError as error:
                outcomes[type(error).__name__] += 1

    threads = [threading.Thread(target=client) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 4)

    assert outcomes == {200: 32 * 15}


def test_clients_that_hang_up_early_leave_no_traceback_and_the_server_header_is_bare(hostile):
    body = json.dumps({"instances": ["alice"]}).encode()
    head = PREDICT + b"Content-Length: %d\r\n\r\n" % len(body)
    for _ in range(100):
        _raw_http(hostile.rest_port, head, [body], read=False)
    _raw_http(hostile.rest_port, PREDICT + b"Content-Length: 5\r\n\r\nab", read=False)

    status, headers, _ = _post(hostile.rest_port, "/v1/models/tiny:predict", body)
    assert status == 200
    assert headers["Server"] == SERVER_NAME
    log = "".join(hostile.lines)
    assert "Traceback" not in log
    assert "BrokenPipe" not in log


def test_stop_refuses_new_connections_and_does_not_wait_for_idle_or_incomplete_ones(
    tmp_path, tiny, write_version
):
    write_version(tmp_path / "base", 1)
    server = EmbeddedServer(tiny.config(tmp_path / "base", drain_grace_s=120))
    port = server.start().rest
    idle = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    incomplete = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    incomplete.sendall(PREDICT + b"Content-Length: 1000\r\n\r\n{")
    half_headers = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    half_headers.sendall(b"GET /v1/models/tiny HTTP/1.1\r\nHost: x")

    stopper = threading.Thread(target=server.stop, args=(120,))
    stopper.start()
    # Bounded far below the 120 s grace: idle and incomplete connections do not hold the drain.
    stopper.join(60)

    assert not stopper.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    for connection in (idle, incomplete, half_headers):
        connection.close()


def test_sigterm_under_concurrent_load_cancels_no_call(tmp_path, tiny, write_version):
    write_version(tmp_path / "base", 1)
    server = tiny.ServerProcess(tmp_path / "base", "--drain-grace", "10")
    codes: Counter = Counter()
    started = threading.Barrier(17)

    def client() -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = _predict("", {"user_id": _proto(types_pb2.DT_STRING, [1], string_val=[b"u"])})
        stub.Predict(request, timeout=TIMEOUT)
        started.wait(TIMEOUT)
        for _ in range(5000):
            try:
                stub.Predict(request, timeout=TIMEOUT)
                codes["OK"] += 1
            except grpc.RpcError as error:
                codes[error.code().name] += 1
                if error.code() != grpc.StatusCode.CANCELLED:
                    break  # UNAVAILABLE: the server said it is going; go elsewhere
        channel.close()

    try:
        threads = [threading.Thread(target=client) for _ in range(16)]
        for thread in threads:
            thread.start()
        started.wait(TIMEOUT)
        assert server.process.poll() is None
        threading.Event().wait(1.0)  # load for a moment before the signal
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(TIMEOUT * 2)
        assert server.process.wait(timeout=TIMEOUT) == 0
    finally:
        server.stop()

    assert codes["CANCELLED"] == 0, codes
    assert codes["OK"] > 0
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
