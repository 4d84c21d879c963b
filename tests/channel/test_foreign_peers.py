"""Peers that are not hybridchan channels: port probes, other protocols, unreachable hosts."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any

import pytest

import hybridchan
from hybridchan._connection import Connection
from hybridchan._record import RecordReader
from hybridchan.errors import (
    AlertDescription,
    ClosedWithoutHandshake,
    ConnectTimeout,
    ForeignProtocolError,
    ProtocolError,
    TruncatedError,
)
from tests.channel._util import raw_server, wait_for

MakeConfigs = Callable[..., Any]

TLS_CLIENT_HELLO = bytes.fromhex("16030100f4010000f00303") + bytes(32)
HTTP_REQUEST = b"GET /secret-token HTTP/1.1\r\nHost: x\r\n\r\n"


# -- connections that end before a single byte ---------------------------------------------


def test_eof_before_any_byte_is_not_a_truncation(make_configs: MakeConfigs) -> None:
    """Such a connection used to be reported as "truncated by an attacker or a crash"."""
    client_cfg, server_cfg = make_configs("hybrid")
    server = Connection(server_cfg, client=False)
    server.start()
    server.receive_data(b"")
    with pytest.raises(ClosedWithoutHandshake, match="port probe or health check"):
        server.next_event()
    client = Connection(client_cfg, client=True)
    client.start()
    client.receive_data(b"")
    with pytest.raises(ClosedWithoutHandshake, match="server closed the connection during"):
        client.next_event()
    hello = client.data_to_send()
    for sent, where in [
        (b"\x16", "in the middle of a record"),  # a close after any byte still is one
        (hello[:-1], "in the middle of a record"),
        (hello, "between records"),
    ]:
        cut = Connection(server_cfg, client=False)
        cut.start()
        cut.receive_data(sent)
        cut.receive_data(b"")
        with pytest.raises(TruncatedError, match=f"{where} during the handshake"):
            while cut.next_event() is not None:
                pass


def _probe(address: tuple[str, int], *, reset: bool = False, send: bytes = b"") -> None:
    """Connect and close (with a TCP reset if ``reset``, as some health checkers do)."""
    with closing(socket.create_connection(address)) as sock:
        if send:
            sock.sendall(send)
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_server_ignores_port_probes_and_reports_truncated_handshakes(
    make_configs: MakeConfigs,
) -> None:
    client_cfg, server_cfg = make_configs("hybrid")
    with hybridchan.Server(server_cfg) as server:
        threading.Thread(
            target=server.serve_forever, args=(lambda ch: ch.sendall(b"ok"),), daemon=True
        ).start()
        _probe(server.address)
        _probe(server.address, reset=True)
        _probe(server.address, send=b"\x16\x00")  # half a record header
        wait_for(lambda: bool(server.errors), "the truncated handshake is reported")
        with hybridchan.connect(server.address, client_cfg) as channel:
            assert channel.recv_exactly(2) == b"ok"
    assert len(server.errors) == 1, server.errors  # the probes were accepted first
    assert isinstance(server.errors[0], TruncatedError)
    assert "middle of a record during the handshake" in str(server.errors[0])


async def test_asyncio_server_ignores_port_probes(make_configs: MakeConfigs) -> None:
    client_cfg, server_cfg = make_configs("hybrid")
    errors: list[BaseException] = []

    async def handler(reader: Any, writer: Any) -> None:
        writer.write(b"ok")
        writer.close()

    server = await hybridchan.start_server(
        handler, "127.0.0.1", 0, server_cfg, on_error=errors.append
    )
    host, port = address = server.sockets[0].getsockname()[:2]
    try:
        await asyncio.to_thread(_probe, address)
        await asyncio.to_thread(_probe, address, reset=True)
        await asyncio.to_thread(_probe, address, send=b"\x16\x00")
        for _ in range(1000):
            if errors:
                break
            await asyncio.sleep(0.01)
        reader, writer = await hybridchan.open_connection(host, port, client_cfg)
        assert await reader.readexactly(2) == b"ok"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
    assert len(errors) == 1, errors
    assert isinstance(errors[0], TruncatedError)
    assert "middle of a record during the handshake" in str(errors[0])


# -- peers that speak another protocol -----------------------------------------------------


@pytest.mark.parametrize(
    ("first_bytes", "looks_like", "head"),
    [
        (TLS_CLIENT_HELLO, "TLS", "16 03 01 00"),
        (bytes.fromhex("15030300020246"), "TLS", "15 03 03 00"),  # a TLS server's alert
        (HTTP_REQUEST, "HTTP", "47 45 54 20"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "HTTP", "48 54 54 50"),
        (b"<!DOCTYPE HTML>\n<html>", "HTTP", "3c 21 44 4f"),  # http.server's bare error page
        (b"SSH-2.0-OpenSSH_9.6\r\n", "SSH", "53 53 48 2d"),
        (b"\x00\x01\x02\x03\x04", "another protocol", "00 01 02 03"),
    ],
)
def test_first_bytes_of_another_protocol_are_named(
    first_bytes: bytes, looks_like: str, head: str
) -> None:
    """These used to say "record epoch 3 is out of range" or "unknown content type 71"."""
    reader = RecordReader()
    reader.feed(first_bytes)
    with pytest.raises(ForeignProtocolError) as info:
        reader.next_record()
    text = str(info.value)
    assert text.startswith("not a hybridchan record header")
    assert f"{looks_like} ({head})" in text and "does not speak the hybridchan protocol" in text
    assert "secret" not in text and b"secret".hex() not in text.replace(" ", "")
    assert isinstance(info.value, ProtocolError)
    assert info.value.alert == AlertDescription.decode_error


@pytest.mark.parametrize(
    ("answer", "looks_like"),
    [
        (bytes.fromhex("15030300020246"), "TLS"),  # protocol_version alert
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "HTTP"),
    ],
)
def test_client_names_a_server_of_another_protocol(
    make_configs: MakeConfigs, answer: bytes, looks_like: str
) -> None:
    client_cfg, _ = make_configs("hybrid")

    def answer_the_client_hello(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(answer)

    listener, thread = raw_server(answer_the_client_hello)
    with listener, pytest.raises(ForeignProtocolError, match=f"look like {looks_like}") as info:
        hybridchan.connect(listener.getsockname()[:2], client_cfg)
    assert info.value.alert_sent == AlertDescription.decode_error  # fail closed, tell it why
    thread.join(5)


def _tls_client(address: tuple[str, int]) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(address, timeout=10) as sock:
        try:
            context.wrap_socket(sock).close()
        except (ssl.SSLError, OSError):
            pass  # our alert is no TLS


def _http_client(address: tuple[str, int]) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(HTTP_REQUEST)
        try:
            while sock.recv(4096):
                pass
        except OSError:
            pass


def test_server_names_tls_and_http_clients(make_configs: MakeConfigs) -> None:
    _, server_cfg = make_configs("hybrid")
    with hybridchan.Server(server_cfg) as server:
        threading.Thread(target=server.serve_forever, args=(lambda ch: None,), daemon=True).start()
        _tls_client(server.address)  # a real TLS ClientHello from the ssl module
        wait_for(lambda: len(server.errors) == 1, "the TLS client is reported")
        _http_client(server.address)
        wait_for(lambda: len(server.errors) == 2, "the HTTP client is reported")
    tls, http = server.errors
    assert isinstance(tls, ForeignProtocolError) and "look like TLS (16 03" in str(tls)
    assert isinstance(http, ForeignProtocolError) and "look like HTTP (47 45 54 20)" in str(http)
    assert "secret" not in str(http)


# -- TCP connect timeout -------------------------------------------------------------------


@contextmanager
def _full_backlog() -> Iterator[tuple[str, int]]:
    """A listener that never accepts, its queue full: the kernel drops further SYNs, so
    a connect neither succeeds nor fails until it times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()[:2]
    queued: list[socket.socket] = [listener]
    try:
        for _ in range(16):
            sock = socket.socket()
            queued.append(sock)
            sock.settimeout(0.2)
            try:
                sock.connect(address)
            except TimeoutError:
                break
        else:
            pytest.fail("the listen queue never filled up")
        yield address
    finally:
        for sock in queued:
            sock.close()


async def test_asyncio_connect_timeout(make_configs: MakeConfigs) -> None:
    """open_connection had no TCP connect timeout: this used to hang."""
    hasty_cfg, _ = make_configs("hybrid", handshake_timeout=0.3)
    client_cfg, _ = make_configs("hybrid")
    with _full_backlog() as (host, port):
        with pytest.raises(ConnectTimeout) as info:
            await hybridchan.open_connection(host, port, client_cfg, timeout=0.2)
        assert f"no TCP connection to {host}:{port} within 0.2 s" in str(info.value)
        with pytest.raises(ConnectTimeout) as info:  # default: config.handshake_timeout
            await hybridchan.open_connection(host, port, hasty_cfg)
        assert "within 0.3 s" in str(info.value) and isinstance(info.value, TimeoutError)


def test_sync_connect_timeout_is_the_same_typed_error(make_configs: MakeConfigs) -> None:
    client_cfg, _ = make_configs("hybrid")
    with _full_backlog() as address, pytest.raises(ConnectTimeout) as info:
        hybridchan.connect(address, client_cfg, timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert "check the address, or pass a larger timeout" in str(info.value)
