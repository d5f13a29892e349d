"""Training progress a person can watch: examples/s and ETA within each epoch, one line per epoch.

On a terminal a tqdm bar moves inside each epoch; elsewhere (a Kubernetes Job's log, CI) a line
is logged every `log_every_s` seconds instead, since carriage-return bars turn into one endless
line there. At each epoch's end the epoch's training throughput is added to the Keras logs as
`examples_per_second` (so the TensorBoard callback records it) and one summary line is logged.
Under `ParameterServerStrategy`, which allows no batch-level callbacks, only the epoch lines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from tfrs_model.meter import Meter

logger = logging.getLogger(__name__)

EXAMPLES_PER_SECOND = "examples_per_second"


@dataclass(frozen=True)
class Throughput:
    """Training examples per second of a fit, validation time excluded.

    Attributes:
      examples_per_second: over every training step.
      after_warmup: without the first execution of the first epoch (`warmup_seconds`), which
        also traces and compiles the training step and fills the input pipeline: the rate a
        longer run converges to.
      warmup_seconds: that first execution's wall time.
    """

    examples_per_second: float
    after_warmup: float
    warmup_seconds: float

    def to_json(self) -> dict[str, float]:
        return {
            "examples_per_second": round(self.examples_per_second, 1),
            "examples_per_second_after_warmup": round(self.after_warmup, 1),
            "warmup_seconds": round(self.warmup_seconds, 3),
        }


class _EpochEnd(tf.keras.callbacks.Callback):
    """Stamps the end of an epoch's training steps, before other callbacks' epoch-end work."""

    def __init__(self, progress: EpochProgress) -> None:
        super().__init__()
        self.progress = progress

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.progress.steps_ended = time.perf_counter()


class EpochProgress(tf.keras.callbacks.Callback):
    """A summary line per epoch (examples, seconds, examples/s, loss, validation metrics), and
    the epoch's `examples_per_second` added to its logs.

    Place `stopwatch` first in the callback list (Keras runs the epoch's training steps, then
    every callback's `on_epoch_end`: the stopwatch marks where training ended, so validation
    ranking is not counted), this after the callbacks that add validation metrics to the logs
    and before TensorBoard (which then records `examples_per_second`). It has no batch-level
    hooks, which `ParameterServerStrategy` does not allow; `StepProgress` adds them.

    Args:
      what: what is being fit, e.g. "train" or "train + validation", for the log lines.
      epochs: the planned epochs (early stopping may end sooner).
      steps_per_epoch: training steps of one epoch.
      batch_size: examples per step (the global batch).
    """

    def __init__(self, what: str, epochs: int, steps_per_epoch: int, batch_size: int) -> None:
        super().__init__()
        self.what = what
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.stopwatch = _EpochEnd(self)
        self.training_seconds: list[float] = []
        self.warmup_seconds = 0.0
        self.warmup_examples = 0
        self.steps_ended = 0.0
        self._started = 0.0

    @property
    def examples_per_epoch(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def examples_per_second(self) -> float:
        """Training throughput over the epochs run so far (validation time excluded)."""
        seconds = sum(self.training_seconds)
        return self.examples_per_epoch * len(self.training_seconds) / seconds if seconds else 0.0

    def throughput(self) -> Throughput:
        """The fit's `Throughput` over the epochs run so far."""
        seconds = sum(self.training_seconds) - self.warmup_seconds
        examples = self.examples_per_epoch * len(self.training_seconds) - self.warmup_examples
        overall = self.examples_per_second()
        after = examples / seconds if seconds > 0 and examples > 0 else overall
        return Throughput(overall, after, self.warmup_seconds)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = self.steps_ended = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        seconds = max(self.steps_ended - self._started, 1e-9)
        self.training_seconds.append(seconds)
        rate = self.examples_per_epoch / seconds
        if logs is not None:
            logs[EXAMPLES_PER_SECOND] = rate
        validation = ""
        if logs and "val_recall_at_10" in logs:
            validation = (
                f"; validation recall@10 {logs['val_recall_at_10']:.4f}, "
                f"ndcg@10 {logs.get('val_ndcg_at_10', float('nan')):.4f}"
            )
        loss = f", loss {float(logs['loss']):.4f}" if logs and "loss" in logs else ""
        logger.info(
            "epoch %d/%d (%s): %s examples in %.1f s, %s examples/s%s%s",
            epoch + 1,
            self.epochs,
            self.what,
            f"{self.examples_per_epoch:,}",
            seconds,
            f"{rate:,.0f}",
            loss,
            validation,
        )


class StepProgress(EpochProgress):
    """`EpochProgress` plus progress within each epoch: examples, examples/s and ETA (a
    `Meter`: a tqdm bar on a terminal, a log line every `log_every_s` seconds elsewhere). The
    first execution of steps (tracing and compiling the step, filling the input pipeline) is
    timed apart as the warm-up.

    Args:
      bar: a tqdm bar on stderr; None chooses it when stderr is a terminal.
      log_every_s: seconds between progress lines when there is no bar.
    """

    def __init__(
        self,
        what: str,
        epochs: int,
        steps_per_epoch: int,
        batch_size: int,
        *,
        bar: bool | None = None,
        log_every_s: float = 30.0,
    ) -> None:
        super().__init__(what, epochs, steps_per_epoch, batch_size)
        self.bar = bar
        self.log_every_s = log_every_s
        self._meter: Meter | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_begin(epoch, logs)
        self._meter = Meter(
            self.examples_per_epoch,
            "examples",
            f"epoch {epoch + 1}/{self.epochs}",
            bar=self.bar,
            log_every_s=self.log_every_s,
            logger=logger,
        )

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # With steps_per_execution > 1 Keras calls this once per execution, `batch` being the
        # index of its last step.
        if self._meter is None:
            return
        done = min(batch + 1, self.steps_per_epoch) * self.batch_size
        if not self.training_seconds and not self._meter.done:
            self.warmup_seconds = time.perf_counter() - self._started
            self.warmup_examples = done
        loss = {"loss": f"{float(logs['loss']):.4f}"} if logs and "loss" in logs else {}
        self._meter.update_to(done, **loss)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._meter is not None:
            self._meter.close()
            self._meter = None
        super().on_epoch_end(epoch, logs)
