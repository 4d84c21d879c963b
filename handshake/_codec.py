"""Byte-level reading and writing for handshake messages (private).

Every variable-length field is a length prefix (1, 2 or 3 bytes) followed by the bytes,
with an upper bound checked on both encode and decode. Reading past the end, a length
over its bound, or leftover bytes raise :class:`~handshake.errors.ProtocolError`
(decode_error): the decoder never raises anything else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

from handshake.errors import ProtocolError

T = TypeVar("T")


class Reader:
    """A cursor over one message body. Call :meth:`finish` to reject trailing bytes."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = bytes(data)
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        if end > len(self._data):
            raise ProtocolError(f"{self._what}: truncated (needed {n} more bytes)")
        self._pos = end
        return self._data[pos:end]

    def uint(self, size: int) -> int:
        pos = self._pos
        end = pos + size
        if end > len(self._data):
            raise ProtocolError(f"{self._what}: truncated (needed {size} more bytes)")
        self._pos = end
        if size == 1:
            return self._data[pos]
        return int.from_bytes(self._data[pos:end], "big")

    def fixed(self, n: int) -> bytes:
        return self._take(n)

    def vector(self, prefix: int, max_len: int, min_len: int = 0) -> bytes:
        n = self.uint(prefix)
        if not min_len <= n <= max_len:
            raise ProtocolError(f"{self._what}: field length {n} outside {min_len}..{max_len}")
        return self._take(n)

    def u16_list(self, count_size: int, max_count: int) -> tuple[int, ...]:
        """A counted list of 16-bit values, e.g. code points (one unpack, not n reads)."""
        n = self.uint(count_size)
        if n > max_count:
            raise ProtocolError(f"{self._what}: {n} items exceed the limit of {max_count}")
        pos = self._pos
        self._take(2 * n)
        return struct.unpack_from(f">{n}H", self._data, pos)

    def text(self, prefix: int, max_len: int, min_len: int = 0) -> str:
        raw = self.vector(prefix, max_len, min_len)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError(f"{self._what}: text field is not ASCII") from None

    def items(self, count_size: int, max_count: int, read: Callable[[Reader], T]) -> list[T]:
        n = self.uint(count_size)
        if n > max_count:
            raise ProtocolError(f"{self._what}: {n} items exceed the limit of {max_count}")
        return [read(self) for _ in range(n)]

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise ProtocolError(
                f"{self._what}: {len(self._data) - self._pos} trailing bytes after the message"
            )


class Writer:
    """Accumulates an encoding; length checks raise ValueError (a local programming error)."""

    __slots__ = ("_out",)

    def __init__(self) -> None:
        self._out = bytearray()

    def uint(self, value: int, size: int) -> None:
        self._out += value.to_bytes(size, "big")

    def fixed(self, data: bytes, n: int) -> None:
        if len(data) != n:
            raise ValueError(f"field must be {n} bytes, got {len(data)}")
        self._out += data

    def vector(self, data: bytes, prefix: int, max_len: int, min_len: int = 0) -> None:
        if not min_len <= len(data) <= max_len:
            raise ValueError(f"field length {len(data)} outside {min_len}..{max_len}")
        out = self._out
        out += len(data).to_bytes(prefix, "big")
        out += data

    def text(self, value: str, prefix: int, max_len: int, min_len: int = 0) -> None:
        self.vector(value.encode("ascii"), prefix, max_len, min_len)

    def count(self, n: int, size: int, max_count: int) -> None:
        if n > max_count:
            raise ValueError(f"{n} items exceed the limit of {max_count}")
        self.uint(n, size)

    def u16_list(self, values: Sequence[int], count_size: int, max_count: int) -> None:
        self.count(len(values), count_size, max_count)
        self._out += struct.pack(f">{len(values)}H", *values)

    def getvalue(self) -> bytes:
        return bytes(self._out)
