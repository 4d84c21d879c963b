"""End to end over loopback TCP and socketpairs: sync, asyncio, mixed, every policy."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest

import hybridchan
from hybridchan import Channel

MakeConfigs = Callable[..., Any]
BIG = 16 << 20


def _echo_handler(channel: Channel) -> None:
    while data := channel.recv(1 << 18):
        channel.sendall(data)


async def _aecho(reader: asyncio.StreamReader, writer: hybridchan.ChannelWriter) -> None:
    while data := await reader.read(1 << 18):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.mark.parametrize("policy", ["classical", "pqc", "hybrid", "hybrid+qkd", "qkd-only"])
def test_sync_echo_over_tcp_every_policy(make_configs: MakeConfigs, policy: str) -> None:
    client_cfg, server_cfg = make_configs(policy)
    with hybridchan.Server(server_cfg) as server:
        thread = threading.Thread(target=server.serve_forever, args=(_echo_handler,), daemon=True)
        thread.start()
        with hybridchan.connect(server.address, client_cfg) as channel:
            assert channel.session.policy == policy
            assert channel.peer_identity
            channel.sendall(b"hello " + policy.encode())
            assert channel.recv_exactly(6 + len(policy)) == b"hello " + policy.encode()
    thread.join(5)
    assert not thread.is_alive() and server.errors == []


def test_sync_16mb_both_directions_over_socketpair_checked_by_hash(
    make_configs: MakeConfigs,
) -> None:
    client_cfg, server_cfg = make_configs("hybrid+qkd")
    a, b = socket.socketpair()
    up, down = os.urandom(BIG), os.urandom(BIG // 4)
    result: dict[str, Any] = {}

    def server() -> None:
        with hybridchan.wrap_socket(b, server_cfg, server_side=True) as ch:
            sender = threading.Thread(target=ch.sendall, args=(down,))
            sender.start()
            result["up"] = hashlib.sha256(ch.recv_exactly(BIG)).digest()
            sender.join()

    thread = threading.Thread(target=server)
    thread.start()
    with hybridchan.wrap_socket(a, client_cfg) as ch:
        sender = threading.Thread(target=ch.sendall, args=(up,))
        sender.start()
        got_down = ch.recv_exactly(len(down))
        sender.join()
        assert ch.recv(1) == b""  # the server's close-notify
    thread.join(30)
    assert result["up"] == hashlib.sha256(up).digest()
    assert hashlib.sha256(got_down).digest() == hashlib.sha256(down).digest()


async def test_asyncio_echo_and_stream_api(make_configs: MakeConfigs) -> None:
    client_cfg, server_cfg = make_configs("hybrid")
    server = await hybridchan.start_server(_aecho, "127.0.0.1", 0, server_cfg)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await hybridchan.open_connection("127.0.0.1", port, client_cfg)
    assert writer.get_extra_info("session").policy == "hybrid"
    assert writer.get_extra_info("peername")[1] == port
    writer.write(b"line one\nline two\nrest")
    await writer.drain()
    assert await reader.readline() == b"line one\n"
    assert await reader.readuntil(b"\n") == b"line two\n"
    assert await reader.readexactly(4) == b"rest"
    writer.close()
    await writer.wait_closed()
    assert await reader.read() == b""
    server.close()
    await server.wait_closed()


def _sync_client(address: tuple[str, int], cfg: Any, payload: bytes, out: dict[str, bytes]) -> None:
    with hybridchan.connect(address, cfg) as ch:
        sender = threading.Thread(target=ch.sendall, args=(payload,))
        sender.start()
        out["echo"] = ch.recv_exactly(len(payload))
        sender.join()


async def test_sync_client_to_asyncio_server_16mb(make_configs: MakeConfigs) -> None:
    client_cfg, server_cfg = make_configs("hybrid+qkd")
    server = await hybridchan.start_server(_aecho, "127.0.0.1", 0, server_cfg)
    address = server.sockets[0].getsockname()[:2]
    payload = os.urandom(BIG)
    out: dict[str, bytes] = {}
    await asyncio.to_thread(_sync_client, address, client_cfg, payload, out)
    assert hashlib.sha256(out["echo"]).digest() == hashlib.sha256(payload).digest()
    server.close()
    await server.wait_closed()


async def test_asyncio_client_to_sync_server(make_configs: MakeConfigs) -> None:
    client_cfg, server_cfg = make_configs("hybrid+qkd")
    with hybridchan.Server(server_cfg) as server:
        thread = threading.Thread(target=server.serve_forever, args=(_echo_handler,), daemon=True)
        thread.start()
        reader, writer = await hybridchan.open_connection(*server.address, client_cfg)
        payload = os.urandom(2 << 20)

        async def send() -> None:
            for i in range(0, len(payload), 1 << 16):
                writer.write(payload[i : i + (1 << 16)])
                await writer.drain()

        task = asyncio.create_task(send())
        echoed = await reader.readexactly(len(payload))
        await task
        assert echoed == payload
        assert "QKD" in writer.session.components
        writer.close()
        await writer.wait_closed()
    assert server.errors == []


def test_makefile_and_recv_into(make_configs: MakeConfigs) -> None:
    client_cfg, server_cfg = make_configs("hybrid")
    a, b = socket.socketpair()
    thread = threading.Thread(
        target=lambda: _echo_handler(hybridchan.wrap_socket(b, server_cfg, server_side=True))
    )
    thread.start()
    with hybridchan.wrap_socket(a, client_cfg) as ch:
        f = ch.makefile("rwb")
        f.write(b"first line\nsecond\n")
        f.flush()
        assert f.readline() == b"first line\n"
        assert f.readline() == b"second\n"
        ch.sendall(b"second\n")
        buf = bytearray(7)
        assert ch.recv_into(buf) == 7 and bytes(buf) == b"second\n"
        f.close()
        ch.settimeout(5)
        assert ch.gettimeout() == 5
    thread.join(5)
    assert ch.closed and ch.fileno() == -1


def test_demo_function_runs_hybrid_qkd_echo_with_qkd_rekey() -> None:
    from hybridchan.demo import run_echo_demo

    lines: list[str] = []
    result = run_echo_demo(bulk_bytes=1 << 16, echo=lines.append)
    assert result["components"] == ("X25519", "ML-KEM-768", "QKD")
    assert result["bulk_intact"] and result["rekey_qkd_key_ids"]
    ids = [*result["handshake_qkd_key_ids"], *result["rekey_qkd_key_ids"]]
    assert len(set(ids)) == len(ids) <= result["qkd_keys_issued"]
    text = "\n".join(lines)
    assert "X25519 + ML-KEM-768 + QKD" in text and result["rekey_qkd_key_ids"][0] in text


def test_recv_exactly_reads_across_records_and_reports_an_early_close(
    make_configs: MakeConfigs,
) -> None:
    client_cfg, server_cfg = make_configs("hybrid")

    def three_records_then_close(channel: Channel) -> None:
        for part in (b"ab", b"cde", b"f"):
            channel.sendall(part)
        channel.close()

    with hybridchan.Server(server_cfg) as server:
        thread = threading.Thread(
            target=server.serve_forever, args=(three_records_then_close,), daemon=True
        )
        thread.start()
        with hybridchan.connect(server.address, client_cfg) as channel:
            assert channel.recv_exactly(4) == b"abcd"
            with pytest.raises(hybridchan.ChannelClosed, match="after 2 of the 3 bytes"):
                channel.recv_exactly(3)
