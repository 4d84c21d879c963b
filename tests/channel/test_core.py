"""The sans-IO connection core with the real handshake, in memory."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from hybridchan._connection import Connection
from hybridchan._events import ConnectionClosed, HandshakeCompleted, KeysUpdated
from hybridchan._record import ContentType
from hybridchan.config import RekeySchedule
from hybridchan.errors import (
    AlertDescription,
    AuthenticationError,
    BadRecordMAC,
    ChannelClosed,
    KeyUnavailableError,
    PolicyError,
    ProtocolError,
    QKDKeyError,
    TruncatedError,
)
from qkd.keysource import InMemoryKeyPool
from tests.channel._fake import FakeHandshake
from tests.channel._util import data_of, handshake_pair, pump, split_records

MakeConfigs = Callable[..., Any]


@pytest.mark.parametrize("policy", ["classical", "pqc", "hybrid", "hybrid+qkd", "qkd-only"])
def test_every_policy_handshakes_and_carries_data_both_ways(
    make_configs: MakeConfigs, policy: str
) -> None:
    client, server = handshake_pair(*make_configs(policy))
    assert client.session.policy == policy
    assert ("QKD" in client.session.components) == (policy in ("hybrid+qkd", "qkd-only"))
    client.send_data(b"ping")
    assert data_of(pump(client, server)) == b"ping"
    server.send_data(b"pong" * 10000)
    assert data_of(pump(server, client)) == b"pong" * 10000


def test_handshake_fed_byte_by_byte(make_configs: MakeConfigs) -> None:
    client = Connection(make_configs("hybrid")[0], client=True)
    server = Connection(make_configs("hybrid")[1], client=False)
    # same PKI fixture: the two calls share the CA, so the pair still matches
    client.start()
    events: list[Any] = []
    for _ in range(4):
        for src, dst in ((client, server), (server, client)):
            wire = bytes(src.data_to_send())
            for i in range(len(wire)):
                dst.receive_data(wire[i : i + 1])
                while (event := dst.next_event()) is not None:
                    events.append(event)
    assert sum(isinstance(e, HandshakeCompleted) for e in events) == 2


def test_events_before_a_forged_record_are_delivered_then_error(make_configs: MakeConfigs) -> None:
    client, server = handshake_pair(*make_configs("hybrid"))
    client.send_data(b"good")
    client.send_data(b"evil")
    records = split_records(bytes(client.data_to_send()))
    forged = bytearray(records[1])
    forged[-1] ^= 1
    server.receive_data(records[0] + bytes(forged))
    assert data_of([server.next_event()]) == b"good"
    with pytest.raises(BadRecordMAC) as info:
        server.next_event()
    assert getattr(info.value, "alert_sent", None) == AlertDescription.bad_record_mac
    # the alert reaches the client, which raises with alert_received set
    with pytest.raises(ProtocolError) as peer:
        pump(server, client)
    assert getattr(peer.value, "alert_received", None) == AlertDescription.bad_record_mac
    with pytest.raises(ChannelClosed):
        server.next_event()
    with pytest.raises(ChannelClosed):
        server.send_data(b"more")


def test_close_notify_and_truncation(make_configs: MakeConfigs) -> None:
    client, server = handshake_pair(*make_configs("hybrid"))
    client.send_data(b"bye")
    client.close()
    events = pump(client, server)
    assert data_of(events) == b"bye" and isinstance(events[-1], ConnectionClosed)
    server.receive_data(b"")
    assert server.next_event() is None  # clean EOF after close-notify
    with pytest.raises(ChannelClosed):
        client.send_data(b"x")

    client, server = handshake_pair(*make_configs("hybrid"))
    client.send_data(b"a" * 100)
    wire = bytes(client.data_to_send())
    server.receive_data(wire[:50])
    server.receive_data(b"")
    with pytest.raises(TruncatedError, match="middle of a record"):
        server.next_event()


def test_wrong_trust_anchor_fails_with_authentication_error_and_alert(
    make_configs: MakeConfigs,
) -> None:
    from dataclasses import replace

    from hybridchan.demo import EmbeddedPKI

    client_cfg, server_cfg = make_configs("hybrid")
    other = EmbeddedPKI.generate("ml-dsa-44")
    client_cfg = replace(
        client_cfg, handshake=replace(client_cfg.handshake, trust_store=(other.ca.certificate,))
    )
    client = Connection(client_cfg, client=True)
    server = Connection(server_cfg, client=False)
    client.start()
    pump(client, server)
    with pytest.raises(AuthenticationError) as info:
        pump(server, client)
    assert getattr(info.value, "alert_sent", None) is not None
    with pytest.raises(AuthenticationError) as peer:
        pump(client, server)
    assert getattr(peer.value, "alert_received", None) == getattr(info.value, "alert_sent", None)


def test_qkd_rekey_consumes_each_key_once_and_keeps_data_intact(make_configs: MakeConfigs) -> None:
    pool = InMemoryKeyPool(os.urandom)
    client, server = handshake_pair(
        *make_configs("hybrid+qkd", pool=pool, rekey=RekeySchedule(max_records=2))
    )
    data = os.urandom(300_000)
    client.send_data(data)
    events = pump(client, server)
    assert data_of(events) == data
    updates = [e for e in events if isinstance(e, KeysUpdated)]
    assert len(updates) >= 9 and all(e.qkd_key_id for e in updates)
    pump(server, client)  # the server's answer to the first request
    sent = [k for d, k in client.qkd_rekey_ids if d == "write"]
    received = [k for d, k in server.qkd_rekey_ids if d == "read"]
    assert sent == received and len(set(sent)) == len(sent)
    both = [k for _, k in client.qkd_rekey_ids]
    assert len(set(both)) == len(both) == client.write_generation + client.read_generation
    assert pool.issued == len(both) + len(client.session.qkd_key_ids)


def test_time_based_rekey_uses_the_injected_clock(make_configs: MakeConfigs) -> None:
    now = [0.0]
    configs = make_configs("hybrid", rekey=RekeySchedule(max_seconds=10.0))
    client, server = handshake_pair(*configs, clock=lambda: now[0])
    client.send_data(b"a")
    assert client.write_generation == 0
    now[0] = 10.5
    client.send_data(b"b")
    assert client.write_generation == 1
    events = pump(client, server)
    assert data_of(events) == b"ab"
    assert any(isinstance(e, KeysUpdated) and e.qkd_key_id is None for e in events)


def test_forced_update_and_request_confirms_peer(make_configs: MakeConfigs) -> None:
    client, server = handshake_pair(*make_configs("hybrid"))
    client.update_keys()
    pump(client, server)
    assert server.read_generation == 1 and server.write_generation == 1
    pump(server, client)
    assert client.read_generation == 1
    server.send_data(b"after")
    assert data_of(pump(server, client)) == b"after"


@pytest.mark.parametrize("mode", ["fail", "classical"])
def test_empty_qkd_source_during_rekey_follows_policy(make_configs: MakeConfigs, mode: str) -> None:
    pool = InMemoryKeyPool(os.urandom, capacity=1)  # enough for the handshake only
    client, server = handshake_pair(*make_configs("hybrid+qkd", pool=pool, on_qkd_unavailable=mode))
    if mode == "fail":
        with pytest.raises(KeyUnavailableError) as info:
            client.update_keys()
        assert getattr(info.value, "alert_sent", None) == AlertDescription.qkd_key_unavailable
        with pytest.raises(KeyUnavailableError) as peer:
            pump(client, server)
        assert getattr(peer.value, "alert_received", None) == AlertDescription.qkd_key_unavailable
    else:
        client.update_keys()
        client.send_data(b"still protected")
        events = pump(client, server)
        assert data_of(events) == b"still protected"
        assert client.qkd_fallbacks == 1 and server.qkd_fallbacks == 1


def test_update_without_qkd_is_refused_when_policy_requires_it(make_configs: MakeConfigs) -> None:
    pool = InMemoryKeyPool(os.urandom)
    cfg_c, cfg_s = make_configs("hybrid+qkd", pool=pool)
    from dataclasses import replace

    client, server = handshake_pair(replace(cfg_c, on_qkd_unavailable="classical"), cfg_s)
    pool.abort("test")
    client.update_keys()  # client falls back to a plain update...
    with pytest.raises(PolicyError) as info:  # ...which the fail-closed server refuses
        pump(client, server)
    assert getattr(info.value, "alert_sent", None) == AlertDescription.insufficient_security


def test_replayed_key_update_id_is_refused(make_configs: MakeConfigs) -> None:
    pool = InMemoryKeyPool(os.urandom)
    client, server = handshake_pair(*make_configs("hybrid+qkd", pool=pool))
    key = pool.source("sae-client").new_key("sae-server")
    server.session.qkd_source.get_key("sae-client", key.key_id)  # already consumed
    from handshake.messages import KeyUpdate

    client._writer.protect(
        ContentType.KEY_UPDATE, KeyUpdate(request_update=False, qkd_key_id=key.key_id).encode()
    )
    with pytest.raises(QKDKeyError) as info:
        pump(client, server)
    assert getattr(info.value, "alert_sent", None) == AlertDescription.qkd_key_unknown


def test_core_with_fake_handshake_rejects_data_before_handshake() -> None:
    from hybridchan.config import ChannelConfig

    cfg = ChannelConfig(handshake=object())
    server = Connection(cfg, client=False, handshake=FakeHandshake(client=False, random=os.urandom))
    server.receive_data(bytes([23, 0, 0, 3]) + b"abc")
    with pytest.raises(ProtocolError) as info:
        server.next_event()
    assert info.value.alert == AlertDescription.unexpected_message
    assert bytes(server.data_to_send()) == bytes([21, 0, 0, 2, 2, 10])  # plaintext fatal alert


def test_rekeys_automatically_before_the_aes_gcm_limit(make_configs: MakeConfigs) -> None:
    from hybridchan._record import AEAD_RECORD_LIMIT

    client_cfg, server_cfg = make_configs(
        "hybrid", rekey=RekeySchedule(max_bytes=None, max_seconds=None)
    )
    client, server = handshake_pair(client_cfg, server_cfg)
    assert client._writer.protection is not None and server._reader.protection is not None
    near = AEAD_RECORD_LIMIT // 2  # the sender's own threshold
    client._writer.protection.seq = server._reader.protection.seq = near
    client.send_data(b"x" * 100)
    assert client.write_generation == 1
    assert data_of(pump(client, server)) == b"x" * 100
    assert server.read_generation == 1


def test_record_size_option_limits_record_plaintext(make_configs: MakeConfigs) -> None:
    client, _server = handshake_pair(*make_configs("hybrid", record_size=1024))
    client.send_data(bytes(5000))
    records = split_records(bytes(client.data_to_send()))
    assert [len(r) - 4 - 16 for r in records] == [1024] * 4 + [904]


def test_key_update_storm_is_refused(make_configs: MakeConfigs) -> None:
    client, server = handshake_pair(*make_configs("hybrid"))
    for _ in range(33):
        client.update_keys(request_peer=False)
    with pytest.raises(ProtocolError, match="key updates") as info:
        pump(client, server)
    assert info.value.alert == AlertDescription.unexpected_message
    assert server.read_generation == 32
