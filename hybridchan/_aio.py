"""asyncio streams on the sans-IO core.

Theory of operation
-------------------
:class:`_ChannelProtocol` is an :class:`asyncio.BufferedProtocol` that reads transport
bytes straight into a :class:`~hybridchan._connection.Connection` and writes whatever the
core queues. Authenticated plaintext goes into a real :class:`asyncio.StreamReader`
(so ``read``, ``readexactly``, ``readline``, ``readuntil`` and its back-pressure
behave exactly as in asyncio); :class:`ChannelWriter` mirrors
:class:`asyncio.StreamWriter` (``write``, ``drain``, ``close``, ``wait_closed``).

A protocol error sends the alert the core queued, closes the transport and sets
the error on the reader, so the read after the last authentic byte raises it;
``drain`` raises it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hybridchan._connection import Connection, State
from hybridchan._events import ConnectionClosed, DataReceived, HandshakeCompleted
from hybridchan.config import ChannelConfig
from hybridchan.errors import (
    ChannelClosed,
    ClosedWithoutHandshake,
    ConnectTimeout,
    HandshakeTimeout,
)

__all__ = ["ChannelReader", "ChannelWriter", "open_connection", "start_server"]

_MIN_READ = 1 << 14
_MAX_READ = 1 << 18

Handler = Callable[["ChannelReader", "ChannelWriter"], Awaitable[object] | object]


class ChannelReader(asyncio.StreamReader):
    """An :class:`asyncio.StreamReader` that delivers authentic data before an error.

    When the channel fails, the data that arrived before the failure stays
    readable; the error is raised where the reader would otherwise report EOF.
    """

    _deferred: BaseException | None = None

    def defer_exception(self, exc: BaseException) -> None:
        if self._deferred is None:
            self._deferred = exc
            self.feed_eof()

    def _raise_deferred(self, cause: BaseException | None = None) -> None:
        if self._deferred is not None:
            raise self._deferred from cause

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n)
        if not data and n != 0:
            self._raise_deferred()
        return data

    async def readexactly(self, n: int) -> bytes:
        try:
            return await super().readexactly(n)
        except asyncio.IncompleteReadError as exc:
            self._raise_deferred(exc)
            raise

    async def readuntil(self, separator: Any = b"\n") -> bytes:
        try:
            return await super().readuntil(separator)
        except asyncio.IncompleteReadError as exc:
            self._raise_deferred(exc)
            raise

    async def readline(self) -> bytes:
        line = await super().readline()
        if not line.endswith(b"\n"):
            self._raise_deferred()
        return line


class _ChannelProtocol(asyncio.BufferedProtocol):
    def __init__(
        self,
        conn: Connection,
        loop: asyncio.AbstractEventLoop,
        limit: int,
        on_ready: Callable[[_ChannelProtocol], None] | None = None,
    ) -> None:
        self.conn = conn
        self.loop = loop
        self.reader = ChannelReader(limit=limit, loop=loop)
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.error: BaseException | None = None
        self._on_ready = on_ready
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._read_size = _MIN_READ
        self._offered = 0

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.reader.set_transport(transport)
        timeout = self.conn.config.handshake_timeout
        if timeout is not None:
            self._timeout_handle = self.loop.call_later(timeout, self._handshake_timed_out, timeout)
        try:
            self.conn.start()
        except Exception as exc:
            self._fail(exc)
            return
        self._write_pending()

    def get_buffer(self, sizehint: int) -> memoryview:
        # Read straight into the core's reusable receive buffer (no per-read
        # allocation). Start small so idle connections stay cheap; grow when reads
        # keep filling the buffer (bulk transfer).
        view = self.conn.get_buffer(self._read_size)
        self._offered = len(view)
        return view

    def buffer_updated(self, nbytes: int) -> None:
        if nbytes >= self._offered and self._read_size < _MAX_READ:
            self._read_size *= 2
        self.conn.buffer_updated(nbytes)
        self._process()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        if exc is not None and self.error is None and not self.conn.received_any:
            self.eof_received()  # reset before a single byte: a probe, reported by the core
        if self.error is None and self.conn.error is not None:
            self._set_error(self.conn.error)
        if self.error is None and not self.conn.peer_closed:
            if exc is None and self.conn.state is State.CLOSED:
                self.reader.feed_eof()  # closed locally
            else:
                err = ChannelClosed(
                    f"the transport was lost ({exc or 'closed without close-notify'})"
                )
                err.__cause__ = exc
                self._set_error(err)
        if not self.ready.done():
            self.ready.set_exception(self.error or ChannelClosed("the transport closed"))
            self.ready.exception()  # mark retrieved: the caller sees it via the reader
        self._wake_drainers()
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drainers()

    # -- core plumbing ------------------------------------------------------------------

    def _process(self) -> None:
        conn = self.conn
        feed = self.reader.feed_data
        payloads: list[bytes] = []
        try:
            while True:
                conn.read_application_data(payloads)  # bulk fast path
                for payload in payloads:
                    feed(payload)
                payloads.clear()
                event = conn.next_event()
                if event is None:
                    break
                if isinstance(event, DataReceived):
                    feed(event.data)
                elif isinstance(event, ConnectionClosed):
                    self.reader.feed_eof()
                elif isinstance(event, HandshakeCompleted):
                    self._handshake_done()
        except Exception as exc:
            self._fail(exc)
            return
        self._write_pending()

    def _handshake_done(self) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
            self._timeout_handle = None
        if not self.ready.done():
            self.ready.set_result(None)
        if self._on_ready is not None:
            self._on_ready(self)

    def _handshake_timed_out(self, timeout: float) -> None:
        if self.conn.established:
            return
        exc = HandshakeTimeout(f"the handshake did not finish within {timeout} s")
        self.conn.abort(exc)
        self._fail(exc)

    def _write_pending(self) -> None:
        out = self.conn.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)

    def _fail(self, exc: BaseException) -> None:
        self._set_error(exc)
        if self.transport is not None:
            self._write_pending()
            self.transport.close()
        if not self.ready.done():
            self.ready.set_exception(exc)
            self.ready.exception()  # the caller also sees it through the reader
        self._wake_drainers()

    def _set_error(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
            self.reader.defer_exception(exc)

    def _wake_drainers(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    async def wait_writable(self) -> None:
        if self.error is not None:
            raise self.error
        if self.transport is None or self.transport.is_closing():
            await asyncio.sleep(0)
            if self.error is not None:
                raise self.error
            return
        if self._paused:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
            if self.error is not None:
                raise self.error


class ChannelWriter:
    """The writing half, like :class:`asyncio.StreamWriter`."""

    def __init__(self, protocol: _ChannelProtocol) -> None:
        self._protocol = protocol

    @property
    def transport(self) -> asyncio.Transport:
        assert self._protocol.transport is not None
        return self._protocol.transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (as coalesced records); follow with ``await drain()``."""
        proto = self._protocol
        if proto.error is not None:
            raise ChannelClosed("the channel failed; open a new one") from proto.error
        try:
            proto.conn.send_data(data)
        except Exception as exc:  # e.g. no QKD key for a due rekey: alert, then close
            proto._fail(exc)
            raise
        proto._write_pending()

    def writelines(self, data: Any) -> None:
        self.write(b"".join(data))

    async def drain(self) -> None:
        """Wait until the transport buffer is below its high-water mark."""
        await self._protocol.wait_writable()

    def can_write_eof(self) -> bool:
        return False

    def update_keys(self, *, request_peer: bool = True) -> None:
        """Rekey now (with a fresh QKD key when the session uses QKD)."""
        proto = self._protocol
        try:
            proto.conn.update_keys(request_peer=request_peer)
        except Exception as exc:
            proto._fail(exc)
            raise
        proto._write_pending()

    def close(self) -> None:
        """Send close-notify and close the transport."""
        proto = self._protocol
        proto.conn.close()
        proto._write_pending()
        if proto.transport is not None:
            proto.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._protocol.closed)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``"session"``, ``"peer_identity"``, ``"connection"`` or any transport extra."""
        if name == "session":
            return self.session
        if name == "peer_identity":
            return self.peer_identity
        if name == "connection":
            return self._protocol.conn
        return self.transport.get_extra_info(name, default)

    @property
    def session(self) -> Any:
        return self._protocol.conn.session

    @property
    def peer_identity(self) -> str | None:
        return getattr(self._protocol.conn.session, "peer_identity", None)

    @property
    def connection(self) -> Connection:
        return self._protocol.conn

    def __repr__(self) -> str:
        return f"<hybridchan.ChannelWriter peer={self.peer_identity!r}>"


async def open_connection(
    host: str,
    port: int,
    config: ChannelConfig,
    *,
    timeout: float | None = None,
    connection_factory: Callable[..., Connection] = Connection,
    **kwargs: Any,
) -> tuple[ChannelReader, ChannelWriter]:
    """Connect, run the client handshake and return ``(reader, writer)``.

    ``timeout`` bounds the TCP connect (default: ``config.handshake_timeout``), as in
    :func:`hybridchan.connect`. Raises :class:`~hybridchan.errors.ConnectTimeout`, the
    handshake's typed errors or :class:`~hybridchan.errors.HandshakeTimeout`.
    Extra keyword arguments go to :meth:`loop.create_connection`.
    """
    loop = asyncio.get_running_loop()
    conn = connection_factory(config, client=True)
    proto = _ChannelProtocol(conn, loop, config.stream_limit)
    connect_timeout = timeout if timeout is not None else config.handshake_timeout
    connecting = loop.create_connection(lambda: proto, host, port, **kwargs)
    try:
        await asyncio.wait_for(connecting, connect_timeout)
    except TimeoutError:
        raise ConnectTimeout.for_address(host, port, connect_timeout) from None
    try:
        await proto.ready
    except BaseException:
        if proto.transport is not None:
            proto.transport.abort()
        raise
    return proto.reader, ChannelWriter(proto)


async def start_server(
    handler: Handler,
    host: str | None,
    port: int,
    config: ChannelConfig,
    *,
    connection_factory: Callable[..., Connection] = Connection,
    on_error: Callable[[BaseException], object] | None = None,
    **kwargs: Any,
) -> asyncio.Server:
    """Listen; for each client that completes the handshake call ``handler(reader, writer)``.

    Returns the :class:`asyncio.Server`. Failed handshakes close that connection
    (with the right alert) and are passed to ``on_error`` if given; a client that
    closes before sending a byte (a port probe, a health check) is not a failure.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()

    def on_ready(proto: _ChannelProtocol) -> None:
        result = handler(proto.reader, ChannelWriter(proto))
        if asyncio.iscoroutine(result):
            task = loop.create_task(result)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def report(fut: asyncio.Future[None]) -> None:
        exc = None if fut.cancelled() else fut.exception()
        if exc is not None and on_error is not None and not isinstance(exc, ClosedWithoutHandshake):
            on_error(exc)

    def factory() -> _ChannelProtocol:
        proto = _ChannelProtocol(
            connection_factory(config, client=False), loop, config.stream_limit, on_ready
        )
        proto.ready.add_done_callback(report)
        return proto

    server = await loop.create_server(factory, host, port, **kwargs)
    server._hybridchan_tasks = tasks  # type: ignore[attr-defined]  # keep handler tasks alive
    return server
