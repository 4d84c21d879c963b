"""Serving a KME over HTTPS with mutual TLS (uvicorn), on TCP or a Unix socket.

TLS and the SAE identity
------------------------
The server context requires a client certificate (``ssl.CERT_REQUIRED``) that
chains to the configured CA, and TLS 1.3. A client without one, or with one from
another CA, fails the handshake: no HTTP request is ever read.

uvicorn does not put the peer certificate into the ASGI scope, so
:class:`_MutualTLSProtocol` (a subclass of uvicorn's httptools protocol, or of its
h11 protocol where httptools is not installed; passed as ``Config(http=...)``) reads it from the connection's ``ssl_object`` once the
handshake is done and adds the ASGI TLS extension
(``scope["extensions"]["tls"]``: ``client_cert_chain``, ``client_cert_name``,
``tls_version``) to every request on that connection. The app reads the SAE ID
from the certificate's subject CN.

TLS backends (``tls_backend=``): ``"python"`` is Python's ``ssl``, which here links
OpenSSL 3.0 without ML-KEM, so the key exchange is X25519 (classical);
``"openssl4"`` runs TLS through pyOpenSSL's bundled OpenSSL 4 (:mod:`qkd.kme._openssl4`)
and negotiates the hybrid X25519MLKEM768 group, and accepts ML-DSA certificates.
:func:`probe_tls_group` reports what a server actually picks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography import x509
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # httptools (llhttp, C) parses HTTP/1.1 several times faster than pure-Python h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HTTPProtocol
except ImportError:  # pragma: no cover - httptools is a declared dependency
    _HTTPProtocol = H11Protocol  # type: ignore[assignment,misc]

from qkd.kme._api import ServiceUnavailable
from qkd.kme._service import KMEService, PeerLinkError
from qkd.kme.app import create_app

__all__ = [
    "TLS_BACKENDS",
    "HTTPSPeerLink",
    "KMEServer",
    "TLSFiles",
    "client_ssl_context",
    "probe_tls_group",
    "server_ssl_context",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """PEM files of one TLS endpoint: trusted CA, own certificate chain, own private key."""

    ca_file: str
    cert_file: str
    key_file: str


def server_ssl_context(tls: TLSFiles) -> ssl.SSLContext:
    """TLS 1.3 server context that requires a client certificate issued by ``tls.ca_file``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    ctx.load_verify_locations(cafile=tls.ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_ssl_context(tls: TLSFiles) -> ssl.SSLContext:
    """TLS 1.3 client context: verify the KME against ``ca_file``, present our certificate."""
    ctx = ssl.create_default_context(cafile=tls.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    return ctx


_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def _tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> dict[str, Any] | None:
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)],
        "client_cert_name": cert.subject.rfc4514_string(),
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


class _CoalescingTransport:
    """Pass-through transport that joins the writes of one event-loop turn into one write.

    uvicorn writes a response as two writes (status + headers, then body). Sent as they
    come, each becomes its own TLS record and TCP segment and the client wakes twice per
    response; joined, a small response is one record, one ``send``, one wake-up.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _MutualTLSProtocol(_HTTPProtocol):
    """uvicorn's HTTP/1.1 protocol plus the ASGI TLS extension for each request."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _CoalescingTransport(transport)  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        extension = _tls_extension(ssl_object) if ssl_object is not None else None
        inner = self.app

        async def app_with_tls(scope: Any, receive: Any, send: Any) -> None:
            if extension is not None and scope["type"] == "http":
                extensions = scope.get("extensions")
                scope["extensions"] = (
                    {**extensions, "tls": extension} if extensions else {"tls": extension}
                )
            await inner(scope, receive, send)

        self.app = app_with_tls  # type: ignore[assignment]


#: ``"python"``: Python's ``ssl`` (OpenSSL 3.0 here; X25519 only). ``"openssl4"``: pyOpenSSL's
#: bundled OpenSSL 4 (hybrid X25519MLKEM768 key exchange; ML-DSA certificates load too).
TLS_BACKENDS = ("python", "openssl4")


def _openssl4_protocol_factory(tls: TLSFiles) -> Any:
    from qkd.kme._openssl4 import OpenSSL4ServerProtocol, server_context

    ctx = server_context(tls.ca_file, tls.cert_file, tls.key_file)

    def factory(**kwargs: Any) -> asyncio.Protocol:
        return OpenSSL4ServerProtocol(ctx, lambda: _MutualTLSProtocol(**kwargs))

    return factory


class KMEServer:
    """One KME site served by uvicorn in a background thread (start/stop from sync code).

    Give ``port`` (0: pick a free one on ``host``) or ``unix_path``. The server
    runs crash recovery (:meth:`KMEService.recover`) before accepting requests; if
    the peer KME cannot settle the unconfirmed keys yet, it serves anyway and
    ``enc_keys`` retries the recovery before issuing any key. Stopping closes the
    service's peer link (:meth:`KMEService.aclose`) in the event loop that used it.
    """

    def __init__(
        self,
        service: KMEService,
        tls: TLSFiles,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        unix_path: str | os.PathLike[str] | None = None,
        tls_backend: str = "python",
    ) -> None:
        if tls_backend not in TLS_BACKENDS:
            raise ValueError(
                f"tls_backend must be one of {', '.join(TLS_BACKENDS)}, got {tls_backend!r}"
            )
        self.service = service
        self.tls = tls
        self.tls_backend = tls_backend
        self._sock = _bind(host, port, unix_path)
        self.unix_path = None if unix_path is None else str(unix_path)
        self.host = host
        self.port = 0 if unix_path is not None else self._sock.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        """Base URL (for a Unix socket: ``https://localhost``, sent over that socket)."""
        return "https://localhost" if self.unix_path else f"https://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> KMEServer:
        tls_options: dict[str, Any]
        if self.tls_backend == "openssl4":
            tls_options = {"http": _openssl4_protocol_factory(self.tls)}
        else:
            ctx = server_ssl_context(self.tls)
            tls_options = {
                "http": _MutualTLSProtocol,
                "ssl_context_factory": lambda _config, _default: ctx,
                "ssl_certfile": self.tls.cert_file,
            }
        config = uvicorn.Config(
            create_app(self.service),
            lifespan="off",
            log_level="warning",
            access_log=False,
            # Never trust X-Forwarded-* (the SAE is its certificate); no Server/Date headers.
            proxy_headers=False,
            server_header=False,
            date_header=False,
            timeout_keep_alive=30,
            # Idle keep-alive peers (e.g. another KME's pooled connection) would otherwise hold
            # the TLS close for asyncio's 30 s shutdown timeout.
            timeout_graceful_shutdown=1,
            **tls_options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._run, name=f"kme-{self.service.config.kme_id}", daemon=True
        )
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(
                    f"KME {self.service.config.kme_id} failed to start: {self._error}"
                )
            if waited > timeout:
                raise RuntimeError(f"KME {self.service.config.kme_id} did not start in {timeout} s")
            threading.Event().wait(0.01)
            waited += 0.01
        return self

    def run_forever(self) -> None:
        """Serve in the calling thread until interrupted (the CLI)."""
        self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._sock.close()
        if self.unix_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)

    def __enter__(self) -> KMEServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        async def main() -> None:
            try:
                await self._recover_and_serve()
            finally:  # the peer link's connections belong to this loop: close them in it
                await self.service.aclose()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start()
            self._error = exc

    async def _recover_and_serve(self) -> None:
        try:
            await self.service.recover()
        except ServiceUnavailable as exc:
            # Serve anyway (dec_keys needs no peer); enc_keys retries the recovery first
            # and issues no key until it succeeds. Two restarted sites must not each wait
            # for the other before serving.
            _log.warning("KME %s: %s: %s", self.service.config.kme_id, exc, exc.details)
        assert self._server is not None
        await self._server.serve(sockets=[self._sock])


def _bind(host: str, port: int, unix_path: str | os.PathLike[str] | None) -> socket.socket:
    if unix_path is not None:
        path = Path(unix_path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)  # the socket is for the local secure site only
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only when
        # the listener says so, and without it every response waits ~40 ms (Nagle + delayed ACK).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class HTTPSPeerLink:
    """Send key cuts to a peer KME in another process (``POST /kme/v1/follow``, mutual TLS).

    Only positions, sizes and key IDs cross this link, never key bits; the peer
    accepts cuts only from a client certificate whose CN is its configured peer KME.
    """

    def __init__(
        self,
        url: str,
        tls: TLSFiles,
        *,
        uds: str | None = None,
        timeout: float = 5.0,
        tls_backend: str = "python",
    ):
        from qkd.kme.client import _async_transport  # client imports this module

        transport = _async_transport(tls, uds, tls_backend)
        self._client = httpx.AsyncClient(base_url=url, transport=transport, timeout=timeout)

    async def follow(
        self,
        pool: str,
        start: int,
        master: str,
        slave: str,
        entries: Sequence[tuple[str, int]],
        *,
        void: bool,
    ) -> None:
        body = {
            "pool": pool,
            "start": start,
            "master": master,
            "slave": slave,
            "void": void,
            "entries": [{"key_ID": k, "size": s} for k, s in entries],
        }
        try:
            response = await self._client.post("/kme/v1/follow", json=body)
        except httpx.HTTPError as exc:
            raise PeerLinkError(f"peer KME unreachable: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise PeerLinkError(f"peer KME answered {response.status_code}: {response.text[:200]}")

    async def aclose(self) -> None:
        await self._client.aclose()


def probe_tls_group(host: str, port: int, tls: TLSFiles) -> str:
    """Connect with pyOpenSSL (OpenSSL 4: offers X25519MLKEM768 first) and report the group.

    The answer is the group the *server* chose, i.e. the best the KME's TLS stack offers.
    """
    from OpenSSL import SSL  # bundled OpenSSL; only needed for this probe

    from qkd.kme._openssl4 import client_context

    ctx = client_context(tls.ca_file, tls.cert_file, tls.key_file)
    with contextlib.suppress(AttributeError, SSL.Error):
        ctx.set_groups(["X25519MLKEM768", "X25519"])  # type: ignore[attr-defined]
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.settimeout(None)  # pyOpenSSL needs a blocking socket
        conn = SSL.Connection(ctx, raw)
        conn.set_connect_state()
        conn.do_handshake()
        name = conn.get_group_name()
        conn.shutdown()
    return name.decode() if isinstance(name, bytes) else str(name)
