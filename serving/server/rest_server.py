"""The REST front end's HTTP server: aiohttp's low-level server, in a thread of its own.

`http.server` (which this replaces) is documented as not for production: a listen backlog of 5,
one thread per connection without a cap, no body-size limit while reading, no timeouts, and a
traceback per client that hangs up early. Here:
  - one asyncio event loop (thread "rest-loop") accepts and parses; `RestRoutes.handle` (JSON,
    the model) runs in a pool of `rest_max_workers` threads;
  - the listen backlog is `rest_backlog`; beyond `rest_max_connections` open connections a new
    one is answered 503 and closed;
  - bodies are read in chunks and refused (400) as soon as they pass `max_message_bytes`, or
    from their Content-Length before reading; aiohttp's parser refuses malformed or negative
    Content-Length headers (400); a body that takes longer than `rest_read_timeout_s` gets 408;
  - idle keep-alive connections close after `rest_keepalive_s`;
  - `stop(grace)` closes the listening socket first (new connections are refused), drops idle
    connections and bodies still being read, lets requests being answered finish for up to
    `grace` seconds, then closes;
  - protocol errors and early hang-ups are logged as one debug line, never a traceback, and the
    `Server` header names this server only (no Python or library version).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from serving.server.api import ServingApi
from serving.server.config import ServingConfig
from serving.server.monitoring import ServingMetrics
from serving.server.requests import StatusError
from serving.server.rest import RestReply, RestRoutes, error_body, http_status, request_too_large
from tfrs_model.errors import ConfigError

logger = logging.getLogger(__name__)

SERVER_NAME = "twotower-embedded-serving"
_JSON = "application/json"


class RestServer:
    """TF Serving's REST API on aiohttp; binds when constructed, answers after `start()`.

    Raises:
      ConfigError: the REST port cannot be bound.
    """

    def __init__(self, api: ServingApi, metrics: ServingMetrics, config: ServingConfig) -> None:
        self._config = config
        self._routes = RestRoutes(api, metrics, config)
        self._executor = ThreadPoolExecutor(config.rest_max_workers, thread_name_prefix="rest")
        self._loop = asyncio.new_event_loop()
        self._reading: set[asyncio.Task] = set()
        self._draining = False
        self._thread: threading.Thread | None = None
        self._stopped = False
        try:
            self._web_server, self._listener = self._loop.run_until_complete(self._bind())
        except OSError as error:
            self._loop.close()
            self._executor.shutdown(wait=False)
            raise ConfigError(
                f"cannot listen for REST on {config.host}:{config.rest_port}: {error}"
            ) from error

    @property
    def port(self) -> int:
        return self._listener.sockets[0].getsockname()[1]

    def start(self) -> None:
        """Starts the event loop thread and accepting connections."""
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="rest-loop", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listener.start_serving(), self._loop).result()

    def stop(self, grace: float | None) -> None:
        """Refuses new connections, finishes requests in flight for up to `grace` s, closes.

        Args:
          grace: seconds requests being answered may still take; None waits without limit.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            future = asyncio.run_coroutine_threadsafe(self._drain(grace), self._loop)
            future.result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        else:
            self._listener.close()
        self._loop.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _bind(self) -> tuple[web.Server, asyncio.Server]:
        config = self._config
        web_server = _WebServer(
            self._handle,
            max_connections=config.rest_max_connections,
            access_log=None,
            logger=_OneLineLogger(logging.getLogger("serving.server.rest_server.http"), {}),
            keepalive_timeout=config.rest_keepalive_s,
            lingering_time=0,  # a refused body is not drained: the connection closes
            handler_cancellation=False,  # a model call runs to its end even if the client left
        )
        listener = await self._loop.create_server(
            web_server,
            config.host,
            config.rest_port,
            family=socket.AF_INET6 if ":" in config.host else socket.AF_INET,
            backlog=config.rest_backlog,
            reuse_address=True,
            # Several worker processes of one supervisor share the port; see ServingConfig.
            reuse_port=config.reuse_port,
            start_serving=False,
        )
        return web_server, listener

    async def _drain(self, grace: float | None) -> None:
        self._listener.close()  # new connections are refused from here on
        # Connections not answering a request close now: idle keep-alive ones, and those whose
        # handler has not started (or whose accept completes only now, see `_Protocol`), which
        # aiohttp's own pre_shutdown would leave waiting for a request until the grace ends.
        self._web_server.draining = True
        for connection in list(self._web_server.connections):
            connection.close_if_idle()
        # A body still arriving is not a request in flight. A handler already scheduled but not
        # yet reading sees `_draining` and takes only what is buffered (see `_read_body`).
        self._draining = True
        for task in list(self._reading):
            task.cancel()
        await self._web_server.shutdown(grace)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = b""
        if request.method == "POST":
            try:
                body = await self._read_body(request)
            except StatusError as error:
                return _response(
                    RestReply(http_status(error.code), error_body(error.message)), True
                )
            except TimeoutError:
                return _response(self._body_timeout_reply(), True)
        path = urllib.parse.urlsplit(request.raw_path).path
        reply = await self._loop.run_in_executor(
            self._executor, self._routes.handle, request.method, path, body
        )
        return _response(reply, False)

    def _body_timeout_reply(self) -> RestReply:
        if self._draining:  # 503, which clients retry (on another replica)
            return RestReply(
                503,
                error_body("the server is shutting down before the request body arrived; retry"),
            )
        return RestReply(
            408,
            error_body(
                f"the request body did not arrive within {self._config.rest_read_timeout_s}"
                " s (--rest-read-timeout)"
            ),
        )

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        """The body, read in chunks up to `max_message_bytes`.

        Raises:
          StatusError: INVALID_ARGUMENT, the body is (or declares to be) over the limit.
          TimeoutError: it took longer than `rest_read_timeout_s` to arrive, or, while the
            server drains, it had not all arrived.
        """
        limit = self._config.max_message_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            raise request_too_large(declared, limit)
        task = asyncio.current_task()
        self._reading.add(task)
        # While draining, only a body that has already arrived is read: waiting would hold
        # the drain for a client that may never finish sending.
        timeout = 0.0 if self._draining else self._config.rest_read_timeout_s
        try:
            chunks, size = [], 0
            async with asyncio.timeout(timeout):
                while chunk := await request.content.readany():
                    size += len(chunk)
                    if size > limit:
                        raise request_too_large(size, limit)
                    chunks.append(chunk)
            return b"".join(chunks)
        finally:
            self._reading.discard(task)


def _response(reply: RestReply, close: bool) -> web.Response:
    response = web.Response(
        status=reply.status,
        body=reply.body,
        headers={"Content-Type": reply.content_type, "Server": SERVER_NAME},
    )
    if close:
        response.force_close()
    return response


class _WebServer(web.Server):
    """aiohttp's low-level server with a connection cap and JSON protocol-error answers."""

    def __init__(self, handler, *, max_connections: int, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self._max_connections = max_connections
        self.draining = False

    def __call__(self) -> asyncio.Protocol:
        if len(self.connections) >= self._max_connections:
            return _Refuse(self._max_connections)
        return _Protocol(self, loop=self._loop, **self._kwargs)


class _Protocol(RequestHandler):
    """aiohttp's connection handler; protocol errors answer TF Serving's {"error": ...}."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self._manager is not None and getattr(self._manager, "draining", False):
            self.force_close()  # accepted just before the listener closed: nothing to finish

    def close_if_idle(self) -> None:
        """Closes now unless a request is being answered (that one finishes first)."""
        if self._request_in_progress:
            self.close()
        else:
            self.force_close()

    def handle_error(self, request, status=500, exc=None, message=None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs, checks nothing was sent
        if status == 500:
            text = "internal error while reading the request"
        else:
            text = f"malformed HTTP request: {getattr(exc, 'message', None) or exc or message}"
        return _response(RestReply(status, error_body(text)), True)


class _Refuse(asyncio.Protocol):
    """Answers 503 and closes: the server already holds `rest_max_connections` connections."""

    def __init__(self, max_connections: int) -> None:
        self._max_connections = max_connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = error_body(
            f"this server holds its limit of {self._max_connections} REST connections "
            "(--rest-max-connections); retry later"
        )
        head = (
            "HTTP/1.1 503 Service Unavailable\r\n"
            f"Server: {SERVER_NAME}\r\nContent-Type: {_JSON}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        transport.write(head.encode() + body)
        transport.close()


class _OneLineLogger(logging.LoggerAdapter):
    """aiohttp's server log, one debug line per event: hostile or hung-up clients are routine."""

    def log(self, level, msg, *args, exc_info=None, **kwargs) -> None:
        if exc_info:
            error = sys.exc_info()[1] if exc_info is True else exc_info
            msg = f"{msg}: {error!r}"
        super().log(logging.DEBUG, msg, *args, **kwargs)
