"""A recording relay: the passive adversary's tap on the wire.

:class:`CaptureRelay` listens on loopback, connects each client to the real
server and forwards bytes both ways unchanged, writing every chunk to a
capture file as it passes. :func:`read_capture` reads a file back.

Capture file format (``.hcap``, all integers big-endian)::

    magic      5 bytes   b"HCAP\\x01"
    meta_len   u32       length of the metadata, at most 64 KiB
    meta       JSON      UTF-8 object: created (ISO 8601 UTC), client, server, label
    frames     repeated until end of file:
        time_ns    u64   wall-clock time the chunk was read, ns since the Unix epoch
        direction  u8    0 = client -> server, 1 = server -> client
        length     u32   at most 16 MiB
        data       length bytes, exactly as seen on the wire

A file cut short inside a frame (a relay killed mid-write) reads as the frames
before the cut, with ``Capture.truncated`` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import itertools
import json
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "CLIENT_TO_SERVER",
    "SERVER_TO_CLIENT",
    "Capture",
    "CaptureFormatError",
    "CaptureRelay",
    "Frame",
    "read_capture",
]

MAGIC = b"HCAP\x01"
CLIENT_TO_SERVER = 0
SERVER_TO_CLIENT = 1
_MAX_META = 64 * 1024
_MAX_FRAME = 16 * 1024 * 1024
_FRAME_HEADER = struct.Struct("!QBI")


class CaptureFormatError(ValueError):
    """The file is not a capture file or is corrupt beyond a truncated tail."""


@dataclass(frozen=True, slots=True)
class Frame:
    time_ns: int
    direction: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Capture:
    """One recorded TCP connection."""

    meta: dict[str, Any]
    frames: tuple[Frame, ...]
    truncated: bool = False

    def stream(self, direction: int) -> bytes:
        """Every byte sent in one direction, in order."""
        return b"".join(f.data for f in self.frames if f.direction == direction)

    @property
    def client_to_server(self) -> bytes:
        return self.stream(CLIENT_TO_SERVER)

    @property
    def server_to_client(self) -> bytes:
        return self.stream(SERVER_TO_CLIENT)


def write_header(out: BinaryIO, meta: dict[str, Any]) -> None:
    raw = json.dumps(meta, sort_keys=True).encode()
    if len(raw) > _MAX_META:
        raise ValueError(f"capture metadata is {len(raw)} bytes; the limit is {_MAX_META}")
    out.write(MAGIC + struct.pack("!I", len(raw)) + raw)


def write_frame(out: BinaryIO, direction: int, data: bytes, time_ns: int | None = None) -> None:
    if direction not in (CLIENT_TO_SERVER, SERVER_TO_CLIENT):
        raise ValueError(f"direction must be 0 or 1, got {direction}")
    for start in range(0, len(data), _MAX_FRAME):
        chunk = data[start : start + _MAX_FRAME]
        stamp = time.time_ns() if time_ns is None else time_ns
        out.write(_FRAME_HEADER.pack(stamp, direction, len(chunk)) + chunk)


def parse_capture(raw: bytes) -> Capture:
    """Parse the bytes of a capture file (see the module docstring)."""
    if raw[:5] != MAGIC:
        raise CaptureFormatError("not a hybridchan capture file (bad magic); expected HCAP v1")
    if len(raw) < 9:
        raise CaptureFormatError("capture file ends inside its header")
    (meta_len,) = struct.unpack_from("!I", raw, 5)
    if meta_len > _MAX_META or 9 + meta_len > len(raw):
        raise CaptureFormatError(f"capture metadata length {meta_len} is invalid")
    try:
        meta = json.loads(raw[9 : 9 + meta_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaptureFormatError(f"capture metadata is not JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise CaptureFormatError("capture metadata must be a JSON object")
    frames: list[Frame] = []
    offset = 9 + meta_len
    truncated = False
    while offset < len(raw):
        if offset + _FRAME_HEADER.size > len(raw):
            truncated = True
            break
        time_ns, direction, length = _FRAME_HEADER.unpack_from(raw, offset)
        if direction not in (CLIENT_TO_SERVER, SERVER_TO_CLIENT) or length > _MAX_FRAME:
            raise CaptureFormatError(f"corrupt frame header at byte {offset}")
        start = offset + _FRAME_HEADER.size
        if start + length > len(raw):
            truncated = True
            break
        frames.append(Frame(time_ns, direction, raw[start : start + length]))
        offset = start + length
    return Capture(meta, tuple(frames), truncated)


def read_capture(path: str | Path) -> Capture:
    return parse_capture(Path(path).read_bytes())


class CaptureRelay:
    """Forward TCP connections from a loopback port to ``target``, recording each.

    Runs its own event loop in a background thread, so synchronous code and
    tests can use it::

        with CaptureRelay(("127.0.0.1", server_port), directory, label="hybrid") as relay:
            connect_to(relay.address)
        capture = read_capture(relay.files[0])
    """

    def __init__(
        self,
        target: tuple[str, int],
        directory: str | Path,
        *,
        label: str = "",
        host: str = "127.0.0.1",
    ) -> None:
        self.target = target
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.label = label
        self.files: list[Path] = []
        self._host = host
        self._counter = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._active: set[asyncio.Task[Any]] = set()
        self.address: tuple[str, int] = (host, 0)

    def __enter__(self) -> CaptureRelay:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, 0)
        self.address = self._server.sockets[0].getsockname()[:2]

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Block until every relayed connection has finished and its file is closed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._active:
                return
            time.sleep(0.01)
        raise TimeoutError("relayed connections still open")

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._active):
                task.cancel()
            await asyncio.gather(*self._active, return_exceptions=True)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._active.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._active.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        path = self.directory / f"conn-{next(self._counter):04d}.hcap"
        self.files.append(path)
        peer = writer.get_extra_info("peername")
        meta = {
            "created": _dt.datetime.now(_dt.UTC).isoformat(),
            "client": f"{peer[0]}:{peer[1]}",
            "server": f"{self.target[0]}:{self.target[1]}",
            "label": self.label,
        }
        with path.open("wb") as out:
            write_header(out, meta)

            async def pipe(
                src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: int
            ) -> None:
                try:
                    while data := await src.read(65536):
                        # No await between writing the frame and flushing it: frames of
                        # the two directions cannot interleave within one event loop.
                        write_frame(out, direction, data)
                        out.flush()
                        dst.write(data)
                        await dst.drain()
                except (ConnectionError, OSError):
                    pass
                finally:
                    with contextlib.suppress(Exception):
                        dst.write_eof()

            try:
                await asyncio.gather(
                    pipe(reader, up_writer, CLIENT_TO_SERVER),
                    pipe(up_reader, writer, SERVER_TO_CLIENT),
                )
            except asyncio.CancelledError:
                pass  # the relay is stopping; what was seen is on disk
            finally:
                for w in (writer, up_writer):
                    w.close()
