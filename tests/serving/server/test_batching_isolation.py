"""Request batching when the model rejects a value of one merged call: only that call fails."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from serving.server.batching import BatchScheduler
from serving.server.errors import StatusError, invalid_argument


def test_an_invalid_call_does_not_fail_its_batch_mates():
    merged_calls = []
    release = threading.Event()

    def invoke(inputs):
        rows = inputs["x"]
        merged_calls.append(len(rows))
        if len(merged_calls) == 1:
            release.wait(5)  # the first call holds the worker while the next two queue up
        if np.any(rows < 0):
            raise invalid_argument(f"negative value {rows[rows < 0][0]}")
        return {"y": rows * 2}

    scheduler = BatchScheduler(invoke, max_batch_size=8, num_threads=1)
    results, errors = {}, {}

    def call(name, value):
        try:
            results[name] = scheduler({"x": np.array([value])})["y"].tolist()
        except StatusError as error:
            errors[name] = error

    first = threading.Thread(target=call, args=("first", 1))
    first.start()
    while not merged_calls:
        pass
    threads = [threading.Thread(target=call, args=args) for args in (("good", 3), ("bad", -1))]
    for thread in threads:
        thread.start()
    while scheduler._queued_rows < 2:  # both queued behind the first call
        pass
    release.set()
    for thread in (first, *threads):
        thread.join(10)
    scheduler.close()

    assert results == {"first": [2], "good": [6]}
    assert errors["bad"].code == grpc.StatusCode.INVALID_ARGUMENT
    assert "negative value -1" in errors["bad"].message
    assert merged_calls[1] == 2  # the two queued calls were merged, then answered alone


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE])
def test_other_errors_still_fail_the_whole_batch(code):
    def invoke(inputs):
        raise StatusError(code, "broken")

    scheduler = BatchScheduler(invoke, max_batch_size=8, num_threads=1)
    with pytest.raises(StatusError) as error:
        scheduler({"x": np.array([1])})
    scheduler.close()

    assert error.value.code == code
