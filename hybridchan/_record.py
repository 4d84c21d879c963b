"""The record layer: framing and AES-256-GCM protection, sans-IO.

Theory of operation
-------------------
Every byte on the wire travels in a record::

    content_type (1) | epoch (1) | length (2) | fragment (length bytes)

INITIAL-epoch records (ClientHello, ServerHello, early alerts) are plaintext.
Every later record is AES-256-GCM ciphertext plus its 16-byte tag; the 4-byte
header is the associated data, so changing the type, epoch or length breaks
the tag. The nonce is the per-direction IV xor the 64-bit record sequence
number, which starts at 0 for every new key; each key is used in one direction
only, so a reflected record never verifies, and a dropped, duplicated or
reordered record shifts the sequence number and fails authentication.
A first header that cannot be ours (the peer speaks TLS, HTTP, SSH, ...) raises
:class:`~hybridchan.errors.ForeignProtocolError`, naming what it looks like.

AES-GCM usage limits (RFC 8446 section 5.5, RFC 9147 / draft-irtf-cfrg-aead-limits):
at most 2^24.5 full-size records per key keeps the confidentiality advantage
below 2^-57. :data:`AEAD_RECORD_LIMIT` sits below that; the connection rekeys
long before it and the reader rejects a peer that goes past it.

The hot path avoids copies: :meth:`RecordWriter.protect` encrypts many records
straight from a memoryview of the caller's data into one preallocated output
buffer (``AESGCM.encrypt_into``), which goes to the socket in one write;
:meth:`RecordReader.next_record` decrypts from a memoryview of the receive
buffer. A record that fails authentication releases no plaintext.
"""

from __future__ import annotations

import struct
from collections.abc import MutableSequence
from enum import IntEnum
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hybridchan.errors import (
    BadRecordMAC,
    ForeignProtocolError,
    RecordDecodeError,
    RecordOverflow,
    UnexpectedRecord,
)

__all__ = [
    "AEAD_RECORD_LIMIT",
    "HEADER_SIZE",
    "MAX_PLAINTEXT",
    "TAG_SIZE",
    "ContentType",
    "RecordProtection",
    "RecordReader",
    "RecordWriter",
]

HEADER: Final = struct.Struct(">BBH")
HEADER_SIZE: Final = 4
TAG_SIZE: Final = 16
IV_SIZE: Final = 12
KEY_SIZE: Final = 32
#: Largest plaintext fragment in one record (the TLS limit).
MAX_PLAINTEXT: Final = 16384
#: Records per key we never exceed (RFC 8446 5.5 allows 2^24.5 full-size records).
AEAD_RECORD_LIMIT: Final = 1 << 24
_HANDSHAKE_EPOCH: Final = 1
_MAX_EPOCH: Final = 2
# Initial receive buffer: one full record; it grows (once) when bulk reads need more.
_INITIAL_BUFFER: Final = MAX_PLAINTEXT + TAG_SIZE + HEADER_SIZE + 1024


class ContentType(IntEnum):
    """What a record carries. The value is the first header byte."""

    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23
    KEY_UPDATE = 24


_CONTENT_TYPES: Final = frozenset(int(t) for t in ContentType)
_BY_VALUE: Final = {int(t): t for t in ContentType}
# First bytes of other protocols a hybridchan endpoint may be pointed at by mistake.
_TLS_CONTENT_TYPES: Final = range(20, 25)  # change_cipher_spec .. heartbeat; version 3.x follows
# The first 4 bytes of an HTTP request ("GET /", "DELETE", HTTP/2's "PRI *"), response, or
# bare HTML page (what some servers send back to a request they cannot parse).
_HTTP_METHODS: Final = "GET HEAD POST PUT DELETE OPTIONS PATCH CONNECT TRACE PRI"
_HTTP_STARTS: Final = (
    *(f"{m} "[:4].encode() for m in _HTTP_METHODS.split()),
    *(b"HTTP", b"<!DO", b"<!do", b"<htm", b"<HTM"),
)


def _looks_like(head: bytes) -> str:
    """Which well-known protocol a 4-byte record header that is not ours comes from."""
    if head[0] in _TLS_CONTENT_TYPES and head[1] == 3:
        return "TLS"
    if head.startswith(_HTTP_STARTS):
        return "HTTP"
    if head.startswith(b"SSH-"):
        return "SSH"
    return ""


class RecordProtection:
    """AES-256-GCM state for one direction under one key: the AEAD, IV and sequence number."""

    __slots__ = ("_aead", "_iv", "seq")

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(key) != KEY_SIZE or len(iv) != IV_SIZE:
            raise ValueError(
                f"record keys must be {KEY_SIZE}-byte AES keys and {IV_SIZE}-byte IVs, "
                f"got {len(key)} and {len(iv)} bytes"
            )
        self._aead = AESGCM(key)
        self._iv = int.from_bytes(iv, "big")
        self.seq = 0

    def _nonce(self) -> bytes:
        seq = self.seq
        if seq >= AEAD_RECORD_LIMIT:
            # The connection rekeys long before; reaching this is a bug, and
            # encrypting further would weaken AES-GCM, so refuse.
            raise RuntimeError("AES-GCM usage limit reached without a key update")
        self.seq = seq + 1
        return (self._iv ^ seq).to_bytes(IV_SIZE, "big")

    def open(self, header: bytes, fragment: memoryview) -> bytes:
        """Decrypt and authenticate one fragment; raise :class:`BadRecordMAC` on failure."""
        try:
            return self._aead.decrypt(self._nonce(), fragment, header)
        except InvalidTag:
            raise BadRecordMAC(
                "a record failed authentication: it was modified, dropped, duplicated, "
                "reordered or injected in transit; the channel is closed"
            ) from None


class RecordWriter:
    """Turns payloads into records for the current write epoch and key."""

    __slots__ = ("_out", "_out_size", "_spare", "epoch", "protection", "record_size")

    def __init__(self, record_size: int = MAX_PLAINTEXT) -> None:
        self.record_size = record_size
        self.epoch = 0
        self.protection: RecordProtection | None = None
        self._out: list[bytes | bytearray] = []
        self._out_size = 0
        self._spare: bytearray | None = None

    def set_key(self, epoch: int, key: bytes, iv: bytes) -> None:
        """Protect every later record with this key (new sequence numbers from 0)."""
        self.epoch = epoch
        self.protection = RecordProtection(key, iv)

    @property
    def pending(self) -> int:
        """Bytes produced and not yet taken by :meth:`take`."""
        return self._out_size

    def take(self) -> bytes | bytearray:
        """All pending output as one buffer (no copy when there is one piece)."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        self._out = []
        self._out_size = 0
        return data

    @staticmethod
    def _seal_all(
        prot: RecordProtection, ctype: int, epoch: int, view: memoryview, out: memoryview, size: int
    ) -> None:
        """The hot loop: one ``encrypt_into`` per record, straight into ``out``."""
        length = len(view)
        if prot.seq + length // size + 1 >= AEAD_RECORD_LIMIT:
            raise RuntimeError("AES-GCM usage limit reached without a key update")
        encrypt_into = prot._aead.encrypt_into
        iv, seq = prot._iv, prot.seq
        pack = HEADER.pack
        pos = 0
        for start in range(0, max(length, 1), size):
            chunk = view[start : start + size]
            end = pos + HEADER_SIZE + len(chunk) + TAG_SIZE
            header = pack(ctype, epoch, len(chunk) + TAG_SIZE)
            out[pos : pos + HEADER_SIZE] = header
            encrypt_into(
                (iv ^ seq).to_bytes(IV_SIZE, "big"), chunk, header, out[pos + HEADER_SIZE : end]
            )
            seq += 1
            pos = end
        prot.seq = seq

    def recycle(self, buf: bytes | bytearray) -> None:
        """Hand back a buffer from :meth:`take` once it is fully written out.

        Bulk writes produce same-sized buffers; reusing one avoids a fresh
        allocation (and its page faults) per write. Never recycle a buffer a
        transport may still reference.
        """
        if isinstance(buf, bytearray):
            self._spare = buf

    def protect(self, content_type: ContentType, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` as records of ``content_type``; returns the number of records.

        Zero-length ``data`` produces one empty record (used for application data only).
        """
        view = memoryview(data).cast("B")
        length = len(view)
        size = self.record_size
        count = max(1, -(-length // size))
        prot = self.protection
        overhead = HEADER_SIZE + (0 if prot is None else TAG_SIZE)
        size_out = length + count * overhead
        spare = self._spare
        if spare is not None and len(spare) == size_out:
            buf, self._spare = spare, None
        else:
            buf = bytearray(size_out)
        out = memoryview(buf)
        ctype = int(content_type)
        epoch = self.epoch
        if prot is None:
            pos = 0
            for start in range(0, max(length, 1), size):
                chunk = view[start : start + size]
                n = len(chunk)
                HEADER.pack_into(buf, pos, ctype, epoch, n)
                out[pos + HEADER_SIZE : pos + HEADER_SIZE + n] = chunk
                pos += HEADER_SIZE + n
        else:
            self._seal_all(prot, ctype, epoch, view, out, size)
        out.release()
        self._out.append(buf)
        self._out_size += len(buf)
        return count


class RecordReader:
    """Buffers received bytes and yields authenticated records one at a time.

    The receive buffer is allocated once and reused (fresh large allocations cost
    page faults on every read); a transport may read straight into it with
    :meth:`get_buffer` / :meth:`buffer_updated` instead of :meth:`feed`.
    """

    __slots__ = ("_buf", "_end", "_start", "epoch", "max_plaintext", "protection")

    def __init__(self, max_plaintext: int = MAX_PLAINTEXT) -> None:
        self._buf = bytearray(_INITIAL_BUFFER)
        self._start = 0
        self._end = 0
        self.max_plaintext = max_plaintext
        self.epoch = 0
        self.protection: RecordProtection | None = None

    def set_key(self, epoch: int, key: bytes, iv: bytes) -> None:
        """Expect every later record under this key (sequence numbers from 0)."""
        self.epoch = epoch
        self.protection = RecordProtection(key, iv)

    def get_buffer(self, size: int) -> memoryview:
        """A writable view of at least ``size`` free bytes at the end of the buffer."""
        if self._start == self._end:
            self._start = self._end = 0
        if len(self._buf) - self._end < size:
            pending = self._end - self._start
            if pending + size <= len(self._buf) and self._start >= pending:
                # move the partial record to the front (no overlap: start >= pending)
                self._buf[:pending] = self._buf[self._start : self._end]
            else:
                grown = bytearray(max(len(self._buf), pending + size))
                grown[:pending] = self._buf[self._start : self._end]
                self._buf = grown
            self._start, self._end = 0, pending
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, count: int) -> None:
        """``count`` bytes were written into the view from :meth:`get_buffer`."""
        self._end += count

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        with self.get_buffer(size) as view:
            view[:size] = data
        self._end += size

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed as records."""
        return self._end - self._start

    def next_record(self) -> tuple[ContentType, int, bytes] | None:
        """The next complete record as ``(type, epoch, payload)``, or ``None`` if more bytes are needed.

        Raises a :class:`~hybridchan.errors.RecordError` subclass on a malformed,
        oversized, unexpected or forged record.
        """
        buf = self._buf
        pos = self._start
        if self._end - pos < HEADER_SIZE:
            return None
        ctype, epoch, length = HEADER.unpack_from(buf, pos)
        prot, expected = self.protection, self.epoch
        if epoch == 0 and ctype == ContentType.ALERT and expected == _HANDSHAKE_EPOCH:
            # A peer that fails before it has handshake keys (say, on our ServerHello)
            # can only alert in plaintext. Accepting that gives an attacker nothing:
            # it could end the handshake anyway by cutting or garbling the stream.
            prot, expected = None, 0
        self._check_header(ctype, epoch, length, prot, expected)
        end = pos + HEADER_SIZE + length
        if self._end < end:
            return None
        with memoryview(buf) as view:
            fragment = view[pos + HEADER_SIZE : end]
            if prot is None:
                payload = bytes(fragment)
            else:
                payload = prot.open(bytes(view[pos : pos + HEADER_SIZE]), fragment)
            fragment.release()
        self._start = end
        return _BY_VALUE[ctype], epoch, payload

    def read_data_run(self, sink: MutableSequence[bytes]) -> None:
        """Decrypt consecutive complete application-data records into ``sink`` (bulk fast path).

        Stops, without raising, at anything else (another content type, a partial,
        malformed or forged record, the AES-GCM limit): :meth:`next_record` then
        handles that record and raises if it is bad. Authentic payloads only.
        """
        prot = self.protection
        if prot is None:
            return
        buf = self._buf
        pos, stop = self._start, self._end
        epoch = self.epoch
        limit = self.max_plaintext + TAG_SIZE
        aead, iv, seq = prot._aead, prot._iv, prot.seq
        unpack = HEADER.unpack_from
        append = sink.append
        with memoryview(buf) as view:
            while stop - pos >= HEADER_SIZE and seq < AEAD_RECORD_LIMIT:
                ctype, rec_epoch, length = unpack(buf, pos)
                end = pos + HEADER_SIZE + length
                if (
                    ctype != 23
                    or rec_epoch != epoch
                    or not TAG_SIZE < length <= limit
                    or end > stop
                ):
                    break
                try:
                    payload = aead.decrypt(
                        (iv ^ seq).to_bytes(IV_SIZE, "big"),
                        view[pos + HEADER_SIZE : end],
                        buf[pos : pos + HEADER_SIZE],
                    )
                except InvalidTag:
                    break  # next_record re-reads it and raises BadRecordMAC
                append(payload)
                seq += 1
                pos = end
        prot.seq = seq
        self._start = pos

    def read_data_run_into(self, out: memoryview) -> int:
        """Like :meth:`read_data_run`, but decrypt into ``out`` while whole records fit.

        Returns the bytes written. A record that fails authentication stops the run
        and its bytes in ``out`` are zeroed, so no unauthenticated plaintext is left.
        """
        prot = self.protection
        if prot is None:
            return 0
        buf = self._buf
        pos, stop = self._start, self._end
        epoch = self.epoch
        limit = self.max_plaintext + TAG_SIZE
        aead, iv, seq = prot._aead, prot._iv, prot.seq
        unpack = HEADER.unpack_from
        room = len(out)
        filled = 0
        with memoryview(buf) as view:
            while stop - pos >= HEADER_SIZE and seq < AEAD_RECORD_LIMIT:
                ctype, rec_epoch, length = unpack(buf, pos)
                end = pos + HEADER_SIZE + length
                size = length - TAG_SIZE
                if (
                    ctype != 23
                    or rec_epoch != epoch
                    or not TAG_SIZE < length <= limit
                    or end > stop
                    or filled + size > room
                ):
                    break
                target = out[filled : filled + size]
                try:
                    aead.decrypt_into(
                        (iv ^ seq).to_bytes(IV_SIZE, "big"),
                        view[pos + HEADER_SIZE : end],
                        buf[pos : pos + HEADER_SIZE],
                        target,
                    )
                except InvalidTag:
                    target[:] = bytes(size)
                    break  # next_record re-reads it and raises BadRecordMAC
                filled += size
                seq += 1
                pos = end
        prot.seq = seq
        self._start = pos
        return filled

    def _check_header(
        self, ctype: int, epoch: int, length: int, prot: RecordProtection | None, expected: int
    ) -> None:
        protected = prot is not None
        if ctype not in _CONTENT_TYPES or epoch > _MAX_EPOCH:
            if self.protection is None:
                # No keys yet: this is the peer's first record, so it speaks another protocol.
                raise self._foreign_protocol()
            if ctype not in _CONTENT_TYPES:
                raise UnexpectedRecord(
                    f"unknown record content type {ctype}; the peer is not a hybridchan peer"
                )
            raise RecordDecodeError(f"record epoch {epoch} is out of range (0..{_MAX_EPOCH})")
        if epoch != expected:
            raise UnexpectedRecord(
                f"record for epoch {epoch} while epoch {expected} keys are in use "
                "(records were reordered, injected or sent too early)"
            )
        limit = self.max_plaintext + (TAG_SIZE if protected else 0)
        if length > limit:
            raise RecordOverflow(f"record of {length} bytes exceeds the limit of {limit} bytes")
        if protected and length < TAG_SIZE:
            raise RecordDecodeError(f"protected record of {length} bytes is shorter than its tag")
        if prot is not None and prot.seq >= AEAD_RECORD_LIMIT:
            raise UnexpectedRecord(
                "the peer sent more records under one key than AES-GCM allows without a key update"
            )

    def _foreign_protocol(self) -> ForeignProtocolError:
        """The error for a first header that is not ours. It shows the 4 header bytes
        only: enough to recognise a protocol, too few to echo a request's content."""
        head = bytes(self._buf[self._start : self._start + HEADER_SIZE])
        name = _looks_like(head)
        looks = f"bytes that look like {name}" if name else "bytes of another protocol"
        return ForeignProtocolError(
            f"not a hybridchan record header: got {looks} ({head.hex(' ')}); the peer does "
            "not speak the hybridchan protocol, so check that its address and port are "
            "those of a hybridchan endpoint"
        )
