"""How a call to the model server fails: `ServingError` with a hint, or `ResponseError`."""

from __future__ import annotations

import grpc

from tfrs_model.errors import TwoTowerError


class ServingError(TwoTowerError):
    """A call to the model server failed.

    Attributes:
      method: the RPC that failed, e.g. "Predict".
      code: the gRPC status code (`grpc.StatusCode`).
      details: the server's message.
      target: the "host:port" called.
      max_attempts: the most times gRPC could send the call under the channel's retry policy:
        the policy's `max_attempts` for a status it retries (UNAVAILABLE), else 1. gRPC retries
        transparently and does not say how many attempts it made.
      hint: what to check, in words.
    """

    def __init__(
        self,
        method: str,
        code: grpc.StatusCode,
        details: str,
        target: str,
        max_attempts: int = 1,
    ) -> None:
        self.method = method
        self.code = code
        self.details = details
        self.target = target
        self.max_attempts = max_attempts
        self.hint = hint_for(code, target)
        retried = f" (retried by gRPC, at most {max_attempts} attempts)" if max_attempts > 1 else ""
        super().__init__(
            f"{method} to {target} failed with {code.name}{retried}: "
            f"{details or '(no message)'}; {self.hint}"
        )


class ResponseError(TwoTowerError):
    """The server answered, but not with what the serving contract (`export.contract`) promises."""


_HINTS = {
    grpc.StatusCode.NOT_FOUND: (
        "is the model name right? GetModelStatus lists versions "
        "(`TwoTowerClient.model_status()`); a requested version or label must be loaded"
    ),
    grpc.StatusCode.UNAVAILABLE: "is a model server listening on {target}? is the address right?",
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        "the server did not answer in time: raise the timeout, send fewer ids per request, "
        "or check the server's load"
    ),
    grpc.StatusCode.INVALID_ARGUMENT: (
        "check the signature name and the input keys, dtypes and shapes: "
        "GetModelMetadata lists them (`TwoTowerClient.metadata()`)"
    ),
    grpc.StatusCode.FAILED_PRECONDITION: (
        "the model version or label is not ready: GetModelStatus shows each version's state"
    ),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (
        "a message exceeded a size limit: raise max_receive_message_bytes / "
        "max_send_message_bytes on both ends, or send fewer ids per request"
    ),
    grpc.StatusCode.UNAUTHENTICATED: "check the TLS client certificate and key",
    grpc.StatusCode.PERMISSION_DENIED: "check the TLS client certificate and key",
    grpc.StatusCode.UNIMPLEMENTED: "the server at {target} does not implement this RPC",
}


def hint_for(code: grpc.StatusCode, target: str) -> str:
    """A one-line suggestion of what to check after a call to `target` failed with `code`."""
    return _HINTS.get(code, "see the server's log").format(target=target)
