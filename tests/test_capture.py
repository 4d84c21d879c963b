"""The recording relay and the capture file format."""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridchan.rndl import capture


def _echo_server() -> tuple[socket.socket, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def test_relay_records_both_directions_exactly(tmp_path: Path) -> None:
    listener, _thread = _echo_server()
    payload = bytes(range(97, 123)) * 5000
    with capture.CaptureRelay(listener.getsockname(), tmp_path, label="echo") as relay:
        with socket.create_connection(relay.address, timeout=10) as client:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
            received = bytearray()
            while data := client.recv(65536):
                received += data
        relay.wait_idle()
    listener.close()
    assert bytes(received) == payload.upper()
    rec = capture.read_capture(relay.files[0])
    assert rec.client_to_server == payload
    assert rec.server_to_client == payload.upper()
    assert rec.meta["label"] == "echo"
    assert not rec.truncated
    times = [f.time_ns for f in rec.frames]
    assert times == sorted(times)


def test_truncated_file_reads_up_to_the_cut(tmp_path: Path) -> None:
    out = io.BytesIO()
    capture.write_header(out, {"label": "x"})
    capture.write_frame(out, 0, b"hello", time_ns=1)
    capture.write_frame(out, 1, b"world", time_ns=2)
    raw = out.getvalue()
    cut = capture.parse_capture(raw[:-3])
    assert cut.truncated
    assert cut.client_to_server == b"hello"
    assert cut.server_to_client == b""


def test_bad_files_raise_typed_errors() -> None:
    with pytest.raises(capture.CaptureFormatError, match="bad magic"):
        capture.parse_capture(b"PCAP....")
    with pytest.raises(capture.CaptureFormatError, match="metadata length"):
        capture.parse_capture(capture.MAGIC + b"\xff\xff\xff\xff")
    out = io.BytesIO()
    capture.write_header(out, {})
    out.write(b"\x00" * 8 + b"\x07" + b"\x00\x00\x00\x01" + b"x")
    with pytest.raises(capture.CaptureFormatError, match="corrupt frame"):
        capture.parse_capture(out.getvalue())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parser_never_raises_anything_else(data: bytes) -> None:
    for raw in (data, capture.MAGIC + data):
        try:
            capture.parse_capture(raw)
        except capture.CaptureFormatError:
            pass
