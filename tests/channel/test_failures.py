"""Rekey under load, empty QKD sources, vanishing peers, timeouts, released resources."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import hybridchan
from hybridchan import RekeySchedule
from hybridchan.errors import (
    AlertDescription,
    AuthenticationError,
    BadRecordMAC,
    ChannelClosed,
    HandshakeTimeout,
    KeyUnavailableError,
    PeerAlertError,
    ProtocolError,
    TruncatedError,
    error_for_alert,
    error_name,
)
from qkd.keysource import InMemoryKeyPool
from tests.channel._util import Relay, raw_server

MakeConfigs = Callable[..., Any]


def test_rekey_under_load_both_directions_each_qkd_key_once(make_configs: MakeConfigs) -> None:
    pool = InMemoryKeyPool(os.urandom)
    schedule = RekeySchedule(max_bytes=64 << 10, max_seconds=None)
    client_cfg, server_cfg = make_configs("hybrid+qkd", pool=pool, rekey=schedule)
    a, b = socket.socketpair()
    up, down = os.urandom(4 << 20), os.urandom(3 << 20)
    box: dict[str, Any] = {}

    def server() -> None:
        ch = hybridchan.wrap_socket(b, server_cfg, server_side=True)
        sender = threading.Thread(target=ch.sendall, args=(down,))
        sender.start()
        box["up"] = hashlib.sha256(ch.recv_exactly(len(up))).digest()
        sender.join()
        box["conn"] = ch.connection
        ch.close()

    thread = threading.Thread(target=server)
    thread.start()
    ch = hybridchan.wrap_socket(a, client_cfg)
    sender = threading.Thread(target=ch.sendall, args=(up,))
    sender.start()
    assert hashlib.sha256(ch.recv_exactly(len(down))).digest() == hashlib.sha256(down).digest()
    sender.join()
    assert ch.recv(1) == b""
    ch.close()
    thread.join(30)
    assert box["up"] == hashlib.sha256(up).digest()
    client, server_conn = ch.connection, box["conn"]
    assert client.write_generation >= 60 and server_conn.write_generation >= 45
    c_write = [k for d, k in client.qkd_rekey_ids if d == "write"]
    s_read = [k for d, k in server_conn.qkd_rekey_ids if d == "read"]
    s_write = [k for d, k in server_conn.qkd_rekey_ids if d == "write"]
    c_read = [k for d, k in client.qkd_rekey_ids if d == "read"]
    # Each side reads every update that precedes the peer's last data byte (one per 64 KiB
    # sent); updates after it -- a trailing one, and answers to the peer's update requests
    # sent while it still writes -- may stay unread, in any number.
    assert s_read == c_write[: len(s_read)] and len(s_read) >= len(up) // (64 << 10) - 1
    assert c_read == s_write[: len(c_read)] and len(c_read) >= len(down) // (64 << 10) - 1
    every = c_write + s_write + list(client.session.qkd_key_ids)
    assert len(every) == len(set(every)) == pool.issued  # each key consumed exactly once


@pytest.mark.parametrize("mode", ["fail", "classical"])
def test_empty_qkd_source_during_rekey_over_tcp(make_configs: MakeConfigs, mode: str) -> None:
    pool = InMemoryKeyPool(os.urandom, capacity=3)
    schedule = RekeySchedule(max_bytes=32 << 10, max_seconds=None)
    client_cfg, server_cfg = make_configs(
        "hybrid+qkd", pool=pool, rekey=schedule, on_qkd_unavailable=mode
    )
    a, b = socket.socketpair()
    payload = os.urandom(256 << 10)
    box: dict[str, Any] = {}

    def server() -> None:
        try:
            with hybridchan.wrap_socket(b, server_cfg, server_side=True) as ch:
                box["data"] = ch.recv_exactly(len(payload))
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=server)
    thread.start()
    with hybridchan.wrap_socket(a, client_cfg) as ch:
        if mode == "fail":
            # both ends draw from the same link: whichever rekeys first meets the empty pool
            client_exc: BaseException | None = None
            try:
                ch.sendall(payload)
                ch.recv(1)
            except (KeyUnavailableError, OSError) as exc:
                client_exc = exc
            if not isinstance(client_exc, KeyUnavailableError):
                with pytest.raises(KeyUnavailableError) as info:
                    ch.recv(1)
                client_exc = info.value
        else:
            ch.sendall(payload)
            thread.join(10)
            assert ch.connection.qkd_fallbacks > 0
    thread.join(10)
    if mode == "fail":
        server_exc = box["error"]
        assert isinstance(server_exc, KeyUnavailableError)
        qkd = AlertDescription.qkd_key_unavailable
        for err in (client_exc, server_exc):
            assert qkd in (getattr(err, "alert_sent", None), getattr(err, "alert_received", None))
    else:
        assert box["data"] == payload


def test_peer_vanishes_mid_handshake(make_configs: MakeConfigs) -> None:
    client_cfg, _ = make_configs("hybrid")
    listener, thread = raw_server(lambda conn: conn.recv(65536))  # read ClientHello, then vanish
    with listener, pytest.raises((TruncatedError, ChannelClosed)) as info:
        hybridchan.connect(listener.getsockname()[:2], client_cfg)
    assert "handshake" in str(info.value)
    thread.join(5)


def test_peer_vanishes_mid_record(make_configs: MakeConfigs) -> None:
    client_cfg, server_cfg = make_configs("hybrid")

    def cut(direction: str, index: int, record: bytes) -> Any:
        if direction == "s2c" and record[0] == 23:
            return [record[: len(record) // 2], "close"]  # half a record, then gone
        return None

    with hybridchan.Server(server_cfg) as server:
        threading.Thread(
            target=server.serve_forever, args=(lambda ch: ch.sendall(b"x" * 5000),), daemon=True
        ).start()
        relay = Relay(server.address, cut)
        try:
            with hybridchan.connect(relay.address, client_cfg) as ch:
                ch.settimeout(5)
                with pytest.raises(TruncatedError, match="middle of a record"):
                    ch.recv(10000)
        finally:
            relay.close()


def test_handshake_timeout_fires_and_closes_socket(make_configs: MakeConfigs) -> None:
    client_cfg, _ = make_configs("hybrid", handshake_timeout=0.3)
    stop = threading.Event()
    listener, thread = raw_server(lambda conn: stop.wait(5))  # accepts, never answers
    start = time.monotonic()
    with listener, pytest.raises(HandshakeTimeout) as info:
        hybridchan.connect(listener.getsockname()[:2], client_cfg)
    assert isinstance(info.value, TimeoutError)
    assert time.monotonic() - start < 2
    stop.set()
    thread.join(5)


def test_recv_timeout_fires_and_channel_stays_usable(make_configs: MakeConfigs) -> None:
    client_cfg, server_cfg = make_configs("hybrid")
    a, b = socket.socketpair()
    done = threading.Event()

    def server() -> None:
        with hybridchan.wrap_socket(b, server_cfg, server_side=True) as ch:
            done.wait(5)
            ch.sendall(b"late")

    thread = threading.Thread(target=server)
    thread.start()
    with hybridchan.wrap_socket(a, client_cfg) as ch:
        ch.settimeout(0.1)
        with pytest.raises(TimeoutError):
            ch.recv(10)
        done.set()
        ch.settimeout(5)
        assert ch.recv(10) == b"late"
    thread.join(5)


async def test_asyncio_handshake_timeout_and_tampering(make_configs: MakeConfigs) -> None:
    hasty_cfg, _ = make_configs("hybrid", handshake_timeout=0.3)
    client_cfg, server_cfg = make_configs("hybrid")

    release = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    plain = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = plain.sockets[0].getsockname()[1]
    with pytest.raises(HandshakeTimeout):
        await hybridchan.open_connection("127.0.0.1", port, hasty_cfg)
    release.set()
    plain.close()
    await plain.wait_closed()

    errors: list[BaseException] = []
    got: list[bytes] = []

    async def handler(reader: Any, writer: Any) -> None:
        try:
            while data := await reader.read(100):
                got.append(data)
        except Exception as exc:
            errors.append(exc)
        writer.close()

    server = await hybridchan.start_server(handler, "127.0.0.1", 0, server_cfg)
    address = server.sockets[0].getsockname()[:2]

    seen = [0]

    def flip(direction: str, index: int, record: bytes) -> Any:
        if direction == "c2s" and record[0] == 23:
            seen[0] += 1
            if seen[0] == 2:
                return [record[:-1] + bytes([record[-1] ^ 1])]
        return None

    relay = Relay(address, flip)
    host, port = relay.address
    reader, writer = await hybridchan.open_connection(host, port, client_cfg)
    writer.write(b"ok")
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(b"!bad")
    await writer.drain()
    with pytest.raises((ProtocolError, OSError, ChannelClosed)) as info:
        await asyncio.wait_for(reader.read(), 5)
    if isinstance(info.value, ProtocolError):
        assert getattr(info.value, "alert_received", None) == AlertDescription.bad_record_mac
    for _ in range(50):
        if errors:
            break
        await asyncio.sleep(0.02)
    assert b"".join(got) == b"ok"
    assert (
        isinstance(errors[0], BadRecordMAC)
        and getattr(errors[0], "alert_sent", None) == AlertDescription.bad_record_mac
    )
    writer.close()
    relay.close()
    server.close()
    await server.wait_closed()


def test_resources_released(make_configs: MakeConfigs) -> None:
    client_cfg, server_cfg = make_configs("hybrid")
    threads_before = threading.active_count()
    conns: list[Any] = []
    with hybridchan.Server(server_cfg) as server:
        thread = threading.Thread(
            target=server.serve_forever, args=(lambda ch: ch.sendall(ch.recv(10)),), daemon=True
        )
        thread.start()
        for _ in range(5):
            with hybridchan.connect(server.address, client_cfg) as ch:
                ch.sendall(b"ping")
                assert ch.recv(10) == b"ping"
                conns.append(ch)
    thread.join(5)
    assert all(ch.closed and ch.fileno() == -1 for ch in conns)
    time.sleep(0.1)
    assert threading.active_count() <= threads_before
    import weakref

    refs = [weakref.ref(ch.connection) for ch in conns]
    del ch  # the loop variable still holds the last channel
    conns.clear()
    gc.collect()
    assert all(r() is None for r in refs)  # closed channels free their cores


async def test_asyncio_empty_qkd_source_fails_closed_with_alert(make_configs: MakeConfigs) -> None:
    pool = InMemoryKeyPool(os.urandom, capacity=1)  # the handshake takes the only key
    client_cfg, server_cfg = make_configs("hybrid+qkd", pool=pool)
    errors: list[BaseException] = []

    async def handler(reader: Any, writer: Any) -> None:
        try:
            await reader.read()
        except Exception as exc:
            errors.append(exc)
        writer.close()

    server = await hybridchan.start_server(handler, "127.0.0.1", 0, server_cfg)
    port = server.sockets[0].getsockname()[1]
    _reader, writer = await hybridchan.open_connection("127.0.0.1", port, client_cfg)
    with pytest.raises(KeyUnavailableError):
        writer.update_keys()
    for _ in range(100):
        if errors:
            break
        await asyncio.sleep(0.01)
    assert getattr(errors[0], "alert_received", None) == AlertDescription.qkd_key_unavailable
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize(
    ("alert", "kind", "base"),
    [
        (AlertDescription.unknown_ca, "AuthenticationError", AuthenticationError),
        (AlertDescription.decode_error, "ProtocolError", ProtocolError),
        (AlertDescription.qkd_key_unavailable, "KeyUnavailableError", KeyUnavailableError),
        (AlertDescription.handshake_failure, "PeerAlertError", PeerAlertError),
    ],
)
def test_peer_alert_errors_are_named_by_their_public_kind(
    alert: AlertDescription, kind: str, base: type[Exception]
) -> None:
    """Logs and CLI messages name the public class a user can catch, never a private one."""
    exc = error_for_alert(alert)
    assert isinstance(exc, base) and isinstance(exc, PeerAlertError)
    assert error_name(exc) == kind
    assert error_name(ValueError("x")) == "ValueError"
