"""Where the model is served and how to reach it: the client's config and its gRPC channel.

`ClientConfig` names the target, the model (version or label), the deadline, TLS and message
size limits; `RetryPolicy` is rendered into gRPC's own service config (`retryPolicy`), so gRPC
itself resends calls that fail with UNAVAILABLE. `channel_options(config)` gives the channel
arguments, for a `grpc.Channel` (`create_channel`) or a `grpc.aio` channel built by the caller.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from export import contract
from tfrs_model.errors import ConfigError

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
# The status codes gRPC retries under a RetryPolicy: the server is starting, restarting or
# unreachable for a moment. Any other failure is final.
RETRYABLE_CODES = (grpc.StatusCode.UNAVAILABLE,)
# gRPC clamps a retryPolicy's maxAttempts above this to it (retry_service_config.cc).
GRPC_MAX_ATTEMPTS = 5
_MIB = 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retries of calls that failed with UNAVAILABLE, and only those.

    Rendered into the channel's service config (`service_config`), so gRPC resends a call
    that failed with UNAVAILABLE (before the server sent any response) by itself. Before attempt
    n + 1 it waits about `min(max_backoff_s, initial_backoff_s * multiplier ** (n - 1))` seconds
    (gRPC randomises each wait), sends at most `max_attempts` in all and never past the call's
    deadline. `max_attempts=1` turns retries off.

    Raises:
      ConfigError: max_attempts outside 1..5 (gRPC caps maxAttempts at 5), or backoffs that are
        not 0 < initial_backoff_s <= max_backoff_s, or a multiplier below 1.
    """

    max_attempts: int = 4
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= GRPC_MAX_ATTEMPTS:
            raise ConfigError(
                f"max_attempts must be 1 (no retries) to {GRPC_MAX_ATTEMPTS}: gRPC caps a retry "
                f"policy's maxAttempts at {GRPC_MAX_ATTEMPTS}; got {self}"
            )
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ConfigError(f"need 0 < initial_backoff_s <= max_backoff_s, got {self}")
        if self.multiplier < 1:
            raise ConfigError(f"need multiplier >= 1, got {self}")

    def service_config(self) -> dict[str, Any]:
        """gRPC's service config for the TF Serving services: `retryPolicy` when retries are on.

        E.g. `{"methodConfig": [{"name": [{"service": "tensorflow.serving.PredictionService"},
        {"service": "tensorflow.serving.ModelService"}], "retryPolicy": {"maxAttempts": 4,
        "initialBackoff": "0.1s", "maxBackoff": "2s", "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE"]}}]}`.
        """
        method_config: dict[str, Any] = {
            "name": [{"service": PREDICTION_SERVICE}, {"service": MODEL_SERVICE}]
        }
        if self.max_attempts > 1:
            method_config["retryPolicy"] = {
                "maxAttempts": self.max_attempts,
                "initialBackoff": _duration(self.initial_backoff_s),
                "maxBackoff": _duration(self.max_backoff_s),
                "backoffMultiplier": self.multiplier,
                "retryableStatusCodes": [code.name for code in RETRYABLE_CODES],
            }
        return {"methodConfig": [method_config]}


def _duration(seconds: float) -> str:
    """A protobuf Duration in JSON, as service configs write it: 0.1 -> "0.1s", 2.0 -> "2s"."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


@dataclass(frozen=True)
class TlsConfig:
    """TLS for the channel. With no root certificates, gRPC's default roots are trusted.

    Attributes:
      root_certificates: PEM file of the CAs that signed the server's certificate.
      client_certificate: PEM certificate chain for mutual TLS; needs `client_key`.
      client_key: PEM private key of `client_certificate`.
      server_name_override: the name to check the server's certificate against when it differs
        from the target's host (e.g. a certificate for "serving.internal" reached by IP).

    Raises:
      ConfigError: a client certificate without its key, or a key without its certificate.
    """

    root_certificates: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None
    server_name_override: str | None = None

    def __post_init__(self) -> None:
        if (self.client_certificate is None) != (self.client_key is None):
            raise ConfigError("mutual TLS needs both a client certificate and its key")

    def credentials(self) -> grpc.ChannelCredentials:
        """Reads the PEM files into gRPC channel credentials.

        Raises:
          ConfigError: a file cannot be read.
        """
        return grpc.ssl_channel_credentials(
            root_certificates=_read_pem(self.root_certificates),
            private_key=_read_pem(self.client_key),
            certificate_chain=_read_pem(self.client_certificate),
        )


def _read_pem(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read TLS file {path}: {error.strerror}") from error


@dataclass(frozen=True)
class ClientConfig:
    """Where the model is served and how to call it.

    Attributes:
      target: "host:port" of the gRPC endpoint (TF Serving's convention is port 8500).
      model_name: the served model's name.
      version: ask for this version; None (and no label) means the latest available.
      version_label: ask for the version with this label (e.g. "stable"); exclusive with version.
      timeout_s: default deadline of each call in seconds, gRPC's retries included.
      retry: gRPC's retries of UNAVAILABLE.
      tls: TLS settings; None for a plaintext channel.
      max_send_message_bytes: largest request the channel sends.
      max_receive_message_bytes: largest response the channel accepts.
      wait_for_ready: queue calls while the channel connects instead of failing fast with
        UNAVAILABLE (the deadline still applies).

    Raises:
      ConfigError: an empty target or model name, both a version and a label, a timeout or a
        message size limit that is not positive.
    """

    target: str = f"localhost:{contract.GRPC_PORT}"
    model_name: str = contract.DEFAULT_MODEL_NAME
    version: int | None = None
    version_label: str | None = None
    timeout_s: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tls: TlsConfig | None = None
    max_send_message_bytes: int = 4 * _MIB
    max_receive_message_bytes: int = 64 * _MIB
    wait_for_ready: bool = False

    def __post_init__(self) -> None:
        if not self.target or not self.model_name:
            raise ConfigError("target and model_name must not be empty")
        if self.version is not None and self.version_label:
            raise ConfigError("ask for a version or a version label, not both")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive, not {self.timeout_s}")
        if self.max_send_message_bytes <= 0 or self.max_receive_message_bytes <= 0:
            raise ConfigError("message size limits must be positive")


def channel_options(config: ClientConfig) -> list[tuple[str, Any]]:
    """The gRPC channel arguments `config` implies, for `grpc` and `grpc.aio` channels alike.

    Message size limits, the retry policy as `grpc.service_config` JSON with `grpc.enable_retries`
    (0 when `config.retry.max_attempts` is 1), and the TLS name override when set.
    """
    retries = config.retry.max_attempts > 1
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", config.max_send_message_bytes),
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
        ("grpc.enable_retries", int(retries)),
        ("grpc.service_config", json.dumps(config.retry.service_config())),
    ]
    if config.tls is not None and config.tls.server_name_override:
        options.append(("grpc.ssl_target_name_override", config.tls.server_name_override))
    return options


def create_channel(config: ClientConfig) -> grpc.Channel:
    """Opens a channel to `config.target`: plaintext, or TLS when `config.tls` is set.

    Raises:
      ConfigError: a TLS file cannot be read.
    """
    options = channel_options(config)
    if config.tls is None:
        return grpc.insecure_channel(config.target, options=options)
    return grpc.secure_channel(config.target, config.tls.credentials(), options=options)
