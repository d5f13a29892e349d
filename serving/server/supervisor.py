"""Several embedded server processes behind one gRPC port and one REST port (`--workers N`).

One Python process serves at most about one core: the gRPC and REST handlers, the codec and the
Python side of every TensorFlow call hold the GIL. `Supervisor` runs N worker processes
(`python -m serving.server.worker`), each a whole `EmbeddedServer` with its own model manager
polling the same `model_base_path` (versions appear there by an atomic rename, so the workers
converge on the same versions within a poll interval). They share the ports with SO_REUSEPORT:
the kernel spreads new connections over the workers (a gRPC channel is one connection, so one
client channel talks to one worker; many clients spread).

The supervisor:
  - reserves the ports first (a bound, not listening, SO_REUSEPORT socket each; port 0 picks a
    free one), so all workers, and any restarted one, bind the same ports;
  - starts the workers and logs the ports once every worker has said it is ready (through a
    pipe, after its server answers);
  - forwards SIGTERM (and SIGINT) to every worker, which drains as a single server does, waits
    for them and exits 0 when they all did;
  - restarts a worker that exits on its own; after `max_worker_restarts` restarts within a
    minute it stops the others and exits 1, as it does when a worker fails before its first
    ready (a config or model error that a restart would repeat).

This module does not import TensorFlow: the supervisor itself stays small.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from serving.server.config import ServingConfig, available_cores, config_to_json
from tfrs_model.errors import ConfigError

logger = logging.getLogger(__name__)

# Restarts are counted over this many seconds for `max_worker_restarts`.
RESTART_WINDOW_S = 60.0
# After the drain grace, how long a worker may take to exit before it is killed.
_EXIT_MARGIN_S = 10.0
_POLL_S = 0.2
_PR_SET_PDEATHSIG = 1


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` with SO_REUSEPORT and not listening, holding the port.

    Connections are only ever handed to listening sockets, so this one takes none; it keeps the
    port (and the one picked for port 0) for the workers while they start and restart.

    Raises:
      ConfigError: the port is taken by a socket without SO_REUSEPORT (another server).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(
            f"cannot reserve port {port} on {host}: {error}; is it in use?"
        ) from error
    return sock


@dataclass
class _Worker:
    """One worker process and what the supervisor knows of it."""

    index: int
    process: subprocess.Popen
    ready: threading.Event


class Supervisor:
    """Runs `config.workers` embedded servers on shared ports; see the module docstring.

    Usage:
      supervisor = Supervisor(config)
      status = supervisor.run(stop)   # returns when `stop` is set and the workers drained

    Attributes:
      grpc_port, rest_port: the reserved ports (after `reserve()`).
    """

    def __init__(self, config: ServingConfig, python: str = sys.executable) -> None:
        if not config.model_base_path.is_dir():
            raise ConfigError(
                f"model_base_path {config.model_base_path} is not a directory; export a model "
                "first (`twotower export`)"
            )
        self._config = config
        self._python = python
        self._sockets: list[socket.socket] = []
        self._workers: list[_Worker] = []
        self._restarts: collections.deque[float] = collections.deque()
        self.grpc_port = config.grpc_port
        self.rest_port = config.rest_port

    def reserve(self) -> None:
        """Reserves the gRPC and REST ports (port 0: a free one) for the workers.

        Raises:
          ConfigError: a port is taken by another server.
        """
        config = self._config
        grpc_socket = reserve_port(config.host, config.grpc_port)
        self._sockets.append(grpc_socket)
        self.grpc_port = grpc_socket.getsockname()[1]
        if config.rest_port is not None:
            rest_socket = reserve_port(config.host, config.rest_port)
            self._sockets.append(rest_socket)
            self.rest_port = rest_socket.getsockname()[1]

    def worker_config(self) -> ServingConfig:
        """What every worker serves: the reserved ports, shared (SO_REUSEPORT), one process,
        with TensorFlow thread pools of its share of the cores (`ServingConfig.worker_threads`)."""
        intra_op, inter_op = self._config.worker_threads(available_cores())
        return replace(
            self._config,
            grpc_port=self.grpc_port,
            rest_port=self.rest_port,
            reuse_port=True,
            workers=1,
            tensorflow_intra_op_parallelism=intra_op,
            tensorflow_inter_op_parallelism=inter_op,
        )

    def run(self, stop: threading.Event) -> int:
        """Starts the workers, keeps them running until `stop` is set, then drains them.

        Must run in the main thread: a worker is told to stop when the thread that started it
        exits (PR_SET_PDEATHSIG), so the workers never outlive the supervisor.

        Returns:
          0 when every worker drained and exited 0; 1 when workers kept failing or one failed
          before it was first ready.
        """
        if not self._sockets:
            self.reserve()
        try:
            self._workers = [self._spawn(index) for index in range(self._config.workers)]
            status = self._watch(stop)
            return max(status, self._stop_all())
        finally:
            for worker in self._workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait()
            for sock in self._sockets:
                sock.close()

    def _watch(self, stop: threading.Event) -> int:
        announced = False
        while not stop.wait(_POLL_S):
            for n, worker in enumerate(self._workers):
                code = worker.process.poll()
                if code is None:
                    continue
                if not worker.ready.is_set() and not announced:
                    logger.error(
                        "worker %d exited with status %s before it was ready; stopping",
                        worker.index,
                        code,
                    )
                    return 1
                if not self._may_restart():
                    logger.error(
                        "worker %d exited with status %s: more than %d restarts within %.0f s; "
                        "stopping",
                        worker.index,
                        code,
                        self._config.max_worker_restarts,
                        RESTART_WINDOW_S,
                    )
                    return 1
                logger.warning("worker %d exited with status %s; restarting it", worker.index, code)
                self._workers[n] = self._spawn(worker.index)
            if not announced and all(w.ready.is_set() for w in self._workers):
                announced = True
                self._announce()
        return 0

    def _may_restart(self) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
            self._restarts.popleft()
        if len(self._restarts) >= self._config.max_worker_restarts:
            return False
        self._restarts.append(now)
        return True

    def _announce(self) -> None:
        config = self._config
        rest = (
            f", REST on http://{_join(config.host, self.rest_port)}"
            if self.rest_port is not None
            else ""
        )
        logger.info(
            "embedded model server for model %r, %d workers (pids %s): gRPC on %s%s",
            config.model_name,
            len(self._workers),
            ", ".join(str(w.process.pid) for w in self._workers),
            _join(config.host, self.grpc_port),
            rest,
        )

    def _spawn(self, index: int) -> _Worker:
        read_fd, write_fd = os.pipe()
        command = [
            self._python, "-m", "serving.server.worker",
            "--index", str(index),
            "--ready-fd", str(write_fd),
            "--config", json.dumps(config_to_json(self.worker_config())),
        ]  # fmt: skip
        try:
            process = subprocess.Popen(
                command, pass_fds=(write_fd,), preexec_fn=_die_with_parent, close_fds=True
            )
        finally:
            os.close(write_fd)
        ready = threading.Event()
        threading.Thread(
            target=_read_ready, args=(read_fd, ready), name=f"worker-{index}-ready", daemon=True
        ).start()
        logger.info("started worker %d (pid %d)", index, process.pid)
        return _Worker(index, process, ready)

    def _stop_all(self) -> int:
        """SIGTERM to every running worker, then waits for them; 0 when all exited 0."""
        live = [w for w in self._workers if w.process.poll() is None]
        for worker in live:
            worker.process.send_signal(signal.SIGTERM)
        end = time.monotonic() + self._config.drain_grace_s + _EXIT_MARGIN_S
        status = 0
        for worker in live:
            try:
                code = worker.process.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.error("worker %d did not exit after draining; killing it", worker.index)
                worker.process.kill()
                code = worker.process.wait()
            if code != 0:
                logger.error("worker %d exited with status %s while stopping", worker.index, code)
                status = 1
        return status


def run_workers(
    config: ServingConfig, signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
) -> int:
    """Serves `config` with `config.workers` processes until one of `signals` arrives.

    Must run in the main thread. Returns the exit status (see `Supervisor.run`).

    Raises:
      ConfigError: a port is taken, or model_base_path is not a directory.
    """
    stop = threading.Event()
    received: list[int] = []

    def request_stop(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    supervisor = Supervisor(config)
    supervisor.reserve()
    previous = {sig: signal.signal(sig, request_stop) for sig in signals}
    try:
        status = supervisor.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        logger.info("received %s; the workers drained", signal.Signals(received[0]).name)
    return status


def _read_ready(fd: int, ready: threading.Event) -> None:
    """Sets `ready` when the worker writes its ready line; returns at end of file."""
    with os.fdopen(fd, "rb") as pipe:
        for line in pipe:
            if line.startswith(b"ready"):
                ready.set()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM (a drain) when the supervisor's thread dies."""
    # Not on Linux: workers may then outlive a killed supervisor.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _join(host: str, port: int | None) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
