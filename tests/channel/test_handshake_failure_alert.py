"""A client that fails before its ClientHello still tells the server why (alert 220)."""

from __future__ import annotations

import os
import threading

import pytest

import hybridchan
from hybridchan.demo import embedded_configs
from qkd.keysource import InMemoryKeyPool


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
    assert info.value.alert_sent == 220
    assert len(errors) == 1
    assert getattr(errors[0], "alert_received", None) == 220, repr(errors[0])
