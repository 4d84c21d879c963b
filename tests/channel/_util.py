"""Helpers shared by the channel tests: in-memory pairs and a record-parsing relay."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from hybridchan._connection import Connection
from hybridchan._events import DataReceived
from hybridchan.config import ChannelConfig

HEADER = struct.Struct(">BBH")


def pump(src: Connection, dst: Connection) -> list[Any]:
    """Move src's output to dst and return dst's events."""
    data = src.data_to_send()
    if data:
        dst.receive_data(data)
    events = []
    while (event := dst.next_event()) is not None:
        events.append(event)
    return events


def handshake_pair(
    client_cfg: ChannelConfig, server_cfg: ChannelConfig, **options: Any
) -> tuple[Connection, Connection]:
    """Two connected cores; ``options`` (``clock=...``) go to both."""
    client = Connection(client_cfg, client=True, **options)
    server = Connection(server_cfg, client=False, **options)
    client.start()
    for _ in range(4):
        pump(client, server)
        pump(server, client)
    assert client.established and server.established
    return client, server


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.002)


def raw_server(
    behaviour: Callable[[socket.socket], object],
) -> tuple[socket.socket, threading.Thread]:
    """A plain TCP listener whose one accepted connection gets ``behaviour(conn)`` in a
    thread, then closes: stands in for a peer that is not a hybridchan endpoint."""
    listener = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            behaviour(conn)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener, thread


def data_of(events: list[Any]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DataReceived))


def split_records(data: bytes) -> list[bytes]:
    """Split a byte stream into whole records (trailing partial record dropped)."""
    out, pos = [], 0
    while pos + 4 <= len(data):
        length = HEADER.unpack_from(data, pos)[2]
        if pos + 4 + length > len(data):
            break
        out.append(data[pos : pos + 4 + length])
        pos += 4 + length
    return out


class Relay:
    """A TCP man-in-the-middle that forwards whole records and lets a test tamper with them.

    ``tamper(direction, index, record) -> list[bytes] | None`` is called for every
    record (direction ``"c2s"`` or ``"s2c"``, index counted per direction); return the
    records to forward instead (``[]`` drops it), or ``None`` to forward unchanged.
    Returning the string ``"close"`` (alone or as the last list item) closes both
    connections (truncation).
    """

    def __init__(self, target: tuple[str, int], tamper: Callable[..., Any]) -> None:
        self.target = target
        self.tamper = tamper
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(self.target)
        self.socks += [client, server]
        for src, dst, name in ((client, server, "c2s"), (server, client, "s2c")):
            thread = threading.Thread(target=self._forward, args=(src, dst, name), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _forward(self, src: socket.socket, dst: socket.socket, name: str) -> None:
        buf = bytearray()
        index = 0
        try:
            while chunk := src.recv(1 << 16):
                buf += chunk
                while len(buf) >= 4:
                    length = HEADER.unpack_from(buf, 0)[2]
                    if len(buf) < 4 + length:
                        break
                    record = bytes(buf[: 4 + length])
                    del buf[: 4 + length]
                    result = self.tamper(name, index, record)
                    index += 1
                    if result == "close":
                        self.close()
                        return
                    for out in [record] if result is None else result:
                        if out == "close":  # e.g. half a record, then the connection dies
                            self.close()
                            return
                        dst.sendall(out)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        for sock in [self.listener, *self.socks]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
