"""Merges concurrent calls of one signature into one model call (TF Serving's --enable_batching).

A `BatchScheduler` wraps a signature's call on numpy inputs. Callers enqueue their rows and
wait; `num_batch_threads` workers each take the oldest waiting call, add the waiting calls with
the same inner shapes up to `max_batch_size` rows (waiting up to `batch_timeout_s` for more),
concatenate them along dimension 0, run the model once and hand each caller its rows back.
With a timeout of 0 (the default) a call never waits for company: batches form only from calls
that queued up while the workers were busy, so batching costs no latency when the server idles.

Only signatures whose inputs and outputs all have a free 0th dimension can be batched; the
others are called directly. When the model rejects a merged call as INVALID_ARGUMENT (a value one
call sent, such as an unknown filter feature), each call of the batch is run alone, so only the
bad one fails.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc
import numpy as np

from export.specs import TensorSpec
from serving.server.requests import StatusError

Invoke = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def can_batch(inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec]) -> bool:
    """True when every input and output has a known rank >= 1 and a free 0th dimension."""
    specs = [*inputs.values(), *outputs.values()]
    return bool(inputs) and all(
        s.shape is not None and s.shape and s.shape[0] is None for s in specs
    )


@dataclass(eq=False)
class _Task:
    inputs: Mapping[str, np.ndarray]
    rows: int
    key: tuple
    enqueued: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, np.ndarray] | None = None
    error: BaseException | None = None
    abandoned: bool = False


class BatchScheduler:
    """Batches concurrent calls of `invoke` (numpy inputs by key -> numpy outputs by key).

    Args:
      invoke: runs the signature on a whole batch.
      max_batch_size: most rows per merged call; a single call may not exceed it.
      batch_timeout_s: how long the oldest call waits for others to join; 0 never waits.
      num_threads: merged calls that may run at the same time.
      max_enqueued_batches: calls are refused (UNAVAILABLE) once this many full batches wait.
      on_batch: told the number of rows of every merged call (for metrics).
    """

    def __init__(
        self,
        invoke: Invoke,
        max_batch_size: int,
        batch_timeout_s: float = 0.0,
        num_threads: int = 2,
        max_enqueued_batches: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._invoke = invoke
        self._max_batch_size = max_batch_size
        self._timeout_s = batch_timeout_s
        self._max_queued_rows = max_enqueued_batches * max_batch_size
        self._on_batch = on_batch
        self._queue: deque[_Task] = deque()
        self._queued_rows = 0
        self._condition = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
            for i in range(num_threads)
        ]
        for thread in self._threads:
            thread.start()

    def __call__(
        self, inputs: Mapping[str, np.ndarray], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """Runs `inputs` (all with the same 0th dimension) as part of a batch; returns its rows.

        After `close()` calls run directly, unbatched: a request that resolved a version just
        before it was unloaded still gets its answer.

        Raises:
          StatusError: UNAVAILABLE when the queue is full, DEADLINE_EXCEEDED when `deadline`
            passes while waiting; or the model's error.
        """
        rows = len(next(iter(inputs.values())))
        key = tuple(
            (name, array.dtype.str, array.shape[1:]) for name, array in sorted(inputs.items())
        )
        task = _Task(inputs, rows, key)
        with self._condition:
            if self._closed:
                return self._invoke(inputs)
            if self._queued_rows + rows > self._max_queued_rows:
                raise StatusError(
                    grpc.StatusCode.UNAVAILABLE,
                    "the batch scheduling queue is full (max_enqueued_batches); retry later",
                )
            self._queue.append(task)
            self._queued_rows += rows
            self._condition.notify_all()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not task.done.wait(timeout):
            with self._condition:
                task.abandoned = True
            if not task.done.is_set():
                raise StatusError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "deadline exceeded waiting in the batch queue",
                )
        if task.error is not None:
            raise task.error
        assert task.result is not None
        return task.result

    def close(self) -> None:
        """Finishes the queued calls, then stops the workers."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[_Task] | None:
        with self._condition:
            while True:
                while not self._queue and not self._closed:
                    self._condition.wait()
                if not self._queue:
                    return None
                first = self._queue[0]
                send_at = first.enqueued + self._timeout_s
                # Wait for company only while the batch is not full and the oldest call may wait.
                while (
                    not self._closed
                    and self._queue
                    and self._queue[0] is first
                    and self._compatible_rows(first) < self._max_batch_size
                    and time.monotonic() < send_at
                ):
                    self._condition.wait(send_at - time.monotonic())
                if self._queue and self._queue[0] is first:
                    batch = self._take(first)
                    if batch:  # empty when the oldest call gave up waiting
                        return batch

    def _compatible_rows(self, first: _Task) -> int:
        return sum(task.rows for task in self._queue if task.key == first.key)

    def _take(self, first: _Task) -> list[_Task]:
        batch, rows, kept = [], 0, deque()
        for task in self._queue:
            if task.abandoned:
                self._queued_rows -= task.rows
            elif task.key == first.key and rows + task.rows <= self._max_batch_size:
                batch.append(task)
                rows += task.rows
                self._queued_rows -= task.rows
            else:
                kept.append(task)
        self._queue = kept
        return batch

    def _run(self, batch: list[_Task]) -> None:
        try:
            if len(batch) == 1:
                outputs = self._invoke(batch[0].inputs)
            else:
                merged = {
                    name: np.concatenate([task.inputs[name] for task in batch])
                    for name in batch[0].inputs
                }
                outputs = self._invoke(merged)
            total = sum(task.rows for task in batch)
            if self._on_batch is not None:
                self._on_batch(total)
            bad = [key for key, array in outputs.items() if array.ndim == 0 or len(array) != total]
            if bad:
                raise StatusError(
                    grpc.StatusCode.INTERNAL,
                    f"batched outputs {bad} do not have {total} rows; disable batching for this model",
                )
            start = 0
            for task in batch:
                task.result = {
                    key: array[start : start + task.rows] for key, array in outputs.items()
                }
                start += task.rows
        except StatusError as error:
            if len(batch) > 1 and error.code == grpc.StatusCode.INVALID_ARGUMENT:
                # The model rejected a value of one call (an unknown filter feature, a k out of
                # range): answer each call alone, so only that one fails, not its batch-mates.
                for task in batch:
                    self._run([task])
                return
            for task in batch:
                task.error = error
        except BaseException as error:
            for task in batch:
                task.error = error
        for task in batch:
            task.done.set()
