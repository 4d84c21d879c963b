"""Record layer: framing, AES-256-GCM nonces, header as AAD, bounds, fuzzing."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridchan._record import (
    AEAD_RECORD_LIMIT,
    HEADER_SIZE,
    MAX_PLAINTEXT,
    TAG_SIZE,
    ContentType,
    RecordReader,
    RecordWriter,
)
from hybridchan.errors import (
    AlertDescription,
    BadRecordMAC,
    ProtocolError,
    RecordDecodeError,
    RecordOverflow,
    UnexpectedRecord,
)

KEY, IV = bytes(range(32)), bytes(range(100, 112))


def _pair(record_size: int = MAX_PLAINTEXT) -> tuple[RecordWriter, RecordReader]:
    writer, reader = RecordWriter(record_size), RecordReader()
    writer.set_key(2, KEY, IV)
    reader.set_key(2, KEY, IV)
    return writer, reader


def test_golden_record_uses_iv_xor_seq_and_header_as_aad() -> None:
    writer, _ = _pair()
    writer.protect(ContentType.APPLICATION_DATA, b"first")
    writer.protect(ContentType.APPLICATION_DATA, b"second")
    wire = bytes(writer.take())
    header0 = bytes([23, 2, 0, 5 + TAG_SIZE])
    assert wire[:4] == header0
    expected0 = AESGCM(KEY).encrypt(IV, b"first", header0)
    assert wire[4 : 4 + len(expected0)] == expected0
    rest = wire[4 + len(expected0) :]
    header1 = bytes([23, 2, 0, 6 + TAG_SIZE])
    nonce1 = (int.from_bytes(IV, "big") ^ 1).to_bytes(12, "big")
    assert rest == header1 + AESGCM(KEY).encrypt(nonce1, b"second", header1)


def test_large_payload_splits_into_records_and_roundtrips() -> None:
    writer, reader = _pair(record_size=1000)
    data = os.urandom(5500)
    assert writer.protect(ContentType.APPLICATION_DATA, data) == 6
    reader.feed(writer.take())
    records = []
    while (record := reader.next_record()) is not None:
        records.append(record)
    assert [len(r[2]) for r in records] == [1000] * 5 + [500]
    assert b"".join(r[2] for r in records) == data


def test_plaintext_initial_records_roundtrip_byte_by_byte() -> None:
    writer, reader = RecordWriter(), RecordReader()
    writer.protect(ContentType.HANDSHAKE, b"hello")
    wire = bytes(writer.take())
    assert wire == bytes([22, 0, 0, 5]) + b"hello"
    got = []
    for i in range(len(wire)):
        reader.feed(wire[i : i + 1])
        if (record := reader.next_record()) is not None:
            got.append(record)
    assert got[0] == (ContentType.HANDSHAKE, 0, b"hello")


@pytest.mark.parametrize("offset", [0, 1, 2, 4, 10, -1])
def test_any_modified_byte_fails_authentication_and_releases_nothing(offset: int) -> None:
    writer, reader = _pair()
    writer.protect(ContentType.APPLICATION_DATA, b"x" * 40)
    wire = bytearray(writer.take())
    wire[offset] ^= 0x41
    reader.feed(wire)
    with pytest.raises(ProtocolError) as info:
        reader.next_record()
    assert info.value.alert in (
        AlertDescription.bad_record_mac,
        AlertDescription.unexpected_message,
        AlertDescription.decode_error,
        AlertDescription.record_overflow,
    )
    if offset >= HEADER_SIZE or offset == -1:
        assert isinstance(info.value, BadRecordMAC)


def test_reflected_record_under_other_direction_key_fails() -> None:
    writer = RecordWriter()
    writer.set_key(2, KEY, IV)
    reader = RecordReader()
    reader.set_key(2, bytes(32), IV)  # the other direction's key
    writer.protect(ContentType.APPLICATION_DATA, b"data")
    reader.feed(writer.take())
    with pytest.raises(BadRecordMAC):
        reader.next_record()


def test_bounds_and_unexpected_headers() -> None:
    _, reader = _pair()
    reader.feed(bytes([23, 2]) + (MAX_PLAINTEXT + TAG_SIZE + 1).to_bytes(2, "big"))
    with pytest.raises(RecordOverflow) as info:
        reader.next_record()
    assert info.value.alert == AlertDescription.record_overflow
    for header, exc in [
        (bytes([99, 2, 0, 20]), UnexpectedRecord),
        (bytes([23, 1, 0, 20]), UnexpectedRecord),
        (bytes([23, 7, 0, 20]), RecordDecodeError),
        (bytes([23, 2, 0, 3]), RecordDecodeError),
    ]:
        _, reader = _pair()
        reader.feed(header + bytes(20))
        with pytest.raises(exc):
            reader.next_record()


def test_writer_refuses_to_pass_the_aead_limit() -> None:
    writer, _ = _pair()
    assert writer.protection is not None
    writer.protection.seq = AEAD_RECORD_LIMIT
    with pytest.raises(RuntimeError, match="usage limit"):
        writer.protect(ContentType.APPLICATION_DATA, b"x")


def test_reader_rejects_peer_past_the_aead_limit() -> None:
    _, reader = _pair()
    assert reader.protection is not None
    reader.protection.seq = AEAD_RECORD_LIMIT
    reader.feed(bytes([23, 2, 0, 17]) + bytes(17))
    with pytest.raises(UnexpectedRecord, match="AES-GCM"):
        reader.next_record()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_reader_parses_or_raises_protocol_error(data: bytes, protected: bool) -> None:
    reader = RecordReader()
    if protected:
        reader.set_key(2, KEY, IV)
    reader.feed(data)
    try:
        while reader.next_record() is not None:
            pass
    except ProtocolError:
        pass


def test_fast_paths_stop_at_forged_record_and_leave_no_plaintext() -> None:
    writer, reader = _pair()
    writer.protect(ContentType.APPLICATION_DATA, b"a" * 100)
    writer.protect(ContentType.APPLICATION_DATA, b"b" * 100)
    wire = bytearray(writer.take())
    wire[-1] ^= 1  # forge the second record's tag
    reader.feed(wire)
    out = bytearray(b"\xff" * 300)
    with memoryview(out) as view:
        assert reader.read_data_run_into(view) == 100
    assert out[:100] == b"a" * 100 and out[100:200] == bytes(100)  # forged bytes zeroed
    sink: list[bytes] = []
    reader.read_data_run(sink)
    assert sink == []
    with pytest.raises(BadRecordMAC):
        reader.next_record()


def test_fast_path_hands_other_records_to_the_slow_path() -> None:
    writer, reader = _pair()
    writer.protect(ContentType.APPLICATION_DATA, b"data")
    writer.protect(ContentType.KEY_UPDATE, b"\x00\x00")
    writer.protect(ContentType.APPLICATION_DATA, b"more")
    reader.feed(writer.take())
    sink: list[bytes] = []
    reader.read_data_run(sink)
    assert sink == [b"data"]
    assert reader.next_record() == (ContentType.KEY_UPDATE, 2, b"\x00\x00")
    reader.read_data_run(sink)
    assert sink == [b"data", b"more"]


def test_plaintext_alert_is_accepted_only_while_reading_the_handshake_epoch() -> None:
    alert = bytes([21, 0, 0, 2, 2, 47])  # a peer that failed before it had handshake keys
    reader = RecordReader()
    reader.set_key(1, KEY, IV)
    reader.feed(alert)
    assert reader.next_record() == (ContentType.ALERT, 0, b"\x02\x2f")
    assert reader.protection is not None and reader.protection.seq == 0  # nothing decrypted
    for epoch, record in [(1, bytes([22, 0, 0, 2]) + b"hi"), (2, alert)]:
        reader = RecordReader()
        reader.set_key(epoch, KEY, IV)
        reader.feed(record)
        with pytest.raises(UnexpectedRecord, match="epoch 0"):
            reader.next_record()
