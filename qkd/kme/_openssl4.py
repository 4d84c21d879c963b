"""TLS 1.3 through pyOpenSSL's bundled OpenSSL (4.x): post-quantum key exchange for the KME.

Why this exists
---------------
Python's ``ssl`` module here links OpenSSL 3.0, which has no ML-KEM groups, so a
KME served by uvicorn on ``ssl`` and reached by httpx on ``ssl`` can only agree on
X25519. The ``cryptography``/pyOpenSSL wheels bundle OpenSSL 4, whose default
groups put the hybrid ``X25519MLKEM768`` first. This module plugs that OpenSSL
into both ends without replacing the HTTP stacks:

* server: :class:`OpenSSL4ServerProtocol` is an asyncio protocol that runs the TLS
  handshake with memory BIOs and hands the decrypted stream to uvicorn's own h11
  protocol, through a transport that looks like an ``ssl`` one (``ssl_object``
  exposes the verified client certificate, so the SAE identity works unchanged);
* clients: :class:`OpenSSL4Backend` / :class:`AsyncOpenSSL4Backend` are httpcore
  network backends whose ``start_tls`` uses pyOpenSSL; httpx keeps doing HTTP.

OpenSSL 4 also loads ML-DSA keys, so with this backend KME and SAE certificates may
be ML-DSA (fully post-quantum TLS); Python's ``ssl`` cannot load them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import select
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

import httpcore
from cryptography import x509
from OpenSSL import SSL

__all__ = [
    "AsyncOpenSSL4Backend",
    "OpenSSL4Backend",
    "OpenSSL4ServerProtocol",
    "client_context",
    "server_context",
]

_READ = 65536


def _verify_ok(_conn: Any, _cert: Any, _errno: int, _depth: int, ok: int) -> bool:
    return bool(ok)  # OpenSSL's own chain verification decides


def server_context(ca_file: str, cert_file: str, key_file: str) -> SSL.Context:
    """TLS 1.3 server context that requires a client certificate from ``ca_file``."""
    verify = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    return _context(SSL.TLS_SERVER_METHOD, verify, ca_file, cert_file, key_file)


def client_context(ca_file: str, cert_file: str, key_file: str) -> SSL.Context:
    """TLS 1.3 client context: verify the KME against ``ca_file``, present our certificate."""
    return _context(SSL.TLS_CLIENT_METHOD, SSL.VERIFY_PEER, ca_file, cert_file, key_file)


def _context(method: int, verify: int, ca_file: str, cert_file: str, key_file: str) -> SSL.Context:
    ctx = SSL.Context(method)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.use_certificate_chain_file(cert_file)
    ctx.use_privatekey_file(key_file)
    ctx.check_privatekey()
    ctx.load_verify_locations(ca_file)
    ctx.set_verify(verify, _verify_ok)
    return ctx


class _PeerInfo:
    """The bits of ``ssl.SSLObject`` uvicorn and our TLS extension read."""

    def __init__(self, conn: SSL.Connection) -> None:
        self._conn = conn

    def getpeercert(self, binary_form: bool = False) -> Any:
        cert = self._conn.get_peer_certificate(as_cryptography=True)
        if cert is None:
            return None
        from cryptography.hazmat.primitives.serialization import Encoding

        return cert.public_bytes(Encoding.DER) if binary_form else {}

    def version(self) -> str | None:
        return self._conn.get_protocol_version_name()

    def selected_alpn_protocol(self) -> None:
        return None


class _AppTransport(asyncio.Transport):
    """What uvicorn's protocol writes to: plaintext in, TLS records out."""

    def __init__(self, outer: OpenSSL4ServerProtocol) -> None:
        super().__init__()
        self._outer = outer

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._outer.send_plain(bytes(data))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(bytes(d) for d in list_of_data))

    def close(self) -> None:
        self._outer.close_tls()

    def abort(self) -> None:
        self._outer.raw.abort()

    def is_closing(self) -> bool:
        return self._outer.raw.is_closing()

    def pause_reading(self) -> None:
        self._outer.raw.pause_reading()

    def resume_reading(self) -> None:
        self._outer.raw.resume_reading()

    def is_reading(self) -> bool:
        return self._outer.raw.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._outer.raw.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._outer.raw.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return _PeerInfo(self._outer.conn)
        if name == "sslcontext":
            return self._outer.conn.get_context()
        return self._outer.raw.get_extra_info(name, default)


class OpenSSL4ServerProtocol(asyncio.Protocol):
    """TLS (pyOpenSSL, memory BIOs) in front of an inner HTTP protocol made on handshake."""

    def __init__(self, ctx: SSL.Context, inner_factory: Callable[[], asyncio.Protocol]) -> None:
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_accept_state()
        self._inner_factory = inner_factory
        self._inner: asyncio.Protocol | None = None
        self.raw: asyncio.Transport = None  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.raw = transport

    def data_received(self, data: bytes) -> None:
        self.conn.bio_write(data)
        try:
            if self._inner is None and not self._handshake():
                return
            self._pump_plaintext()
        except SSL.Error:
            # Failed handshake (no or untrusted client certificate) or a bad record:
            # send OpenSSL's alert if any, then drop the connection. Nothing reached HTTP.
            self._flush()
            self.raw.close()

    def _handshake(self) -> bool:
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        self._flush()
        self._inner = self._inner_factory()
        self._inner.connection_made(_AppTransport(self))
        return True

    def _pump_plaintext(self) -> None:
        assert self._inner is not None
        while True:
            try:
                chunk = self.conn.recv(_READ)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.close_tls()
                break
            self._inner.data_received(chunk)
        self._flush()

    def send_plain(self, data: bytes) -> None:
        if self.raw.is_closing():
            return
        self.conn.sendall(data)
        self._flush()

    def close_tls(self) -> None:
        if not self.raw.is_closing():
            with contextlib.suppress(SSL.Error):
                self.conn.shutdown()
            self._flush()
            self.raw.close()

    def _flush(self) -> None:
        out = []
        while True:
            try:
                out.append(self.conn.bio_read(_READ))
            except SSL.WantReadError:
                break
        if out and not self.raw.is_closing():
            self.raw.write(b"".join(out))

    def eof_received(self) -> bool:
        if self._inner is not None:
            return bool(self._inner.eof_received())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()


# -- clients ------------------------------------------------------------------------------------


def _check_host(conn: SSL.Connection, host: str) -> None:
    """RFC 6125-style check of the KME certificate against the host we dialled."""
    cert = conn.get_peer_certificate(as_cryptography=True)
    if cert is None:
        raise SSL.Error("KME presented no certificate")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise SSL.Error("KME certificate has no subjectAltName") from None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host.lower() not in {n.lower() for n in san.get_values_for_type(x509.DNSName)}:
            raise SSL.Error(f"KME certificate does not name host {host!r}") from None
        return
    if address not in san.get_values_for_type(x509.IPAddress):
        raise SSL.Error(f"KME certificate does not name address {host}")


def _wait(sock: socket.socket, *, write: bool, timeout: float | None) -> None:
    readable, writable, _ = select.select(
        [] if write else [sock], [sock] if write else [], [], timeout
    )
    if not (readable or writable):
        raise httpcore.ReadTimeout("timed out waiting for the KME")


class _SyncTLSStream(httpcore.NetworkStream):
    def __init__(self, sock: socket.socket, ctx: SSL.Context, host: str, timeout: float | None):
        sock.setblocking(False)
        self._sock = sock
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._conn = SSL.Connection(ctx, sock)
        with contextlib.suppress(UnicodeError):
            if not _is_ip(host):
                self._conn.set_tlsext_host_name(host.encode("idna"))
        self._conn.set_connect_state()
        try:
            self._retry(self._conn.do_handshake, timeout)
            _check_host(self._conn, host)
        except SSL.Error as exc:
            sock.close()
            raise httpcore.ConnectError(f"TLS with the KME failed: {exc}") from None

    def _retry(self, op: Callable[[], Any], timeout: float | None) -> Any:
        while True:
            try:
                return op()
            except SSL.WantReadError:
                _wait(self._sock, write=False, timeout=timeout)
            except SSL.WantWriteError:
                _wait(self._sock, write=True, timeout=timeout)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._send_pending(timeout)
        try:
            return bytes(self._retry(lambda: self._conn.recv(max_bytes), timeout))
        except (SSL.ZeroReturnError, SSL.SysCallError):
            return b""
        except SSL.Error as exc:
            raise httpcore.ReadError(str(exc)) from None

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # Held until the response is read (see _AsyncTLSStream.write): one record, one send.
        self._pending.append(bytes(buffer))
        self._pending_size += len(buffer)
        if self._pending_size >= _READ:
            self._send_pending(timeout)

    def _send_pending(self, timeout: float | None) -> None:
        if not self._pending:
            return
        remaining = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        while remaining:
            chunk = remaining

            def send(data: bytes = chunk) -> int:
                return int(self._conn.send(data))

            try:
                sent = self._retry(send, timeout)
            except SSL.Error as exc:
                raise httpcore.WriteError(str(exc)) from None
            remaining = remaining[sent:]

    def close(self) -> None:
        with contextlib.suppress(SSL.Error, OSError):
            self._conn.shutdown()
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("TLS already established")

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return _PeerInfo(self._conn)
        if info == "socket":
            return self._sock
        if info == "is_readable":
            return bool(select.select([self._sock], [], [], 0)[0])
        return None


class _PlainSyncStream(httpcore.NetworkStream):
    """A connected socket before TLS; ``start_tls`` switches to OpenSSL 4."""

    def __init__(self, sock: socket.socket, ctx: SSL.Context) -> None:
        self._sock, self._ctx = sock, ctx

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        raise httpcore.ReadError("refusing to speak HTTP without TLS to a KME")

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        raise httpcore.WriteError("refusing to speak HTTP without TLS to a KME")

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _SyncTLSStream(self._sock, self._ctx, server_hostname or "", timeout)

    def get_extra_info(self, info: str) -> Any:
        return self._sock if info == "socket" else None


class OpenSSL4Backend(httpcore.NetworkBackend):
    """httpcore backend: plain TCP/Unix sockets, TLS by pyOpenSSL (OpenSSL 4)."""

    def __init__(self, ctx: SSL.Context) -> None:
        self._ctx = ctx

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            sock = socket.create_connection((host, port), timeout)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _PlainSyncStream(sock, self._ctx)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from None
        return _PlainSyncStream(sock, self._ctx)

    def sleep(self, seconds: float) -> None:
        import time

        time.sleep(seconds)


class _AsyncTLSStream(httpcore.AsyncNetworkStream):
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: SSL.Context
    ):
        self._reader, self._writer = reader, writer
        self._conn = SSL.Connection(ctx, None)
        self._conn.set_connect_state()
        self._unflushed = 0

    async def handshake(self, host: str, timeout: float | None) -> None:
        if host and not _is_ip(host):
            self._conn.set_tlsext_host_name(host.encode("idna"))
        try:
            await asyncio.wait_for(self._run(self._conn.do_handshake), timeout)
            _check_host(self._conn, host)
        except (SSL.Error, EOFError) as exc:
            self._writer.close()
            raise httpcore.ConnectError(f"TLS with the KME failed: {exc}") from None
        except TimeoutError:
            self._writer.close()
            raise httpcore.ConnectTimeout("TLS handshake with the KME timed out") from None

    async def _run(self, op: Callable[[], Any]) -> Any:
        while True:
            try:
                result = op()
            except SSL.WantReadError:
                need_data = True
            else:
                need_data = False
            await self._flush()
            if not need_data:
                return result
            data = await self._reader.read(_READ)
            if not data:
                raise EOFError("KME closed the connection")
            self._conn.bio_write(data)

    async def _flush(self) -> None:
        self._unflushed = 0
        out = []
        while True:
            try:
                out.append(self._conn.bio_read(_READ))
            except SSL.WantReadError:
                break
        if out:
            self._writer.write(b"".join(out))
            await self._writer.drain()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        # asyncio.timeout, not wait_for: wait_for wraps each read in a new Task (Python 3.11).
        try:
            async with asyncio.timeout(timeout):
                return bytes(await self._run(lambda: self._conn.recv(max_bytes)))
        except (SSL.ZeroReturnError, EOFError):
            return b""
        except TimeoutError:
            raise httpcore.ReadTimeout("timed out waiting for the KME") from None
        except SSL.Error as exc:
            raise httpcore.ReadError(str(exc)) from None

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # httpcore writes a request as headers, then body, then reads the response. The TLS
        # records wait in the memory BIO until that read (``_run`` flushes first), so a small
        # request leaves in one TCP send and the KME wakes once; large ones go out at 64 KiB.
        try:
            self._conn.sendall(buffer)
            self._unflushed += len(buffer)
            if self._unflushed < _READ:
                return
            async with asyncio.timeout(timeout):
                await self._flush()
        except SSL.Error as exc:
            raise httpcore.WriteError(str(exc)) from None
        except TimeoutError:
            raise httpcore.WriteTimeout("timed out sending to the KME") from None

    async def aclose(self) -> None:
        with contextlib.suppress(SSL.Error, OSError, ConnectionError):
            self._conn.shutdown()
            await self._flush()
        self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("TLS already established")

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return _PeerInfo(self._conn)
        if info == "is_readable":
            return self._reader.at_eof() or bool(getattr(self._reader, "_buffer", b""))
        return None


class _PlainAsyncStream(httpcore.AsyncNetworkStream):
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ctx: SSL.Context
    ):
        self._reader, self._writer, self._ctx = reader, writer, ctx

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        raise httpcore.ReadError("refusing to speak HTTP without TLS to a KME")

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        raise httpcore.WriteError("refusing to speak HTTP without TLS to a KME")

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = _AsyncTLSStream(self._reader, self._writer, self._ctx)
        await stream.handshake(server_hostname or "", timeout)
        return stream

    def get_extra_info(self, info: str) -> Any:
        return None


class AsyncOpenSSL4Backend(httpcore.AsyncNetworkBackend):
    """asyncio httpcore backend with TLS by pyOpenSSL (OpenSSL 4), via memory BIOs."""

    def __init__(self, ctx: SSL.Context) -> None:
        self._ctx = ctx

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (TimeoutError, OSError) as exc:
            raise httpcore.ConnectError(f"cannot reach KME {host}:{port}: {exc}") from None
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _PlainAsyncStream(reader, writer, self._ctx)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
        except (TimeoutError, OSError) as exc:
            raise httpcore.ConnectError(f"cannot reach KME socket {path}: {exc}") from None
        return _PlainAsyncStream(reader, writer, self._ctx)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
