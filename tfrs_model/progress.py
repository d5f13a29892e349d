"""Training progress a person can watch: examples/s and ETA within each epoch, one line per epoch.

On a terminal a tqdm bar moves inside each epoch; elsewhere (a Kubernetes Job's log, CI) a line
is logged every `log_every_s` seconds instead, since carriage-return bars turn into one endless
line there. At each epoch's end the epoch's training throughput is added to the Keras logs as
`examples_per_second` (so the TensorBoard callback records it) and one summary line is logged.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import tensorflow as tf
from tqdm import tqdm

logger = logging.getLogger(__name__)

EXAMPLES_PER_SECOND = "examples_per_second"


class TrainingProgress(tf.keras.callbacks.Callback):
    """Per-step progress (examples, examples/s, ETA) and a summary line per epoch.

    Place it after the callbacks that add validation metrics to the logs (its epoch line shows
    them) and before TensorBoard (which then records `examples_per_second`).

    Args:
      what: what is being fit, e.g. "train" or "train + validation", for the log lines.
      epochs: the planned epochs (early stopping may end sooner).
      steps_per_epoch: training steps of one epoch.
      batch_size: examples per step (the global batch).
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
        super().__init__()
        self.what = what
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = batch_size
        self.bar = sys.stderr.isatty() if bar is None else bar
        self.log_every_s = log_every_s
        self.training_seconds: list[float] = []
        self._tqdm: tqdm | None = None
        self._epoch = 0
        self._started = 0.0
        self._last_log = 0.0
        self._last_step = 0.0
        self._done = 0

    @property
    def examples_per_epoch(self) -> int:
        return self.steps_per_epoch * self.batch_size

    def examples_per_second(self) -> float:
        """Training throughput over the epochs run so far (validation time excluded)."""
        seconds = sum(self.training_seconds)
        return self.examples_per_epoch * len(self.training_seconds) / seconds if seconds else 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._done = 0
        self._started = self._last_log = self._last_step = time.perf_counter()
        if self.bar:
            self._tqdm = tqdm(
                total=self.examples_per_epoch,
                unit="ex",
                unit_scale=True,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                leave=False,
                dynamic_ncols=True,
            )

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # With steps_per_execution > 1 Keras calls this once per execution, `batch` being the
        # index of its last step.
        self._last_step = time.perf_counter()
        done = min(batch + 1, self.steps_per_epoch) * self.batch_size
        if self._tqdm is not None:
            self._tqdm.update(done - self._done)
            if logs and "loss" in logs:
                self._tqdm.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)
        else:
            self._log_progress(done)
        self._done = done

    def _log_progress(self, done: int) -> None:
        now = time.perf_counter()
        if now - self._last_log < self.log_every_s:
            return
        self._last_log = now
        rate = done / max(now - self._started, 1e-9)
        eta = (self.examples_per_epoch - done) / rate if rate else float("inf")
        logger.info(
            "epoch %d/%d: %s/%s examples, %s examples/s, epoch ETA %s",
            self._epoch + 1,
            self.epochs,
            f"{done:,}",
            f"{self.examples_per_epoch:,}",
            f"{rate:,.0f}",
            _duration(eta),
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # Keras runs the epoch's training steps, then the callbacks' `on_epoch_end` (validation
        # ranking among them): the epoch's training time ends at its last step.
        seconds = self._last_step - self._started
        self.training_seconds.append(seconds)
        rate = self.examples_per_epoch / seconds if seconds else 0.0
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
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


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
