"""Wire codec: golden bytes per message, round trips, and fuzzing of every decoder.

Fuzz rule (h11's): any input either decodes -- and then re-encodes to the very same
bytes -- or raises ProtocolError; fed whole or byte by byte, the outcome is the same.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handshake import ClientHandshake, Epoch, HandshakeError, ProtocolError, ServerHandshake
from handshake._codec import Reader, Writer
from handshake.alerts import AlertDescription, decode_alert, encode_alert
from handshake.messages import (
    MAX_MESSAGE_SIZE,
    Certificate,
    CertificateRequest,
    CertificateVerify,
    ClientHello,
    EncryptedExtensions,
    Finished,
    HandshakeType,
    KeyShare,
    KeyUpdate,
    MessageBuffer,
    PSKOffer,
    QKDKeyRef,
    ServerHello,
    decode_message,
    frame,
)
from tests.handshake.helpers import DetRandom, configs, run_pair

_HELLO = ClientHello(
    random=b"\x11" * 32,
    cipher_suites=(0x1302,),
    key_shares=(KeyShare(group=0x001D, key_exchange=b"\x22" * 32),),
    signature_schemes=(0x0807,),
    server_name="s",
    auth_mode=2,
    qkd_key=QKDKeyRef(key_id="id", initiator_sae_id="a", responder_sae_id="b", purpose=0),
    psk=PSKOffer(identity=b"p", binder=b"\x33" * 48),
)

GOLDEN: list[tuple[Any, str, str]] = [
    (
        _HELLO,
        "01",
        "4831"
        + "11" * 32
        + "01"
        + "1302"
        + "01"
        + "001d"
        + "0020"
        + "22" * 32
        + "01"
        + "0807"
        + "01"
        + "73"
        + "02"
        + "01"
        + "02"
        + "6964"
        + "01"
        + "61"
        + "01"
        + "62"
        + "00"
        + "01"
        + "0001"
        + "70"
        + "30"
        + "33" * 48,
    ),
    (
        ServerHello(
            random=b"\x44" * 32,
            cipher_suite=0x1302,
            key_shares=(KeyShare(group=0x001D, key_exchange=b"\x55" * 32),),
            qkd_accepted=True,
            auth_mode=0,
        ),
        "02",
        "4831" + "44" * 32 + "1302" + "01" + "001d" + "0020" + "55" * 32 + "01" + "00",
    ),
    (EncryptedExtensions(server_name="a.b"), "08", "03" + "612e62"),
    (
        CertificateRequest(certificate_type=0, signature_schemes=(0x0905, 0x0807)),
        "0d",
        "00" + "02" + "0905" + "0807",
    ),
    (
        Certificate(certificate_type=0, chains=((b"\xaa\xbb", b"\xcc"),)),
        "0b",
        "00" + "01" + "02" + "000002" + "aabb" + "000001" + "cc",
    ),
    (
        CertificateVerify(scheme=0xFE65, signatures=(b"\x01", b"\x02\x03")),
        "0f",
        "fe65" + "02" + "0001" + "01" + "0002" + "0203",
    ),
    (Finished(verify_data=bytes(range(48))), "14", bytes(range(48)).hex()),
    (KeyUpdate(request_update=True, qkd_key_id="k1"), "18", "01" + "02" + "6b31"),
    (KeyUpdate(request_update=False), "18", "00" + "00"),
]


@pytest.mark.parametrize(("msg", "type_hex", "body_hex"), GOLDEN, ids=lambda v: type(v).__name__)
def test_golden_bytes(msg: Any, type_hex: str, body_hex: str) -> None:
    expected = (
        bytes.fromhex(type_hex) + (len(body_hex) // 2).to_bytes(3, "big") + bytes.fromhex(body_hex)
    )
    assert frame(msg) == expected  # type: ignore[arg-type]
    buf = MessageBuffer()
    buf.feed(expected)
    item = buf.pop()
    assert item is not None and item == (msg, expected)
    assert buf.pop() is None and len(buf) == 0


def test_binder_prefix_cuts_exactly_the_binder() -> None:
    raw = frame(_HELLO)
    assert ClientHello.binder_prefix(raw) + b"\x30" + b"\x33" * 48 == raw


def test_alert_body() -> None:
    assert encode_alert(AlertDescription.qkd_key_unknown) == b"\x02\xdd"
    assert encode_alert(AlertDescription.close_notify) == b"\x01\x00"
    assert decode_alert(b"\x02\x33")[1] == AlertDescription.decrypt_error
    for bad in (b"", b"\x02", b"\x02\x33\x00", b"\x07\x33", b"\x02\xff"):
        with pytest.raises(ProtocolError):
            decode_alert(bad)


def test_oversized_length_rejected_before_body() -> None:
    buf = MessageBuffer()
    with pytest.raises(ProtocolError) as info:
        buf.feed(b"\x0b" + (MAX_MESSAGE_SIZE + 1).to_bytes(3, "big"))
    assert info.value.alert == AlertDescription.record_overflow


def test_unknown_type_and_trailing_bytes() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_message(99, b"")
    assert info.value.alert == AlertDescription.unexpected_message
    with pytest.raises(ProtocolError, match="trailing"):
        Finished.decode(bytes(49))
    with pytest.raises(ProtocolError, match="truncated"):
        Finished.decode(bytes(47))


@given(st.lists(st.integers(0, 0xFFFF), max_size=16))
def test_u16_list_round_trip(values: list[int]) -> None:
    w = Writer()
    w.u16_list(values, 1, 16)
    r = Reader(w.getvalue(), "list")
    assert r.u16_list(1, 16) == tuple(values)
    r.finish()


def test_u16_list_bounds() -> None:
    with pytest.raises(ProtocolError, match="exceed the limit of 2"):
        Reader(bytes([3]) + bytes(6), "list").u16_list(1, 2)
    with pytest.raises(ProtocolError, match="truncated"):
        Reader(bytes([3]) + bytes(5), "list").u16_list(1, 16)
    with pytest.raises(ProtocolError, match="truncated"):
        Reader(b"", "list").u16_list(1, 16)


# -- fuzzing ------------------------------------------------------------------------------

_TYPES = [int(t) for t in HandshakeType] + [0, 3, 255]


def _recorded_messages() -> list[bytes]:
    """Every framed message of a real mutual-certificate hybrid+QKD handshake."""
    result = run_pair(*configs("hybrid+qkd", "certificate", mutual=True, algorithm="ed25519"))
    out = []
    for _, _, data in result.wire:
        buf = MessageBuffer()
        buf.feed(data)
        while (item := buf.pop()) is not None:
            out.append(item[1])
    return out + [frame(m) for m, _, _ in GOLDEN]


RECORDED = _recorded_messages()
_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decode_or_protocol_error(msg_type: int, body: bytes) -> None:
    try:
        msg = decode_message(msg_type, body)
    except ProtocolError:
        return
    assert msg.encode() == body  # canonical: a decoded message re-encodes byte for byte


@_FUZZ
@given(st.sampled_from(_TYPES), st.binary(max_size=600))
def test_fuzz_random_bodies(msg_type: int, body: bytes) -> None:
    _decode_or_protocol_error(msg_type, body)


@_FUZZ
@given(st.sampled_from(RECORDED), st.data())
def test_fuzz_mutated_real_messages(raw: bytes, data: st.DataObject) -> None:
    body = bytearray(raw[4:])
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "add"]))
        if action == "flip" and body:
            i = data.draw(st.integers(0, len(body) - 1))
            body[i] ^= data.draw(st.integers(1, 255))
        elif action == "cut" and body:
            del body[data.draw(st.integers(0, len(body) - 1)) :]
        else:
            body += data.draw(st.binary(min_size=1, max_size=8))
    _decode_or_protocol_error(raw[0], bytes(body))


def _feed(stream: bytes, chunk: int) -> tuple[list[bytes], str | None]:
    buf = MessageBuffer()
    out: list[bytes] = []
    try:
        for i in range(0, len(stream), chunk):
            buf.feed(stream[i : i + chunk])
            while (item := buf.pop()) is not None:
                out.append(item[1])
    except ProtocolError as exc:
        return out, type(exc).__name__ + str(exc.alert)
    return out, None


@_FUZZ
@given(st.lists(st.sampled_from(RECORDED) | st.binary(max_size=64), max_size=4))
def test_fuzz_buffer_whole_vs_byte_by_byte(parts: list[bytes]) -> None:
    stream = b"".join(parts)
    whole = _feed(stream, max(1, len(stream)))
    assert _feed(stream, 1) == whole


def _parses_as_message(data: bytes) -> bool:
    try:
        return _feed(data, len(data) or 1)[0] != []
    except ProtocolError:
        return False


@_FUZZ
@given(st.binary(max_size=400), st.sampled_from([Epoch.INITIAL, Epoch.HANDSHAKE]))
def test_fuzz_state_machines_random_input(data: bytes, epoch: Epoch) -> None:
    """Random bytes, whole or byte by byte, to a fresh client and server: nothing but
    ProtocolError (a different HandshakeError only if the bytes formed a real message)."""
    client_cfg, server_cfg = configs("hybrid", "psk")
    for chunking in (len(data) or 1, 1):
        server = ServerHandshake(server_cfg, random=DetRandom("fz"), now=lambda: 0.0)
        client = ClientHandshake(client_cfg, random=DetRandom("fz"), now=lambda: 0.0)
        client.start()
        for hs in (server, client):
            try:
                for i in range(0, len(data), chunking):
                    hs.receive(epoch, data[i : i + chunking])
            except ProtocolError:
                pass
            except HandshakeError:
                assert _parses_as_message(data)
