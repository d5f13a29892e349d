"""The state of one model version: what the embedded server records and GetModelStatus reports.

One type for both ends: the server's model manager keeps a `VersionStatus` per version and answers
GetModelStatus from it; the client (`serving.client`) parses GetModelStatus answers into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The gRPC status code with canonical number `number`, UNKNOWN for another number.

    TensorFlow's error codes and the `error_code` of GetModelStatus use the same numbering.
    """
    return _CODES_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


@dataclass(frozen=True)
class VersionStatus:
    """The state of one model version, as GetModelStatus reports it.

    Attributes:
      version: the version number (the directory name under the model base path).
      state: TF Serving's state name: START, LOADING, AVAILABLE, UNLOADING or END (unloaded, or
        failed to load when `error_code` is not OK); UNKNOWN for a value the client does not know.
      error_code: the load status; OK when the version loaded (or is loading) without error.
      error_message: why loading failed; "" when `error_code` is OK.
    """

    version: int
    state: str
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""

    @property
    def available(self) -> bool:
        return self.state == "AVAILABLE"
