"""Closing from another thread: ``Channel.close()`` during a send, ``Server.shutdown``."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import hybridchan
from hybridchan.errors import ChannelClosed
from tests.channel._util import wait_for

MakeConfigs = Callable[..., Any]


class _WatchedLock:
    """Wraps a channel's send lock; ``waiting`` is set when the thread named ``closer``
    starts a blocking acquire of it (that is, close() waits for the send)."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.waiting = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking and threading.current_thread().name == "closer":
            self.waiting.set()
        return bool(self._lock.acquire(blocking, timeout))

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return bool(self._lock.locked())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_all(channel: hybridchan.Channel, box: dict[str, Any]) -> None:
    received = bytearray()
    try:
        while chunk := channel.recv(1 << 16):
            received += chunk
    except Exception as exc:
        box["error"] = exc
    box["received"] = bytes(received)


def _send_in_background(
    channel: hybridchan.Channel, data: bytes, box: dict[str, Any]
) -> threading.Thread:
    """Start ``channel.sendall(data)`` in a thread; its error goes to ``box["send_error"]``."""

    def send() -> None:
        try:
            channel.sendall(data)
        except Exception as exc:
            box["send_error"] = exc

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def test_close_during_a_send_on_another_thread_sends_close_notify_after_it(
    make_configs: MakeConfigs,
) -> None:
    """close() used to drop the close-notify when another thread was sending: the peer
    saw a TruncatedError instead of an orderly end."""
    client_cfg, server_cfg = make_configs("hybrid")
    a, b = socket.socketpair()  # small buffers: the send below blocks until the peer reads
    box: dict[str, Any] = {}
    start_reading = threading.Event()

    def peer() -> None:
        with hybridchan.wrap_socket(b, server_cfg, server_side=True) as channel:
            start_reading.wait(10)
            _read_all(channel, box)

    peer_thread = threading.Thread(target=peer)
    peer_thread.start()
    channel = hybridchan.wrap_socket(a, client_cfg)
    send_lock = channel._send_lock = _WatchedLock(channel._send_lock)  # type: ignore[assignment]
    data = os.urandom(8 << 20)
    sender = _send_in_background(channel, data, box)
    # The send holds the writer and cannot finish: the peer is not reading yet.
    wait_for(send_lock.locked, "the send is under way")
    closer = threading.Thread(target=channel.close, name="closer")
    closer.start()
    # Read once close() waits for the send, or (if it does not wait) once it returned.
    wait_for(lambda: send_lock.waiting.is_set() or not closer.is_alive(), "close() waits")
    start_reading.set()
    for thread in (closer, sender, peer_thread):
        thread.join(20)
        assert not thread.is_alive()
    assert "error" not in box, box.get("error")  # close-notify, not a truncation
    assert 0 < len(box["received"]) < len(data) and data.startswith(box["received"])
    assert isinstance(box["send_error"], ChannelClosed)


def test_close_does_not_wait_forever_for_a_send_the_peer_never_reads(
    make_configs: MakeConfigs,
) -> None:
    client_cfg, server_cfg = make_configs("hybrid")
    a, b = socket.socketpair()
    release = threading.Event()

    def peer() -> None:  # handshakes, then never reads
        with hybridchan.wrap_socket(b, server_cfg, server_side=True):
            release.wait(20)

    peer_thread = threading.Thread(target=peer)
    peer_thread.start()
    channel = hybridchan.wrap_socket(a, client_cfg)
    box: dict[str, Any] = {}
    sender = _send_in_background(channel, bytes(8 << 20), box)
    wait_for(channel._send_lock.locked, "the send is under way")
    # In a thread, so that a close() that waits forever fails the test instead of hanging it.
    closer = threading.Thread(target=channel.close, daemon=True)
    closer.start()
    try:
        for thread in (closer, sender):  # close() gives up on the close-notify after 2 s
            thread.join(10)
            assert not thread.is_alive()
        assert isinstance(box["send_error"], OSError | ChannelClosed)
    finally:
        release.set()
        peer_thread.join(10)


def _echo(channel: hybridchan.Channel) -> None:
    while data := channel.recv(1 << 16):
        channel.sendall(data)


def test_shutdown_ends_open_channels_with_close_notify_and_cuts_handshakes(
    make_configs: MakeConfigs,
) -> None:
    """shutdown() used to wait up to 5 s for each handler thread (a handler blocked in
    recv never ended) and left clients without a close-notify."""
    client_cfg, server_cfg = make_configs("hybrid")
    server = hybridchan.Server(server_cfg)
    threading.Thread(target=server.serve_forever, args=(_echo,), daemon=True).start()
    stalled = socket.create_connection(server.address)  # half a record, then silence
    stalled.sendall(b"\x16\x00")
    clients = [hybridchan.connect(server.address, client_cfg) for _ in range(3)]
    try:
        for client in clients:
            client.settimeout(10)
            client.sendall(b"ping")
            assert client.recv_exactly(4) == b"ping"  # its handler is blocked in recv now
        server.shutdown(join_timeout=3.0)  # 3 s in all, not per thread
        assert not [t for t in server._threads if t.is_alive()]
        for client in clients:
            assert client.recv(10) == b""  # close-notify: an orderly end
        stalled.settimeout(10)
        assert stalled.recv(10) == b""  # the cut handshake
        assert server.errors == []  # cut by our shutdown: not the peers' failures
    finally:
        stalled.close()
        for client in clients:
            client.close()
