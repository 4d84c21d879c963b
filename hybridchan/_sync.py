"""Blocking, socket-like channels on the sans-IO core.

Theory of operation
-------------------
A :class:`Channel` owns a connected socket and a :class:`~hybridchan._connection.Connection`.
One thread may read while another writes (the usual full-duplex socket
pattern): the core is guarded by a lock, reads and writes each by their own
lock, and socket I/O happens outside the core lock.

Output order must match the core's order (a key-update record must precede
the records under the new key), so only the holder of the send lock writes to
the socket. A reader that produced control records (a key-update answer, an
alert) writes them only if the send lock is free; otherwise the writer that
holds it picks them up before it lets go. A reader therefore never blocks on
a writer, which would deadlock two peers that both send bulk data.

:meth:`Channel.close` may come from any thread. It queues the close-notify in
the core (behind every record already made, under the next sequence number),
then takes the send lock like any writer, waiting a bounded time for a send in
progress: that send stops after its current write, so the close-notify follows
it and never cuts into a record.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from hybridchan._connection import Connection
from hybridchan._events import ConnectionClosed, DataReceived
from hybridchan.config import ChannelConfig
from hybridchan.errors import (
    ChannelClosed,
    ClosedWithoutHandshake,
    ConnectTimeout,
    HandshakeTimeout,
)

__all__ = ["Channel", "Server", "connect", "wrap_socket"]

_RECV_SIZE: Final = 1 << 18
_WRITE_CHUNK: Final = 1 << 18
# How long close() waits for another thread's send to finish its current write
# (longer only when the peer stops reading; then the socket closes without close-notify).
_CLOSE_WAIT: Final = 2.0


class Channel:
    """A connected, authenticated channel with the socket API (``send``, ``recv``, ...).

    Build one with :func:`connect`, :func:`wrap_socket` or :meth:`Server.accept`.
    ``recv`` returns ``b""`` once the peer sent close-notify; a transport that ends
    without one raises :class:`~hybridchan.errors.TruncatedError`.
    """

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self._sock = sock
        self._conn = conn
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._plain: deque[bytes] = deque()
        self._plain_off = 0
        self._eof = False
        self._error: BaseException | None = None
        self._closed = False
        self._io_refs = 0

    # -- handshake ----------------------------------------------------------------------

    def _handshake(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        saved = self._sock.gettimeout()
        try:
            with self._lock:
                self._conn.start()
            self._flush()
            while not self._conn.established:
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise TimeoutError
                    self._sock.settimeout(remaining)  # the handshake deadline governs
                self._pump()
                if self._conn.established:
                    break  # an error right after the handshake surfaces on the next recv
                if self._error is not None:
                    raise self._error
                if self._eof:
                    raise ChannelClosed("the peer closed the channel during the handshake")
        except TimeoutError:
            exc = HandshakeTimeout(
                f"the handshake did not finish within {timeout} s; is the peer a hybridchan "
                "endpoint and reachable? raise ChannelConfig.handshake_timeout if it is slow"
            )
            self._conn.abort(exc)
            self._sock.close()
            raise exc from None
        except BaseException:
            # Tell the peer why (the core queued the alert), then drop the transport.
            try:
                self._flush(best_effort=True)
            except Exception:
                pass
            self._sock.close()
            raise
        self._sock.settimeout(saved)

    # -- reading ------------------------------------------------------------------------

    def _pump(self) -> None:
        """Read once from the socket and process what arrived (handshake, no target buffer)."""
        self._read_socket()
        self._process(None)

    def _read_socket(self) -> None:
        # Read straight into the core's receive buffer: only this (reading) thread
        # touches the reader side, so no lock is needed around the system call.
        with self._conn.get_buffer(_RECV_SIZE) as view:
            try:
                n = self._sock.recv_into(view)
            except ConnectionResetError:
                if self._conn.received_any and not self._closed:
                    raise
                n = 0  # reset before a single byte: a probe, reported as such by the core
            except OSError:
                if not self._closed:
                    raise
                n = 0  # close() on another thread took the socket: our own end, no error
        with self._lock:
            self._conn.buffer_updated(n)

    def _process(self, out: memoryview | None) -> int:
        """Process buffered records; returns the bytes decrypted straight into ``out``.

        Other data goes to ``self._plain``. An error found while processing is kept
        until the authentic data that came before it has been read, then raised.
        """
        written = 0
        try:
            with self._lock:
                conn = self._conn
                plain = self._plain
                if out is not None and not plain:
                    written = conn.read_application_data_into(out)
                if not written:
                    while True:
                        conn.read_application_data(plain)
                        event = conn.next_event()
                        if event is None:
                            break
                        if isinstance(event, DataReceived):
                            plain.append(event.data)
                        elif isinstance(event, ConnectionClosed):
                            self._eof = True
                pending = conn.has_data_to_send  # a key-update answer, an alert
        except Exception as exc:
            self._error = exc
            self._flush(block=False, best_effort=True)
            return written
        if pending:
            self._flush(block=False)
        return written

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Up to ``bufsize`` bytes of authenticated data; ``b""`` after the peer's close-notify."""
        if flags:
            raise ValueError("flags are not supported on a hybridchan channel")
        with self._recv_lock:
            self._fill(None)
            if not self._plain:
                return b""
            first = self._take(bufsize)
            if len(first) == bufsize or not self._plain:
                return first
            parts = [first]
            left = bufsize - len(first)
            while left and self._plain:
                part = self._take(left)
                parts.append(part)
                left -= len(part)
            return b"".join(parts)

    def recv_exactly(self, n: int) -> bytes:
        """The next ``n`` bytes of authenticated data (``recv`` may return fewer).

        Raises :class:`ChannelClosed` if the peer closes the channel first.
        """
        out = bytearray(n)
        got = 0
        with memoryview(out) as view:
            while got < n:
                count = self.recv_into(view[got:])
                if count == 0:
                    raise ChannelClosed(
                        f"the peer closed the channel after {got} of the {n} bytes expected"
                    )
                got += count
        return bytes(out)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`socket.socket.recv_into`: fill ``buffer`` and return the count.

        Whole records that fit are decrypted straight into ``buffer`` (no copy).
        """
        if flags:
            raise ValueError("flags are not supported on a hybridchan channel")
        with memoryview(buffer) as view, view.cast("B") as out, self._recv_lock:
            limit = len(out) if nbytes <= 0 else min(nbytes, len(out))
            if limit == 0:
                return 0
            with out[:limit] as target:
                direct = self._fill(target)
            if direct:
                return direct
            filled = 0
            while filled < limit and self._plain:
                part = self._take(limit - filled)
                out[filled : filled + len(part)] = part
                filled += len(part)
            return filled

    def _fill(self, target: memoryview | None) -> int:
        """Wait until data is buffered (or decrypted into ``target``: returns its count)."""
        while not self._plain:
            if self._error is not None:
                raise self._error
            if self._eof or self._closed:
                return 0
            written = self._process(target)
            if written:
                return written
            if not (self._plain or self._error is not None or self._eof):
                self._read_socket()
        return 0

    def _take(self, limit: int) -> bytes:
        head = self._plain[0]
        off = self._plain_off
        if off == 0 and len(head) <= limit:
            self._plain.popleft()
            return head
        end = min(len(head), off + limit)
        data = head[off:end]
        if end == len(head):
            self._plain.popleft()
            self._plain_off = 0
        else:
            self._plain_off = end
        return data

    # -- writing ------------------------------------------------------------------------

    def sendall(self, data: Any, flags: int = 0) -> None:
        """Send all of ``data`` (coalesced records, one socket write per 256 KiB)."""
        if flags:
            raise ValueError("flags are not supported on a hybridchan channel")
        with memoryview(data) as raw, raw.cast("B") as view, self._send_lock:
            for start in range(0, len(view), _WRITE_CHUNK):
                try:
                    with self._lock:
                        self._conn.send_data(view[start : start + _WRITE_CHUNK])
                        out = self._conn.data_to_send()
                except Exception:
                    # Best effort: the records before the error and the alert telling
                    # the peer why (or the close-notify of a close from another thread).
                    self._write_queued(best_effort=True)
                    raise
                self._sendall(out)
                with self._lock:
                    self._conn.recycle(out)
        self._flush()

    def send(self, data: Any, flags: int = 0) -> int:
        """Send all of ``data`` and return its length (records are never split across calls)."""
        self.sendall(data, flags)
        return memoryview(data).nbytes

    def update_keys(self, *, request_peer: bool = True) -> None:
        """Rekey now (with a fresh QKD key when the session uses QKD)."""
        try:
            with self._lock:
                self._conn.update_keys(request_peer=request_peer)
        except Exception:
            self._flush(best_effort=True)  # the alert that tells the peer why
            raise
        self._flush()

    def _sendall(self, out: bytes | bytearray) -> None:
        # A failed write leaves the core alone: the peer's alert explaining why it
        # closed may still be waiting to be read.
        self._sock.sendall(out)

    def _flush(self, *, block: bool = True, best_effort: bool = False) -> None:
        while True:
            if not self._send_lock.acquire(blocking=block):
                return
            try:
                if not self._write_queued(best_effort=best_effort):
                    return
            finally:
                self._send_lock.release()
            with self._lock:
                if not self._conn.has_data_to_send:
                    return

    def _write_queued(self, *, best_effort: bool) -> bool:
        """With the send lock held: write all the core queued. False if a best-effort
        write failed (the transport is gone)."""
        while True:
            with self._lock:
                out = self._conn.data_to_send()
            if not out:
                return True
            try:
                self._sendall(out)
            except OSError:
                if best_effort:
                    return False
                raise

    # -- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Send close-notify (best effort) and close the socket. Idempotent; safe to call
        from any thread.

        A ``send``/``sendall`` in progress on another thread stops after its current
        write and raises :class:`ChannelClosed`; the close-notify follows that write.
        If the write does not finish within 2 s (the peer stopped reading), the socket
        is closed without close-notify (the peer then sees a truncation).
        """
        self._close(_CLOSE_WAIT)

    def _close(self, wait: float) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()  # queued behind every record already made
        if self._send_lock.acquire(timeout=wait):
            try:
                self._write_queued(best_effort=True)
            finally:
                self._send_lock.release()
        if self._io_refs <= 0:
            self._close_socket()

    def _close_socket(self) -> None:
        _wake(self._sock)
        self._sock.close()

    def _decref_socketios(self) -> None:
        self._io_refs -= 1
        if self._closed and self._io_refs <= 0:
            self._close_socket()

    def makefile(
        self,
        mode: str = "r",
        buffering: int | None = None,
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Any:
        """A file object over the channel, as :meth:`socket.socket.makefile`."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b)")
        reading, writing, binary = "r" in mode, "w" in mode, "b" in mode
        rawmode = ("r" if reading else "") + ("w" if writing else "")
        raw = socket.SocketIO(self, rawmode)  # type: ignore[arg-type]
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if not binary:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if binary:
            return buffer
        text = io.TextIOWrapper(buffer, encoding, errors, newline)
        text.mode = mode  # type: ignore[misc]
        return text

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- socket-like passthroughs and session details -----------------------------------

    def settimeout(self, value: float | None) -> None:
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def fileno(self) -> int:
        return self._sock.fileno()

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def session(self) -> Any:
        """The handshake's ``SessionInfo``: policy, components, peer identity, QKD key IDs."""
        return self._conn.session

    @property
    def peer_identity(self) -> str | None:
        return getattr(self._conn.session, "peer_identity", None)

    @property
    def connection(self) -> Connection:
        """The sans-IO core (key generations, QKD rekey IDs); low level."""
        return self._conn

    def __repr__(self) -> str:
        state = "closed" if self._closed else self._conn.state.value
        return f"<hybridchan.Channel {state} peer={self.peer_identity!r}>"


def wrap_socket(
    sock: socket.socket,
    config: ChannelConfig,
    *,
    server_side: bool = False,
    connection_factory: Callable[..., Connection] = Connection,
) -> Channel:
    """Run the handshake over a connected socket and return the :class:`Channel`.

    Raises the handshake's typed errors (``AuthenticationError``, ``KeyUnavailableError``,
    ...) or :class:`~hybridchan.errors.HandshakeTimeout`; the socket is closed on failure.
    """
    if config.timeout is not None and sock.gettimeout() is None:
        sock.settimeout(config.timeout)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    channel = Channel(sock, connection_factory(config, client=not server_side))
    channel._handshake(config.handshake_timeout)
    return channel


def connect(
    address: tuple[str, int],
    config: ChannelConfig,
    *,
    timeout: float | None = None,
) -> Channel:
    """Open a TCP connection to ``address`` and run the client handshake.

    ``timeout`` bounds the TCP connect (default: ``config.handshake_timeout``);
    :class:`~hybridchan.errors.ConnectTimeout` when it runs out.
    """
    connect_timeout = timeout if timeout is not None else config.handshake_timeout
    try:
        sock = socket.create_connection(address, timeout=connect_timeout)
    except TimeoutError:
        raise ConnectTimeout.for_address(*address[:2], connect_timeout) from None
    sock.settimeout(config.timeout)
    return wrap_socket(sock, config, server_side=False)


class Server:
    """A small TCP server for channels: :meth:`accept` one, or :meth:`serve_forever`.

    ``port=0`` picks a free port; read it from :attr:`address`.
    """

    def __init__(
        self, config: ChannelConfig, host: str = "127.0.0.1", port: int = 0, *, backlog: int = 128
    ) -> None:
        self.config = config
        self._listener = socket.create_server((host, port), backlog=backlog)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Sockets in the handshake and open channels, so that shutdown can end them.
        self._open: set[socket.socket | Channel] = set()
        self._open_lock = threading.Lock()
        self.errors: list[BaseException] = []

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def accept(self) -> Channel:
        """Wait for one client and run the server handshake with it."""
        sock, _ = self._listener.accept()
        sock.settimeout(self.config.timeout)
        return wrap_socket(sock, self.config, server_side=True)

    def serve_forever(self, handler: Callable[[Channel], object], *, poll: float = 0.2) -> None:
        """Accept clients until :meth:`shutdown`; each runs ``handler(channel)`` in a thread.

        Failed handshakes and handler errors are collected in :attr:`errors`; a client
        that closes before sending a byte (a port probe, a health check) is not an error.
        """
        self._listener.settimeout(poll)
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            sock.settimeout(self.config.timeout)
            thread = threading.Thread(target=self._serve_one, args=(sock, handler), daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _serve_one(self, sock: socket.socket, handler: Callable[[Channel], object]) -> None:
        if not self._track(sock):
            sock.close()
            return
        try:
            channel = wrap_socket(sock, self.config, server_side=True)
        except ClosedWithoutHandshake:
            return
        except Exception as exc:
            if not self._stop.is_set():  # else shutdown cut the handshake: not the peer's fault
                self.errors.append(exc)
            return
        finally:
            self._untrack(sock)
        try:
            with channel:
                if self._track(channel):
                    handler(channel)
        except Exception as exc:
            self.errors.append(exc)
        finally:
            self._untrack(channel)

    def _track(self, item: socket.socket | Channel) -> bool:
        """Register ``item`` for :meth:`shutdown`; False once shutting down (end it now)."""
        with self._open_lock:
            if self._stop.is_set():
                return False
            self._open.add(item)
            return True

    def _untrack(self, item: socket.socket | Channel) -> None:
        with self._open_lock:
            self._open.discard(item)

    def shutdown(self, *, join_timeout: float = 5.0) -> None:
        """Stop :meth:`serve_forever`, close the listener, end every open channel and
        wait for the handler threads, ``join_timeout`` seconds in all.

        Open channels get a close-notify (after a send in progress, as
        :meth:`Channel.close`); handshakes still running are cut.
        """
        deadline = time.monotonic() + join_timeout
        self._stop.set()
        self._listener.close()
        with self._open_lock:
            still_open = list(self._open)
        for item in still_open:
            if isinstance(item, Channel):
                item._close(min(_CLOSE_WAIT, max(0.0, deadline - time.monotonic())))
            else:
                _wake(item)  # its handshake fails at once; that thread closes it
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self.shutdown()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _wake(sock: socket.socket) -> None:
    """Shut ``sock`` down: a thread blocked in ``recv`` on it returns at once (``close``
    alone does not wake it)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
