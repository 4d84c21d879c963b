"""A client that fails during the handshake still tells the server why."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

import hybridchan
from hybridchan._connection import Connection
from hybridchan.demo import embedded_configs
from hybridchan.errors import PeerAlertError, ProtocolError
from qkd.keysource import InMemoryKeyPool
from tests.channel._util import pump


def test_empty_qkd_pool_fails_closed_and_the_server_hears_alert_220() -> None:
    pool = InMemoryKeyPool(os.urandom, capacity=0)
    client_cfg, server_cfg = embedded_configs("hybrid+qkd", pool=pool, handshake_timeout=10)
    errors: list[BaseException] = []
    with hybridchan.Server(server_cfg) as server:

        def accept() -> None:
            try:
                server.accept()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        with pytest.raises(hybridchan.KeyUnavailableError, match="pool empty") as info:
            hybridchan.connect(server.address, client_cfg)
        thread.join(10)
    # alert_sent is set on the handshake error by hybridchan.errors.annotate, not declared.
    assert getattr(info.value, "alert_sent", None) == 220
    assert len(errors) == 1
    assert getattr(errors[0], "alert_received", None) == 220, repr(errors[0])


def test_client_failing_on_the_server_hello_is_heard_by_the_server(
    make_configs: Callable[..., Any],
) -> None:
    """The client has no handshake keys yet, so its alert is plaintext in the INITIAL
    epoch while the server already reads the HANDSHAKE epoch: the server must still
    report the client's alert, not an unexpected record of its own."""
    client_cfg, server_cfg = make_configs("hybrid")
    client, server = Connection(client_cfg, client=True), Connection(server_cfg, client=False)
    client.start()
    pump(client, server)
    flight = bytearray(server.data_to_send())
    hello_end = 4 + int.from_bytes(flight[2:4], "big")
    flight[hello_end - 1] ^= 0xFF  # corrupt the (plaintext) ServerHello
    client.receive_data(bytes(flight))
    with pytest.raises(ProtocolError) as info:
        while client.next_event() is not None:
            pass
    sent = getattr(info.value, "alert_sent", None)
    alert = bytes(client.data_to_send())
    assert sent is not None and alert == bytes([21, 0, 0, 2, 2, sent])  # plaintext, INITIAL
    server.receive_data(alert)
    with pytest.raises(PeerAlertError) as peer:
        server.next_event()
    assert getattr(peer.value, "alert_received", None) == sent
    assert getattr(peer.value, "alert_sent", "missing") is None  # no answer to an alert
