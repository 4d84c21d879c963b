"""Active attacks fail, each with the exact alert, on the side that must notice."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

import kem
from handshake import AlertDescription as A
from handshake import Epoch, ExternalPSK, HandshakeError
from handshake._server import ExpectClientHello
from handshake.messages import (
    ClientHello,
    Finished,
    KeyShare,
    Message,
    MessageBuffer,
    NamedGroup,
    QKDKeyRef,
    ServerHello,
    frame,
)
from handshake.pki import Credential, issue_certificate
from qkd.keysource import InMemoryKeyPool, QKDKey
from tests.handshake.helpers import (
    CLIENT_SAE,
    NOW,
    NOW_DT,
    SERVER_NAME,
    SERVER_SAE,
    DetRandom,
    PairResult,
    assert_same_keys,
    configs,
    expect_alert,
    make_pair,
    pki,
    run_pair,
    wrong_key,
)


def messages(data: bytes) -> list[tuple[Message, bytes]]:
    buf = MessageBuffer()
    buf.feed(data)
    out = []
    while (item := buf.pop()) is not None:
        out.append(item)
    return out


def rewrite(kind: type, fn: Callable[[Any], Any]):
    """A tamper function applying ``fn`` to every message of type ``kind`` on the wire."""

    def tamper(direction: str, epoch: Epoch, data: bytes) -> bytes:
        out = b""
        for msg, raw in messages(data):
            out += frame(fn(msg)) if isinstance(msg, kind) else raw
        return out

    return tamper


def without_group(group: int):
    def strip(msg: Any) -> Any:
        shares = tuple(s for s in msg.key_shares if s.group != group)
        return dataclasses.replace(msg, key_shares=shares)

    return strip


# -- downgrade: stripping components ------------------------------------------------------


def test_strip_mlkem_from_offer_is_refused_by_hybrid_server() -> None:
    result = run_pair(
        *configs("hybrid", "certificate"),
        tamper=rewrite(ClientHello, without_group(NamedGroup.ML_KEM_768)),
    )
    expect_alert(result, "server", A.insufficient_security, "post-quantum")


def test_strip_mlkem_from_server_hello_is_refused_by_client() -> None:
    client, server = configs("hybrid", "certificate")
    server = dataclasses.replace(server, policy="classical", kems=("X25519",))
    result = run_pair(client, server)
    expect_alert(result, "client", A.insufficient_security, "downgrade")
    result = run_pair(
        *configs("hybrid", "certificate"),
        tamper=rewrite(ServerHello, without_group(NamedGroup.ML_KEM_768)),
    )
    expect_alert(result, "client", A.insufficient_security)


def test_strip_preferred_option_breaks_certificate_verify() -> None:
    """Both policies are still met, but the transcript differs: CertificateVerify fails."""
    all_kems = ("X25519", "ML-KEM-768", "ML-KEM-1024")
    client, server = configs("hybrid", "certificate", kems=all_kems)
    server = dataclasses.replace(server, kems=("X25519", "ML-KEM-1024", "ML-KEM-768"))
    assert_same_keys(run_pair(client, server))
    result = run_pair(
        client, server, tamper=rewrite(ClientHello, without_group(NamedGroup.ML_KEM_1024))
    )
    expect_alert(result, "client", A.decrypt_error, "CertificateVerify")


def test_strip_preferred_option_breaks_psk_binder() -> None:
    client, server = configs("hybrid", "psk", kems=("X25519", "ML-KEM-768", "ML-KEM-1024"))
    result = run_pair(
        client, server, tamper=rewrite(ClientHello, without_group(NamedGroup.ML_KEM_768))
    )
    expect_alert(result, "server", A.decrypt_error, "binder")


def test_strip_qkd_offer() -> None:
    strip_qkd = rewrite(ClientHello, lambda m: dataclasses.replace(m, qkd_key=None))
    result = run_pair(*configs("hybrid+qkd", "certificate"), tamper=strip_qkd)
    expect_alert(result, "server", A.insufficient_security, "requires a QKD key")
    # Even when both sides would accept the stated fallback, the stripped offer is caught.
    result = run_pair(*configs("hybrid+qkd", "certificate", allow_fallback=True), tamper=strip_qkd)
    expect_alert(result, "client", A.decrypt_error, "CertificateVerify")


def test_server_hello_declining_qkd_is_refused_without_fallback() -> None:
    decline = rewrite(ServerHello, lambda m: dataclasses.replace(m, qkd_accepted=False))
    result = run_pair(*configs("hybrid+qkd", "certificate"), tamper=decline)
    expect_alert(result, "client", A.insufficient_security, "did not accept the QKD key")


# -- swapped key shares -------------------------------------------------------------------


def test_swapped_client_x25519_share() -> None:
    attacker = kem.get_kem("X25519").generate_keypair()

    def swap(msg: ClientHello) -> ClientHello:
        shares = tuple(
            KeyShare(group=s.group, key_exchange=attacker.public)
            if s.group == NamedGroup.X25519
            else s
            for s in msg.key_shares
        )
        return dataclasses.replace(msg, key_shares=shares)

    result = run_pair(*configs("hybrid", "certificate"), tamper=rewrite(ClientHello, swap))
    expect_alert(result, "client", A.decrypt_error, "CertificateVerify")


def test_swapped_server_mlkem_ciphertext() -> None:
    def swap(msg: ServerHello) -> ServerHello:
        shares = []
        for s in msg.key_shares:
            if s.group == NamedGroup.ML_KEM_768:
                s = KeyShare(group=s.group, key_exchange=bytes(len(s.key_exchange)))
            shares.append(s)
        return dataclasses.replace(msg, key_shares=tuple(shares))

    for auth, side, alert in (
        ("certificate", "client", A.decrypt_error),
        ("psk", "client", A.decrypt_error),
    ):
        result = run_pair(*configs("hybrid", auth), tamper=rewrite(ServerHello, swap))
        expect_alert(result, side, alert)


def test_low_order_x25519_share_is_illegal() -> None:
    def zero(msg: ClientHello) -> ClientHello:
        shares = tuple(
            KeyShare(group=s.group, key_exchange=bytes(32)) if s.group == NamedGroup.X25519 else s
            for s in msg.key_shares
        )
        return dataclasses.replace(msg, key_shares=shares)

    result = run_pair(*configs("hybrid", "certificate"), tamper=rewrite(ClientHello, zero))
    expect_alert(result, "server", A.illegal_parameter, "X25519")


# -- replay and reflection ----------------------------------------------------------------


def _recorded(policy: str, auth: str, **kw: Any) -> tuple[PairResult, Any, Any]:
    pool = InMemoryKeyPool(DetRandom("replay-pool"))
    client_cfg, server_cfg = configs(policy, auth, pool=pool, **kw)
    result = run_pair(client_cfg, server_cfg)
    assert_same_keys(result)
    return result, server_cfg, pool


def _first(result: PairResult, direction: str, epoch: Epoch) -> bytes:
    return next(d for dr, e, d in result.wire if dr == direction and e == epoch)


def test_client_hello_replayed_to_another_sae() -> None:
    result, server_cfg, pool = _recorded("hybrid+qkd", "certificate")
    other = dataclasses.replace(
        server_cfg, qkd_source=pool.source("sae-server-b"), local_sae_id=None
    )
    _, server_b = make_pair(*configs("hybrid", "certificate")[:1], other)
    with pytest.raises(HandshakeError) as info:
        server_b.receive(Epoch.INITIAL, _first(result, "c2s", Epoch.INITIAL))
    assert info.value.alert == A.qkd_key_unknown
    assert "not to this SAE 'sae-server-b'" in str(info.value)


def test_client_hello_replayed_to_same_server_reuses_qkd_key() -> None:
    result, server_cfg, _ = _recorded("hybrid+qkd", "psk")
    _, server = make_pair(*configs("hybrid", "psk")[:1], server_cfg)
    with pytest.raises(HandshakeError) as info:
        server.receive(Epoch.INITIAL, _first(result, "c2s", Epoch.INITIAL))
    assert info.value.alert == A.qkd_key_unknown
    assert "already delivered" in str(info.value)


def test_client_hello_replayed_to_differently_named_server() -> None:
    result, server_cfg, _ = _recorded("hybrid", "certificate")
    other = dataclasses.replace(server_cfg, server_name="other.example")
    _, server = make_pair(*configs("hybrid", "certificate")[:1], other)
    with pytest.raises(HandshakeError) as info:
        server.receive(Epoch.INITIAL, _first(result, "c2s", Epoch.INITIAL))
    assert info.value.alert == A.unrecognized_name


def test_whole_client_flight_replayed_to_twin_server() -> None:
    """A twin server (same PSK) answers a replayed ClientHello with fresh randomness, so the
    recorded client Finished no longer verifies."""
    result, server_cfg, _ = _recorded("hybrid", "psk")
    _, twin = make_pair(*configs("hybrid", "psk")[:1], server_cfg, seed="twin")
    twin.receive(Epoch.INITIAL, _first(result, "c2s", Epoch.INITIAL))
    with pytest.raises(HandshakeError) as info:
        twin.receive(Epoch.HANDSHAKE, _first(result, "c2s", Epoch.HANDSHAKE))
    assert info.value.alert == A.decrypt_error
    with pytest.raises(HandshakeError, match="already failed"):
        twin.receive(Epoch.HANDSHAKE, b"")


def test_client_hello_reflected_to_client() -> None:
    client, _ = make_pair(*configs("hybrid", "psk"))
    client.start()
    hello = client.next_event()
    with pytest.raises(HandshakeError) as info:
        client.receive(Epoch.INITIAL, hello.data)  # type: ignore[union-attr]
    assert info.value.alert == A.unexpected_message
    assert "expected ServerHello, got ClientHello" in str(info.value)


def test_server_finished_reflected_to_server() -> None:
    client_cfg, server_cfg = configs("hybrid", "psk")
    client, server = make_pair(client_cfg, server_cfg)
    client.start()
    server.receive(Epoch.INITIAL, client.next_event().data)  # type: ignore[union-attr]
    flight = [
        e for e in iter(server.next_event, None) if getattr(e, "epoch", None) == Epoch.HANDSHAKE
    ]
    sent = [e.data for e in flight if hasattr(e, "data")]
    server_fin = next(raw for msg, raw in messages(sent[0]) if isinstance(msg, Finished))
    with pytest.raises(HandshakeError) as info:
        server.receive(Epoch.HANDSHAKE, server_fin)
    assert info.value.alert == A.decrypt_error
    # and the server's whole flight reflected back: EncryptedExtensions is unexpected
    _, server2 = make_pair(client_cfg, server_cfg)
    client2, _ = make_pair(client_cfg, server_cfg, seed="c2")
    client2.start()
    server2.receive(Epoch.INITIAL, client2.next_event().data)  # type: ignore[union-attr]
    events = list(iter(server2.next_event, None))
    with pytest.raises(HandshakeError) as info:
        server2.receive(Epoch.HANDSHAKE, events[-1].data if hasattr(events[-1], "data") else b"")
    assert info.value.alert == A.unexpected_message


def test_message_in_wrong_epoch() -> None:
    client, server = make_pair(*configs("hybrid", "psk"))
    client.start()
    with pytest.raises(HandshakeError) as info:
        server.receive(Epoch.HANDSHAKE, client.next_event().data)  # type: ignore[union-attr]
    assert info.value.alert == A.unexpected_message


# -- certificates -------------------------------------------------------------------------


def test_wrong_server_name() -> None:
    result = run_pair(*configs("hybrid", "certificate", client={"server_name": "bank.example"}))
    # The server refuses a ClientHello naming another server before any certificate...
    expect_alert(result, "server", A.unrecognized_name)
    # ...and a server that does not check names still cannot pass the client's name check.
    client, server = configs("hybrid", "certificate", client={"server_name": "bank.example"})
    result = run_pair(client, dataclasses.replace(server, server_name=""))
    expect_alert(result, "client", A.bad_certificate, "not valid for name 'bank.example'")


@pytest.mark.parametrize("offset", [-400 * 86400, 900 * 86400], ids=["not-yet-valid", "expired"])
def test_expired_certificate(offset: float) -> None:
    result = run_pair(*configs("hybrid", "certificate"), now=NOW + offset)
    expect_alert(result, "client", A.certificate_expired, "valid only from")


def test_untrusted_certificate() -> None:
    p = pki()
    result = run_pair(
        *configs("hybrid", "certificate", client={"trust_store": (p.other_ca.certificate,)})
    )
    expect_alert(result, "client", A.unknown_ca, "no trusted CA")
    rogue = issue_certificate(
        p.other_ca, SERVER_NAME, algorithm="ml-dsa-65", dns_names=[SERVER_NAME], now=NOW_DT
    )
    result = run_pair(*configs("hybrid", "certificate", server={"credential": rogue}))
    expect_alert(result, "client", A.unknown_ca)


def test_untrusted_client_certificate() -> None:
    p = pki()
    rogue = issue_certificate(p.other_ca, "client-1", algorithm="ed25519", now=NOW_DT)
    result = run_pair(*configs("hybrid", "certificate", mutual=True, client={"credential": rogue}))
    expect_alert(result, "server", A.unknown_ca)


def test_key_not_matching_certificate() -> None:
    p = pki()
    impostor = Credential(
        p.server["ed25519"].certificate,
        ed25519.Ed25519PrivateKey.generate(),
        p.server["ed25519"].chain,
    )
    result = run_pair(*configs("hybrid", "certificate", server={"credential": impostor}))
    expect_alert(result, "client", A.decrypt_error, "ed25519")


@pytest.mark.parametrize("broken", [0, 1], ids=["ml-dsa-broken", "ed25519-broken"])
def test_composite_needs_both_signatures(broken: int) -> None:
    p = pki()
    pair = [p.server["ml-dsa-65"], p.server["ed25519"]]
    good = pair[broken]
    # the right certificate with somebody else's key of the same algorithm
    other_key = (
        p.client["ml-dsa-65"].private_key if broken == 0 else p.client["ed25519"].private_key
    )
    pair[broken] = Credential(good.certificate, other_key, good.chain)
    result = run_pair(*configs("hybrid", "composite", server={"credential": tuple(pair)}))
    expect_alert(result, "client", A.decrypt_error, ("ml-dsa-65", "ed25519")[broken])


def test_unpinned_raw_key() -> None:
    result = run_pair(*configs("hybrid", "raw-key", client={"pinned_keys": (wrong_key(),)}))
    expect_alert(result, "client", A.unknown_ca, "not pinned")
    result = run_pair(
        *configs("hybrid", "raw-key", mutual=True, server={"pinned_keys": (wrong_key(),)})
    )
    expect_alert(result, "server", A.unknown_ca, "not pinned")


def test_client_without_credential_under_mutual() -> None:
    result = run_pair(*configs("hybrid", "certificate", mutual=True, client={"credential": None}))
    expect_alert(result, "client", A.handshake_failure, "configure a credential")


# -- PSKs ---------------------------------------------------------------------------------


def test_wrong_psk() -> None:
    bad = ExternalPSK(identity=b"bootstrap-psk-1", key=bytes(32))
    result = run_pair(*configs("hybrid", "psk", client={"psks": (bad,)}))
    expect_alert(result, "server", A.decrypt_error, "wrong key")


def test_unknown_psk_identity() -> None:
    bad = ExternalPSK(identity=b"nobody", key=bytes(range(32)))
    result = run_pair(*configs("hybrid", "psk", client={"psks": (bad,)}))
    expect_alert(result, "server", A.unknown_psk_identity)


def test_auth_mode_mismatch() -> None:
    client, _ = configs("hybrid", "psk")
    _, server = configs("hybrid", "certificate")
    expect_alert(run_pair(client, server), "server", A.handshake_failure, "requires 'certificate'")


# -- QKD keys -----------------------------------------------------------------------------


class _FixedSource:
    """A misbehaving client key source handing out a fixed key ID (and maybe wrong bytes)."""

    def __init__(self, key: QKDKey) -> None:
        self.key = key
        self.sae_id = CLIENT_SAE

    def new_key(self, peer_sae_id: str, size_bytes: int = 32) -> QKDKey:
        return self.key

    def get_key(self, peer_sae_id: str, key_id: str) -> QKDKey:
        raise AssertionError("not used")


@pytest.mark.parametrize(("policy", "auth"), [("hybrid+qkd", "certificate"), ("hybrid", "qkd-psk")])
def test_unknown_qkd_key_id(policy: str, auth: str) -> None:
    fake = _FixedSource(QKDKey("00000000-0000-4000-8000-000000000000", bytes(32)))
    result = run_pair(*configs(policy, auth, client={"qkd_source": fake}))
    expect_alert(result, "server", A.qkd_key_unknown, "00000000-0000-4000-8000-000000000000")


@pytest.mark.parametrize("policy", ["hybrid+qkd", "qkd-only"])
def test_reused_qkd_key_id(policy: str) -> None:
    pool = InMemoryKeyPool(DetRandom("reuse"))
    client_cfg, server_cfg = configs(policy, "psk", pool=pool)
    first = run_pair(client_cfg, server_cfg)
    assert_same_keys(first)
    assert first.client_session is not None
    used = first.client_session.qkd_key_ids[0]
    fake = _FixedSource(QKDKey(used, b"\x01" * 32))
    result = run_pair(dataclasses.replace(client_cfg, qkd_source=fake), server_cfg, seed="again")
    expect_alert(result, "server", A.qkd_key_unknown, "already delivered")


def test_qkd_psk_with_wrong_key_material() -> None:
    pool = InMemoryKeyPool(DetRandom("wrong-material"))
    client_cfg, server_cfg = configs("hybrid", "qkd-psk", pool=pool)
    real = pool.source(CLIENT_SAE).new_key(SERVER_SAE)
    fake = _FixedSource(QKDKey(real.key_id, bytes(32)))
    result = run_pair(dataclasses.replace(client_cfg, qkd_source=fake), server_cfg)
    expect_alert(result, "server", A.decrypt_error, "binder")


def test_one_qkd_key_never_serves_two_purposes() -> None:
    """A key source handing out one key twice is refused by the client; a server refuses a
    ClientHello naming the same key_ID for confidentiality and authentication."""
    pool = InMemoryKeyPool(DetRandom("two-purposes"))
    client_cfg, server_cfg = configs("hybrid+qkd", "qkd-psk", pool=pool)
    key = pool.source(CLIENT_SAE).new_key(SERVER_SAE)
    result = run_pair(dataclasses.replace(client_cfg, qkd_source=_FixedSource(key)), server_cfg)
    expect_alert(result, "client", A.internal_error, "twice")
    ref = QKDKeyRef(
        key_id=key.key_id, initiator_sae_id=CLIENT_SAE, responder_sae_id=SERVER_SAE, purpose=0
    )
    hello = ClientHello(
        random=bytes(32),
        cipher_suites=(0x1302,),
        key_shares=(),
        signature_schemes=(),
        server_name="",
        auth_mode=3,
        qkd_key=ref,
    )
    _, server = make_pair(client_cfg, server_cfg)
    with pytest.raises(HandshakeError) as info:
        ExpectClientHello(server)._qkd_component(hello, [key.key_id])
    assert info.value.alert == A.illegal_parameter
