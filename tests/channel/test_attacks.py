"""In-flight attacks through a relay: detected, closed with the right alert, nothing forged delivered."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

import hybridchan
from hybridchan.errors import AlertDescription, BadRecordMAC, ProtocolError, TruncatedError
from tests.channel._util import Relay

MakeConfigs = Callable[..., Any]
MESSAGES = [f"message {i:02d};".encode() for i in range(12)]
TARGET = 5  # tamper with the 5th application-data record from the client


def _flip(record: bytes) -> list[bytes]:
    out = bytearray(record)
    out[len(out) // 2] ^= 0x20
    return [bytes(out)]


def _attack(kind: str) -> Callable[..., Any]:
    held: list[bytes] = []
    seen = {"data": 0}

    def tamper(direction: str, index: int, record: bytes) -> Any:
        if direction != "c2s" or record[0] != 23:
            return None
        seen["data"] += 1
        n = seen["data"]
        if kind == "reorder" and n == TARGET:
            held.append(record)
            return []
        if kind == "reorder" and n == TARGET + 1:
            return [record, held.pop()]
        if n != TARGET:
            return None
        return {
            "flip": lambda: _flip(record),
            "drop": lambda: [],
            "duplicate": lambda: [record, record],
            "inject": lambda: [record[:4] + os.urandom(len(record) - 4), record],
            "inject-epoch": lambda: [bytes([23, 1]) + record[2:]],
            "truncate": lambda: "close",
        }[kind]()

    return tamper


@pytest.mark.parametrize(
    ("kind", "alert"),
    [
        ("flip", AlertDescription.bad_record_mac),
        ("drop", AlertDescription.bad_record_mac),
        ("duplicate", AlertDescription.bad_record_mac),
        ("reorder", AlertDescription.bad_record_mac),
        ("inject", AlertDescription.bad_record_mac),
        ("inject-epoch", AlertDescription.unexpected_message),
        ("truncate", None),
    ],
)
def test_in_flight_attack_is_detected(make_configs: MakeConfigs, kind: str, alert: Any) -> None:
    client_cfg, server_cfg = make_configs("hybrid+qkd")
    received: list[bytes] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def handler(channel: hybridchan.Channel) -> None:
        try:
            while data := channel.recv(4096):
                received.append(data)
        except Exception as exc:
            failure.append(exc)
        finally:
            done.set()

    with hybridchan.Server(server_cfg) as server:
        threading.Thread(target=server.serve_forever, args=(handler,), daemon=True).start()
        relay = Relay(server.address, _attack(kind))
        try:
            with hybridchan.connect(relay.address, client_cfg) as channel:
                channel.settimeout(5)
                try:
                    for message in MESSAGES:
                        channel.sendall(message)  # one record each
                except OSError:
                    pass  # the server already closed the channel
                assert done.wait(10)
                if alert is not None:
                    # the server's alert reaches the client unless the relay/TCP reset beat it
                    with pytest.raises((ProtocolError, OSError)) as peer:
                        channel.recv(10)
                    if isinstance(peer.value, ProtocolError):
                        assert getattr(peer.value, "alert_received", None) == alert
        finally:
            relay.close()
    assert len(failure) == 1, failure
    exc = failure[0]
    if alert is None:
        assert isinstance(exc, TruncatedError)
    else:
        assert isinstance(exc, ProtocolError) and exc.alert == alert
        assert getattr(exc, "alert_sent", None) == alert
        if alert == AlertDescription.bad_record_mac:
            assert isinstance(exc, BadRecordMAC)
    # exactly the authentic records before the attack reached the application, unmodified
    # (a duplicate's first copy is authentic)
    delivered = TARGET if kind == "duplicate" else TARGET - 1
    assert b"".join(received) == b"".join(MESSAGES[:delivered])
