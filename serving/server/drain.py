"""Admission of gRPC calls, and the drain that stops it before gRPC's own shutdown.

gRPC's server shutdown (`grpc.Server.stop(grace)`) lets calls that Python has already picked up
finish, but cancels the calls the C core has received and Python has not yet picked up (it asks
the core for one call per method at a time): under load, those end CANCELLED, which clients do
not retry. So the embedded server drains in two steps:
  1. `Admission.drain`: every new call is answered UNAVAILABLE at once ("shutting down, retry",
     which clients and load balancers retry elsewhere), calls admitted before finish, and the
     drain returns once none is in flight and no call has arrived for `quiet_s` (clients have
     heard UNAVAILABLE and stopped sending), or when `timeout` passes;
  2. then gRPC's shutdown, with what is left of the grace period, finds nothing pending.
"""

from __future__ import annotations

import threading
import time


class Admission:
    """Counts admitted calls; refuses new ones once `drain` has begun. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._in_flight = 0
        self._draining = False
        self._last_arrival = time.monotonic()

    @property
    def draining(self) -> bool:
        return self._draining

    def admit(self) -> bool:
        """Registers an arriving call: True to run it (then `release()`), False to refuse it."""
        with self._lock:
            self._last_arrival = time.monotonic()
            if self._draining:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        """An admitted call has finished."""
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()

    def drain(self, quiet_s: float, timeout: float | None) -> bool:
        """Refuses new calls, then waits for admitted ones to finish and arrivals to stop.

        Args:
          quiet_s: seconds without any arriving call that count as "clients have stopped".
          timeout: the most seconds to wait; None waits without limit.

        Returns:
          True when it ended quiet with nothing in flight, False when `timeout` passed first.
        """
        end = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._draining = True
            while True:
                now = time.monotonic()
                quiet_for = now - self._last_arrival
                if self._in_flight == 0 and quiet_for >= quiet_s:
                    return True
                if end is not None and now >= end:
                    return False
                wait = quiet_s - quiet_for if self._in_flight == 0 else quiet_s
                if end is not None:
                    wait = min(wait, end - now)
                self._lock.wait(max(wait, 0.001))
