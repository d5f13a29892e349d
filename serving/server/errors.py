"""How the embedded server fails a request: `StatusError`, a gRPC status code and a message.

The code is the one TF Serving returns for the same mistake; the message says what was wrong and,
where it can, how to fix it.
"""

from __future__ import annotations

import grpc


class StatusError(Exception):
    """A request failed: `code` is the gRPC status returned to the client, `message` says why."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message


def invalid_argument(message: str) -> StatusError:
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, message)
