"""Progress of long work a person can read: a tqdm bar on a terminal, log lines elsewhere.

Carriage-return bars turn into one endless line in a Kubernetes Job's log or CI, so without a
terminal the meter logs `done/total unit, rate/s, ETA` every `log_every_s` seconds instead.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from tqdm import tqdm

_logger = logging.getLogger(__name__)


class Meter:
    """Counts work done towards `total` and shows it with its rate and ETA.

    Args:
      total: units of the whole work.
      unit: what the units are, plural, e.g. "users" or "%".
      desc: what the work is, shown first.
      bar: a tqdm bar on stderr; None chooses it when stderr is a terminal.
      log_every_s: seconds between log lines when there is no bar.
      logger: where the lines go (the caller's module logger, so they read as its own).
    """

    def __init__(
        self,
        total: int,
        unit: str,
        desc: str,
        *,
        bar: bool | None = None,
        log_every_s: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.total = total
        self.unit = unit
        self.desc = desc
        self.log_every_s = log_every_s
        self.logger = logger or _logger
        self.done = 0
        self.started = self._last_log = time.perf_counter()
        use_bar = sys.stderr.isatty() if bar is None else bar
        self._bar = (
            tqdm(
                total=total, unit=unit, unit_scale=True, desc=desc, leave=False, dynamic_ncols=True
            )
            if use_bar
            else None
        )

    def update_to(self, done: int, **postfix: str) -> None:
        """Records that `done` units are complete (`postfix`: extra fields for the bar)."""
        if self._bar is not None:
            self._bar.update(done - self.done)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
        else:
            now = time.perf_counter()
            if now - self._last_log >= self.log_every_s:
                self._last_log = now
                self._log(done, now)
        self.done = done

    def _log(self, done: int, now: float) -> None:
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate else float("inf")
        self.logger.info(
            "%s: %s/%s %s, %s %s/s, ETA %s",
            self.desc,
            f"{done:,}",
            f"{self.total:,}",
            self.unit,
            f"{rate:,.0f}",
            self.unit,
            duration(eta),
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Meter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def duration(seconds: float) -> str:
    """`1h02m03s` / `2m03s`; `unknown` for infinity."""
    if seconds == float("inf"):
        return "unknown"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
