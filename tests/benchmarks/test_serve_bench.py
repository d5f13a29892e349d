"""Tests of benchmarks/serve.py and `twotower bench serve`: summaries by hand, runs on loopback.

The percentile definition itself is tested in test_stats.py.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import socket
import sys
from collections.abc import Iterator

import grpc
import pytest
import tensorflow as tf
from fixtures.fake_serving import FakeServing, serve
from tensorflow.core.framework import types_pb2

from benchmarks.serve import (
    LatencySummary,
    LoadTestConfig,
    LoadTestResult,
    RssSummary,
    ServeBenchmark,
    SoakConfig,
    measure_in_process,
    open_channel,
    request_inputs,
    run_load_test,
    summarize,
    without_retries,
)
from export import contract
from export.specs import TensorSpec
from serving.client import ClientConfig, ServingError, SignatureDescription, TlsConfig
from tfrs_model.errors import ConfigError
from twotower.cli import main

_IDS = tuple(str(n) for n in range(1, 11))


@pytest.fixture
def fake() -> Iterator[FakeServing]:
    with serve() as running:
        yield running


# --- pure functions -------------------------------------------------------------------------


def test_summarize_reports_milliseconds_of_unsorted_seconds():
    summary = summarize([0.004, 0.001, 0.003, 0.002])
    # Sorted ms: 1, 2, 3, 4; linear interpolation at h = 3 * q / 100 (benchmarks.stats):
    # p50 at h = 1.5 -> 2.5, p95 at h = 2.85 -> 3.85, p99 at h = 2.97 -> 3.97.
    assert summary == LatencySummary(
        count=4,
        mean_ms=pytest.approx(2.5),
        p50_ms=pytest.approx(2.5),
        p95_ms=pytest.approx(3.85),
        p99_ms=pytest.approx(3.97),
        max_ms=pytest.approx(4.0),
    )
    assert summarize([]) == LatencySummary(0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _described(name: str, **inputs: tuple) -> SignatureDescription:
    specs = {k: TensorSpec(types_pb2.DT_STRING, shape) for k, shape in inputs.items()}
    return SignatureDescription(name=name, method_name="", inputs=specs, outputs={})


def _inputs(signature: SignatureDescription) -> dict[str, list]:
    return {key: value.tolist() for key, value in request_inputs(signature, ["7"]).items()}


def test_request_inputs_put_the_id_under_the_contract_key():
    assert _inputs(_described("serving_default", user_id=(None,))) == {"user_id": [b"7"]}
    assert _inputs(_described("similar_items", item_id=(None,))) == {"item_id": [b"7"]}
    assert _inputs(_described("item_titles", item_ids=(None, None))) == {"item_ids": [[b"7"]]}
    recommend = _described(
        "recommend", user_id=(None,), history=(None, None), exclude=(None, None), genre=(None,)
    )
    # The rest of the context is padding.
    assert _inputs(recommend) == {
        "user_id": [b"7"],
        "history": [[b""]],
        "exclude": [[b""]],
        "genre": [b""],
    }
    with pytest.raises(ConfigError, match="none of"):
        request_inputs(_described("affine", x=(None, 3)), ["7"])


def test_request_inputs_pads_only_string_inputs():
    signature = SignatureDescription(
        name="scored",
        method_name="",
        inputs={
            contract.USER_ID: TensorSpec(types_pb2.DT_STRING, (None,)),
            "age": TensorSpec(types_pb2.DT_FLOAT, (None,)),
        },
        outputs={},
    )
    with pytest.raises(ConfigError, match=r"needs input 'age' \(DT_FLOAT \[-1\]\)"):
        request_inputs(signature, ["7"])


def test_without_retries_keeps_everything_but_the_attempts():
    client = ClientConfig(target="h:1", timeout_s=3.0)
    once = without_retries(client)
    assert once.retry.max_attempts == 1 and client.retry.max_attempts > 1
    assert once == dataclasses.replace(client, retry=once.retry)
    assert dataclasses.replace(once.retry, max_attempts=client.retry.max_attempts) == client.retry


def test_open_channel_plaintext_and_tls_in_both_modes(tmp_path):
    plain = ClientConfig(target="127.0.0.1:1")
    tls = ClientConfig(target="127.0.0.1:1", tls=TlsConfig(server_name_override="serving.local"))
    for config in (plain, tls):
        channel = open_channel(config)
        assert isinstance(channel, grpc.Channel)
        channel.close()

    async def open_aio() -> None:
        for config in (plain, tls):
            channel = open_channel(config, aio=True)
            assert isinstance(channel, grpc.aio.Channel)
            await channel.close()

    asyncio.run(open_aio())
    unreadable = ClientConfig(tls=TlsConfig(root_certificates=tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"missing\.pem"):
        open_channel(unreadable, aio=True)


@pytest.mark.parametrize(
    "kwargs",
    [{"ids": ()}, {"concurrency": 0}, {"duration_s": 0}, {"warmup_s": -1}, {"mode": "processes"}],
)
def test_invalid_load_test_configs(kwargs):
    with pytest.raises(ConfigError):
        LoadTestConfig(**{"client": ClientConfig(), "ids": _IDS, **kwargs})


def test_benchmark_markdown_and_dict():
    latency = LatencySummary(100, 1.25, 1.0, 2.0, 3.0, 4.0)
    load = LoadTestResult(
        "h:1", "twotower", "serving_default", "aio", 4, 2.0, 100, {}, 50.0, latency
    )
    benchmark = ServeBenchmark(load, LatencySummary(10, 0.5, 0.5, 0.6, 0.7, 0.8))
    assert benchmark.markdown("serve-x") == (
        "## serve-x\n\n"
        "Batch-1 `Predict` on `serving_default` of model `twotower` at `h:1`: 4 closed-loop "
        "workers for 2.0 s; 100 requests, errors: none.\n\n"
        "| path | concurrency | calls | QPS | p50 ms | p95 ms | p99 ms | max ms |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| gRPC (aio) | 4 | 100 | 50.0000 | 1.0000 | 2.0000 | 3.0000 | 4.0000 |\n"
        # In process: one call at a time, so QPS = 1000 / mean ms = 2000.
        "| in-process SavedModel | 1 | 10 | 2,000 | 0.5000 | 0.6000 | 0.7000 | 0.8000 |\n"
    )
    result = benchmark.to_dict()
    assert result["latency"]["p50_ms"] == 1.0
    assert result["in_process_latency"]["p50_ms"] == 0.5
    json.dumps(result)  # serializable as it is


# --- against the fake server ----------------------------------------------------------------


def _config(fake: FakeServing, **kwargs) -> LoadTestConfig:
    values = {"concurrency": 3, "duration_s": 0.4, "warmup_s": 0.1, **kwargs}
    return LoadTestConfig(
        client=ClientConfig(target=fake.target, timeout_s=2.0), ids=_IDS, **values
    )


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["threads", "aio"])
def test_load_test_counts_every_answer_without_errors(fake, mode):
    result = run_load_test(_config(fake, mode=mode))
    assert result.errors == {}
    assert result.requests == result.latency.count > 0
    assert len(fake.predictions) >= result.requests  # the warm-up is sent but not counted
    assert result.qps > 0 and result.duration_s > 0
    latency = result.latency
    assert 0 < latency.p50_ms <= latency.p95_ms <= latency.p99_ms <= latency.max_ms
    users = {r.inputs[contract.USER_ID].string_val[0] for r in fake.predictions}
    assert users <= {i.encode() for i in _IDS} and len(users) > 1  # workers cycle the ids


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["threads", "aio"])
def test_load_test_counts_errors_by_status_code(fake, mode):
    fake.abort_with = (grpc.StatusCode.INVALID_ARGUMENT, "bad input")
    result = run_load_test(_config(fake, mode=mode, duration_s=0.2, warmup_s=0.0))
    assert result.errors == {"INVALID_ARGUMENT": result.requests}
    assert result.requests > 0
    assert result.latency.count == 0 and result.qps == 0


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["threads", "aio"])
def test_load_test_pads_the_context_the_signature_takes(fake, mode):
    # recommend takes history, exclude and a user feature besides user_id: sent as padding.
    config = _config(fake, mode=mode, signature=contract.RECOMMEND, max_requests=6, warmup_s=0)
    result = run_load_test(config)
    assert result.errors == {} and result.requests == 6
    request = fake.predictions[0]
    assert request.model_spec.signature_name == contract.RECOMMEND
    assert request.inputs[contract.HISTORY].string_val == [b""]
    assert [d.size for d in request.inputs[contract.HISTORY].tensor_shape.dim] == [1, 1]
    assert request.inputs["occupation"].string_val == [b""]


@pytest.mark.integration
def test_load_test_stops_at_max_requests(fake):
    result = run_load_test(_config(fake, concurrency=4, max_requests=20, duration_s=30, warmup_s=0))
    # 20 // 4 = 5 requests per worker, then every worker stops long before the 30 s.
    assert result.requests == len(fake.predictions) == 20


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["threads", "aio"])
def test_load_test_without_a_server_fails_to_connect(mode):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ClientConfig(target=f"127.0.0.1:{port}", timeout_s=0.2)
    with pytest.raises(ServingError) as raised:
        run_load_test(LoadTestConfig(client=client, ids=_IDS, duration_s=0.1, mode=mode))
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


@pytest.mark.integration
def test_bench_serve_command_prints_and_records(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids.txt").write_text("196\n\n186\n")
    argv = ["bench", "serve", "--target", fake.target, "--concurrency", "2"]
    argv += ["--duration", "0.3", "--warmup", "0", "--user-ids-file", "ids.txt", "--label", "t"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "benchmarks/results/serve-t.json").read_text())
    assert printed["requests"] == saved["requests"] > 0 and saved["errors"] == {}
    assert saved["benchmark"] == "serve-t" and saved["in_process_latency"] is None
    assert "## serve-t" in (tmp_path / "docs/benchmarks.md").read_text()
    assert {r.inputs[contract.USER_ID].string_val[0] for r in fake.predictions} == {b"196", b"186"}


@pytest.mark.integration
def test_bench_serve_exits_1_when_requests_fail(fake, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fake.abort_with = (grpc.StatusCode.NOT_FOUND, "no such model")
    argv = ["bench", "serve", "--target", fake.target, "--duration", "0.2", "--warmup", "0"]
    assert main(argv) == 1
    assert json.loads(capsys.readouterr().out)["errors"]["NOT_FOUND"] > 0


def test_bench_serve_rejects_bad_labels(capsys):
    assert main(["bench", "serve", "--label", "../x"]) == 2
    assert "--label" in capsys.readouterr().err


class _TinyModel(tf.Module):
    """user_id [batch] -> item_ids [batch, 2], scores [batch, 2]."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=contract.USER_ID)])
    def recommend(self, user_id):
        ids = tf.stack([user_id + "-a", user_id + "-b"], axis=1)
        scores = tf.ones(tf.shape(ids), tf.float32)
        return {contract.ITEM_IDS: ids, contract.SCORES: scores}


def test_measure_in_process_times_the_saved_model_signature(tmp_path):
    model = _TinyModel()
    path = tmp_path / "1"
    tf.saved_model.save(model, str(path), signatures={contract.SERVING_DEFAULT: model.recommend})
    summary = measure_in_process(path, contract.SERVING_DEFAULT, ["196", "7"], max_calls=30)
    assert summary.count == 30
    assert 0 < summary.p50_ms <= summary.max_ms
    with pytest.raises(ConfigError, match="has no signature 'nope'"):
        measure_in_process(path, "nope", ["196"])


# --- REST load and soak against the embedded server on loopback ------------------------------


@pytest.fixture
def embedded(tmp_path, tiny, write_version):
    """An embedded server over version 1 of the tiny model; yields (server, base path)."""
    from serving.server.server import EmbeddedServer

    base = tmp_path / "base"
    write_version(base, 1)
    server = EmbeddedServer(tiny.config(base, poll_interval_s=0.2))
    server.start()
    yield server, base
    server.stop(1.0)


@pytest.mark.integration
def test_bench_serve_rest_loads_rest_beside_grpc(embedded, tiny, tmp_path, monkeypatch, capsys):
    server, _ = embedded
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "serve", "--target", f"127.0.0.1:{server.ports.grpc}", "--model-name"]
    argv += [tiny.model_name, "--concurrency", "4", "--duration", "1", "--warmup", "0.2"]
    argv += ["--rest", f"127.0.0.1:{server.ports.rest}", "--label", "rest"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["errors"] == {} and printed["requests"] > 0
    rest = printed["rest"]
    assert rest["mode"] == "rest" and rest["errors"] == {} and rest["requests"] > 0
    assert rest["target"] == f"127.0.0.1:{server.ports.rest}"
    assert "| REST | 4 |" in (tmp_path / "docs/benchmarks.md").read_text()


@pytest.mark.integration
def test_short_soak_swaps_versions_and_fails_no_good_request(
    embedded, tiny, tmp_path, monkeypatch, capsys
):
    server, base = embedded
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "serve", "--target", f"127.0.0.1:{server.ports.grpc}", "--model-name"]
    argv += [tiny.model_name, "--concurrency", "8", "--duration", "8", "--warmup", "0.5"]
    argv += ["--soak", "--model-base-path", str(base), "--swap-every", "3"]
    argv += ["--malformed-every", "10", "--server-pid", str(os.getpid()), "--label", "soak"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["failed_good_requests"] == 0 and result["errors"] == {}
    assert result["requests"] > 0
    assert result["published_versions"] == [2, 3]
    # Both new versions answered good requests: the swaps happened under load.
    assert {"2", "3"} <= set(result["versions_answered"])
    assert set(result["malformed"]) == {"INVALID_ARGUMENT"}
    assert result["malformed"]["INVALID_ARGUMENT"] > 0
    rss = result["rss"]
    assert rss["samples"] >= 5 and 0 < rss["start_mib"] <= rss["max_mib"]
    # Only the newest published versions stay on disk (keep_versions = 2): 1, 2 and 3.
    assert sorted(p.name for p in base.iterdir()) == ["1", "2", "3"]
    assert "**Failed good requests: 0**" in (tmp_path / "docs/benchmarks.md").read_text()


def test_soak_config_is_checked():
    load = LoadTestConfig(client=ClientConfig(target="127.0.0.1:1"), ids=_IDS)
    with pytest.raises(ConfigError):
        SoakConfig(load=load, swap_every_s=0)
    with pytest.raises(ConfigError):
        SoakConfig(load=load, malformed_every=-1)


def test_rss_summary_keeps_the_median_of_each_tenth():
    mib = 2**20
    # 20 samples: 100 MiB for the first half, then 100 + 1 MiB per sample (a leak)
    samples = [100 * mib] * 10 + [(100 + n) * mib for n in range(1, 11)]

    summary = RssSummary.of(samples)

    assert (summary.samples, summary.start_mib, summary.end_mib, summary.max_mib) == (
        20,
        100.0,
        110.0,
        110.0,
    )
    # tenths of two samples each: medians 100 five times, then 101.5, 103.5, ..., 109.5
    assert summary.trend_mib == (100.0,) * 5 + (101.5, 103.5, 105.5, 107.5, 109.5)


def test_a_soak_is_bounded_by_its_duration_not_the_load_test_request_cap():
    from twotower.commands.bench_serve import _max_requests

    def args(**given):
        return argparse.Namespace(**{"soak": False, "max_requests": None, **given})

    assert _max_requests(args()) == LoadTestConfig.max_requests == 1_000_000
    assert _max_requests(args(soak=True)) == sys.maxsize
    assert _max_requests(args(soak=True, max_requests=50)) == 50
