"""The sans-IO channel core: the handshake object plus the record layer.

Theory of operation
-------------------
Bytes in, events and bytes out, in the manner of h11::

    conn = Connection(config, client=True)
    conn.start()                         # client: queues the ClientHello
    transport.write(conn.data_to_send())
    conn.receive_data(transport.read())  # b"" means the transport reached EOF
    while (event := conn.next_event()) is not None: ...
    conn.send_data(b"hello"); transport.write(conn.data_to_send())

Records are processed one at a time inside :meth:`next_event`, so the events of
authentic records that arrived before a forged one are still delivered, and the
error is raised when the forged record is reached: no byte of it reaches the
application. On any error the core queues the matching alert (read it with
:meth:`data_to_send`), records it on the exception (``alert_sent``), and refuses
further use with :class:`ChannelClosed`.

During the handshake, handshake records go to the handshake object; its
``SendData`` events become records of the requested epoch, ``KeysReady`` installs
record keys, ``HandshakeComplete`` ends the handshake.

Key update (content type 24, body ``handshake.messages.KeyUpdate``): the sender
draws a fresh QKD key (when the session has a QKD component), sends its ID
under the old key, then moves its write key to
``next_traffic_secret(secret, qkd_key)``; the receiver fetches the key by ID (each
key is delivered once) and moves its read key the same way. ``request_update``
asks the peer to update its direction too, which also confirms the new epoch.
Scheduled updates (bytes, records, seconds, AES-GCM limit) happen in
:meth:`send_data`; :meth:`update_keys` forces one.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, MutableSequence
from enum import Enum
from typing import Any, Final

from handshake import events as hs_events
from handshake.alerts import decode_alert, encode_alert
from handshake.errors import alert_for
from handshake.events import Epoch
from handshake.keyschedule import next_traffic_secret, traffic_keys
from handshake.messages import KeyUpdate
from hybridchan._events import (
    ConnectionClosed,
    DataReceived,
    Event,
    HandshakeCompleted,
    KeysUpdated,
)
from hybridchan._record import AEAD_RECORD_LIMIT, ContentType, RecordReader, RecordWriter
from hybridchan.config import ChannelConfig
from hybridchan.errors import (
    AlertDescription,
    ChannelClosed,
    ClosedWithoutHandshake,
    HandshakeError,
    RecordDecodeError,
    RekeyKeyUnavailableError,
    RekeyKeyUnknownError,
    RekeyPolicyError,
    TruncatedError,
    UnexpectedRecord,
    annotate,
    error_for_alert,
)
from qkd.keysource import KeySourceError, KeyUnavailableError, QKDKey

__all__ = ["Connection", "State"]

# Records per send_data chunk between rekey-schedule checks (16 x 16 KiB = 256 KiB).
_CHUNK_RECORDS: Final = 16
# Rekey on our own at this many records, well before AEAD_RECORD_LIMIT.
_AEAD_SOFT_LIMIT: Final = AEAD_RECORD_LIMIT // 2
# Consecutive peer key updates without data in between that we accept.
_MAX_BARE_UPDATES: Final = 32
_SILENT_CLIENT: Final = (
    "the client closed the connection before sending a single handshake byte (a port "
    "probe or health check): no channel was opened, nothing was truncated"
)
_SILENT_SERVER: Final = (
    "the server closed the connection during the handshake without sending a single "
    "byte: check that the address and port are those of a hybridchan server, and see "
    "its log for why it dropped the connection"
)


class _FinishedHandshake:
    """Stands in for the handshake object once it is done, holding no state."""

    def start(self) -> None:
        raise RuntimeError("the handshake already finished")

    def receive(self, epoch: Epoch, data: bytes) -> None:
        raise UnexpectedRecord("handshake record after the handshake finished")

    def next_event(self) -> None:
        return None


class State(Enum):
    HANDSHAKING = "handshaking"
    ESTABLISHED = "established"
    CLOSED = "closed"  # we sent close-notify or saw the transport end cleanly
    FAILED = "failed"  # an error killed the channel


class Connection:
    """One endpoint of a channel, without I/O. Not thread-safe; adapters serialise calls."""

    def __init__(
        self,
        config: ChannelConfig,
        *,
        client: bool,
        handshake: Any = None,
        random: Callable[[int], bytes] = os.urandom,
        now: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.client = client
        if handshake is None:
            import handshake as hs_module  # the real state machines (imported on first use)

            cls = hs_module.ClientHandshake if client else hs_module.ServerHandshake
            handshake = cls(config.handshake, random=random, now=now)
        self._hs = handshake
        self._clock = clock
        self._reader = RecordReader()
        self._writer = RecordWriter(config.record_size)
        self._events: deque[Event] = deque()
        self.state = State.HANDSHAKING
        self.session: Any = None
        self.peer_closed = False
        self._eof = False
        self._received_any = False  # an EOF before any byte is a probe, not a truncation
        self._error: BaseException | None = None
        self._read_secret = b""
        self._write_secret = b""
        self.read_generation = 0
        self.write_generation = 0
        self._write_bytes = 0
        self._write_records_at_key = 0
        self._write_key_time = 0.0
        self._awaiting_peer_update = False
        self._bare_updates = 0
        self._qkd_rekey = False
        self._qkd_key_size = int(getattr(config.handshake, "qkd_key_size", 32))
        #: IDs of every QKD key mixed into a key update, in order (``(direction, key_id)``).
        self.qkd_rekey_ids: list[tuple[str, str]] = []
        #: Key updates that fell back to a plain update because no QKD key could be had.
        self.qkd_fallbacks = 0

    # -- public sans-IO API -------------------------------------------------------------

    def start(self) -> None:
        """Begin the handshake (client: queue the ClientHello; server: nothing to send)."""
        self._guard(self._start)

    def _start(self) -> None:
        self._hs.start()
        self._drain_handshake()

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the transport; ``b""`` signals EOF. Events come from :meth:`next_event`."""
        if not data:
            self._eof = True
        else:
            self._received_any = True
            self._reader.feed(data)

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more input is needed. Raises on any protocol error."""
        if self._events:
            return self._events.popleft()
        if self._error is not None:
            raise ChannelClosed("the channel failed earlier; open a new one") from self._error
        events = self._events
        reader = self._reader
        try:
            while not events:
                record = reader.next_record()
                if record is None:
                    break
                self._handle_record(*record)
        except Exception as exc:
            self._fail(exc)
            raise
        if events:
            return events.popleft()
        self._check_eof()
        return None

    def read_application_data(self, sink: MutableSequence[bytes]) -> None:
        """Append the payloads of the application-data records at the head of the input
        to ``sink`` (bulk fast path; equivalent to the ``DataReceived`` events).

        Anything else (handshake, alerts, key updates, forged records) is left for
        :meth:`next_event`, which handles it and raises on errors; call both.
        """
        if self._fast_path_ok():
            self._reader.read_data_run(sink)

    def read_application_data_into(self, out: memoryview) -> int:
        """Decrypt whole application-data records at the head of the input straight into
        ``out`` while they fit; returns the bytes written (0: use :meth:`next_event`)."""
        if self._fast_path_ok():
            return self._reader.read_data_run_into(out)
        return 0

    def _fast_path_ok(self) -> bool:
        return (
            self.session is not None
            and self._error is None
            and not self.peer_closed
            and self._reader.epoch == Epoch.APPLICATION
        )

    def send_data(self, data: bytes | bytearray | memoryview) -> None:
        """Protect application data; take the records with :meth:`data_to_send`."""
        self._require_writable()
        view = memoryview(data).cast("B")
        pos, total = 0, len(view)
        while pos < total:
            self._maybe_rekey()
            part = view[pos : pos + self._chunk_limit()]
            self._write_records_at_key += self._writer.protect(ContentType.APPLICATION_DATA, part)
            self._write_bytes += len(part)
            pos += len(part)
        self._maybe_rekey()

    def _chunk_limit(self) -> int:
        """Bytes to protect before the next schedule check (so limits are met exactly)."""
        size = self._writer.record_size
        limit = size * _CHUNK_RECORDS
        sched = self.config.rekey
        if sched.max_records is not None:
            limit = min(limit, max(1, sched.max_records - self._write_records_at_key) * size)
        if sched.max_bytes is not None:
            limit = min(limit, max(1, sched.max_bytes - self._write_bytes))
        return limit

    def data_to_send(self) -> bytes | bytearray:
        """Every byte queued for the transport since the last call (possibly empty)."""
        return self._writer.take()

    def recycle(self, buf: bytes | bytearray) -> None:
        """Give back a buffer from :meth:`data_to_send` after the transport wrote it all
        and holds no reference to it (lets bulk writes reuse one buffer)."""
        self._writer.recycle(buf)

    def get_buffer(self, size: int) -> memoryview:
        """A writable view to read transport bytes into (at least ``size`` bytes);
        follow with :meth:`buffer_updated`. Like :class:`asyncio.BufferedProtocol`."""
        return self._reader.get_buffer(size)

    def buffer_updated(self, count: int) -> None:
        """``count`` bytes were read into the view from :meth:`get_buffer`."""
        if count:
            self._received_any = True
            self._reader.buffer_updated(count)
        else:
            self._eof = True

    @property
    def has_data_to_send(self) -> bool:
        return self._writer.pending > 0

    def update_keys(self, *, request_peer: bool = True) -> None:
        """Move our write key forward now (mixing in a fresh QKD key when the session has QKD)."""
        self._require_writable()
        self._guard(self._update_write_key, request_peer)

    def close(self) -> None:
        """Queue close-notify; later sends raise :class:`ChannelClosed`. Idempotent."""
        if self.state in (State.CLOSED, State.FAILED):
            return
        self._writer.protect(ContentType.ALERT, encode_alert(AlertDescription.close_notify))
        self.state = State.CLOSED

    @property
    def established(self) -> bool:
        return self.session is not None

    @property
    def received_any(self) -> bool:
        """Whether the peer sent any byte yet. A transport that ends (or is reset) before
        one is a port probe or a refusal, not a truncation: feed it as EOF."""
        return self._received_any

    @property
    def error(self) -> BaseException | None:
        return self._error

    def abort(self, exc: BaseException) -> None:
        """Mark the channel failed because of ``exc`` from outside (timeout, transport error)."""
        if self._error is None:
            self._error = exc
            self.state = State.FAILED

    # -- record dispatch ----------------------------------------------------------------

    def _handle_record(self, ctype: ContentType, epoch: int, payload: bytes) -> None:
        if ctype is ContentType.APPLICATION_DATA:
            if self.session is None or epoch != Epoch.APPLICATION:
                raise UnexpectedRecord("application data before the handshake finished")
            if payload and not self.peer_closed:
                self._events.append(DataReceived(data=payload))
        elif ctype is ContentType.HANDSHAKE:
            if self.session is not None:
                raise UnexpectedRecord("handshake record after the handshake finished")
            if not payload:
                raise RecordDecodeError("empty handshake record")
            self._hs.receive(Epoch(epoch), payload)
            self._drain_handshake()
        elif ctype is ContentType.ALERT:
            self._handle_alert(payload)
        else:
            self._handle_key_update(epoch, payload)

    def _handle_alert(self, payload: bytes) -> None:
        _level, desc = decode_alert(payload)
        if desc == AlertDescription.close_notify:
            if not self.peer_closed:
                self.peer_closed = True
                self._events.append(ConnectionClosed())
            return
        raise error_for_alert(desc)  # next_event's handler marks the channel failed

    def _drain_handshake(self) -> None:
        while (ev := self._hs.next_event()) is not None:
            if isinstance(ev, hs_events.SendData):
                if int(ev.epoch) != self._writer.epoch:
                    raise HandshakeError(
                        f"handshake asked to send in epoch {int(ev.epoch)} while the write "
                        f"epoch is {self._writer.epoch} (contract violation)"
                    )
                self._writer.protect(ContentType.HANDSHAKE, ev.data)
            elif isinstance(ev, hs_events.KeysReady):
                self._install(int(ev.epoch), ev.direction, ev.secret)
            elif isinstance(ev, hs_events.HandshakeComplete):
                self._complete(ev.session)
        if self.session is not None:
            self._hs = _FinishedHandshake()  # release the handshake state (transcript, keys)

    def _install(self, epoch: int, direction: str, secret: bytes) -> None:
        key, iv = traffic_keys(secret)
        if direction == "read":
            self._reader.set_key(epoch, key, iv)
            self._read_secret = secret
        else:
            self._writer.set_key(epoch, key, iv)
            self._write_secret = secret

    def _complete(self, session: Any) -> None:
        self.session = session
        self.state = State.ESTABLISHED
        self._qkd_rekey = "QKD" in tuple(getattr(session, "components", ()))
        self._reset_write_counters()
        self._events.append(HandshakeCompleted(session=session))

    # -- key update ---------------------------------------------------------------------

    def _maybe_rekey(self) -> None:
        prot = self._writer.protection
        if self.session is None or prot is None:
            return
        sched = self.config.rekey
        due = (
            prot.seq >= _AEAD_SOFT_LIMIT
            or (sched.max_bytes is not None and self._write_bytes >= sched.max_bytes)
            or (sched.max_records is not None and self._write_records_at_key >= sched.max_records)
            or (
                sched.max_seconds is not None
                and self._clock() - self._write_key_time >= sched.max_seconds
            )
        )
        if due:
            self._guard(self._update_write_key, not self._awaiting_peer_update)

    def _update_write_key(self, request_peer: bool) -> None:
        qkd = self._fresh_qkd_key()
        key_id = qkd.key_id if qkd is not None else None
        body = KeyUpdate(request_update=request_peer, qkd_key_id=key_id).encode()
        self._writer.protect(ContentType.KEY_UPDATE, body)
        self._write_secret = next_traffic_secret(self._write_secret, qkd.key if qkd else None)
        self._writer.set_key(Epoch.APPLICATION, *traffic_keys(self._write_secret))
        self.write_generation += 1
        if key_id is not None:
            self.qkd_rekey_ids.append(("write", key_id))
        if request_peer:
            self._awaiting_peer_update = True
        self._reset_write_counters()

    def _fresh_qkd_key(self) -> QKDKey | None:
        if not self._qkd_rekey:
            return None
        source, peer = self._qkd_endpoint()
        try:
            return source.new_key(peer, self._qkd_key_size)
        except KeyUnavailableError as exc:
            if self.config.on_qkd_unavailable == "classical":
                self.qkd_fallbacks += 1
                return None
            raise RekeyKeyUnavailableError(
                f"no fresh QKD key for the key update ({exc}); the policy "
                "(on_qkd_unavailable='fail') closes the channel rather than rekey without QKD"
            ) from None

    def _handle_key_update(self, epoch: int, payload: bytes) -> None:
        if self.session is None or epoch != Epoch.APPLICATION:
            raise UnexpectedRecord("key update before the handshake finished")
        msg = KeyUpdate.decode(payload)
        self._limit_bare_updates()
        qkd_key = self._peer_qkd_key(msg.qkd_key_id)
        self._read_secret = next_traffic_secret(self._read_secret, qkd_key)
        self._reader.set_key(Epoch.APPLICATION, *traffic_keys(self._read_secret))
        self.read_generation += 1
        if msg.qkd_key_id is not None:
            self.qkd_rekey_ids.append(("read", msg.qkd_key_id))
        self._awaiting_peer_update = False
        self._events.append(
            KeysUpdated(
                direction="read", generation=self.read_generation, qkd_key_id=msg.qkd_key_id
            )
        )
        if msg.request_update and self.state is State.ESTABLISHED:
            self._update_write_key(False)

    def _limit_bare_updates(self) -> None:
        """Refuse a storm of key updates with no data between them: each one may make
        us draw a QKD key, so an unlimited stream would drain the link."""
        prot = self._reader.protection
        bare = prot is not None and prot.seq <= 1  # the update is the only record under this key
        self._bare_updates = self._bare_updates + 1 if bare else 0
        if self._bare_updates > _MAX_BARE_UPDATES:
            raise UnexpectedRecord(
                f"the peer sent more than {_MAX_BARE_UPDATES} key updates with no data between them"
            )

    def _peer_qkd_key(self, key_id: str | None) -> bytes | None:
        if key_id is None:
            if self._qkd_rekey and self.config.on_qkd_unavailable != "classical":
                raise RekeyPolicyError(
                    "the peer updated its key without a QKD key although this QKD session "
                    "requires one (on_qkd_unavailable='fail')"
                )
            return None
        if not self._qkd_rekey:
            raise RecordDecodeError(
                "key update names a QKD key but the session has no QKD component"
            )
        source, peer = self._qkd_endpoint()
        try:
            return source.get_key(peer, key_id).key
        except KeyUnavailableError as exc:
            raise RekeyKeyUnavailableError(
                f"cannot fetch QKD key {key_id} for the key update: {exc}"
            ) from None
        except KeySourceError as exc:
            raise RekeyKeyUnknownError(
                f"the peer's key update names an unusable QKD key: {exc}"
            ) from None

    def _qkd_endpoint(self) -> tuple[Any, str]:
        source = getattr(self.session, "qkd_source", None) or getattr(
            self.config.handshake, "qkd_source", None
        )
        peer = getattr(self.session, "peer_sae_id", None) or getattr(
            self.config.handshake, "peer_sae_id", None
        )
        if source is None or not peer:
            raise RekeyKeyUnavailableError(
                "the session uses QKD but no QKD key source / peer SAE ID is configured"
            )
        return source, str(peer)

    def _reset_write_counters(self) -> None:
        self._write_bytes = 0
        self._write_records_at_key = 0
        self._write_key_time = self._clock()

    # -- errors -------------------------------------------------------------------------

    def _require_writable(self) -> None:
        if self._error is not None:
            raise ChannelClosed("the channel failed earlier; open a new one") from self._error
        if self.state is State.CLOSED:
            raise ChannelClosed("the channel was closed; open a new one to send more")
        if self.session is None:
            raise ChannelClosed("the handshake has not finished; wait for it before sending")

    def _check_eof(self) -> None:
        if not self._eof or self.peer_closed or self.state is State.CLOSED:
            return
        exc: ChannelClosed | TruncatedError
        if not self._received_any:
            exc = ClosedWithoutHandshake(_SILENT_SERVER if self.client else _SILENT_CLIENT)
        else:
            where = "in the middle of a record" if self._reader.buffered else "between records"
            stage = "during the handshake" if self.session is None else "after the handshake"
            exc = TruncatedError(
                f"the transport closed {where} {stage} without a close-notify; "
                "data may have been truncated by an attacker or a crash"
            )
        annotate(exc)
        self._error = exc
        self.state = State.FAILED
        raise exc

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: Exception) -> None:
        if self._error is not None:
            return
        self._error = exc
        sent: AlertDescription | None = None
        if getattr(exc, "alert_received", None) is None:  # never answer the peer's alert
            sent = alert_for(exc)
            try:
                self._writer.protect(ContentType.ALERT, encode_alert(sent))
            except Exception:  # the write key itself is unusable: nothing safe to send
                sent = None
        annotate(exc, sent=sent)
        self.state = State.FAILED
