"""ETSI GS QKD 014 clients (sync and asyncio) that are also :class:`qkd.keysource.QKDKeySource`.

``new_key(peer, size)`` is ``enc_keys`` at the SAE's own KME for slave ``peer``;
``get_key(peer, key_id)`` is ``dec_keys`` for master ``peer``. HTTP failures map
onto the key-source errors:

=========================================================  =========================
KME answer                                                 raised
=========================================================  =========================
connection/TLS failure, timeout, 503                       ``KeyUnavailableError``
400/401 on ``enc_keys``/``status`` (bad SAE, bad request)  ``KeyUnavailableError``
400 "not found on KME", reason "already delivered"         ``KeyAlreadyUsedError``
400 "not found on KME" (unknown), 401 on ``dec_keys``      ``UnknownKeyIDError``
=========================================================  =========================

One HTTP/1.1 keep-alive connection pool per client; the SAE identity is the
client certificate (its subject CN must equal ``sae_id``).
"""

from __future__ import annotations

import functools
import socket
import ssl
import uuid
from collections.abc import Sequence
from typing import Any

import httpcore
import httpx

from qkd.keysource import KeyAlreadyUsedError, KeyUnavailableError, QKDKey, UnknownKeyIDError
from qkd.kme._api import MSG_KEYS_NOT_FOUND, decode_key_container
from qkd.kme.server import TLSFiles, client_ssl_context

__all__ = ["AsyncKMEClient", "KMEClient"]

_MAX_RESPONSE = 1 << 20
_MAX_KEYS = 1024
_MAX_CACHED_URLS = 256
# Small request/response pairs on keep-alive connections: without TCP_NODELAY, Nagle's
# algorithm meets delayed ACKs and every request waits ~40 ms.
_SOCKET_OPTIONS = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


class _Codec:
    """Request building and response checking shared by both clients (no I/O)."""

    def __init__(self, kme_url: str, sae_id: str) -> None:
        self.kme_url = kme_url
        self.sae_id = sae_id
        self._urls: dict[str, httpx.URL] = {}

    def url(self, path: str) -> httpx.URL:
        """Absolute URL of ``path``, parsed once (httpx parses a relative one per request)."""
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) >= _MAX_CACHED_URLS:
                self._urls.clear()
            url = self._urls[path] = httpx.URL(self.kme_url.rstrip("/") + path)
        return url

    @staticmethod
    def enc_request(number: int, size_bits: int) -> dict[str, Any]:
        if size_bits <= 0 or size_bits % 8:
            raise ValueError(f"key size must be a positive multiple of 8 bits, got {size_bits}")
        if number < 1:
            raise ValueError(f"number of keys must be at least 1, got {number}")
        return {"number": number, "size": size_bits}

    @staticmethod
    def dec_request(key_ids: Sequence[str]) -> dict[str, Any]:
        ids = []
        for key_id in key_ids:
            try:
                ids.append(str(uuid.UUID(key_id)))
            except (ValueError, TypeError, AttributeError):
                raise UnknownKeyIDError(
                    f"key ID {key_id!r} is not a UUID; no KME knows it"
                ) from None
        return {"key_IDs": [{"key_ID": k} for k in ids]}

    def keys(
        self,
        response: httpx.Response,
        op: str,
        peer: str,
        *,
        expect_ids: Sequence[str] | None = None,
        number: int | None = None,
        size_bytes: int | None = None,
    ) -> list[QKDKey]:
        if response.status_code != 200:
            self.fail(response, op, peer)
        try:
            pairs = decode_key_container(self._json(response), max_keys=_MAX_KEYS)
        except ValueError as exc:
            raise KeyUnavailableError(
                f"KME {self.kme_url} sent a malformed {op} response: {exc}"
            ) from None
        if expect_ids is not None and [k for k, _ in pairs] != list(expect_ids):
            raise KeyUnavailableError(f"KME {self.kme_url} returned other key IDs than requested")
        if number is not None and len(pairs) != number:
            raise KeyUnavailableError(
                f"KME {self.kme_url} returned {len(pairs)} keys, asked {number}"
            )
        if size_bytes is not None and any(len(k) != size_bytes for _, k in pairs):
            raise KeyUnavailableError(f"KME {self.kme_url} returned keys of the wrong size")
        return [QKDKey(key_id, key) for key_id, key in pairs]

    def status(self, response: httpx.Response, peer: str) -> dict[str, Any]:
        if response.status_code != 200:
            self.fail(response, "status", peer)
        body = self._json(response)
        if not isinstance(body, dict):
            raise KeyUnavailableError(f"KME {self.kme_url} sent a malformed status response")
        return body

    def fail(self, response: httpx.Response, op: str, peer: str) -> None:
        try:
            body = self._json(response)
        except KeyUnavailableError:
            body = {}
        body = body if isinstance(body, dict) else {}
        message = str(body.get("message", ""))[:300]
        raw_details = body.get("details")
        details: list[Any] = raw_details if isinstance(raw_details, list) else []
        where = f"KME {self.kme_url} ({op} as SAE {self.sae_id!r}, peer SAE {peer!r})"
        text = f"{where} answered {response.status_code}: {message or 'no message'}"
        if op == "dec_keys":
            reasons = " ".join(str(d.get("reason", "")) for d in details if isinstance(d, dict))
            if response.status_code == 400 and message == MSG_KEYS_NOT_FOUND:
                if "already delivered" in reasons:
                    raise KeyAlreadyUsedError(f"{text} ({reasons}); ask the peer for a fresh key")
                raise UnknownKeyIDError(f"{text} ({reasons}); check the key ID and the peer SAE ID")
            if response.status_code == 401:
                raise UnknownKeyIDError(f"{text}; the key is not addressed to this SAE")
        hint = {
            401: "check that this SAE's certificate CN is registered at the KME",
            503: "the KME has no key material or its peer is down; retry later",
        }.get(response.status_code, "check the request and the SAE IDs")
        raise KeyUnavailableError(f"{text}; {hint}")

    def _json(self, response: httpx.Response) -> Any:
        if len(response.content) > _MAX_RESPONSE:
            raise KeyUnavailableError(
                f"KME {self.kme_url} response larger than {_MAX_RESPONSE} bytes"
            )
        try:
            return response.json()
        except ValueError:
            raise KeyUnavailableError(f"KME {self.kme_url} sent a non-JSON response") from None


def _stdlib_context(tls: TLSFiles, tls_backend: str) -> ssl.SSLContext:
    if tls_backend == "openssl4":
        return _unused_context()
    if tls_backend != "python":
        raise ValueError(f"tls_backend must be 'python' or 'openssl4', got {tls_backend!r}")
    return client_ssl_context(tls)


@functools.cache
def _unused_context() -> ssl.SSLContext:
    """What httpx wants as ``verify`` when the OpenSSL 4 backend does TLS (it ignores it).

    It trusts no CA, so were it ever used, every handshake would fail (closed). Built once:
    ``create_default_context`` would load the system CA store for every client.
    """
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _sync_transport(tls: TLSFiles, uds: str | None, tls_backend: str) -> httpx.HTTPTransport:
    ctx = _stdlib_context(tls, tls_backend)
    options = None if uds else _SOCKET_OPTIONS
    transport = httpx.HTTPTransport(verify=ctx, uds=uds, socket_options=options)
    if tls_backend == "openssl4":
        from qkd.kme._openssl4 import OpenSSL4Backend, client_context

        backend = OpenSSL4Backend(client_context(tls.ca_file, tls.cert_file, tls.key_file))
        # httpx has no public hook for a network backend; swap its httpcore pool (same options).
        transport._pool = httpcore.ConnectionPool(ssl_context=ctx, uds=uds, network_backend=backend)
    return transport


def _async_transport(tls: TLSFiles, uds: str | None, tls_backend: str) -> httpx.AsyncHTTPTransport:
    ctx = _stdlib_context(tls, tls_backend)
    options = None if uds else _SOCKET_OPTIONS
    transport = httpx.AsyncHTTPTransport(verify=ctx, uds=uds, socket_options=options)
    if tls_backend == "openssl4":
        from qkd.kme._openssl4 import AsyncOpenSSL4Backend, client_context

        backend = AsyncOpenSSL4Backend(client_context(tls.ca_file, tls.cert_file, tls.key_file))
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=ctx, uds=uds, network_backend=backend
        )
    return transport


def _unreachable(url: str, exc: Exception) -> KeyUnavailableError:
    return KeyUnavailableError(
        f"KME {url} unreachable ({type(exc).__name__}: {exc}); check that it runs and that "
        "this SAE's certificate is issued by the KME's CA"
    )


class KMEClient:
    """Blocking ETSI GS QKD 014 client for one SAE (a :class:`QKDKeySource`).

    ``uds``: connect over this Unix socket instead of TCP (URL host still names the
    KME for certificate checking, e.g. ``https://localhost``).
    """

    def __init__(
        self,
        kme_url: str,
        sae_id: str,
        tls: TLSFiles,
        *,
        uds: str | None = None,
        timeout: float = 10.0,
        tls_backend: str = "python",
    ) -> None:
        self._codec = _Codec(kme_url, sae_id)
        transport = _sync_transport(tls, uds, tls_backend)
        self._http = httpx.Client(base_url=kme_url, transport=transport, timeout=timeout)

    @property
    def sae_id(self) -> str:
        return self._codec.sae_id

    def new_key(self, peer_sae_id: str, size_bytes: int = 32) -> QKDKey:
        return self.enc_keys(peer_sae_id, number=1, size_bits=8 * size_bytes)[0]

    def get_key(self, peer_sae_id: str, key_id: str) -> QKDKey:
        return self.dec_keys(peer_sae_id, [key_id])[0]

    def status(self, peer_sae_id: str) -> dict[str, Any]:
        return self._codec.status(
            self._send("GET", f"{_path(peer_sae_id)}/status", None), peer_sae_id
        )

    def enc_keys(self, peer_sae_id: str, *, number: int = 1, size_bits: int = 256) -> list[QKDKey]:
        body = self._codec.enc_request(number, size_bits)
        response = self._send("POST", f"{_path(peer_sae_id)}/enc_keys", body)
        return self._codec.keys(
            response, "enc_keys", peer_sae_id, number=number, size_bytes=size_bits // 8
        )

    def dec_keys(self, peer_sae_id: str, key_ids: Sequence[str]) -> list[QKDKey]:
        body = self._codec.dec_request(key_ids)
        response = self._send("POST", f"{_path(peer_sae_id)}/dec_keys", body)
        expect = [e["key_ID"] for e in body["key_IDs"]]
        return self._codec.keys(response, "dec_keys", peer_sae_id, expect_ids=expect)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KMEClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<KMEClient SAE {self.sae_id!r} at {self._codec.kme_url}>"

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        try:
            return self._http.request(method, self._codec.url(path), json=body)
        except httpx.HTTPError as exc:
            raise _unreachable(self._codec.kme_url, exc) from None


class AsyncKMEClient:
    """The asyncio twin of :class:`KMEClient` (same methods, awaitable)."""

    def __init__(
        self,
        kme_url: str,
        sae_id: str,
        tls: TLSFiles,
        *,
        uds: str | None = None,
        timeout: float = 10.0,
        tls_backend: str = "python",
    ) -> None:
        self._codec = _Codec(kme_url, sae_id)
        transport = _async_transport(tls, uds, tls_backend)
        self._http = httpx.AsyncClient(base_url=kme_url, transport=transport, timeout=timeout)

    @property
    def sae_id(self) -> str:
        return self._codec.sae_id

    async def new_key(self, peer_sae_id: str, size_bytes: int = 32) -> QKDKey:
        return (await self.enc_keys(peer_sae_id, number=1, size_bits=8 * size_bytes))[0]

    async def get_key(self, peer_sae_id: str, key_id: str) -> QKDKey:
        return (await self.dec_keys(peer_sae_id, [key_id]))[0]

    async def status(self, peer_sae_id: str) -> dict[str, Any]:
        response = await self._send("GET", f"{_path(peer_sae_id)}/status", None)
        return self._codec.status(response, peer_sae_id)

    async def enc_keys(
        self, peer_sae_id: str, *, number: int = 1, size_bits: int = 256
    ) -> list[QKDKey]:
        body = self._codec.enc_request(number, size_bits)
        response = await self._send("POST", f"{_path(peer_sae_id)}/enc_keys", body)
        return self._codec.keys(
            response, "enc_keys", peer_sae_id, number=number, size_bytes=size_bits // 8
        )

    async def dec_keys(self, peer_sae_id: str, key_ids: Sequence[str]) -> list[QKDKey]:
        body = self._codec.dec_request(key_ids)
        response = await self._send("POST", f"{_path(peer_sae_id)}/dec_keys", body)
        expect = [e["key_ID"] for e in body["key_IDs"]]
        return self._codec.keys(response, "dec_keys", peer_sae_id, expect_ids=expect)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncKMEClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        try:
            return await self._http.request(method, self._codec.url(path), json=body)
        except httpx.HTTPError as exc:
            raise _unreachable(self._codec.kme_url, exc) from None


def _path(sae_id: str) -> str:
    if not sae_id or "/" in sae_id or not sae_id.isprintable():
        raise ValueError(f"SAE ID {sae_id!r} must be non-empty printable text without '/'")
    return f"/api/v1/keys/{sae_id}"
